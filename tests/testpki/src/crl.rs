//! CRLs are built by hand: rcgen 0.14 cannot emit the Delta CRL Indicator
//! (2.5.29.27) nor FreshestCRL (2.5.29.46), and full and delta CRLs must
//! share one encoder so that their AKIs match (RFC 5280 §5.2.4).

use rcgen::{KeyPair, SigningKey};
use time::OffsetDateTime;

use crate::der;
use crate::{TestPkiError, cert};

/// Which kind of CRL, with its CRL number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlKind {
    /// A complete CRL.
    Full { number: u64 },
    /// A delta CRL listing changes since the complete CRL numbered `base`.
    Delta { number: u64, base: u64 },
}

impl CrlKind {
    pub fn number(self) -> u64 {
        match self {
            CrlKind::Full { number } | CrlKind::Delta { number, .. } => number,
        }
    }
}

/// CRL entry reason codes (RFC 5280 §5.3.1) used by the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationReason {
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

impl RevocationReason {
    fn code(self) -> u8 {
        match self {
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
        }
    }
}

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Big-endian serial number, as in [`crate::IssuedCert::serial`].
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<RevocationReason>,
}

/// A signed CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crl {
    issuer: String,
    kind: CrlKind,
    der: Vec<u8>,
}

impl Crl {
    /// Name of the issuing CA.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn kind(&self) -> CrlKind {
        self.kind
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("X509 CRL", self.der.clone()))
    }
}

pub(crate) struct CrlInput<'a> {
    pub issuer: &'a str,
    pub issuer_cert_der: &'a [u8],
    pub signer: &'a KeyPair,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub revoked: &'a [Revocation],
    pub kind: CrlKind,
    pub freshest_crl_uri: Option<&'a str>,
}

const OID_AKI: &[u64] = &[2, 5, 29, 35];
const OID_CRL_NUMBER: &[u64] = &[2, 5, 29, 20];
const OID_DELTA_CRL_INDICATOR: &[u64] = &[2, 5, 29, 27];
const OID_FRESHEST_CRL: &[u64] = &[2, 5, 29, 46];
const OID_REASON_CODE: &[u64] = &[2, 5, 29, 21];

pub(crate) fn build(input: &CrlInput<'_>) -> Result<Crl, TestPkiError> {
    // The issuer's subject and signature algorithm are copied from its
    // certificate so the CRL matches it byte for byte.
    let cert_parts = der::sequence_elements(input.issuer_cert_der)?;
    let tbs = cert_parts
        .first()
        .ok_or(TestPkiError::Der("empty certificate"))?;
    let fields = der::sequence_elements(tbs)?;
    let (Some(alg), Some(subject)) = (fields.get(2), fields.get(5)) else {
        return Err(TestPkiError::Der("unexpected TBSCertificate layout"));
    };

    let entries: Vec<Vec<u8>> = input
        .revoked
        .iter()
        .map(|r| {
            let serial = der::uint(&r.serial);
            let at = der::time(r.revoked_at);
            match r.reason {
                Some(reason) => {
                    let ext = der::extension(
                        OID_REASON_CODE,
                        false,
                        &der::tlv(der::TAG_ENUMERATED, &[reason.code()]),
                    );
                    der::seq(&[&serial, &at, &der::seq(&[&ext])])
                }
                None => der::seq(&[&serial, &at]),
            }
        })
        .collect();

    let aki = der::seq(&[&der::tlv(0x80, &cert::key_id(input.signer))]);
    let mut exts = vec![
        der::extension(OID_AKI, false, &aki),
        der::extension(OID_CRL_NUMBER, false, &der::uint_u64(input.kind.number())),
    ];
    if let CrlKind::Delta { base, .. } = input.kind {
        // RFC 5280 §5.2.4: the indicator MUST be critical.
        exts.push(der::extension(
            OID_DELTA_CRL_INDICATOR,
            true,
            &der::uint_u64(base),
        ));
    }
    if let Some(uri) = input.freshest_crl_uri {
        exts.push(der::extension(
            OID_FRESHEST_CRL,
            false,
            &cert::distribution_points(&[uri]),
        ));
    }
    let exts: Vec<u8> = der::seq(&exts.iter().map(Vec::as_slice).collect::<Vec<_>>());

    let version = der::uint_u64(1);
    let this_update = der::time(input.this_update);
    let next_update = der::time(input.next_update);
    let revoked = der::seq(&entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let exts = der::tlv(0xa0, &exts);
    let mut tbs_parts: Vec<&[u8]> = vec![&version, alg, subject, &this_update, &next_update];
    // RFC 5280 §5.1.2.6: absent, not empty, when nothing is revoked.
    if !entries.is_empty() {
        tbs_parts.push(&revoked);
    }
    tbs_parts.push(&exts);
    let tbs = der::seq(&tbs_parts);
    let sig = input.signer.sign(&tbs)?;
    Ok(Crl {
        issuer: input.issuer.to_owned(),
        kind: input.kind,
        der: der::seq(&[&tbs, alg, &der::bit_string_bytes(&sig)]),
    })
}
