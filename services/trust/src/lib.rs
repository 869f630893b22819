//! passerelle-trust: whom the appliance trusts, and how it checks.
//!
//! - Named CA sets loaded from files and pinned by SHA-256 (RE_OPE_5040): [`check_anchors`].
//! - Trust profiles (`mssante-server`, `mssante-client-auth`, `sesam-vitale`, `cps`, `oct`, …):
//!   anchors, the CAs allowed to issue the peer's certificate (branch restriction, EX_OPE_5040),
//!   revocation policy. [`TrustStore::validate`] builds the path from the local store only.
//! - Revocation from full + delta CRLs, cached on disk and refreshed from [`CrlSource`]s
//!   (EX_OPE_5050). OCSP is not implemented; a profile asking for it is a configuration error.
//! - DN parsing and RFC 4518 comparison for liste blanche matching: [`Dn`].
//! - TLS configurations limited to EX_OPE_5010, and rustls verifiers backed by a profile.

mod anchors;
mod config;
mod crl;
mod dn;
mod error;
mod source;
mod store;
mod tls;

pub use anchors::{
    AnchorReport, MAX_CERT_FILE_BYTES, MAX_PINS_FILE_BYTES, PinMismatch, certificate_der,
    check_anchors, parse_pins, read_certificate, sha256_hex,
};
pub use config::{
    CrlSourceConfig, PeerRole, ProfileConfig, RevocationMethod, RevocationScope, TlsOptions,
    TrustConfig, UnknownStatusPolicy,
};
pub use crl::{CrlKind, CrlUpdate, MAX_CRL_BYTES};
pub use dn::{Attribute, AttributeValue, Dn, MAX_DN_STRING_LEN, MAX_RDNS, prepare};
pub use error::{Refusal, TrustError};
pub use source::{CrlSource, FetchFuture, HttpCrlSource, RefreshReport};
pub use store::{Profile, TrustStore, Validated};
pub use tls::{
    ProfileClientVerifier, ProfileServerVerifier, mssante_client_config, mssante_provider,
    mssante_server_config,
};
