//! What a lot handed over by the LPS must look like before we take it, and its identity.
//!
//! The B2 norm (and the DR norm of DRE files) is not in our sources beyond what public code
//! shows (anchors §1.3, Calebasse `b2.py`): fixed 128-character records, the file starting
//! with a `000` header record that names the norm (`CP  ` + `B2`). So the check is a
//! documented minimum, tolerant of the parts we cannot verify: not empty, within the size
//! limit, starts with `000`, a full first record of printable characters, and for FSE the
//! header names the `B2` norm. Anything else is refused before it is queued, so nothing that
//! is not a lot ever leaves encrypted or not.

use sha2::{Digest, Sha256};

use crate::error::BillingError;
use passerelle_sesam::Flow;

/// Length of a B2 record (anchors §1.3).
pub const RECORD_LEN: usize = 128;

/// A lot's identity: the SHA-256 of its content (hex, 32 characters). The same file offered
/// twice (a crash between enqueue and acknowledgement, the LPS retrying) is the same lot, so
/// intake is idempotent without trusting file names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LotId(String);

impl LotId {
    pub fn of(content: &[u8]) -> Self {
        let digest = Sha256::digest(content);
        let mut hex = String::with_capacity(32);
        for b in &digest[..16] {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Self(hex)
    }

    /// A lot id read back from the store or a request; only lowercase hex of the right length.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Check that `content` can be a lot of `flow` no larger than `max` bytes; its id if so.
pub fn check_lot(content: &[u8], flow: Flow, max: u64) -> Result<LotId, BillingError> {
    let refuse = |why: String| Err(BillingError::NotALot { why });
    if content.is_empty() {
        return refuse("the file is empty".into());
    }
    if content.len() as u64 > max {
        return refuse(format!(
            "the file is {} bytes, above the maximum of {max} bytes",
            content.len()
        ));
    }
    if content.len() < RECORD_LEN {
        return refuse(format!(
            "the file is {} bytes, shorter than one {RECORD_LEN}-character record",
            content.len()
        ));
    }
    let header = &content[..RECORD_LEN];
    if !header.starts_with(b"000") {
        return refuse("the first record is not a `000` file header".into());
    }
    // Records are Latin-1 text: a control character in the header means a binary or a
    // compressed file (the LPS hands over the plain lot; we compress if configured).
    if let Some(pos) = header.iter().position(|&b| b < 0x20 || b == 0x7f) {
        return refuse(format!(
            "the `000` header has a control character at offset {pos}"
        ));
    }
    if flow == Flow::Fse && !header.windows(2).any(|w| w == b"B2") {
        return refuse("the `000` header of an FSE file does not name the B2 norm".into());
    }
    Ok(LotId::of(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal B2 file: a `000` header naming the norm, one lot header, padded records.
    fn b2(seed: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for rec in [
            format!("000TE12345678901234CP  B2128{seed}"),
            "1LOT001".to_owned(),
        ] {
            out.extend_from_slice(format!("{rec:<128}").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn a_b2_file_is_accepted_and_identified_by_content() {
        let a = check_lot(&b2("A"), Flow::Fse, 1 << 20).expect("lot");
        assert_eq!(a, check_lot(&b2("A"), Flow::Fse, 1 << 20).expect("lot"));
        assert_ne!(a, check_lot(&b2("B"), Flow::Fse, 1 << 20).expect("lot"));
        assert_eq!(LotId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let why = |c: &[u8], f| match check_lot(c, f, 1 << 20) {
            Err(BillingError::NotALot { why }) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(why(b"", Flow::Fse).contains("empty"));
        assert!(why(&[b'0'; 100], Flow::Fse).contains("shorter"));
        assert!(why(&[b'X'; 200], Flow::Fse).contains("`000`"));
        let mut bin = b2("A");
        bin[10] = 0;
        assert!(why(&bin, Flow::Fse).contains("control"));
        let dr = format!("{:<128}", "000TE1234DR");
        assert!(why(dr.as_bytes(), Flow::Fse).contains("B2"));
        check_lot(dr.as_bytes(), Flow::Dre, 1 << 20).expect("a DR file");
        assert!(matches!(
            check_lot(&b2("A"), Flow::Fse, 10),
            Err(BillingError::NotALot { why }) if why.contains("maximum")
        ));
    }
}
