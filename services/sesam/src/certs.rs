//! Recipient certificates (PDT-CDC-063 A4 §6.2.3, §6.3; digest §1.4–§1.5).
//!
//! A certificate is used, and stored, only after:
//! - the chain, dates and CRL check of the trust store, under the `sesam-vitale` profile
//!   (AC-FACTURATION → AC-SESAM-VITALE-2034) for real flows and `sesam-vitale-test`
//!   (AC-FACTURATION-TEST → AC-SESAM-VITALE-TEST-2034) for test and demo flows ([CP1]);
//! - the owner name: an rfc822Name SubjectAltName equal (ASCII case-insensitive) to the label
//!   of the flow and environment (`amo_pj.reel@reel.rss.fr`, `amc_pj.test@test.rss.fr`, …);
//! - KeyUsage marked critical with digitalSignature, nonRepudiation and keyEncipherment (a
//!   superset is allowed: digest §8 #15).
//!
//! CRL policy, which differs from the trust store's own: no CRL for the issuer blocks sending
//! ([CE2]); a CRL past its nextUpdate does not ([CP2]): the certificate is then checked against
//! that stale CRL (the trust store is asked again at an instant inside the CRL's validity) and
//! accepted unless listed, with a warning to raise the §6.3.3 alert. Any other refusal is
//! [CE1].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use passerelle_trust::{Refusal, TrustError, TrustStore};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::envelope::Recipient;
use crate::error::SesamError;
use crate::message::{Env, Flow};

/// Renewal is due this long before notAfter (A4 §6.3.2: "environ 15 jours").
pub const RENEW_BEFORE: Duration = Duration::from_secs(15 * 24 * 3600);

/// The SubjectAltName label the recipient certificate must carry (A4 §6.2.3). Test and demo
/// flows use the test certificates ([CP1]).
pub fn expected_label(flow: Flow, env: Env) -> &'static str {
    match (flow, env) {
        (Flow::Fse, Env::Real) => "amo_pj.reel@reel.rss.fr",
        (Flow::Dre, Env::Real) => "amc_pj.reel@reel.rss.fr",
        (Flow::Fse, Env::Test | Env::Demo) => "amo_pj.test@test.rss.fr",
        (Flow::Dre, Env::Test | Env::Demo) => "amc_pj.test@test.rss.fr",
    }
}

/// Trust profile names per environment.
#[derive(Clone, Debug)]
pub struct Profiles {
    /// Profile for real flows (default `sesam-vitale`).
    pub real: String,
    /// Profile for test and demo flows (default `sesam-vitale-test`).
    pub test: String,
}

impl Default for Profiles {
    fn default() -> Self {
        Self {
            real: "sesam-vitale".to_owned(),
            test: "sesam-vitale-test".to_owned(),
        }
    }
}

impl Profiles {
    fn for_env(&self, env: Env) -> &str {
        match env {
            Env::Real => &self.real,
            Env::Test | Env::Demo => &self.test,
        }
    }
}

/// A certificate accepted for a flow.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub recipient: Recipient,
    pub not_before: i64,
    pub not_after: i64,
    /// [CP2]: the issuer's CRL is past its nextUpdate; the certificate was checked against it
    /// anyway. Sending continues; the caller raises the CRL alert.
    pub stale_crl: Option<String>,
}

/// The SESAM-specific checks: SubjectAltName label and KeyUsage.
pub fn check_extensions(der: &[u8], flow: Flow, env: Env) -> Result<(i64, i64), SesamError> {
    let refused = |why: String| SesamError::CertificateRefused {
        flow: flow.as_str(),
        env: env.as_str(),
        why,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| refused(format!("not a parsable X.509 certificate: {e}")))?;
    let label = expected_label(flow, env);
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .map_err(|e| refused(format!("bad SubjectAltName: {e}")))?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::RFC822Name(s) => Some((*s).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !sans.iter().any(|s| s.eq_ignore_ascii_case(label)) {
        return Err(refused(format!(
            "SubjectAltName rfc822Name {sans:?} does not contain the label {label}"
        )));
    }
    let ku = cert
        .key_usage()
        .map_err(|e| refused(format!("bad KeyUsage: {e}")))?
        .ok_or_else(|| refused("no KeyUsage extension".to_owned()))?;
    if !ku.critical {
        return Err(refused("KeyUsage is not marked critical".to_owned()));
    }
    let mut missing = Vec::new();
    if !ku.value.digital_signature() {
        missing.push("digitalSignature");
    }
    if !ku.value.non_repudiation() {
        missing.push("nonRepudiation");
    }
    if !ku.value.key_encipherment() {
        missing.push("keyEncipherment");
    }
    if !missing.is_empty() {
        return Err(refused(format!("KeyUsage lacks {}", missing.join(", "))));
    }
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Every check of A4 §6.2.3 on `der` for `flow`/`env` at `now`, with the [CE1]/[CE2]/[CP2]
/// CRL policy.
pub fn validate_for(
    trust: &TrustStore,
    profiles: &Profiles,
    der: &[u8],
    flow: Flow,
    env: Env,
    now: UnixTime,
) -> Result<Accepted, SesamError> {
    let (not_before, not_after) = check_extensions(der, flow, env)?;
    let profile = profiles.for_env(env);
    let cert = CertificateDer::from(der);
    let refused = |why: String| SesamError::CertificateRefused {
        flow: flow.as_str(),
        env: env.as_str(),
        why,
    };
    // [CP2]: while the answer is "CRL out of date", ask again at the end of that CRL's
    // validity, so the certificate is checked against the CRL already present. A full and a
    // delta CRL may both be stale, hence more than one round.
    let mut at = now;
    let mut stale_crl = None;
    let mut rounds = 0;
    loop {
        match trust.validate(profile, &cert, &[], at) {
            Ok(_) => break,
            Err(e) => match e.refusal() {
                Some(Refusal::CrlExpired {
                    issuer,
                    next_update,
                    ..
                }) if rounds < 3 => {
                    let next = parse_crl_time(next_update).ok_or_else(|| {
                        refused(format!(
                            "CRL of {issuer}: unreadable nextUpdate {next_update}"
                        ))
                    })?;
                    if stale_crl.is_none() {
                        tracing::warn!(flow = flow.as_str(), env = env.as_str(), issuer = %issuer, next_update = %next_update, "[CP2] CRL out of date; certificate checked against it, sending continues");
                        stale_crl = Some(format!(
                            "[CP2] the CRL of {issuer} expired at {next_update}"
                        ));
                    }
                    at = UnixTime::since_unix_epoch(next);
                    rounds += 1;
                }
                _ => return Err(refusal_to_error(e, flow, env)),
            },
        }
    }
    Ok(Accepted {
        recipient: Recipient::from_der(der)?,
        not_before,
        not_after,
        stale_crl,
    })
}

fn refusal_to_error(e: TrustError, flow: Flow, env: Env) -> SesamError {
    match e.refusal() {
        Some(Refusal::RevocationUnknown { why }) => SesamError::NoCrl {
            issuer: why.clone(),
        },
        Some(_) => SesamError::CertificateRefused {
            flow: flow.as_str(),
            env: env.as_str(),
            why: e.to_string(),
        },
        None => SesamError::Trust(e),
    }
}

/// The trust crate prints times as x509-parser's `ASN1Time` does
/// (`Nov 30 00:00:00 2026 +00:00`).
fn parse_crl_time(s: &str) -> Option<Duration> {
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year padding:none] [offset_hour sign:mandatory]:[offset_minute]"
    );
    let t = OffsetDateTime::parse(s, format).ok()?;
    u64::try_from(t.unix_timestamp())
        .ok()
        .map(Duration::from_secs)
}

/// The local store of recipient certificates (A4 §6.3.2 "magasin local"): one certificate per
/// flow and environment, kept as `<dir>/<flow>-<env>.der`. Only validated certificates are
/// stored; storing a newer one removes the older.
#[derive(Debug)]
pub struct RecipientCertificates {
    dir: PathBuf,
    profiles: Profiles,
    current: BTreeMap<(&'static str, &'static str), Vec<u8>>,
}

impl RecipientCertificates {
    /// Open the store in `dir`, loading the certificates already there.
    pub fn open(dir: &Path, profiles: Profiles) -> Result<Self, SesamError> {
        std::fs::create_dir_all(dir).map_err(|e| SesamError::io(dir, e))?;
        let mut current = BTreeMap::new();
        for flow in [Flow::Fse, Flow::Dre] {
            for env in [Env::Real, Env::Test, Env::Demo] {
                let path = Self::path_in(dir, flow, env);
                match std::fs::read(&path) {
                    Ok(der) => {
                        current.insert((flow.as_str(), env.as_str()), der);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SesamError::io(path, e)),
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            profiles,
            current,
        })
    }

    fn path_in(dir: &Path, flow: Flow, env: Env) -> PathBuf {
        dir.join(format!("{}-{}.der", flow.as_str(), env.as_str()))
    }

    /// Validate the candidates (e.g. every certificate the directory returned for the label)
    /// and store the most recent valid one (latest notBefore, then latest notAfter; footnote 5),
    /// replacing the one stored. Returns the accepted certificate; when none is valid the store
    /// is left as it was and the last refusal is returned.
    pub fn offer(
        &mut self,
        trust: &TrustStore,
        candidates: &[Vec<u8>],
        flow: Flow,
        env: Env,
        now: UnixTime,
    ) -> Result<Accepted, SesamError> {
        let mut best: Option<(Accepted, &Vec<u8>)> = None;
        let mut last_err = SesamError::NoCertificate {
            flow: flow.as_str(),
            env: env.as_str(),
        };
        for der in candidates {
            match validate_for(trust, &self.profiles, der, flow, env, now) {
                Ok(a) => {
                    let newer = best.as_ref().is_none_or(|(b, _)| {
                        (a.not_before, a.not_after) > (b.not_before, b.not_after)
                    });
                    if newer {
                        best = Some((a, der));
                    }
                }
                Err(e) => {
                    tracing::warn!(flow = flow.as_str(), env = env.as_str(), error = %e, "recipient certificate candidate refused");
                    last_err = e;
                }
            }
        }
        let (accepted, der) = best.ok_or(last_err)?;
        let path = Self::path_in(&self.dir, flow, env);
        let tmp = path.with_extension("der.tmp");
        std::fs::write(&tmp, der).map_err(|e| SesamError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| SesamError::io(&path, e))?;
        self.current
            .insert((flow.as_str(), env.as_str()), der.clone());
        Ok(accepted)
    }

    /// Fetch the label's certificates from the directory and [`RecipientCertificates::offer`]
    /// them: initially, ~15 days before expiry ([`RecipientCertificates::refresh_due`]), and
    /// on service messages 4005/4015/4025.
    pub async fn refresh_from(
        &mut self,
        directory: &crate::directory::Directory,
        trust: &TrustStore,
        flow: Flow,
        env: Env,
        now: UnixTime,
    ) -> Result<Accepted, SesamError> {
        let candidates = directory.fetch_certificates(flow, env).await?;
        self.offer(trust, &candidates, flow, env, now)
    }

    /// The stored certificate's DER, if any.
    pub fn stored(&self, flow: Flow, env: Env) -> Option<&[u8]> {
        self.current
            .get(&(flow.as_str(), env.as_str()))
            .map(Vec::as_slice)
    }

    /// The certificate to encrypt with now, checked again (certificate and CRL may have changed
    /// since it was stored): [CE1], [CE2] block; [CP2] passes with `stale_crl` set.
    pub fn for_sending(
        &self,
        trust: &TrustStore,
        flow: Flow,
        env: Env,
        now: UnixTime,
    ) -> Result<Accepted, SesamError> {
        let der = self.stored(flow, env).ok_or(SesamError::NoCertificate {
            flow: flow.as_str(),
            env: env.as_str(),
        })?;
        validate_for(trust, &self.profiles, der, flow, env, now)
    }

    /// Whether the directory should be asked for a certificate: none stored, or the stored one
    /// ends within [`RENEW_BEFORE`].
    pub fn refresh_due(&self, flow: Flow, env: Env, now: UnixTime) -> bool {
        let Some(der) = self.stored(flow, env) else {
            return true;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return true;
        };
        let not_after = cert.validity().not_after.timestamp();
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let renew = i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX);
        not_after.saturating_sub(now) <= renew
    }
}
