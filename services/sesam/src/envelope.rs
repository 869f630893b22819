//! Streaming CMS EnvelopedData (RFC 5652), shaped exactly as the reference command of
//! PDT-CDC-063 §6.2.2 produces it:
//! `openssl cms -encrypt -binary -aes-128-cbc -outform der -in <lot> -out <lot>.pkcs7 <cert>.pem`.
//!
//! ```text
//! ContentInfo { id-envelopedData, [0] EnvelopedData {
//!   version 0,
//!   recipientInfos SET { KeyTransRecipientInfo { 0, IssuerAndSerialNumber,
//!                                                rsaEncryption NULL, encryptedKey } },
//!   encryptedContentInfo { id-data, aes128-CBC IV, [0] IMPLICIT ciphertext } } }
//! ```
//!
//! The RecipientInfo and the algorithm identifiers are built and encoded with the RustCrypto
//! `cms`/`der` types. The encrypted content is streamed: AES-128-CBC with PKCS#7 padding
//! always yields `(n / 16 + 1) * 16` bytes, so every enclosing definite length is known before
//! the first byte is encrypted and the DER headers are written first. Memory stays flat
//! whatever the lot's size.

use std::io::{Read, Write};

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, DecodePem, Encode, Header, Length, Tag, TagNumber};
use rand_core::{OsRng, RngCore};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::SesamError;

/// id-envelopedData.
pub const OID_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// id-data.
pub const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// rsaEncryption: RSAES-PKCS1-v1_5 key transport (the OpenSSL default; OAEP is not used until
/// the AM confirms it, digest §1.3).
pub const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// aes128-CBC.
pub const OID_AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");

/// Largest plaintext a DER length here can describe (der 0.7 lengths stop below 256 MiB); the
/// configured maximum lot size must stay under it.
pub const MAX_PLAINTEXT_BYTES: u64 = 250 * 1024 * 1024;

/// Plaintext bytes encrypted per write: a multiple of the AES block.
const CHUNK: usize = 64 * 1024;
const BLOCK: usize = 16;

/// The recipient of an envelope: who it is (IssuerAndSerialNumber) and its RSA public key.
#[derive(Clone, Debug)]
pub struct Recipient {
    rid: IssuerAndSerialNumber,
    key: RsaPublicKey,
}

impl Recipient {
    /// From a DER certificate. Only the identity and key are read here; whether the
    /// certificate may be used is [`crate::certs`]' business.
    pub fn from_der(der: &[u8]) -> Result<Self, SesamError> {
        let cert = Certificate::from_der(der).map_err(|e| SesamError::Certificate {
            why: format!("not a DER X.509 certificate: {e}"),
        })?;
        Self::from_cert(&cert)
    }

    /// From a PEM certificate (the form the reference command takes).
    pub fn from_pem(pem: &[u8]) -> Result<Self, SesamError> {
        let cert = Certificate::from_pem(pem).map_err(|e| SesamError::Certificate {
            why: format!("not a PEM X.509 certificate: {e}"),
        })?;
        Self::from_cert(&cert)
    }

    fn from_cert(cert: &Certificate) -> Result<Self, SesamError> {
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der()?;
        let key =
            RsaPublicKey::from_public_key_der(&spki).map_err(|e| SesamError::Certificate {
                why: format!("the key is not an RSA public key: {e}"),
            })?;
        Ok(Self {
            rid: IssuerAndSerialNumber {
                issuer: tbs.issuer.clone(),
                serial_number: tbs.serial_number.clone(),
            },
            key,
        })
    }
}

/// The DER of a PEM certificate (the form the reference command and the CLI take).
pub fn certificate_der_from_pem(pem: &[u8]) -> Result<Vec<u8>, SesamError> {
    Ok(Certificate::from_pem(pem)
        .map_err(|e| SesamError::Certificate {
            why: format!("not a PEM X.509 certificate: {e}"),
        })?
        .to_der()?)
}

/// Ciphertext length of AES-CBC with PKCS#7 padding: always at least one padding byte.
pub fn ciphertext_len(plain_len: u64) -> u64 {
    (plain_len / BLOCK as u64 + 1) * BLOCK as u64
}

/// Encrypt exactly `plain_len` bytes read from `plain` for `recipient`, writing the DER
/// ContentInfo to `out`. A fresh content key and IV are drawn from the OS CSPRNG for every
/// call. Returns the number of bytes written.
///
/// Fails with [`SesamError::LotChanged`] when `plain` yields more or fewer bytes than
/// announced; what was written to `out` is then garbage and must be discarded.
pub fn encrypt<R: Read, W: Write>(
    recipient: &Recipient,
    mut plain: R,
    plain_len: u64,
    mut out: W,
) -> Result<u64, SesamError> {
    if plain_len > MAX_PLAINTEXT_BYTES {
        return Err(SesamError::LotChanged {
            expected: MAX_PLAINTEXT_BYTES,
            actual: plain_len,
        });
    }
    let mut cek = [0u8; 16];
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut cek);
    OsRng.fill_bytes(&mut iv);

    let head = envelope_head(recipient, &cek, &iv, plain_len)?;
    let io = |e| SesamError::io("<envelope output>", e);
    out.write_all(&head).map_err(io)?;

    let mut enc = cbc::Encryptor::<aes::Aes128>::new(&cek.into(), &iv.into());
    // One spare block so the final padded block always fits behind a partial chunk.
    let mut buf = vec![0u8; CHUNK + BLOCK];
    let mut filled = 0usize;
    let mut total = 0u64;
    loop {
        let n = plain
            .read(&mut buf[filled..CHUNK])
            .map_err(|e| SesamError::io("<lot input>", e))?;
        if n == 0 {
            break;
        }
        filled += n;
        total += n as u64;
        if total > plain_len {
            return Err(SesamError::LotChanged {
                expected: plain_len,
                actual: total,
            });
        }
        if filled == CHUNK {
            encrypt_blocks(&mut enc, &mut buf[..CHUNK]);
            out.write_all(&buf[..CHUNK]).map_err(io)?;
            filled = 0;
        }
    }
    if total != plain_len {
        return Err(SesamError::LotChanged {
            expected: plain_len,
            actual: total,
        });
    }
    let full = filled / BLOCK * BLOCK;
    encrypt_blocks(&mut enc, &mut buf[..full]);
    out.write_all(&buf[..full]).map_err(io)?;
    let last = enc
        .encrypt_padded_mut::<Pkcs7>(&mut buf[full..full + BLOCK], filled - full)
        .map_err(|_| SesamError::Certificate {
            why: "internal: padding buffer too small".to_owned(),
        })?;
    out.write_all(last).map_err(io)?;
    out.flush().map_err(io)?;
    cek.fill(0);
    Ok(head.len() as u64 + ciphertext_len(plain_len))
}

fn encrypt_blocks(enc: &mut cbc::Encryptor<aes::Aes128>, data: &mut [u8]) {
    for block in data.chunks_exact_mut(BLOCK) {
        enc.encrypt_block_mut(GenericArray::from_mut_slice(block));
    }
}

/// Everything of the DER encoding that precedes the ciphertext.
fn envelope_head(
    recipient: &Recipient,
    cek: &[u8; 16],
    iv: &[u8; 16],
    plain_len: u64,
) -> Result<Vec<u8>, SesamError> {
    let enc_key = recipient.key.encrypt(&mut OsRng, Pkcs1v15Encrypt, cek)?;
    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(recipient.rid.clone()),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: OID_RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        enc_key: OctetString::new(enc_key)?,
    };
    let recip_infos = RecipientInfos::try_from(vec![RecipientInfo::Ktri(ktri)])?.to_der()?;
    let content_alg = AlgorithmIdentifierOwned {
        oid: OID_AES128_CBC,
        parameters: Some(Any::encode_from(&OctetString::new(iv.as_slice())?)?),
    }
    .to_der()?;
    let version = CmsVersion::V0.to_der()?;

    let ct_len = usize::try_from(ciphertext_len(plain_len))
        .map_err(|_| der::Error::from(der::ErrorKind::Overflow))?;
    let ct_len = Length::try_from(ct_len)?;
    let ct_header = Header::new(
        Tag::ContextSpecific {
            constructed: false,
            number: TagNumber::N0,
        },
        ct_len,
    )?
    .to_der()?;
    let data_oid = OID_DATA.to_der()?;
    let einfo_len = (encoded(&data_oid)? + encoded(&content_alg)? + encoded(&ct_header)? + ct_len)?;
    let einfo_header = Header::new(Tag::Sequence, einfo_len)?.to_der()?;
    let ed_len =
        (encoded(&version)? + encoded(&recip_infos)? + encoded(&einfo_header)? + einfo_len)?;
    let ed_header = Header::new(Tag::Sequence, ed_len)?.to_der()?;
    let explicit_len = (encoded(&ed_header)? + ed_len)?;
    let explicit_header = Header::new(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        },
        explicit_len,
    )?
    .to_der()?;
    let ed_oid = OID_ENVELOPED_DATA.to_der()?;
    let info_len = (encoded(&ed_oid)? + encoded(&explicit_header)? + explicit_len)?;
    let info_header = Header::new(Tag::Sequence, info_len)?.to_der()?;

    let mut head = Vec::with_capacity(1024);
    for part in [
        &info_header,
        &ed_oid,
        &explicit_header,
        &ed_header,
        &version,
        &recip_infos,
        &einfo_header,
        &data_oid,
        &content_alg,
        &ct_header,
    ] {
        head.extend_from_slice(part);
    }
    Ok(head)
}

fn encoded(bytes: &[u8]) -> der::Result<Length> {
    Length::try_from(bytes.len())
}
