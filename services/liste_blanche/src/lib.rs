//! passerelle-liste-blanche: the MSSanté liste blanche (TM4.1P, Référentiel #1 §6.6).
//!
//! - [`verify`]: strict XMLDSig verification (EX_2.2_5040, EX_2.2_5050, RE_2.2_5010): one
//!   enveloped `ds:Signature` over the whole document, Tableau 45 algorithms only, the signer
//!   certificate from `X509Data` validated by [`passerelle_trust::TrustStore`] and carrying the
//!   configured ANS identity. Canonicalisation is ours ([`c14n`]), tested against `xmlsec1`.
//! - [`ListeBlanche`]: domains ↔ operator DNs, many-to-many (EX_LBL_5010), DNs compared after
//!   RFC 4518 normalisation.

mod adhoc;
pub mod c14n;
mod error;
mod list;
mod verify;

pub use adhoc::{ADHOC_PROFILE, adhoc_trust};
pub use error::ListeBlancheError;
pub use list::{Domaine, ListeBlanche};
pub use verify::{
    LISTE_BLANCHE_NS, MAX_CERTIFICATES, MAX_DEPTH, MAX_FIELD_CHARS, MAX_LIST_BYTES, MAX_NODES,
    SignerIdentity, SignerPolicy, VerifiedList, verify,
};
