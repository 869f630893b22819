//! passerelle-liste-blanche: the MSSanté liste blanche (TM4.1P, Référentiel #1 §6.6).
//!
//! - [`verify`]: strict XMLDSig verification (EX_2.2_5040, EX_2.2_5050, RE_2.2_5010): one
//!   enveloped `ds:Signature` over the whole document, Tableau 45 algorithms only, the signer
//!   certificate from `X509Data` validated by [`passerelle_trust::TrustStore`] and carrying the
//!   configured ANS identity. Canonicalisation is ours ([`c14n`]), tested against `xmlsec1`.
//! - [`ListeBlanche`]: domains ↔ operator DNs, many-to-many (EX_LBL_5010), DNs compared after
//!   RFC 4518 normalisation.
//! - [`LocalCopy`]: the downloaded bytes kept unaltered (EX_2.2_5030), written only after they
//!   verify, the previous copy kept (EX_2.2_5035), verified again at every load (RE_2.2_5010).
//! - [`ListeBlancheService`]: the daily HTTPS fetch ([`Fetcher`], EX_2.2_5010), the atomic swap,
//!   and [`ListeBlancheState::NoVerifiedList`] until a first list verifies: the connector refuses
//!   every MSSanté exchange in that state.

mod adhoc;
pub mod c14n;
mod config;
mod error;
mod fetch;
mod list;
mod service;
mod store;
mod verify;

pub use adhoc::{ADHOC_HTTPS_PROFILE, ADHOC_PROFILE, adhoc_trust};
pub use config::{ListeBlancheConfig, PRODUCTION_URL, TEST_URL};
pub use error::ListeBlancheError;
pub use fetch::Fetcher;
pub use list::ListeBlanche;
pub use service::{ListeBlancheHandle, ListeBlancheService, ListeBlancheState};
pub use store::{LocalCopy, Metadata};
pub use verify::{
    LISTE_BLANCHE_NS, MAX_CERTIFICATES, MAX_DEPTH, MAX_FIELD_CHARS, MAX_LIST_BYTES, MAX_NODES,
    SignerIdentity, SignerPolicy, VerifiedList, verify,
};
