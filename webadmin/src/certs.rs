//! Type checks of uploaded certificates: PEM `CERTIFICATE` blocks or one DER certificate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// At most this many certificates in one upload (a leaf and its chain).
const MAX_CERTS: usize = 8;

/// The DER certificates of `bytes`, each parsed as X.509; anything else is refused with why.
pub fn certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut ders = Vec::new();
    if bytes.starts_with(b"-----BEGIN") || bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| format!("PEM: {e}"))?;
            if pem.label != "CERTIFICATE" {
                return Err(format!("PEM block {:?} is not a certificate", pem.label));
            }
            ders.push(pem.contents);
            if ders.len() > MAX_CERTS {
                return Err(format!("more than {MAX_CERTS} certificates"));
            }
        }
    } else {
        ders.push(bytes.to_vec());
    }
    if ders.is_empty() {
        return Err("no certificate".to_owned());
    }
    for der in &ders {
        match x509_parser::parse_x509_certificate(der) {
            Ok(([], _)) => {}
            Ok(_) => return Err("trailing bytes after the certificate".to_owned()),
            Err(e) => return Err(format!("not an X.509 certificate: {e}")),
        }
    }
    Ok(ders)
}

/// `AA:BB:…` SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert!(certificates(b"hello").is_err());
        assert!(
            certificates(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        assert!(certificates(b"").is_err());
    }
}
