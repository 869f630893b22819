//! Real peers for integration tests, each on ephemeral loopback ports in its own temp dir.
//!
//! Every peer ([`Postfix`], [`Dovecot`], [`Slapd`], [`SoftHsm`], [`Pcscd`]) has a builder,
//! starts the real Debian binary in the foreground with its output captured to a log file in
//! its temp dir, waits for readiness by connecting (never a fixed sleep) and tears everything
//! down on drop: the process group is killed and the temp dir removed, unless
//! `PASSERELLE_KEEP_TEST_DIRS` is set, in which case its path is printed.
//!
//! A missing binary is an error naming the Debian package to install: tests fail, they
//! never skip silently.
//!
//! Some clients only read their settings from the environment of the test process
//! (`SOFTHSM2_CONF` for cryptoki, `PCSCLITE_CSOCK_NAME` for libpcsclite), so
//! [`SoftHsm::set_process_env`] and [`Pcscd::set_process_env`] set variables process-wide.
//! That is only sound because nextest runs every test in its own process; this crate is
//! edition 2021 for that reason (`set_var` is unsafe in 2024, and unsafe is forbidden).

mod cps_card;
mod dovecot;
mod error;
pub mod lineclient;
mod pcscd;
mod postfix;
mod process;
mod slapd;
mod softhsm;
mod vcard;

pub use cps_card::{
    CpsCard, CpsGeneration, CpsIdentity, SignatureCounter, CPS_DEFAULT_PIN, CPS_PIN_TRIES,
};
pub use dovecot::{Dovecot, DovecotBuilder};
pub use error::HarnessError;
pub use pcscd::{Pcscd, PcscdBuilder};
pub use postfix::{Postfix, PostfixBuilder};
pub use process::KEEP_DIRS_VAR;
pub use slapd::{Slapd, SlapdBuilder};
pub use softhsm::{SoftHsm, SoftHsmBuilder, Token, SOFTHSM_MODULE};
pub use vcard::{ApduHandler, VirtualCard};

use std::path::PathBuf;

/// TLS server material supplied by the caller as PEM files (the test PKI makes them).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain, leaf first.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to.
    pub ca: PathBuf,
}

/// Result type of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
