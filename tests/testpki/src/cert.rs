//! Certificate assembly: rcgen writes validity and extensions, then the
//! issuer and subject names are replaced by our own encodings (see `dn`) and
//! the TBSCertificate is signed again with the issuer key.

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, PublicKeyData, SanType, SerialNumber,
    SigningKey,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::TestPkiError;
use crate::der;

/// KeyUsage bits (RFC 5280 §4.2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyUsageBit {
    DigitalSignature,
    /// Also called contentCommitment.
    NonRepudiation,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
}

impl KeyUsageBit {
    fn mask(self) -> u8 {
        match self {
            KeyUsageBit::DigitalSignature => 0x80,
            KeyUsageBit::NonRepudiation => 0x40,
            KeyUsageBit::KeyEncipherment => 0x20,
            KeyUsageBit::DataEncipherment => 0x10,
            KeyUsageBit::KeyAgreement => 0x08,
            KeyUsageBit::KeyCertSign => 0x04,
            KeyUsageBit::CrlSign => 0x02,
        }
    }
}

pub(crate) enum Role {
    Leaf,
    /// `path_len: None` = unconstrained.
    Ca {
        path_len: Option<u8>,
    },
}

/// Everything that varies between the certificates of the test PKI.
pub(crate) struct CertInput<'a> {
    pub serial: &'a [u8],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub subject_der: &'a [u8],
    pub subject_key: &'a KeyPair,
    /// Issuer name DER and key; `None` for a self-signed certificate.
    pub issuer: Option<(&'a [u8], &'a KeyPair)>,
    pub role: Role,
    pub key_usage: &'a [KeyUsageBit],
    pub key_usage_critical: bool,
    pub extended_key_usage: &'a [ExtendedKeyUsagePurpose],
    pub subject_alt_names: &'a [SanType],
    pub crl_uris: &'a [String],
    pub freshest_crl_uri: Option<&'a str>,
}

const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_FRESHEST_CRL: &[u64] = &[2, 5, 29, 46];

/// SHA-256 of the SPKI truncated to 20 bytes: the method rcgen uses for
/// SKIs and AKIs, so CRL AKIs match the certificates'.
pub(crate) fn key_id(key: &KeyPair) -> Vec<u8> {
    Sha256::digest(key.subject_public_key_info())[..20].to_vec()
}

pub(crate) fn key_usage_value(bits: &[KeyUsageBit]) -> Vec<u8> {
    let byte = bits.iter().fold(0u8, |acc, b| acc | b.mask());
    if byte == 0 {
        der::tlv(der::TAG_BIT_STRING, &[0])
    } else {
        let unused = u8::try_from(byte.trailing_zeros()).unwrap_or_default();
        der::tlv(der::TAG_BIT_STRING, &[unused, byte])
    }
}

/// `CRLDistributionPoints` syntax with one distribution point of URIs;
/// FreshestCRL (RFC 5280 §4.2.1.15) shares it.
pub(crate) fn distribution_points(uris: &[&str]) -> Vec<u8> {
    let names: Vec<u8> = uris
        .iter()
        .flat_map(|u| der::tlv(0x86, u.as_bytes()))
        .collect();
    // DistributionPoint { distributionPoint [0] { fullName [0] GeneralNames } }
    let dp = der::seq(&[&der::tlv(0xa0, &der::tlv(0xa0, &names))]);
    der::seq(&[&dp])
}

pub(crate) fn build(input: &CertInput<'_>) -> Result<Vec<u8>, TestPkiError> {
    let mut params = CertificateParams::default();
    params.not_before = input.not_before;
    params.not_after = input.not_after;
    params.serial_number = Some(SerialNumber::from_slice(input.serial));
    // Placeholder, replaced below; non-empty so rcgen keeps the SAN non-critical.
    params
        .distinguished_name
        .push(DnType::CommonName, "placeholder");
    params.is_ca = match input.role {
        Role::Ca {
            path_len: Some(len),
        } => IsCa::Ca(BasicConstraints::Constrained(len)),
        Role::Ca { path_len: None } => IsCa::Ca(BasicConstraints::Unconstrained),
        Role::Leaf => IsCa::ExplicitNoCa,
    };
    params.extended_key_usages = input.extended_key_usage.to_vec();
    params.subject_alt_names = input.subject_alt_names.to_vec();
    if !input.crl_uris.is_empty() {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: input.crl_uris.to_vec(),
        }];
    }
    params.use_authority_key_identifier_extension = input.issuer.is_some();
    // rcgen always marks KeyUsage critical; the SESAM-Vitale variants need
    // a non-critical one, so KeyUsage is always written here.
    if !input.key_usage.is_empty() {
        let mut ku =
            CustomExtension::from_oid_content(OID_KEY_USAGE, key_usage_value(input.key_usage));
        ku.set_criticality(input.key_usage_critical);
        params.custom_extensions.push(ku);
    }
    if let Some(uri) = input.freshest_crl_uri {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OID_FRESHEST_CRL,
                distribution_points(&[uri]),
            ));
    }

    let draft = match input.issuer {
        None => params.self_signed(input.subject_key)?,
        Some((_, issuer_key)) => params.signed_by(
            input.subject_key,
            &Issuer::new(CertificateParams::default(), issuer_key),
        )?,
    };

    let parts = der::sequence_elements(draft.der())?;
    let [tbs, alg, _sig] = parts.as_slice() else {
        return Err(TestPkiError::Der("certificate is not tbs+alg+sig"));
    };
    let mut fields = der::sequence_elements(tbs)?;
    // [0] version, serial, signature, issuer, validity, subject, spki, [3] exts
    if fields.len() < 7 || fields[0].first() != Some(&0xa0) {
        return Err(TestPkiError::Der("unexpected TBSCertificate layout"));
    }
    let (issuer_name, signer) = input
        .issuer
        .unwrap_or((input.subject_der, input.subject_key));
    fields[3] = issuer_name;
    fields[5] = input.subject_der;
    let tbs = der::seq(&fields);
    let sig = signer.sign(&tbs)?;
    Ok(der::seq(&[&tbs, alg, &der::bit_string_bytes(&sig)]))
}
