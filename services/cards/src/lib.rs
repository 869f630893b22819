//! CPS cards over PC/SC (pcsc-lite): which readers and cards are there, who the professional
//! is, the PIN, and the card's authentication key for TLS client authentication.
//!
//! # Threads
//! The `pcsc` crate is blocking. [`CardService::start`] runs two dedicated threads, each with
//! its own PC/SC context (pcsc-lite contexts are not meant to be shared between threads):
//! - the **monitor** waits in `SCardGetStatusChange` (at most [`CardsConfig::poll`], ≤ 500 ms)
//!   on every reader plus `\\?PnP?\Notification` for hot-plug, publishes [`CardEvent`]s on a
//!   tokio broadcast channel and updates the shared snapshot at once; `Context::cancel` wakes
//!   it for shutdown;
//! - the **card worker** owns the card connections and runs every APDU exchange (identity
//!   read on insertion, PIN, signatures) from a job queue. A card that answers slowly or not
//!   at all holds only this thread: callers wait at most [`CardsConfig::apdu_timeout`] and
//!   removals are still seen by the monitor.
//!
//! # PIN
//! Verified only through [`CardService::verify_pin`] (the web admin's explicit request). The
//! PIN travels in a [`Pin`] (zeroized on drop, redacted in `Debug`), is encoded into a
//! zeroized buffer and never logged. With one try left the guard refuses to send it unless the
//! caller confirms ([`CardError::LastTryNeedsConfirmation`]): the tries are read with a
//! VERIFY without data, which spends none. Nothing ever retries a VERIFY.
//!
//! # Signing
//! [`CardCertResolver`] presents the active card's authentication certificate to rustls and
//! signs with INTERNAL AUTHENTICATE over a SHA-256 DigestInfo built on the host: only
//! `RSA_PKCS1_SHA256` is offered, so connections using it must be TLS 1.2 (TLS 1.3 requires
//! RSA-PSS for client authentication, which INTERNAL AUTHENTICATE cannot do).
//!
//! When the card's PKCS#11 module is configured instead (ANS Cryptolib CPS, or OpenSC which
//! reads CPx cards), [`pkcs11_cert_resolver`] signs through `passerelle_keystore` with the
//! private key labelled [`CPS_PRIV_AUT`]. That path logs in when the keystore is opened (the
//! keystore reads its PIN from a file), so the PIN guard above does not apply to it.

mod atr;
mod config;
mod error;
mod identity;
mod pin;
mod pkcs11;
mod service;
mod signer;
mod worker;

pub use atr::CardKind;
pub use config::CardsConfig;
pub use error::{CardError, Result};
pub use identity::CpsIdentity;
pub use pin::{Pin, PinState};
pub use pkcs11::{CPS_PRIV_AUT, pkcs11_cert_resolver};
pub use service::{CardEvent, CardInfo, CardService, ReaderStatus};
pub use signer::{CardCertResolver, CardSigningKey, sha256_digest_info};

/// Upper-case hex, for serials and ATRs.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}
