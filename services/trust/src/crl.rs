//! Revocation from full and delta CRLs (EX_OPE_5050). IGC-Santé publishes both daily; webpki
//! refuses delta CRLs (`UnsupportedDeltaCrl`), so CRLs are parsed and checked here with
//! x509-parser, and only ever after their signature verified against a pinned CA.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use x509_parser::extensions::ParsedExtension;
use x509_parser::num_bigint::BigUint;
use x509_parser::oid_registry::{
    OID_X509_EXT_CRL_NUMBER, OID_X509_EXT_DELTA_CRL_INDICATOR, OID_X509_EXT_INVALIDITY_DATE,
    OID_X509_EXT_ISSUER, OID_X509_EXT_ISSUER_DISTRIBUTION_POINT, OID_X509_EXT_REASON_CODE,
};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::dn::Dn;
use crate::error::{Refusal, TrustError};
use crate::store::CaCert;

/// Largest CRL accepted (file, cache entry or download). IGC-Santé CRLs are far smaller; the
/// bound keeps a hostile or broken server from filling memory.
pub const MAX_CRL_BYTES: u64 = 32 * 1024 * 1024;

/// RFC 5280 reason code `removeFromCRL`: in a delta CRL, the certificate is no longer revoked.
const REMOVE_FROM_CRL: u8 = 8;

/// Full (complete) or delta CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlKind {
    Full,
    Delta,
}

impl CrlKind {
    fn as_str(self) -> &'static str {
        match self {
            CrlKind::Full => "full",
            CrlKind::Delta => "delta",
        }
    }
}

/// A CRL whose signature verified against a pinned CA, reduced to what status checks need.
#[derive(Debug)]
pub(crate) struct Crl {
    /// Pinned file name of the issuing CA.
    ca: String,
    /// Issuer DN, for messages.
    issuer: String,
    kind: CrlKind,
    number: Option<BigUint>,
    /// BaseCRLNumber of a delta CRL.
    base: Option<BigUint>,
    this_update: i64,
    next_update: Option<i64>,
    only_user_certs: bool,
    only_ca_certs: bool,
    /// Serial (big-endian, no leading zeros) → reason code.
    revoked: HashMap<Vec<u8>, Option<u8>>,
    der: Vec<u8>,
}

/// Decode DER or PEM (`X509 CRL`) bytes.
fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----BEGIN") {
        let block = pem::parse(bytes).map_err(|e| format!("bad PEM: {e}"))?;
        if block.tag() != "X509 CRL" {
            return Err(format!("PEM block is {:?}, expected X509 CRL", block.tag()));
        }
        Ok(block.contents().to_vec())
    } else {
        Ok(bytes.to_vec())
    }
}

/// A DER INTEGER (the BaseCRLNumber of a Delta CRL Indicator), at most 20 octets as RFC 5280
/// requires verifiers to handle, plus one for the sign.
fn der_uint(value: &[u8]) -> Option<BigUint> {
    let [0x02, len, content @ ..] = value else {
        return None;
    };
    if usize::from(*len) != content.len()
        || content.is_empty()
        || content.len() > 21
        || content[0] & 0x80 != 0
    {
        return None;
    }
    Some(BigUint::from_bytes_be(content))
}

/// Parse `bytes` as a CRL, find its issuer among `cas` and verify its signature.
pub(crate) fn parse_and_verify(
    bytes: &[u8],
    origin: &str,
    cas: &[CaCert],
) -> Result<Crl, TrustError> {
    let err = |why: String| TrustError::Crl {
        origin: origin.to_owned(),
        why,
    };
    if bytes.len() as u64 > MAX_CRL_BYTES {
        return Err(err(format!("larger than {MAX_CRL_BYTES} bytes")));
    }
    let der = crl_der(bytes).map_err(err)?;
    let (rest, crl) =
        x509_parser::parse_x509_crl(&der).map_err(|e| err(format!("not a DER CRL: {e}")))?;
    if !rest.is_empty() {
        return Err(err(format!("{} bytes of trailing data", rest.len())));
    }
    let issuer_dn = Dn::from_x509(crl.issuer())?;
    let issuer = issuer_dn.to_string();
    let ca =
        find_signer(&crl, &issuer_dn, cas).map_err(|why| err(format!("issuer {issuer}: {why}")))?;

    let mut base = None;
    let mut only_user_certs = false;
    let mut only_ca_certs = false;
    for ext in crl.extensions() {
        if ext.oid == OID_X509_EXT_DELTA_CRL_INDICATOR {
            base = Some(
                der_uint(ext.value)
                    .ok_or_else(|| err("malformed Delta CRL Indicator".to_owned()))?,
            );
        } else if ext.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT {
            let ParsedExtension::IssuingDistributionPoint(idp) = ext.parsed_extension() else {
                return Err(err("malformed Issuing Distribution Point".to_owned()));
            };
            // Partitioned-by-reason and indirect CRLs would need more bookkeeping than IGC-Santé
            // ever requires; refusing them is safe (status becomes unknown).
            if idp.indirect_crl
                || idp.only_some_reasons.is_some()
                || idp.only_contains_attribute_certs
            {
                return Err(err(
                    "indirect or reason-partitioned CRLs are not supported".to_owned()
                ));
            }
            only_user_certs = idp.only_contains_user_certs;
            only_ca_certs = idp.only_contains_ca_certs;
        } else if ext.critical && ext.oid != OID_X509_EXT_CRL_NUMBER {
            return Err(err(format!("unsupported critical extension {}", ext.oid)));
        }
    }

    let mut revoked = HashMap::new();
    for entry in crl.iter_revoked_certificates() {
        for ext in entry.extensions() {
            if ext.oid == OID_X509_EXT_ISSUER {
                return Err(err(
                    "indirect CRL entries (certificateIssuer) are not supported".to_owned(),
                ));
            }
            if ext.critical
                && ext.oid != OID_X509_EXT_REASON_CODE
                && ext.oid != OID_X509_EXT_INVALIDITY_DATE
            {
                return Err(err(format!(
                    "unsupported critical entry extension {}",
                    ext.oid
                )));
            }
        }
        revoked.insert(
            entry.serial().to_bytes_be(),
            entry.reason_code().map(|(_, r)| r.0),
        );
    }

    Ok(Crl {
        ca,
        issuer,
        kind: if base.is_some() {
            CrlKind::Delta
        } else {
            CrlKind::Full
        },
        number: crl.crl_number().cloned(),
        base,
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        only_user_certs,
        only_ca_certs,
        revoked,
        der,
    })
}

/// The pinned CA whose name matches the CRL issuer and whose key verifies the signature.
fn find_signer(
    crl: &CertificateRevocationList<'_>,
    issuer: &Dn,
    cas: &[CaCert],
) -> Result<String, String> {
    let candidates: Vec<&CaCert> = cas.iter().filter(|ca| ca.subject == *issuer).collect();
    if candidates.is_empty() {
        return Err("not a CA of the local store".to_owned());
    }
    for ca in &candidates {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&ca.der) else {
            continue;
        };
        if let Ok(Some(ku)) = cert.key_usage()
            && !ku.value.crl_sign()
        {
            continue;
        }
        if crl.verify_signature(cert.public_key()).is_ok() {
            return Ok(ca.name.clone());
        }
    }
    let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    Err(format!(
        "signature does not verify with the key of {} (or it lacks cRLSign)",
        names.join(", ")
    ))
}

/// The latest full and delta CRL of one CA.
#[derive(Clone, Debug, Default)]
struct CaCrls {
    full: Option<Arc<Crl>>,
    delta: Option<Arc<Crl>>,
}

/// What revocation checking concluded for one certificate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Good,
    Revoked(Refusal),
    Unknown(Refusal),
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "00".to_owned();
    }
    crate::anchors::hex(bytes)
}

fn time_str(t: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(t).map_or_else(|_| t.to_string(), |t| t.to_string())
}

impl CaCrls {
    /// Status of `serial` (big-endian, no leading zeros) issued by this CA, at unix time `now`.
    fn status(&self, ca: &str, serial: &[u8], is_ca: bool, now: i64) -> Status {
        let unknown = |why: String| Status::Unknown(Refusal::RevocationUnknown { why });
        let Some(full) = &self.full else {
            return unknown(format!("no CRL of {ca} in the cache"));
        };
        if full.this_update > now {
            return unknown(format!(
                "the CRL of {} is not valid before {}",
                full.issuer,
                time_str(full.this_update)
            ));
        }
        if (is_ca && full.only_user_certs) || (!is_ca && full.only_ca_certs) {
            return unknown(format!(
                "the CRL of {} does not cover this kind of certificate",
                full.issuer
            ));
        }
        if let Some(expired) = stale(full, now) {
            return Status::Unknown(expired);
        }
        // RFC 5280 §5.2.4: a delta applies to a complete CRL numbered at least its BaseCRLNumber;
        // one not newer than the complete CRL adds nothing.
        let delta = self
            .delta
            .as_ref()
            .filter(|d| match (&d.base, &d.number, &full.number) {
                (Some(base), Some(number), Some(full_number)) => {
                    base <= full_number && number > full_number
                }
                _ => false,
            });
        if let Some(delta) = delta {
            if let Some(expired) = stale(delta, now) {
                return Status::Unknown(expired);
            }
            match delta.revoked.get(serial) {
                Some(Some(REMOVE_FROM_CRL)) => return Status::Good,
                Some(_) => {
                    return Status::Revoked(Refusal::RevokedDelta {
                        issuer: delta.issuer.clone(),
                        serial: hex(serial),
                    });
                }
                None => {}
            }
        }
        match full.revoked.get(serial) {
            Some(Some(REMOVE_FROM_CRL)) | None => Status::Good,
            Some(_) => Status::Revoked(Refusal::RevokedFull {
                issuer: full.issuer.clone(),
                serial: hex(serial),
            }),
        }
    }
}

fn stale(crl: &Crl, now: i64) -> Option<Refusal> {
    match crl.next_update {
        Some(next) if next >= now => None,
        next => Some(Refusal::CrlExpired {
            issuer: crl.issuer.clone(),
            kind: crl.kind.as_str(),
            next_update: next.map_or_else(|| "absent".to_owned(), time_str),
        }),
    }
}

/// What installing a CRL did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlUpdate {
    /// Pinned file name of the issuing CA.
    pub ca: String,
    pub kind: CrlKind,
    /// CRL number in decimal, when present.
    pub number: Option<String>,
    /// False when the same CRL was already installed.
    pub changed: bool,
}

/// The verified CRLs, in memory and in the cache directory.
#[derive(Debug)]
pub(crate) struct CrlStore {
    dir: PathBuf,
    crls: RwLock<HashMap<String, CaCrls>>,
}

impl CrlStore {
    /// Load every `*.crl` of the cache directory (creating it if needed). A cache entry that no
    /// longer verifies (e.g. its CA was unpinned) is skipped with a warning.
    pub(crate) fn open(dir: &Path, cas: &[CaCert]) -> Result<Self, TrustError> {
        fs::create_dir_all(dir).map_err(|e| TrustError::io(dir, e))?;
        let store = CrlStore {
            dir: dir.to_owned(),
            crls: RwLock::new(HashMap::new()),
        };
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| TrustError::io(dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crl"))
            .collect();
        paths.sort();
        for path in paths {
            let loaded = crate::anchors::read_limited(&path, MAX_CRL_BYTES)
                .and_then(|bytes| parse_and_verify(&bytes, &path.display().to_string(), cas));
            match loaded {
                Ok(crl) => {
                    store.put(crl);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cached CRL skipped"),
            }
        }
        Ok(store)
    }

    /// Keep `crl` in memory if it is not older than the one held; returns whether it replaced it.
    fn put(&self, crl: Crl) -> bool {
        let mut map = self.crls.write().unwrap_or_else(PoisonError::into_inner);
        let slot = map.entry(crl.ca.clone()).or_default();
        let held = match crl.kind {
            CrlKind::Full => &mut slot.full,
            CrlKind::Delta => &mut slot.delta,
        };
        if held
            .as_ref()
            .is_some_and(|h| h.der == crl.der || is_older(&crl, h))
        {
            return false;
        }
        *held = Some(Arc::new(crl));
        true
    }

    /// Verify `bytes` and, if newer than the held CRL, write it to the cache (atomically) and
    /// use it. A CRL older than the held one is an error: a rollback could hide a revocation.
    pub(crate) fn install(
        &self,
        bytes: &[u8],
        origin: &str,
        cas: &[CaCert],
    ) -> Result<CrlUpdate, TrustError> {
        let crl = parse_and_verify(bytes, origin, cas)?;
        let mut update = CrlUpdate {
            ca: crl.ca.clone(),
            kind: crl.kind,
            number: crl.number.as_ref().map(ToString::to_string),
            changed: false,
        };
        {
            let map = self.crls.read().unwrap_or_else(PoisonError::into_inner);
            let held = map.get(&crl.ca).and_then(|s| match crl.kind {
                CrlKind::Full => s.full.clone(),
                CrlKind::Delta => s.delta.clone(),
            });
            if let Some(held) = held {
                if held.der == crl.der {
                    return Ok(update);
                }
                if is_older(&crl, &held) {
                    return Err(TrustError::Crl {
                        origin: origin.to_owned(),
                        why: format!(
                            "older than the cached {} CRL of {}; not installed",
                            crl.kind.as_str(),
                            crl.issuer
                        ),
                    });
                }
            }
        }
        let path = self
            .dir
            .join(format!("{}.{}.crl", crl.ca, crl.kind.as_str()));
        write_atomically(&path, &crl.der)?;
        update.changed = self.put(crl);
        tracing::info!(ca = %update.ca, kind = update.kind.as_str(), number = ?update.number, origin, "CRL installed");
        Ok(update)
    }

    /// Revocation status of a certificate issued by the CA named `ca`.
    pub(crate) fn status(&self, ca: &str, serial: &[u8], is_ca: bool, now: i64) -> Status {
        let map = self.crls.read().unwrap_or_else(PoisonError::into_inner);
        map.get(ca)
            .cloned()
            .unwrap_or_default()
            .status(ca, serial, is_ca, now)
    }
}

fn is_older(new: &Crl, held: &Crl) -> bool {
    match (&new.number, &held.number) {
        (Some(n), Some(h)) => n < h,
        _ => new.this_update < held.this_update,
    }
}

/// temp file + fsync + rename + fsync of the directory: a crash leaves the old CRL or the new
/// one, never a torn file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut file = fs::File::create(&tmp).map_err(|e| TrustError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| TrustError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| TrustError::io(path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrustError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crl(
        kind: CrlKind,
        number: u64,
        base: Option<u64>,
        entries: &[(u8, Option<u8>)],
    ) -> Arc<Crl> {
        Arc::new(Crl {
            ca: "ca".to_owned(),
            issuer: "CN=CA".to_owned(),
            kind,
            number: Some(BigUint::from(number)),
            base: base.map(BigUint::from),
            this_update: 100,
            next_update: Some(200),
            only_user_certs: false,
            only_ca_certs: false,
            revoked: entries.iter().map(|(s, r)| (vec![*s], *r)).collect(),
            der: vec![kind as u8, u8::try_from(number).unwrap_or(0)],
        })
    }

    #[test]
    fn ex_ope_5050_delta_remove_from_crl_unrevokes_a_held_certificate() {
        let set = CaCrls {
            full: Some(crl(CrlKind::Full, 10, None, &[(1, Some(6)), (2, Some(1))])),
            delta: Some(crl(
                CrlKind::Delta,
                11,
                Some(10),
                &[(1, Some(REMOVE_FROM_CRL)), (3, Some(1))],
            )),
        };
        assert_eq!(set.status("ca", &[1], false, 150), Status::Good);
        assert!(matches!(
            set.status("ca", &[2], false, 150),
            Status::Revoked(Refusal::RevokedFull { .. })
        ));
        assert!(matches!(
            set.status("ca", &[3], false, 150),
            Status::Revoked(Refusal::RevokedDelta { .. })
        ));
        assert_eq!(set.status("ca", &[4], false, 150), Status::Good);
    }

    #[test]
    fn ex_ope_5050_delta_not_based_on_the_full_crl_is_ignored() {
        // Base 12 > full 10: the delta belongs to a complete CRL we do not have.
        let set = CaCrls {
            full: Some(crl(CrlKind::Full, 10, None, &[])),
            delta: Some(crl(CrlKind::Delta, 13, Some(12), &[(3, Some(1))])),
        };
        assert_eq!(set.status("ca", &[3], false, 150), Status::Good);
        // A delta older than the complete CRL adds nothing either.
        let set = CaCrls {
            delta: Some(crl(CrlKind::Delta, 9, Some(8), &[(3, Some(1))])),
            ..set
        };
        assert_eq!(set.status("ca", &[3], false, 150), Status::Good);
    }

    #[test]
    fn ex_ope_5050_missing_or_stale_crl_is_unknown() {
        assert!(matches!(
            CaCrls::default().status("ca", &[1], false, 150),
            Status::Unknown(Refusal::RevocationUnknown { .. })
        ));
        let set = CaCrls {
            full: Some(crl(CrlKind::Full, 10, None, &[])),
            delta: None,
        };
        assert!(matches!(
            set.status("ca", &[1], false, 201),
            Status::Unknown(Refusal::CrlExpired { kind: "full", .. })
        ));
        assert!(matches!(
            set.status("ca", &[1], false, 50),
            Status::Unknown(Refusal::RevocationUnknown { .. })
        ));
        let mut delta = crl(CrlKind::Delta, 11, Some(10), &[]);
        Arc::get_mut(&mut delta).expect("unique").next_update = Some(120);
        let set = CaCrls {
            delta: Some(delta),
            ..set
        };
        assert!(matches!(
            set.status("ca", &[1], false, 150),
            Status::Unknown(Refusal::CrlExpired { kind: "delta", .. })
        ));
    }

    #[test]
    fn delta_crl_indicator_integer() {
        assert_eq!(der_uint(&[0x02, 0x01, 0x64]), Some(BigUint::from(100u32)));
        assert_eq!(der_uint(&[0x02, 0x01, 0x80]), None, "negative");
        assert_eq!(der_uint(&[0x02, 0x02, 0x01]), None, "short");
        assert_eq!(der_uint(&[0x04, 0x01, 0x01]), None, "not an INTEGER");
    }
}
