//! passerelle-trust: whom the appliance trusts, and how it checks.
//!
//! - Named CA sets loaded from files and pinned by SHA-256 (RE_OPE_5040): [`check_anchors`].
//! - Trust profiles (`mssante-server`, `mssante-client-auth`, `sesam-vitale`, `cps`, `oct`, …):
//!   anchors, the CAs allowed to issue the peer's certificate (branch restriction, EX_OPE_5040),
//!   revocation policy. [`TrustStore::validate`] builds the path from the local store only.
//! - Revocation (EX_OPE_5050), per profile (`revocation`):
//!   - `crl` (default): full + delta CRLs, cached on disk and refreshed from [`CrlSource`]s
//!     (`http://`, and `ldap://` for the SESAM-Vitale directory);
//!   - `ocsp`: an RFC 6960 responder (the profile's `ocsp_url`, else the certificate's AIA),
//!     asked by [`TrustStore::validate_online`], answers cached until their nextUpdate;
//!   - `ocsp-then-crl`: OCSP, and the CRLs when OCSP gives no answer.
//!
//!   When the status stays unknown, the profile's `unknown_status` decides: `hard-fail`
//!   (default, what MSSanté needs) refuses, `soft-fail` accepts with a warning. A revoked
//!   certificate is always refused.
//! - DN parsing and RFC 4518 comparison for liste blanche matching: [`Dn`].
//! - TLS configurations limited to EX_OPE_5010, and rustls verifiers backed by a profile.

mod anchors;
mod config;
mod crl;
mod dn;
mod error;
mod https;
mod ldap;
mod ocsp;
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
pub use https::{HttpsUrl, NoClientCertificate, exchange, profile_client_config};
pub use ldap::{AnonymousSearch, LdapCrlSource, SearchDone};
pub use ocsp::{MAX_OCSP_RESPONSE_BYTES, OCSP_CLOCK_SKEW};
pub use source::{CrlSource, FetchFuture, HttpCrlSource, RefreshReport};
pub use store::{Profile, TrustStore, Validated};
pub use tls::{
    ProfileClientVerifier, ProfileServerVerifier, mssante_client_config, mssante_provider,
    mssante_server_config,
};
