//! Certificates read from files and matched against token keys.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::der;
use crate::error::{KeystoreError, Result};

/// The attributes of a `CKO_CERTIFICATE` object, taken from a parsed certificate.
#[derive(Clone, Debug)]
pub(crate) struct CertificateObject {
    pub(crate) der: Vec<u8>,
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    pub(crate) serial: Vec<u8>,
    /// Subject public key bit string content (RSAPublicKey DER or EC point).
    pub(crate) public_key: Vec<u8>,
}

/// The subject of a DER certificate in RFC 2253 order (`CN=…, …, C=FR`).
pub(crate) fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(rfc2253(&cert))
}

fn rfc2253(cert: &X509Certificate<'_>) -> String {
    // x509-parser prints in encoding order (C first); IGC-Santé documents
    // and the liste blanche write DNs CN first.
    let mut parts: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let name = x509_parser::objects::oid2abbrev(
                        atv.attr_type(),
                        x509_parser::objects::oid_registry(),
                    )
                    .map_or_else(|_| atv.attr_type().to_id_string(), str::to_owned);
                    let value = atv.as_str().map_or_else(|_| "#…".to_owned(), str::to_owned);
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    parts.reverse();
    parts.join(", ")
}

/// Every certificate in a PEM or DER file, parsed. A file with no parsable
/// certificate is an error naming the file.
pub(crate) fn read_certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateObject>> {
    let corrupt = |reason: String| KeystoreError::CertificateCorrupt {
        path: path.to_owned(),
        reason,
    };
    let ders: Vec<Vec<u8>> =
        if bytes.starts_with(b"-----BEGIN") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
            CertificateDer::pem_slice_iter(bytes)
                .map(|c| c.map(|c| c.as_ref().to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt(format!("bad PEM: {e}")))?
        } else {
            vec![bytes.to_vec()]
        };
    if ders.is_empty() {
        return Err(corrupt("no CERTIFICATE block".to_owned()));
    }
    ders.into_iter()
        .enumerate()
        .map(|(i, der)| {
            let (rest, cert) = X509Certificate::from_der(&der)
                .map_err(|e| corrupt(format!("certificate #{}: {e}", i + 1)))?;
            if !rest.is_empty() {
                return Err(corrupt(format!(
                    "certificate #{}: {} trailing bytes",
                    i + 1,
                    rest.len()
                )));
            }
            let object = CertificateObject {
                subject: cert.tbs_certificate.subject.as_raw().to_vec(),
                issuer: cert.tbs_certificate.issuer.as_raw().to_vec(),
                serial: der::serial_number(cert.tbs_certificate.raw_serial()),
                public_key: cert.public_key().subject_public_key.data.to_vec(),
                der: der.clone(),
            };
            Ok(object)
        })
        .collect()
}

/// The subject of a parsed certificate object, for error messages.
pub(crate) fn describe(object: &CertificateObject) -> String {
    subject_of(&object.der).unwrap_or_else(|| "?".to_owned())
}
