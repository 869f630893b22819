//! Pinned CA certificates (RE_OPE_5040): a directory of certificate files and a pin list of
//! SHA-256 fingerprints of their DER encoding, as `sha256sum *.cer` prints them for DER files
//! and `openssl x509 -fingerprint -sha256` for either form.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::TrustError;

/// Largest certificate file accepted. CA certificates are 1–3 KiB; PEM adds a third.
pub const MAX_CERT_FILE_BYTES: u64 = 64 * 1024;
/// Largest pin list accepted.
pub const MAX_PINS_FILE_BYTES: u64 = 256 * 1024;

/// Read a file, refusing it when it is larger than `limit` (checked while reading, so a file
/// growing under us is still bounded).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    let file = fs::File::open(path).map_err(|e| TrustError::io(path, e))?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| TrustError::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(TrustError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ),
        });
    }
    Ok(buf)
}

/// Decode one certificate from DER or PEM bytes and check that it parses as X.509.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.is_empty() {
        return Err("empty file".to_owned());
    }
    let der = if bytes.starts_with(b"-----BEGIN") || bytes.iter().take(64).all(u8::is_ascii) {
        let blocks =
            pem::parse_many(bytes).map_err(|e| format!("not DER, and not valid PEM: {e}"))?;
        match blocks.as_slice() {
            [] => return Err("no PEM block found".to_owned()),
            [one] if one.tag() == "CERTIFICATE" => one.contents().to_vec(),
            [one] => {
                return Err(format!(
                    "PEM block is {:?}, expected CERTIFICATE",
                    one.tag()
                ));
            }
            more => {
                return Err(format!(
                    "{} PEM blocks, expected one certificate per file",
                    more.len()
                ));
            }
        }
    } else {
        bytes.to_vec()
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok(([], _)) => Ok(der),
        Ok((rest, _)) => Err(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        )),
        Err(e) => Err(describe_x509_error(&e)),
    }
}

/// x509-parser's errors name parser internals; say what the operator can act on.
pub(crate) fn describe_x509_error(
    err: &x509_parser::nom::Err<x509_parser::error::X509Error>,
) -> String {
    use x509_parser::der_parser::error::BerError;
    use x509_parser::error::X509Error;
    use x509_parser::nom::{Err, error::ErrorKind};
    match err {
        Err::Incomplete(_)
        | Err::Error(
            X509Error::NomError(ErrorKind::Eof) | X509Error::Der(BerError::Incomplete(_)),
        )
        | Err::Failure(
            X509Error::NomError(ErrorKind::Eof) | X509Error::Der(BerError::Incomplete(_)),
        ) => "not an X.509 certificate: truncated (the data ends before the DER structure does)"
            .to_owned(),
        other => format!("not an X.509 certificate: {other}"),
    }
}

/// Read one certificate file (DER or PEM), bounded by [`MAX_CERT_FILE_BYTES`].
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, TrustError> {
    let bytes = read_limited(path, MAX_CERT_FILE_BYTES).map_err(|e| match e {
        TrustError::Io { source, .. } => TrustError::CertificateFile {
            path: path.to_owned(),
            why: source.to_string(),
        },
        other => other,
    })?;
    certificate_der(&bytes).map_err(|why| TrustError::CertificateFile {
        path: path.to_owned(),
        why,
    })
}

/// SHA-256 of `der` as lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex(&Sha256::digest(der)).to_ascii_lowercase()
}

/// Uppercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

/// Parse a pin list: `<hex sha256>  <file name>` per line (`sha256sum` output; a `*` before the
/// name and `:` between hex pairs are accepted), `#` comments and blank lines ignored.
pub fn parse_pins(text: &str, origin: &Path) -> Result<BTreeMap<String, String>, TrustError> {
    let bad =
        |line: usize, why: &str| TrustError::Config(format!("{}:{line}: {why}", origin.display()));
    let mut pins = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((hash, name)) = line.split_once(char::is_whitespace) else {
            return Err(bad(i + 1, "expected `<sha256 hex>  <file name>`"));
        };
        let hash: String = hash
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(
                i + 1,
                "the fingerprint must be 64 hex digits (SHA-256)",
            ));
        }
        let name = name.trim().trim_start_matches('*');
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(bad(
                i + 1,
                "the name must be a plain file name in the anchors directory",
            ));
        }
        if pins.insert(name.to_owned(), hash).is_some() {
            return Err(bad(i + 1, &format!("{name} is pinned twice")));
        }
    }
    Ok(pins)
}

/// One pinned file whose fingerprint differs from its pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinMismatch {
    pub name: String,
    pub pinned: String,
    pub actual: String,
}

/// Result of [`check_anchors`]: every discrepancy between the pin list and the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnchorReport {
    /// Pinned and matching.
    pub matched: Vec<String>,
    /// Pinned, present, different fingerprint.
    pub mismatched: Vec<PinMismatch>,
    /// Pinned, not in the directory.
    pub missing: Vec<String>,
    /// Pinned and present but not a readable certificate: (name, why).
    pub unreadable: Vec<(String, String)>,
    /// In the directory, not pinned.
    pub extra: Vec<String>,
}

impl AnchorReport {
    /// True when every file is pinned, present, readable and matches.
    pub fn is_clean(&self) -> bool {
        self.mismatched.is_empty()
            && self.missing.is_empty()
            && self.unreadable.is_empty()
            && self.extra.is_empty()
    }
}

impl fmt::Display for AnchorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "{} anchors match their pins", self.matched.len());
        }
        let mut parts = Vec::new();
        for m in &self.mismatched {
            parts.push(format!(
                "{}: fingerprint {} differs from pin {}",
                m.name, m.actual, m.pinned
            ));
        }
        for name in &self.missing {
            parts.push(format!("{name}: pinned but missing"));
        }
        for (name, why) in &self.unreadable {
            parts.push(format!("{name}: {why}"));
        }
        for name in &self.extra {
            parts.push(format!("{name}: present but not pinned"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// RE_OPE_5040: compare every certificate of `anchors_dir` with the pin list. Errors only when
/// the pin list or the directory cannot be read; discrepancies go in the report.
pub fn check_anchors(anchors_dir: &Path, pins_file: &Path) -> Result<AnchorReport, TrustError> {
    let text = read_limited(pins_file, MAX_PINS_FILE_BYTES)?;
    let text = String::from_utf8(text)
        .map_err(|_| TrustError::Config(format!("{}: not UTF-8", pins_file.display())))?;
    let pins = parse_pins(&text, pins_file)?;
    let mut present = Vec::new();
    for entry in fs::read_dir(anchors_dir).map_err(|e| TrustError::io(anchors_dir, e))? {
        let entry = entry.map_err(|e| TrustError::io(anchors_dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // The pin list may live in the directory it pins; hidden files are editor/temp leftovers.
        if name.starts_with('.') || same_file(&path, pins_file) || !path.is_file() {
            continue;
        }
        present.push(name);
    }
    present.sort();
    let mut report = AnchorReport::default();
    for name in &present {
        let Some(pinned) = pins.get(name) else {
            report.extra.push(name.clone());
            continue;
        };
        match read_certificate(&anchors_dir.join(name)) {
            Ok(der) => {
                let actual = sha256_hex(&der);
                if &actual == pinned {
                    report.matched.push(name.clone());
                } else {
                    report.mismatched.push(PinMismatch {
                        name: name.clone(),
                        pinned: pinned.clone(),
                        actual,
                    });
                }
            }
            Err(e) => report.unreadable.push((name.clone(), e.to_string())),
        }
    }
    report.missing = pins
        .keys()
        .filter(|n| !present.contains(n))
        .cloned()
        .collect();
    tracing::info!(
        requirement = "RE_OPE_5040",
        matched = report.matched.len(),
        mismatched = report.mismatched.len(),
        missing = report.missing.len(),
        unreadable = report.unreadable.len(),
        extra = report.extra.len(),
        "anchor pin check"
    );
    Ok(report)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Load every pinned certificate after a clean [`check_anchors`]; refuses on any discrepancy.
pub(crate) fn load_pinned(
    anchors_dir: &Path,
    pins_file: &Path,
) -> Result<Vec<(String, Vec<u8>)>, TrustError> {
    let report = check_anchors(anchors_dir, pins_file)?;
    if !report.is_clean() {
        return Err(TrustError::AnchorPins(report.to_string()));
    }
    report
        .matched
        .iter()
        .map(|name| Ok((name.clone(), read_certificate(&anchors_dir.join(name))?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn re_ope_5040_every_discrepancy_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b, c, d) = (
            self_signed("A"),
            self_signed("B"),
            self_signed("C"),
            self_signed("D"),
        );
        fs::write(dir.path().join("a.cer"), &a).expect("write");
        // PEM on disk, pinned by the DER fingerprint.
        fs::write(
            dir.path().join("b.pem"),
            pem::encode(&pem::Pem::new("CERTIFICATE", b.clone())),
        )
        .expect("write");
        fs::write(dir.path().join("c.cer"), &c).expect("write");
        fs::write(dir.path().join("extra.cer"), &d).expect("write");
        fs::write(dir.path().join("junk.cer"), b"not a certificate at all").expect("write");
        let pins = format!(
            "# IGC-Santé\n{}  a.cer\n{} *b.pem\n{}  c.cer\n{}  missing.cer\n{}  junk.cer\n",
            sha256_hex(&a),
            sha256_hex(&b),
            sha256_hex(&d), // wrong pin for c.cer
            sha256_hex(&d),
            sha256_hex(&d),
        );
        let pins_path = dir.path().join("pins.sha256");
        fs::write(&pins_path, pins).expect("write");

        let report = check_anchors(dir.path(), &pins_path).expect("check");
        assert_eq!(report.matched, ["a.cer", "b.pem"]);
        assert_eq!(report.mismatched.len(), 1);
        assert_eq!(report.mismatched[0].name, "c.cer");
        assert_eq!(report.mismatched[0].actual, sha256_hex(&c));
        assert_eq!(report.missing, ["missing.cer"]);
        assert_eq!(report.extra, ["extra.cer"]);
        assert_eq!(report.unreadable.len(), 1);
        assert!(
            report.unreadable[0].1.contains("junk.cer"),
            "{:?}",
            report.unreadable
        );
        assert!(!report.is_clean());
        let text = report.to_string();
        for needle in [
            "c.cer: fingerprint",
            "missing.cer: pinned but missing",
            "extra.cer: present but not pinned",
        ] {
            assert!(text.contains(needle), "{text}");
        }
        let err = load_pinned(dir.path(), &pins_path)
            .expect_err("unclean")
            .to_string();
        assert!(err.starts_with("RE_OPE_5040"), "{err}");
    }

    #[test]
    fn re_ope_5040_clean_directory_loads() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = self_signed("A");
        fs::write(dir.path().join("a.cer"), &a).expect("write");
        let colons: Vec<String> = Sha256::digest(&a)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let pins_path = dir.path().join("pins.sha256");
        fs::write(&pins_path, format!("{}  a.cer\n", colons.join(":"))).expect("write");
        let report = check_anchors(dir.path(), &pins_path).expect("check");
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            load_pinned(dir.path(), &pins_path).expect("load"),
            vec![("a.cer".to_owned(), a)]
        );
    }

    #[test]
    fn corrupt_certificate_file_names_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tmp");
        let good = self_signed("A");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.cer", Vec::new(), "empty file"),
            (
                "truncated.cer",
                good[..good.len() / 2].to_vec(),
                "not an X.509 certificate",
            ),
            (
                "trailing.cer",
                [good.clone(), vec![0, 0]].concat(),
                "2 bytes of trailing data",
            ),
            (
                "key.pem",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
                "\"PRIVATE KEY\"",
            ),
            ("garbage.pem", b"hello world".to_vec(), "no PEM block"),
            (
                "huge.cer",
                vec![0x30; usize::try_from(MAX_CERT_FILE_BYTES).expect("fits") + 1],
                "larger than",
            ),
        ];
        for (name, bytes, why) in cases {
            let path = dir.path().join(name);
            fs::write(&path, bytes).expect("write");
            let err = read_certificate(&path).expect_err(name).to_string();
            assert!(err.contains(name) && err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn bad_pin_lines_are_config_errors() {
        let origin = Path::new("pins");
        assert!(
            parse_pins("abc  a.cer", origin)
                .expect_err("short")
                .to_string()
                .contains("pins:1: the fingerprint")
        );
        let h = "0".repeat(64);
        assert!(
            parse_pins(&format!("{h}  ../etc/x"), origin)
                .expect_err("path")
                .to_string()
                .contains("plain file name")
        );
        assert!(
            parse_pins(&format!("{h}  a\n{h}  a"), origin)
                .expect_err("dup")
                .to_string()
                .contains("pinned twice")
        );
    }
}
