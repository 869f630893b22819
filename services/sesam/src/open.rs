//! Opening an envelope addressed to us (OCT profile, digest §4, §8 #19): the practice
//! encrypted its lot for the OCT's certificate exactly as the reference command does
//! (`openssl cms -encrypt -binary -aes-128-cbc -outform der`), so the OCT parses the CMS
//! EnvelopedData, finds the KeyTransRecipientInfo naming its certificate
//! (IssuerAndSerialNumber), has the content key unwrapped where its private key lives (RSA
//! PKCS#1 v1.5 in the PKCS#11 token: the caller does it, this crate never sees a private
//! key), and decrypts AES-128-CBC.
//!
//! The RustCrypto `cms` types decode the structure (the same crate that encodes ours). The
//! whole envelope is in memory: the OCT receives lots by mail, already bounded by the
//! intake's size limit.
//!
//! Bleichenbacher: an unwrap that fails, or yields a key of the wrong length, must not be
//! told apart from a content that does not decrypt. [`Envelope::open`] takes the unwrap's
//! result and substitutes a random key on failure, so both end in the same
//! [`SesamError::Unopenable`].

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use der::Decode;
use der::asn1::OctetString;
use rand_core::{OsRng, RngCore};
use x509_cert::Certificate;

use crate::envelope::{OID_AES128_CBC, OID_DATA, OID_ENVELOPED_DATA, OID_RSA_ENCRYPTION};
use crate::error::SesamError;

/// An EnvelopedData as received, not yet opened.
#[derive(Clone, Debug)]
pub struct Envelope {
    recipients: Vec<(IssuerAndSerialNumber, Vec<u8>)>,
    iv: [u8; 16],
    ciphertext: Vec<u8>,
}

fn bad(why: impl Into<String>) -> SesamError {
    SesamError::Envelope { why: why.into() }
}

impl Envelope {
    /// Parse a DER ContentInfo holding an EnvelopedData with RSA key transport and
    /// AES-128-CBC content, the only shape the reference command produces.
    pub fn parse(der: &[u8]) -> Result<Self, SesamError> {
        let info = ContentInfo::from_der(der).map_err(|e| bad(format!("not a CMS object: {e}")))?;
        if info.content_type != OID_ENVELOPED_DATA {
            return Err(bad(format!(
                "content type {} is not id-envelopedData",
                info.content_type
            )));
        }
        let ed: EnvelopedData = info
            .content
            .decode_as()
            .map_err(|e| bad(format!("not an EnvelopedData: {e}")))?;
        let eci = &ed.encrypted_content;
        if eci.content_type != OID_DATA {
            return Err(bad("encrypted content is not id-data"));
        }
        if eci.content_enc_alg.oid != OID_AES128_CBC {
            return Err(bad(format!(
                "content encryption {} is not aes128-CBC",
                eci.content_enc_alg.oid
            )));
        }
        let iv: OctetString = eci
            .content_enc_alg
            .parameters
            .as_ref()
            .ok_or_else(|| bad("aes128-CBC without its IV"))?
            .decode_as()
            .map_err(|e| bad(format!("bad IV: {e}")))?;
        let iv: [u8; 16] = iv
            .as_bytes()
            .try_into()
            .map_err(|_| bad("the IV is not 16 bytes"))?;
        let ciphertext = eci
            .encrypted_content
            .as_ref()
            .ok_or_else(|| bad("no encrypted content (detached content is not supported)"))?
            .as_bytes()
            .to_vec();
        if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
            return Err(bad("the encrypted content is not whole AES blocks"));
        }
        let mut recipients = Vec::new();
        for ri in ed.recip_infos.0.iter() {
            if let RecipientInfo::Ktri(k) = ri
                && k.key_enc_alg.oid == OID_RSA_ENCRYPTION
                && let RecipientIdentifier::IssuerAndSerialNumber(ias) = &k.rid
            {
                recipients.push((ias.clone(), k.enc_key.as_bytes().to_vec()));
            }
        }
        if recipients.is_empty() {
            return Err(bad(
                "no RSA key-transport recipient named by issuer and serial number",
            ));
        }
        Ok(Self {
            recipients,
            iv,
            ciphertext,
        })
    }

    /// The wrapped content key addressed to the certificate `cert_der`; an error when the
    /// envelope is for someone else (a lot encrypted for the AM, or another OCT).
    pub fn encrypted_key_for(&self, cert_der: &[u8]) -> Result<&[u8], SesamError> {
        let cert = Certificate::from_der(cert_der).map_err(|e| SesamError::Certificate {
            why: format!("not a DER X.509 certificate: {e}"),
        })?;
        let tbs = &cert.tbs_certificate;
        self.recipients
            .iter()
            .find(|(ias, _)| ias.issuer == tbs.issuer && ias.serial_number == tbs.serial_number)
            .map(|(_, key)| key.as_slice())
            .ok_or_else(|| {
                bad(format!(
                    "not addressed to our certificate (serial {}): encrypted for {} other recipient(s)",
                    hex(tbs.serial_number.as_bytes()),
                    self.recipients.len()
                ))
            })
    }

    /// Decrypt the content with the key the token unwrapped (`unwrapped`: the result of
    /// the RSA PKCS#1 v1.5 decryption of [`Envelope::encrypted_key_for`]). A failed unwrap
    /// or a key of the wrong size is replaced by a random key, so it fails like a bad
    /// content: one error either way.
    pub fn open<E>(&self, unwrapped: Result<Vec<u8>, E>) -> Result<Vec<u8>, SesamError> {
        let mut key = [0u8; 16];
        match unwrapped {
            Ok(k) if k.len() == 16 => key.copy_from_slice(&k),
            _ => OsRng.fill_bytes(&mut key),
        }
        let mut buf = self.ciphertext.clone();
        let plain_len = cbc::Decryptor::<aes::Aes128>::new(&key.into(), &self.iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map(<[u8]>::len);
        key.fill(0);
        match plain_len {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(_) => Err(SesamError::Unopenable),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
