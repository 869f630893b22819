//! Integration tests of passerelle-trust against the shared test PKI (`passerelle-testpki`).
//! Test names carry the requirement they check.

mod common;
mod crl_cache;
mod ldap;
mod ocsp;
mod tls;
mod validation;
