//! The Visiodroits/AMC rights proxy (seed 003, spec §6).
//!
//! The LPS posts its SOAP 1.2 requests (`Content-Type: application/soap+xml`) to a local
//! HTTPS endpoint; [`RightsProxy`] forwards them to the configured AMC/OCT endpoint over
//! mutual TLS where the client key is the professional's CPS card
//! ([`passerelle_cards::CardCertResolver`]), and returns the answer unchanged.
//!
//! A card signature takes hundreds of milliseconds, and the seed asks to reuse the connection
//! as long as possible, so:
//! - upstream connections are HTTP/1.1 keep-alive and kept in a small idle pool;
//! - the rustls client keeps TLS 1.2 sessions, so a new connection resumes without asking the
//!   card to sign;
//! - both are flushed when the card is removed ([`RightsProxy::watch_card_removals`]): a
//!   session must not outlive the card that authenticated it.
//!
//! Upstream TLS is 1.2 only: the card signs with RSA PKCS#1 v1.5 (INTERNAL AUTHENTICATE), and
//! TLS 1.3 allows only RSA-PSS for client authentication. The server certificate is checked
//! against the configured public-CA bundle (the spec: server certificates of the OCT and TP
//! operators come from Internet CAs).
//!
//! Every failure the LPS can meet comes back as a SOAP 1.2 fault with a French reason
//! ([`RightsError`]): no card, PIN not entered or blocked, card removed during the request,
//! upstream unreachable or slow, request over [`RightsConfig::max_request_bytes`].

mod config;
mod error;
mod proxy;
mod server;

pub use config::RightsConfig;
pub use error::{RightsError, soap_fault};
pub use proxy::{ClientAuth, RightsProxy};
pub use server::{run, serve};
