//! Private keys that never leave a PKCS#11 token (TPM or HSM on the
//! appliance, SoftHSM2 in tests).
//!
//! - [`Keystore`] opens a token by label, logs in once with a PIN read from a
//!   root-only file, generates RSA-2048/3072 and P-256 key pairs
//!   (`CKA_SENSITIVE=true`, `CKA_EXTRACTABLE=false`), lists and deletes them,
//!   builds PKCS#10 requests signed in the token ([`Subject`] has the
//!   IGC-Santé subject forms) and imports the issued certificate after
//!   checking it certifies the key.
//! - [`TokenSigningKey`] and [`TokenCertResolver`] let rustls clients and
//!   servers authenticate with token keys.
//!
//! # Where the blocking PKCS#11 calls run
//!
//! Every PKCS#11 call runs on one dedicated OS thread per token that owns
//! the module and the session (a `Session` is not `Sync`). Async callers
//! send it a job and await a oneshot reply, so runtime workers never block
//! on the token.
//!
//! rustls' `Signer::sign` and rcgen's `SigningKey::sign` are synchronous, so
//! a signature must be waited for where it is asked. That wait is:
//! - **bounded** by [`SIGN_TIMEOUT`]: a stuck token fails the handshake
//!   instead of holding a thread forever;
//! - **announced to tokio**: on a multi-thread runtime worker the wait runs
//!   in `tokio::task::block_in_place`, which hands the worker's other tasks
//!   to another thread first. On a current-thread runtime (the CLI) or
//!   outside tokio it is a plain bounded wait. CSRs are built in
//!   `spawn_blocking`.
//!
//! The alternative, a TLS stack with asynchronous signing, does not exist
//! in rustls 0.23; running whole handshakes in `spawn_blocking` would need
//! a blocking TLS stream in every protocol crate. Do not drive token-backed
//! handshakes from a `LocalSet` on a multi-thread runtime: tokio forbids
//! `block_in_place` there.
//!
//! PKCS#11 initialisation is process-wide: open one [`Keystore`] per module
//! per process and clone it.

mod cert;
mod config;
mod csr;
mod der;
mod error;
mod keys;
mod keystore;
mod pin;
mod tls;
mod token;

pub use config::KeystoreConfig;
pub use csr::{Department, ORG_AUTH_CLI_CN, Subject};
pub use error::{KeystoreError, Result};
pub use keys::{KeyAlgorithm, KeyId, KeyInfo, KeyRef};
pub use keystore::{Keystore, SIGN_TIMEOUT, TokenKey};
pub use tls::{TokenCertResolver, TokenSigningKey};
