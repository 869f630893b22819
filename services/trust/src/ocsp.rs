//! OCSP client (RFC 6960) for EX_OPE_5050: ANS runs an OCSP service beside its daily CRLs.
//!
//! The request carries one SHA-1 CertID (RFC 5019 §2.1.1: what every responder matches,
//! `openssl ocsp` included) and a 16-byte nonce. It is POSTed as `application/ocsp-request` over
//! plain HTTP: the answer is only believed after
//!
//! - its signature verified with the key of the issuing CA itself, or of a delegated responder
//!   certificate the response carries, issued (and signed) by that CA, valid now, with EKU
//!   id-kp-OCSPSigning (RFC 6960 §4.2.2.2);
//! - the nonce came back unchanged;
//! - the SingleResponse names our CertID, and `thisUpdate ≤ now + skew ≤ nextUpdate + 2·skew`.
//!
//! Anything else is an *unknown* status, which the profile's `unknown_status` policy decides.
//! Good and revoked answers are cached until their nextUpdate.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use der::asn1::{Null, OctetString};
use der::{Decode, Encode, Reader, SliceReader};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::rand::SecureRandom;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, Request, TbsRequest,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;

use crate::crl::Status;
use crate::error::Refusal;

/// Largest OCSP response read. One SingleResponse plus a responder certificate is a few KiB.
pub const MAX_OCSP_RESPONSE_BYTES: usize = 64 * 1024;
/// Clock difference tolerated between the appliance and the responder.
pub const OCSP_CLOCK_SKEW: Duration = Duration::from_mins(5);
/// Largest number of cached OCSP answers; beyond it expired ones are dropped, then all.
const MAX_CACHE_ENTRIES: usize = 10_000;
/// A response without nextUpdate is accepted only if produced this recently, and not cached.
const MAX_AGE_WITHOUT_NEXT_UPDATE: i64 = 3600;

const ID_SHA1: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_PKIX_OCSP_BASIC: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const ID_PKIX_OCSP_NONCE: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// The OCSP URL of a certificate's Authority Information Access extension, if any (`http://`).
pub(crate) fn aia_ocsp_url(cert: &X509Certificate<'_>) -> Option<String> {
    cert.extensions().iter().find_map(|ext| {
        let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() else {
            return None;
        };
        aia.accessdescs
            .iter()
            .find_map(|ad| match &ad.access_location {
                GeneralName::URI(uri)
                    if ad.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                        && uri.starts_with("http://") =>
                {
                    Some((*uri).to_owned())
                }
                _ => None,
            })
    })
}

/// Check an OCSP URL from the configuration.
pub(crate) fn check_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a valid URL"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "{url:?}: only http:// OCSP URLs are supported (responses are signed)"
        ));
    }
    Ok(uri)
}

/// A cached good or revoked answer.
#[derive(Clone, Debug)]
struct Cached {
    status: CachedStatus,
    next_update: i64,
}

#[derive(Clone, Debug)]
enum CachedStatus {
    Good,
    Revoked(Refusal),
}

/// The OCSP client and its response cache, keyed by (issuing CA, serial).
#[derive(Debug)]
pub(crate) struct OcspClient {
    client: Client<HttpConnector, Full<Bytes>>,
    cache: RwLock<HashMap<(String, Vec<u8>), Cached>>,
}

/// What the status of one certificate is asked about.
pub(crate) struct Query<'a> {
    /// Pinned file name of the issuing CA (cache key, messages).
    pub(crate) ca_name: &'a str,
    /// DER of the issuing CA.
    pub(crate) issuer_der: &'a [u8],
    /// Serial of the certificate, big-endian without leading zeros.
    pub(crate) serial: &'a [u8],
    pub(crate) url: &'a str,
    pub(crate) timeout: Duration,
}

impl OcspClient {
    pub(crate) fn new() -> Self {
        OcspClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// A cached answer still valid at `now`, if any.
    pub(crate) fn cached(&self, ca_name: &str, serial: &[u8], now: i64) -> Option<Status> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let hit = cache.get(&(ca_name.to_owned(), serial.to_vec()))?;
        (hit.next_update >= now).then(|| match &hit.status {
            CachedStatus::Good => Status::Good,
            CachedStatus::Revoked(r) => Status::Revoked(r.clone()),
        })
    }

    /// Status from the cache, or asked from the responder. Never an error: whatever goes wrong
    /// is an unknown status carrying why.
    pub(crate) async fn status(&self, q: &Query<'_>, now: i64) -> Status {
        if let Some(hit) = self.cached(q.ca_name, q.serial, now) {
            return hit;
        }
        match self.ask(q, now).await {
            Ok(status) => status,
            Err(why) => {
                tracing::warn!(ca = q.ca_name, url = q.url, why = %why, "OCSP status unknown");
                Status::Unknown(Refusal::RevocationUnknown {
                    why: format!("OCSP {}: {why}", q.url),
                })
            }
        }
    }

    async fn ask(&self, q: &Query<'_>, now: i64) -> Result<Status, String> {
        let uri = check_url(q.url)?;
        let (_, issuer) = x509_parser::parse_x509_certificate(q.issuer_der)
            .map_err(|e| format!("issuer certificate: {e}"))?;
        let cert_id = sha1_cert_id(&issuer, q.serial)?;
        let mut nonce = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for the nonce".to_owned())?;
        let nonce_ext = Extension {
            extn_id: ID_PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new(
                OctetString::new(nonce.to_vec())
                    .and_then(|n| n.to_der())
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        };
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: x509_ocsp::Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: cert_id.clone(),
                    single_request_extensions: None,
                }],
                request_extensions: Some(vec![nonce_ext.clone()]),
            },
            optional_signature: None,
        };
        let body = request.to_der().map_err(|e| format!("request: {e}"))?;
        let http = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/ocsp-request")
            .header(hyper::header::ACCEPT, "application/ocsp-response")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let download = async {
            let response = self
                .client
                .request(http)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if response.status() != hyper::StatusCode::OK {
                return Err(format!("HTTP status {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_OCSP_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("body: {e} (limit {MAX_OCSP_RESPONSE_BYTES} bytes)"))?;
            Ok(body.to_bytes())
        };
        let bytes = tokio::time::timeout(q.timeout, download)
            .await
            .map_err(|_| format!("no complete answer within {:?}", q.timeout))??;
        let (status, next_update) = verify_response(&bytes, &issuer, &cert_id, &nonce_ext, now)?;
        if let Some(next_update) = next_update {
            let cached = match &status {
                Status::Good => Some(CachedStatus::Good),
                Status::Revoked(r) => Some(CachedStatus::Revoked(r.clone())),
                Status::Unknown(_) => None,
            };
            if let Some(status) = cached {
                self.remember(q, status, next_update, now);
            }
        }
        Ok(status)
    }

    fn remember(&self, q: &Query<'_>, status: CachedStatus, next_update: i64, now: i64) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, c| c.next_update >= now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            (q.ca_name.to_owned(), q.serial.to_vec()),
            Cached {
                status,
                next_update,
            },
        );
    }
}

/// CertID with SHA-1 over the issuer's name and the BIT STRING contents of its public key.
fn sha1_cert_id(issuer: &X509Certificate<'_>, serial: &[u8]) -> Result<CertId, String> {
    let sha1 = |data: &[u8]| {
        OctetString::new(
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
                .as_ref()
                .to_vec(),
        )
        .map_err(|e| e.to_string())
    };
    let serial = if serial.first().is_some_and(|b| b & 0x80 != 0) {
        [&[0u8][..], serial].concat()
    } else if serial.is_empty() {
        vec![0]
    } else {
        serial.to_vec()
    };
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: sha1(issuer.subject().as_raw())?,
        issuer_key_hash: sha1(&issuer.public_key().subject_public_key.data)?,
        serial_number: SerialNumber::new(&serial).map_err(|e| format!("serial: {e}"))?,
    })
}

fn unix(t: &OcspGeneralizedTime) -> i64 {
    i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

fn time_str(t: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(t).map_or_else(|_| t.to_string(), |t| t.to_string())
}

/// Verify an OCSP response for `cert_id` and return the status and the nextUpdate.
fn verify_response(
    bytes: &[u8],
    issuer: &X509Certificate<'_>,
    cert_id: &CertId,
    nonce: &Extension,
    now: i64,
) -> Result<(Status, Option<i64>), String> {
    let response =
        OcspResponse::from_der(bytes).map_err(|e| format!("not an OCSP response: {e}"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!("responder answered {:?}", response.response_status));
    }
    let rb = response
        .response_bytes
        .ok_or("successful response without responseBytes")?;
    if rb.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "response type {} is not id-pkix-ocsp-basic",
            rb.response_type
        ));
    }
    let raw = rb.response.as_bytes();
    let basic =
        BasicOcspResponse::from_der(raw).map_err(|e| format!("bad BasicOCSPResponse: {e}"))?;
    verify_signer(raw, &basic, issuer, now)?;

    let data = &basic.tbs_response_data;
    let echoed = data
        .response_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE);
    if echoed.map(|e| &e.extn_value) != Some(&nonce.extn_value) {
        return Err("the responder did not echo our nonce (replayed or cached answer)".to_owned());
    }
    let single = data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.hash_algorithm.oid == cert_id.hash_algorithm.oid
                && r.cert_id.issuer_name_hash == cert_id.issuer_name_hash
                && r.cert_id.issuer_key_hash == cert_id.issuer_key_hash
                && r.cert_id.serial_number == cert_id.serial_number
        })
        .ok_or("no SingleResponse for the certificate asked about")?;
    let skew = i64::try_from(OCSP_CLOCK_SKEW.as_secs()).unwrap_or(0);
    let this_update = unix(&single.this_update);
    if this_update > now + skew {
        return Err(format!(
            "thisUpdate {} is in the future",
            time_str(this_update)
        ));
    }
    let next_update = single.next_update.as_ref().map(unix);
    match next_update {
        Some(next) if now > next + skew => {
            return Err(format!("out of date (nextUpdate {})", time_str(next)));
        }
        None if now - this_update > MAX_AGE_WITHOUT_NEXT_UPDATE => {
            return Err(format!(
                "no nextUpdate and thisUpdate {} is older than {MAX_AGE_WITHOUT_NEXT_UPDATE} s",
                time_str(this_update)
            ));
        }
        _ => {}
    }
    let issuer_dn = crate::dn::Dn::from_x509(issuer.subject())
        .map_or_else(|_| issuer.subject().to_string(), |d| d.to_string());
    let status = match &single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Revoked(info) => Status::Revoked(Refusal::RevokedOcsp {
            issuer: issuer_dn,
            // As the CRL refusals write it: big-endian, without the DER sign octet.
            serial: crate::anchors::hex(match cert_id.serial_number.as_bytes() {
                [0, rest @ ..] if !rest.is_empty() => rest,
                all => all,
            }),
            revoked_at: time_str(unix(&info.revocation_time)),
        }),
        CertStatus::Unknown(_) => Status::Unknown(Refusal::RevocationUnknown {
            why: format!("the OCSP responder does not know this certificate of {issuer_dn}"),
        }),
    };
    Ok((status, next_update))
}

/// The response must be signed by the issuing CA, or by a responder certificate it issued for
/// OCSP signing (RFC 6960 §4.2.2.2).
fn verify_signer(
    raw: &[u8],
    basic: &BasicOcspResponse,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<(), String> {
    // The signed bytes as received: the first element of the BasicOCSPResponse SEQUENCE.
    let tbs = tbs_bytes(raw).map_err(|e| format!("bad BasicOCSPResponse: {e}"))?;
    let alg_der = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| e.to_string())?;
    let (_, alg) = <x509_parser::x509::AlgorithmIdentifier as x509_parser::prelude::FromDer<
        x509_parser::error::X509Error,
    >>::from_der(&alg_der)
    .map_err(|e| format!("signature algorithm: {e}"))?;
    let sig_bytes = basic.signature.raw_bytes();
    let signature = x509_parser::der_parser::asn1_rs::BitString::new(0, sig_bytes);
    let verifies = |cert: &X509Certificate<'_>| {
        x509_parser::verify::verify_signature(cert.public_key(), &alg, &signature, tbs).is_ok()
    };
    if verifies(issuer) {
        return Ok(());
    }
    let mut why = Vec::new();
    for cert in basic.certs.iter().flatten() {
        let der = cert.to_der().map_err(|e| e.to_string())?;
        let Ok((_, responder)) = x509_parser::parse_x509_certificate(&der) else {
            why.push("unparsable responder certificate".to_owned());
            continue;
        };
        let name = responder.subject().to_string();
        if responder.issuer().as_raw() != issuer.subject().as_raw()
            || responder
                .verify_signature(Some(issuer.public_key()))
                .is_err()
        {
            why.push(format!("{name} is not issued by the certificate's CA"));
            continue;
        }
        if !matches!(responder.extended_key_usage(), Ok(Some(eku)) if eku.value.ocsp_signing) {
            why.push(format!("{name} lacks EKU id-kp-OCSPSigning"));
            continue;
        }
        let validity = responder.validity();
        if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
            why.push(format!("{name} is not valid now"));
            continue;
        }
        if verifies(&responder) {
            return Ok(());
        }
        why.push(format!("signature does not verify with the key of {name}"));
    }
    Err(format!(
        "response not signed by the issuing CA or an authorised responder ({})",
        if why.is_empty() {
            "no responder certificate included".to_owned()
        } else {
            why.join("; ")
        }
    ))
}

fn tbs_bytes(raw: &[u8]) -> der::Result<&[u8]> {
    let mut outer = SliceReader::new(raw)?;
    let header = der::Header::decode(&mut outer)?;
    let mut inner = SliceReader::new(outer.read_slice(header.length)?)?;
    inner.tlv_bytes()
}
