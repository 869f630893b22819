//! §6.9.2 traces (EX_GDT_5010–5070): one append-only JSON-lines file per UTC day,
//! `traces-YYYY-MM-DD.jsonl`, each record written with one `write` and `fdatasync`ed before
//! the call returns.
//!
//! Why JSON lines and not SQLite: an append-only file cannot be rewritten by the writer
//! (opened `O_APPEND`), is read by any tool the investigator has, and retention
//! (EX_GDT_5070) is the deletion of whole day files — no row ever changes. What is recorded:
//! internal id, envelope sender and recipients, size, peer address and certificate DN,
//! decision, reason, requirement ID. Never the body (EX_GDT_5040); the subject is health data
//! (EX_GDT_5050): only `HMAC-SHA256(key, subject)` when a key is configured, nothing otherwise.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::config::TracesConfig;
use crate::error::ConnectorError;

/// Largest subject HMAC key file read.
const MAX_KEY_BYTES: u64 = 4096;
/// Header section scanned for `Subject:` (a bounded look at outside data).
const MAX_HEADER_SCAN: usize = 64 * 1024;

/// One traced action. Fields that do not apply stay `None`/empty and are not written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    /// RFC 3339 UTC, set when written.
    pub at: String,
    /// `inbound` (TM3.1P), `relay` (from the internal server), `outbound` (TM3.2P),
    /// `internal` (delivery to the internal server).
    pub direction: &'static str,
    /// `session`, `tls`, `mail`, `rcpt`, `message`, `delivery`, `dsn`.
    pub event: &'static str,
    /// `accepted`, `refused`, `delivered`, `deferred`, `failed`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_dn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_hmac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirement: Option<&'static str>,
}

#[derive(Debug)]
struct Open {
    day: String,
    file: std::fs::File,
}

/// The trace writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Traces {
    dir: PathBuf,
    retention: Duration,
    key: Option<Arc<Vec<u8>>>,
    open: Arc<Mutex<Option<Open>>>,
}

impl Traces {
    pub fn open(config: &TracesConfig) -> Result<Self, ConnectorError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| ConnectorError::io("create traces directory", &config.dir, e))?;
        let key = match &config.subject_hmac_key_file {
            Some(path) => Some(Arc::new(read_key(path)?)),
            None => None,
        };
        let traces = Self {
            dir: config.dir.clone(),
            retention: config.retention,
            key,
            open: Arc::new(Mutex::new(None)),
        };
        traces.prune(OffsetDateTime::now_utc())?;
        Ok(traces)
    }

    /// `HMAC-SHA256(key, subject)` of the message's `Subject:` header, when a key is set.
    pub fn subject_hmac(&self, message: &[u8]) -> Option<String> {
        let key = self.key.as_ref()?;
        let subject = subject_of(message)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(subject.as_bytes());
        Some(
            mac.finalize()
                .into_bytes()
                .iter()
                .fold(String::with_capacity(64), |mut hex, b| {
                    let _ = write!(hex, "{b:02x}");
                    hex
                }),
        )
    }

    /// Append and sync one record (off the async runtime). A failure is logged: the mail flow
    /// does not stop, the operator's alerting sees the error.
    pub async fn record(&self, mut trace: Trace) {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let now = OffsetDateTime::now_utc();
            trace.at = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            this.append(now, &trace)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, requirement = "EX_GDT_5010", "trace not written");
            }
            Err(e) => tracing::error!(error = %e, requirement = "EX_GDT_5010", "trace task failed"),
        }
    }

    fn append(&self, now: OffsetDateTime, trace: &Trace) -> Result<(), ConnectorError> {
        let mut line = serde_json::to_vec(trace)
            .map_err(|e| ConnectorError::Config(format!("trace encoding: {e}")))?;
        line.push(b'\n');
        let day = day_of(now);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.as_ref().is_none_or(|o| o.day != day) {
            let path = self.dir.join(format!("traces-{day}.jsonl"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| ConnectorError::io("open trace file", &path, e))?;
            *open = Some(Open { day, file });
            drop(open);
            self.prune(now)?;
            open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let Some(o) = open.as_mut() else {
            return Ok(());
        };
        o.file
            .write_all(&line)
            .and_then(|()| o.file.sync_data())
            .map_err(|e| ConnectorError::io("append trace", &self.dir, e))
    }

    /// EX_GDT_5070: delete day files older than the retention.
    fn prune(&self, now: OffsetDateTime) -> Result<(), ConnectorError> {
        let oldest = day_of(now - self.retention);
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ConnectorError::io("list traces", &self.dir, e))?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(day) = name
                .to_str()
                .and_then(|n| n.strip_prefix("traces-"))
                .and_then(|n| n.strip_suffix(".jsonl"))
            else {
                continue;
            };
            // ISO dates sort as strings.
            if day < oldest.as_str() {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|e| ConnectorError::io("delete expired traces", &path, e))?;
                tracing::info!(file = %path.display(), requirement = "EX_GDT_5070", "expired trace file deleted");
            }
        }
        Ok(())
    }
}

fn day_of(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn read_key(path: &Path) -> Result<Vec<u8>, ConnectorError> {
    let meta = std::fs::metadata(path).map_err(|e| ConnectorError::io("read", path, e))?;
    if meta.len() > MAX_KEY_BYTES || meta.len() < 16 {
        return Err(ConnectorError::Config(format!(
            "{}: subject HMAC key must be 16 to {MAX_KEY_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| ConnectorError::io("read", path, e))
}

/// The unfolded `Subject:` value of the header section, raw (not MIME-decoded: the HMAC only
/// needs to be stable).
fn subject_of(message: &[u8]) -> Option<String> {
    let head = &message[..message.len().min(MAX_HEADER_SCAN)];
    let text = String::from_utf8_lossy(head);
    let mut subject: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(s) = subject.as_mut() {
                s.push_str(line);
            }
            continue;
        }
        if subject.is_some() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("subject")
        {
            subject = Some(value.trim().to_owned());
        }
    }
    subject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_subjects_are_unfolded_and_bodies_ignored() {
        let m = b"From: a@b\r\nSubject: Compte rendu\r\n  patient X\r\nTo: c@d\r\n\r\nSubject: body\r\n";
        assert_eq!(subject_of(m).as_deref(), Some("Compte rendu  patient X"));
        assert_eq!(subject_of(b"From: a@b\r\n\r\nSubject: body\r\n"), None);
    }

    #[tokio::test]
    async fn ex_gdt_5050_records_are_appended_synced_and_hold_no_subject_in_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, [7u8; 32]).expect("key");
        let traces = Traces::open(&TracesConfig {
            dir: dir.path().join("t"),
            retention: Duration::from_hours(24),
            subject_hmac_key_file: Some(key),
        })
        .expect("open");
        // An expired day file goes at the next open.
        std::fs::write(dir.path().join("t/traces-2001-01-01.jsonl"), b"{}\n").expect("old");
        let message = b"Subject: Resultats biologie M. Dupont\r\n\r\nbody\r\n";
        let hmac = traces.subject_hmac(message);
        traces
            .record(Trace {
                direction: "inbound",
                event: "message",
                decision: "accepted",
                id: Some("x1".to_owned()),
                subject_hmac: hmac.clone(),
                ..Trace::default()
            })
            .await;
        let files: Vec<_> = std::fs::read_dir(dir.path().join("t"))
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let text = std::fs::read_to_string(&files[0]).expect("read");
        assert!(text.contains("\"id\":\"x1\""));
        assert!(text.contains(hmac.as_deref().expect("hmac")));
        assert!(!text.contains("Dupont"));
        assert!(!text.contains("body"));
    }
}
