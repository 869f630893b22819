//! SESAM-Vitale attachment encryption ("chiffrement de pièce jointe", PDT-CDC-063 v0.5).
//!
//! - [`envelope`]: the lot encrypted into a CMS EnvelopedData exactly as
//!   `openssl cms -encrypt -binary -aes-128-cbc -outform der` does, streamed.
//! - [`certs`]: the recipient certificate rules ([CE1], [CE2], [CP1], [CP2], SAN, KeyUsage) and
//!   the local store.
//! - [`crl_schedule`]: when to download the CRL (weekly, 02:00–22:00 slot, daily retry, alert).
//! - [`directory`]: the certificates read from the GIE SESAM-Vitale LDAP directory.
//! - [`open`]: an envelope addressed to us opened (OCT profile; the key unwrap is the
//!   caller's, in its token).
//! - [`message`]: the one-file MIME message (`Application/EDI-consent`, base64 once,
//!   Content-Description per flow and environment, Subject from Formater_Lot).

pub mod certs;
mod config;
pub mod crl_schedule;
pub mod directory;
pub mod envelope;
mod error;
pub mod message;
pub mod open;

pub use certs::{Accepted, Profiles, RecipientCertificates, expected_label, validate_for};
pub use config::SesamConfig;
pub use directory::Directory;
pub use envelope::{Recipient, certificate_der_from_pem, ciphertext_len, encrypt};
pub use error::SesamError;
pub use message::{
    DEFAULT_MAX_LOT_BYTES, Env, Flow, LotMessage, Written, check_subject, content_description,
    encrypt_lot_to_pkcs7, pkcs7_file_name, write_message,
};
pub use open::Envelope;
