//! The message carrying one encrypted lot (PDT-CDC-063 A4 §6.2.1, legacy §7.1.4–7.1.6; digest
//! §2): a single-part MIME message whose one entity is the `.pkcs7` file,
//! `Content-Type: Application/EDI-consent`, base64 exactly once (here, at the MIME layer; the
//! CMS object itself is binary DER), `Content-Description: <nature>/<norme>/K|ZK`, and the
//! mandatory headers `Date`, `From`, `To`, `Message-ID`, `Subject`, `MIME-Version`,
//! `Content-Type`, `Content-Transfer-Encoding`.
//!
//! The message is written as a stream: lot → (gzip) → AES-CBC → base64 lines → output, so
//! memory does not grow with the lot. `mail-builder` is not used because it holds the whole
//! body in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand_core::{OsRng, RngCore};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::envelope::{self, MAX_PLAINTEXT_BYTES, Recipient};
use crate::error::SesamError;

/// Default largest lot accepted (configurable, at most [`MAX_PLAINTEXT_BYTES`]). The source
/// sets no limit (digest §8 #7); B2 files are far smaller than this.
pub const DEFAULT_MAX_LOT_BYTES: u64 = 100 * 1024 * 1024;
/// Longest Subject accepted from the LPS.
const MAX_SUBJECT_LEN: usize = 200;
/// Base64 input bytes per 76-character line (RFC 2045).
const LINE_INPUT: usize = 57;

/// The billing flow: which file and which AM recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// FSE lots (norme B2) to the AMO.
    Fse,
    /// DRE lots (norme DR) to the AMC.
    Dre,
}

/// The environment: real flows, or the test / demonstration front-ends ([CP1]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Env {
    Real,
    Test,
    Demo,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Fse => "fse",
            Flow::Dre => "dre",
        }
    }

    /// Subject prefix of the Formater_Lot reference: `SVvvvvvv` (group 13 field 7) for FSE,
    /// `DRvvvvvv` (group 93 field 7) for DRE.
    pub fn subject_prefix(self) -> &'static str {
        match self {
            Flow::Fse => "SV",
            Flow::Dre => "DR",
        }
    }
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Real => "real",
            Env::Test => "test",
            Env::Demo => "demo",
        }
    }
}

/// `Content-Description` of an outbound encrypted lot (A4 §6.2.1, §8, §9; digest §2.3). Every
/// outbound value carries `K`; `ZK` when the lot was compressed before encryption.
pub fn content_description(flow: Flow, env: Env, compressed: bool) -> &'static str {
    match (flow, env, compressed) {
        (Flow::Fse, Env::Real, false) => "FSE/B2/K",
        (Flow::Fse, Env::Real, true) => "FSE/B2/ZK",
        (Flow::Fse, Env::Test, false) => "FSETEST/B2/K",
        (Flow::Fse, Env::Test, true) => "FSETEST/B2/ZK",
        (Flow::Fse, Env::Demo, false) => "FSEDEMO/B2/K",
        (Flow::Fse, Env::Demo, true) => "FSEDEMO/B2/ZK",
        (Flow::Dre, Env::Real, false) => "DRE/DR/K",
        (Flow::Dre, Env::Real, true) => "DRE/DR/ZK",
        (Flow::Dre, Env::Test, false) => "DRETEST/DR/K",
        (Flow::Dre, Env::Test, true) => "DRETEST/DR/ZK",
        (Flow::Dre, Env::Demo, false) => "DREDEMO/DR/K",
        (Flow::Dre, Env::Demo, true) => "DREDEMO/DR/ZK",
    }
}

/// What the message says besides the lot.
#[derive(Clone, Debug)]
pub struct LotMessage {
    pub flow: Flow,
    pub env: Env,
    /// Gzip the lot before encrypting it (`ZK`).
    pub compress: bool,
    /// The Subject, starting with the Formater_Lot reference the LPS supplied
    /// (`SV140610/…`, `DR140610/…`); never made up here.
    pub subject: String,
    pub from: String,
    pub to: String,
    /// Largest lot accepted.
    pub max_lot_bytes: u64,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    /// `<lot name>.pkcs7`, the entity's file name.
    pub file_name: String,
    pub message_id: String,
    /// Bytes encrypted (after compression when asked).
    pub encrypted_bytes: u64,
    /// Size of the DER CMS object before base64.
    pub cms_bytes: u64,
}

/// Check the Subject supplied by the LPS: it must start with the flow's Formater_Lot
/// reference (`SV…` / `DR…`) and be a single printable ASCII line.
pub fn check_subject(flow: Flow, subject: &str) -> Result<(), SesamError> {
    let bad = |why: String| SesamError::SubjectRef {
        reference: subject.chars().take(MAX_SUBJECT_LEN).collect(),
        why,
    };
    if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
        return Err(bad(format!("must be 1 to {MAX_SUBJECT_LEN} characters")));
    }
    if !subject.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(bad("must be printable ASCII on one line".to_owned()));
    }
    if !subject.starts_with(flow.subject_prefix()) {
        return Err(bad(format!(
            "a {} Subject starts with the Formater_Lot reference {}vvvvvv",
            flow.as_str(),
            flow.subject_prefix()
        )));
    }
    Ok(())
}

fn check_header(header: &'static str, value: &str) -> Result<(), SesamError> {
    if value.is_empty() || value.len() > 998 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(SesamError::Header {
            header,
            why: "must be a non-empty printable ASCII line".to_owned(),
        });
    }
    Ok(())
}

/// The entity's file name: the lot's name with `.pkcs7` appended (A4 §6.2.2), reduced to
/// characters that need no MIME parameter encoding.
pub fn pkcs7_file_name(lot: &Path) -> String {
    let base = lot
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = if clean.is_empty() {
        "lot".to_owned()
    } else {
        clean
    };
    format!("{clean}.pkcs7")
}

/// Check a lot file's size against the limits: empty and oversize lots are refused before
/// anything is encrypted.
pub fn check_lot_size(path: &Path, size: u64, max: u64) -> Result<(), SesamError> {
    if size == 0 {
        return Err(SesamError::EmptyLot {
            path: path.to_owned(),
        });
    }
    let max = max.min(MAX_PLAINTEXT_BYTES);
    if size > max {
        return Err(SesamError::LotTooLarge {
            path: path.to_owned(),
            size,
            max,
        });
    }
    Ok(())
}

/// Encrypt the lot at `lot` for `recipient` into a bare DER `.pkcs7` object at `out` (the
/// reference command's output). Returns the CMS size.
pub fn encrypt_lot_to_pkcs7(
    recipient: &Recipient,
    lot: &Path,
    compress: bool,
    max_lot_bytes: u64,
    out: &Path,
) -> Result<u64, SesamError> {
    let (input, len) = open_plaintext(lot, compress, max_lot_bytes)?;
    let file = File::create(out).map_err(|e| SesamError::io(out, e))?;
    let mut w = BufWriter::with_capacity(128 * 1024, file);
    let n = envelope::encrypt(recipient, input, len, &mut w)?;
    w.into_inner()
        .map_err(|e| SesamError::io(out, e.into_error()))?
        .sync_all()
        .map_err(|e| SesamError::io(out, e))?;
    Ok(n)
}

/// Write the complete message for the lot at `lot` to `out`.
pub fn write_message<W: Write>(
    recipient: &Recipient,
    lot: &Path,
    msg: &LotMessage,
    out: W,
) -> Result<Written, SesamError> {
    check_subject(msg.flow, &msg.subject)?;
    check_header("From", &msg.from)?;
    check_header("To", &msg.to)?;
    let (input, len) = open_plaintext(lot, msg.compress, msg.max_lot_bytes)?;
    let file_name = pkcs7_file_name(lot);
    let domain = msg
        .from
        .rsplit_once('@')
        .map_or("passerelle.invalid", |(_, d)| d.trim_end_matches('>'));
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let hex: String = id.iter().fold(String::with_capacity(32), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    let message_id = format!("<{hex}@{domain}>");
    let date = OffsetDateTime::now_utc()
        .format(&Rfc2822)
        .map_err(|e| SesamError::Header {
            header: "Date",
            why: e.to_string(),
        })?;
    let description = content_description(msg.flow, msg.env, msg.compress);
    let mut out = BufWriter::with_capacity(128 * 1024, out);
    let io = |e| SesamError::io("<message output>", e);
    write!(
        out,
        "Date: {date}\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Message-ID: {message_id}\r\n\
         Subject: {subject}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: Application/EDI-consent; name=\"{file_name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Description: {description}\r\n\
         Content-Disposition: attachment; filename=\"{file_name}\"\r\n\
         \r\n",
        from = msg.from,
        to = msg.to,
        subject = msg.subject,
    )
    .map_err(io)?;
    let mut b64 = Base64Lines::new(&mut out);
    let cms_bytes = envelope::encrypt(recipient, input, len, &mut b64)?;
    b64.finish().map_err(io)?;
    out.flush().map_err(io)?;
    Ok(Written {
        file_name,
        message_id,
        encrypted_bytes: len,
        cms_bytes,
    })
}

/// The bytes to encrypt and their length: the lot itself, or its gzip in an anonymous
/// temporary file (the compressed length must be known before the DER headers are written).
fn open_plaintext(
    lot: &Path,
    compress: bool,
    max_lot_bytes: u64,
) -> Result<(Box<dyn Read>, u64), SesamError> {
    let file = File::open(lot).map_err(|e| SesamError::io(lot, e))?;
    let size = file.metadata().map_err(|e| SesamError::io(lot, e))?.len();
    check_lot_size(lot, size, max_lot_bytes)?;
    if !compress {
        return Ok((Box::new(BufReader::with_capacity(128 * 1024, file)), size));
    }
    let tmp_err = |e| SesamError::io(PathBuf::from("<compression scratch file>"), e);
    let mut tmp = tempfile::tempfile().map_err(tmp_err)?;
    {
        let mut gz =
            flate2::write::GzEncoder::new(BufWriter::new(&mut tmp), flate2::Compression::default());
        let copied = std::io::copy(&mut file.take(size + 1), &mut gz).map_err(tmp_err)?;
        if copied != size {
            return Err(SesamError::LotChanged {
                expected: size,
                actual: copied,
            });
        }
        gz.finish().and_then(|mut w| w.flush()).map_err(tmp_err)?;
    }
    let len = tmp.seek(SeekFrom::End(0)).map_err(tmp_err)?;
    tmp.seek(SeekFrom::Start(0)).map_err(tmp_err)?;
    Ok((Box::new(BufReader::with_capacity(128 * 1024, tmp)), len))
}

/// A writer that base64-encodes what it is given into CRLF-terminated 76-character lines.
struct Base64Lines<W: Write> {
    inner: W,
    pending: Vec<u8>,
    line: Vec<u8>,
}

impl<W: Write> Base64Lines<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::with_capacity(LINE_INPUT * 1024),
            line: Vec::with_capacity(80 * 1024),
        }
    }

    /// Encode the complete lines in `pending`, keeping the remainder.
    fn drain(&mut self, all: bool) -> std::io::Result<()> {
        let whole = if all {
            self.pending.len()
        } else {
            self.pending.len() / LINE_INPUT * LINE_INPUT
        };
        self.line.clear();
        let mut enc = [0u8; 76];
        for chunk in self.pending[..whole].chunks(LINE_INPUT) {
            let n = STANDARD
                .encode_slice(chunk, &mut enc)
                .map_err(std::io::Error::other)?;
            self.line.extend_from_slice(&enc[..n]);
            self.line.extend_from_slice(b"\r\n");
        }
        self.inner.write_all(&self.line)?;
        self.pending.drain(..whole);
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.drain(true)?;
        self.inner.flush()
    }
}

impl<W: Write> Write for Base64Lines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= LINE_INPUT * 1024 {
            self.drain(false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Lines are only complete at `finish`; flushing a partial line would break them.
        self.inner.flush()
    }
}
