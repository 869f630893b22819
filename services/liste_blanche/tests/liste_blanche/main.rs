//! Liste blanche tests: lists signed by the reference implementation (`xmlsec1`), attacks on
//! them, the local copy and the fetch over real HTTPS.

mod common;
mod service;
mod verify;
