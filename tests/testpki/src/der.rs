//! Just enough DER to splice names into rcgen's output and to build CRLs
//! with the extensions rcgen cannot emit (Delta CRL Indicator, FreshestCRL).

use time::OffsetDateTime;

use crate::TestPkiError;

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_ENUMERATED: u8 = 0x0a;
pub(crate) const TAG_UTF8_STRING: u8 = 0x0c;
pub(crate) const TAG_PRINTABLE_STRING: u8 = 0x13;
pub(crate) const TAG_UTC_TIME: u8 = 0x17;
pub(crate) const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;

/// Encodes one tag-length-value.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Short form; the cast cannot truncate below 0x80.
        out.push(u8::try_from(len).unwrap_or_default());
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let n = bytes.len() - skip;
        out.push(0x80 | u8::try_from(n).unwrap_or_default());
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => (0, arcs),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut chunk = vec![u8::try_from(arc & 0x7f).unwrap_or_default()];
        let mut v = arc >> 7;
        while v > 0 {
            chunk.push(0x80 | u8::try_from(v & 0x7f).unwrap_or_default());
            v >>= 7;
        }
        chunk.reverse();
        body.extend_from_slice(&chunk);
    }
    tlv(TAG_OID, &body)
}

/// A non-negative INTEGER from big-endian magnitude bytes.
pub(crate) fn uint(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(&trimmed);
    tlv(TAG_INTEGER, &body)
}

pub(crate) fn uint_u64(v: u64) -> Vec<u8> {
    uint(&v.to_be_bytes())
}

pub(crate) fn boolean(v: bool) -> Vec<u8> {
    tlv(TAG_BOOLEAN, &[if v { 0xff } else { 0 }])
}

pub(crate) fn octet_string(v: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, v)
}

/// BIT STRING whose length is a whole number of bytes (signatures).
pub(crate) fn bit_string_bytes(v: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(v);
    tlv(TAG_BIT_STRING, &body)
}

/// RFC 5280 Time: UTCTime up to 2049, GeneralizedTime after.
pub(crate) fn time(t: OffsetDateTime) -> Vec<u8> {
    let year = t.year();
    let rest = format!(
        "{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if (1950..2050).contains(&year) {
        let text = format!("{:02}{rest}", year % 100);
        tlv(TAG_UTC_TIME, text.as_bytes())
    } else {
        let text = format!("{year:04}{rest}");
        tlv(TAG_GENERALIZED_TIME, text.as_bytes())
    }
}

/// X.509 Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }.
pub(crate) fn extension(arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let id = oid(arcs);
    let v = octet_string(value);
    if critical {
        seq(&[&id, &boolean(true), &v])
    } else {
        seq(&[&id, &v])
    }
}

/// One parsed TLV and what follows it.
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    /// Header and content.
    pub whole: &'a [u8],
    pub content: &'a [u8],
    pub rest: &'a [u8],
}

/// Reads one TLV at the start of `input`.
pub(crate) fn read_tlv(input: &[u8]) -> Result<Tlv<'_>, TestPkiError> {
    let bad = || TestPkiError::Der("truncated or unsupported DER");
    let (&tag, after_tag) = input.split_first().ok_or_else(bad)?;
    let (&first, after_len) = after_tag.split_first().ok_or_else(bad)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || after_len.len() < n {
            return Err(bad());
        }
        let len = after_len[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len).ok_or_else(bad)?;
    if input.len() < end {
        return Err(bad());
    }
    Ok(Tlv {
        tag,
        whole: &input[..end],
        content: &input[header..end],
        rest: &input[end..],
    })
}

/// Splits a SEQUENCE at the start of `input` into its element TLVs.
pub(crate) fn sequence_elements(input: &[u8]) -> Result<Vec<&[u8]>, TestPkiError> {
    let tlv = read_tlv(input)?;
    if tlv.tag != TAG_SEQUENCE {
        return Err(TestPkiError::Der("expected a SEQUENCE"));
    }
    elements(tlv.content)
}

/// Splits the content of a constructed value into its element TLVs.
pub(crate) fn elements(mut content: &[u8]) -> Result<Vec<&[u8]>, TestPkiError> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let tlv = read_tlv(content)?;
        out.push(tlv.whole);
        content = tlv.rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_values() {
        // sha256WithRSAEncryption
        assert_eq!(
            oid(&[1, 2, 840, 113_549, 1, 1, 11]),
            [
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b
            ]
        );
        assert_eq!(uint_u64(0), [0x02, 0x01, 0x00]);
        assert_eq!(uint_u64(128), [0x02, 0x02, 0x00, 0x80]);
        let long = tlv(TAG_OCTET_STRING, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let t = read_tlv(&long).expect("parse");
        assert_eq!(
            (t.tag, t.whole.len(), t.content.len(), t.rest.len()),
            (4, 304, 300, 0)
        );
    }
}
