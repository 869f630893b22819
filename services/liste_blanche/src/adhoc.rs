//! A trust store built from a plain directory of CA certificates, for `passerelle liste-blanche
//! verify --anchors <dir>` (checking a file by hand, before any configuration exists) and the
//! tests. The daemon uses the pinned store of `[trust]` instead.
//!
//! The directory is trusted as given: its certificates are pinned as they are read (the operator
//! chose the directory; RE_OPE_5040's fingerprint check belongs to `passerelle trust
//! check-anchors`). Self-signed certificates become anchors, the other CAs allowed issuers.
//! `*.crl` files of the directory (full and delta, DER or PEM) are installed; without a CRL for
//! the signer's issuer the revocation status is unknown and the list is refused (hard-fail).

use std::collections::BTreeMap;

use base64::Engine as _;
use std::fmt::Write as _;
use std::path::Path;

use passerelle_trust::{
    PeerRole, ProfileConfig, RevocationMethod, RevocationScope, TlsOptions, TrustConfig,
    TrustStore, UnknownStatusPolicy, certificate_der, sha256_hex,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::ListeBlancheError;

/// Name of the signer profile (role `any`) [`adhoc_trust`] creates.
pub const ADHOC_PROFILE: &str = "liste-blanche";
/// Name of the HTTPS server profile (role `tls-server`) [`adhoc_trust`] creates, same CAs.
pub const ADHOC_HTTPS_PROFILE: &str = "liste-blanche-https";

/// Largest file read from the anchors directory.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Build a trust store from the CA certificates and CRLs of `anchors_dir`; `work` (an empty
/// directory) receives the pinned copies and the CRL cache.
pub fn adhoc_trust(anchors_dir: &Path, work: &Path) -> Result<TrustStore, ListeBlancheError> {
    let pinned = work.join("anchors");
    std::fs::create_dir_all(&pinned).map_err(|e| ListeBlancheError::io(&pinned, &e))?;
    let mut entries: Vec<_> = std::fs::read_dir(anchors_dir)
        .map_err(|e| ListeBlancheError::io(anchors_dir, &e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let (mut pins, mut anchors, mut issuers, mut crls) =
        (String::new(), Vec::new(), Vec::new(), Vec::new());
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(|e| ListeBlancheError::io(&path, &e))?;
        if meta.len() > MAX_FILE_BYTES {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| ListeBlancheError::io(&path, &e))?;
        if path.extension().is_some_and(|e| e == "crl") {
            crls.push((path, bytes));
            continue;
        }
        let Ok(der) = certificate_der(&bytes) else {
            continue;
        };
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            continue;
        };
        if !cert.is_ca() {
            continue;
        }
        // The file name, so refusals name the file the operator put there.
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
        std::fs::write(pinned.join(&name), &der)
            .map_err(|e| ListeBlancheError::io(&pinned.join(&name), &e))?;
        let _ = writeln!(pins, "{}  {name}", sha256_hex(&der));
        if self_issued {
            anchors.push(name);
        } else {
            issuers.push(name);
        }
    }
    if anchors.is_empty() {
        return Err(ListeBlancheError::Config(format!(
            "{}: no self-signed CA certificate to anchor to",
            anchors_dir.display()
        )));
    }
    let pins_file = work.join("pins.sha256");
    std::fs::write(&pins_file, pins).map_err(|e| ListeBlancheError::io(&pins_file, &e))?;
    let profile = ProfileConfig {
        role: PeerRole::Any,
        anchors,
        allowed_issuers: issuers,
        revocation: RevocationMethod::Crl,
        ocsp_url: None,
        ocsp_timeout: std::time::Duration::from_secs(10),
        unknown_status: UnknownStatusPolicy::HardFail,
        revocation_scope: RevocationScope::EndEntity,
    };
    let config = TrustConfig {
        anchors_dir: pinned,
        pins_file,
        crl_cache_dir: work.join("crl"),
        crl_refresh_every: std::time::Duration::from_hours(24),
        crl_sources: Vec::new(),
        tls: TlsOptions::default(),
        profiles: BTreeMap::from([
            (
                ADHOC_HTTPS_PROFILE.to_owned(),
                ProfileConfig {
                    role: PeerRole::TlsServer,
                    ..profile.clone()
                },
            ),
            (ADHOC_PROFILE.to_owned(), profile),
        ]),
    };
    let store = TrustStore::load(&config).map_err(|e| ListeBlancheError::Config(e.to_string()))?;
    for (path, bytes) in crls {
        let der = pem_or_der(&bytes);
        if let Err(e) = store.install_crl(&der, &path.display().to_string()) {
            tracing::warn!(file = %path.display(), error = %e, "CRL not installed");
        }
    }
    Ok(store)
}

fn pem_or_der(bytes: &[u8]) -> Vec<u8> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| {
            let body: String = t
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .flat_map(|l| l.chars().filter(|c| !c.is_ascii_whitespace()))
                .collect();
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        })
        .unwrap_or_else(|| bytes.to_vec())
}
