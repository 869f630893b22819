//! BER-TLV (ISO 7816-4 §5.2 / X.690 subset) over a byte slice, without allocation.
//!
//! Tags of one to three bytes, definite lengths of one to four bytes (`xx`, `81 xx`,
//! `82 xx xx`, `83 xx xx xx`), values up to [`MAX_VALUE_LEN`], nesting up to [`MAX_DEPTH`].
//! Indefinite lengths (`80`) are refused: cards do not use them. An iterator stops after its
//! first error, so a malformed input yields at most one `Err`.

use crate::ApduError;

/// Deepest nesting [`Tlv::children`] descends into.
pub const MAX_DEPTH: u8 = 8;
/// Longest value accepted (a card file is never larger).
pub const MAX_VALUE_LEN: usize = 0xFFFF;

/// One tag-length-value, borrowing its value from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    tag: u32,
    value: &'a [u8],
    depth: u8,
}

impl<'a> Tlv<'a> {
    /// The tag bytes as a number, e.g. `0x5F20`, `0x9F7F`, `0x80`.
    pub const fn tag(&self) -> u32 {
        self.tag
    }

    pub const fn value(&self) -> &'a [u8] {
        self.value
    }

    /// Bit 6 of the first tag byte: the value is itself a TLV list.
    pub const fn is_constructed(&self) -> bool {
        let mut first = self.tag;
        while first > 0xFF {
            first >>= 8;
        }
        first & 0x20 != 0
    }

    /// The TLVs inside a constructed TLV.
    pub fn children(&self) -> Result<TlvIter<'a>, ApduError> {
        if !self.is_constructed() {
            return Err(ApduError::TlvNotConstructed { tag: self.tag });
        }
        if self.depth >= MAX_DEPTH {
            return Err(ApduError::TlvTooDeep);
        }
        Ok(TlvIter {
            input: self.value,
            at: 0,
            depth: self.depth + 1,
            failed: false,
        })
    }
}

/// Iterates over the TLVs of one level of a byte slice.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    input: &'a [u8],
    at: usize,
    depth: u8,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    pub const fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            at: 0,
            depth: 0,
            failed: false,
        }
    }

    fn byte(&self, at: usize) -> Result<u8, ApduError> {
        self.input
            .get(at)
            .copied()
            .ok_or(ApduError::TlvTruncated { offset: at })
    }

    fn parse_one(&mut self) -> Result<Tlv<'a>, ApduError> {
        let start = self.at;
        let mut at = start;
        let first = self.byte(at)?;
        at += 1;
        let mut tag = u32::from(first);
        if first & 0x1F == 0x1F {
            loop {
                if at - start >= 3 {
                    return Err(ApduError::TlvTagTooLong { offset: start });
                }
                let b = self.byte(at)?;
                at += 1;
                tag = (tag << 8) | u32::from(b);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let len_at = at;
        let l0 = self.byte(at)?;
        at += 1;
        let len = match l0 {
            0x00..=0x7F => usize::from(l0),
            0x81..=0x83 => {
                let mut len = 0usize;
                for _ in 0..(l0 & 0x7F) {
                    len = (len << 8) | usize::from(self.byte(at)?);
                    at += 1;
                }
                len
            }
            _ => return Err(ApduError::TlvBadLength { offset: len_at }),
        };
        if len > MAX_VALUE_LEN {
            return Err(ApduError::TlvTooLong { offset: start, len });
        }
        let value = self
            .input
            .get(at..at.saturating_add(len))
            .ok_or(ApduError::TlvTruncated { offset: start })?;
        self.at = at + len;
        Ok(Tlv {
            tag,
            value,
            depth: self.depth,
        })
    }

    /// The first TLV of this level with `tag`; an error if the level is malformed before it.
    pub fn find(self, tag: u32) -> Result<Option<Tlv<'a>>, ApduError> {
        for tlv in self {
            let tlv = tlv?;
            if tlv.tag == tag {
                return Ok(Some(tlv));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, ApduError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.input.len() {
            return None;
        }
        let r = self.parse_one();
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_DEPTH, Tlv, TlvIter};
    use crate::ApduError;

    fn one(input: &[u8]) -> Result<Tlv<'_>, ApduError> {
        TlvIter::new(input).next().expect("one item")
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert_eq!(TlvIter::new(&[]).count(), 0);
    }

    #[test]
    fn lone_tag_byte_is_truncated() {
        assert_eq!(one(&[0x80]), Err(ApduError::TlvTruncated { offset: 1 }));
    }

    #[test]
    fn short_form_length_and_value() {
        let t = one(&[0x80, 0x02, 0xAA, 0xBB]).expect("ok");
        assert_eq!((t.tag(), t.value()), (0x80, &[0xAA, 0xBB][..]));
        assert!(!t.is_constructed());
    }

    #[test]
    fn zero_length_value_is_empty() {
        assert_eq!(one(&[0x80, 0x00]).expect("ok").value(), &[] as &[u8]);
    }

    #[test]
    fn two_and_three_byte_tags() {
        assert_eq!(one(&[0x5F, 0x20, 0x01, 0x41]).expect("ok").tag(), 0x5F20);
        assert_eq!(one(&[0x9F, 0x81, 0x01, 0x00]).expect("ok").tag(), 0x9F_8101);
    }

    #[test]
    fn four_byte_tag_is_refused() {
        assert_eq!(
            one(&[0x9F, 0x81, 0x81, 0x01, 0x00]),
            Err(ApduError::TlvTagTooLong { offset: 0 })
        );
    }

    #[test]
    fn multi_byte_tag_cut_short_is_truncated() {
        assert_eq!(one(&[0x5F]), Err(ApduError::TlvTruncated { offset: 1 }));
    }

    #[test]
    fn long_form_lengths_81_82_83() {
        let mut buf = [0u8; 300];
        buf[..3].copy_from_slice(&[0x04, 0x81, 0x80]);
        assert_eq!(one(&buf[..3 + 0x80]).expect("ok").value().len(), 0x80);
        buf[..4].copy_from_slice(&[0x04, 0x82, 0x01, 0x00]);
        assert_eq!(one(&buf[..4 + 256]).expect("ok").value().len(), 256);
        buf[..5].copy_from_slice(&[0x04, 0x83, 0x00, 0x01, 0x01]);
        assert_eq!(one(&buf[..5 + 257]).expect("ok").value().len(), 257);
    }

    #[test]
    fn indefinite_and_four_byte_lengths_are_refused() {
        assert_eq!(
            one(&[0x30, 0x80, 0x00, 0x00]),
            Err(ApduError::TlvBadLength { offset: 1 })
        );
        assert_eq!(
            one(&[0x04, 0x84, 0, 0, 0, 1, 0]),
            Err(ApduError::TlvBadLength { offset: 1 })
        );
    }

    #[test]
    fn length_past_the_end_is_truncated() {
        assert_eq!(
            one(&[0x80, 0x05, 1, 2]),
            Err(ApduError::TlvTruncated { offset: 0 })
        );
        assert_eq!(
            one(&[0x80, 0x82, 0x01]),
            Err(ApduError::TlvTruncated { offset: 3 })
        );
    }

    #[test]
    fn value_over_the_limit_is_refused_before_slicing() {
        assert_eq!(
            one(&[0x04, 0x83, 0x01, 0x00, 0x00]),
            Err(ApduError::TlvTooLong {
                offset: 0,
                len: 0x1_0000
            })
        );
    }

    #[test]
    fn iteration_stops_after_the_first_error() {
        let items: heapless::Vec<_, 4> = TlvIter::new(&[0x80, 0x01, 0x01, 0x81, 0x05]).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }

    #[test]
    fn nested_constructed_tlvs_are_walked_with_children() {
        // A1 { 80 01 07, A2 { 5F20 01 41 } }
        let input = [
            0xA1, 0x09, 0x80, 0x01, 0x07, 0xA2, 0x04, 0x5F, 0x20, 0x01, 0x41,
        ];
        let outer = one(&input).expect("ok");
        assert!(outer.is_constructed());
        let inner = outer
            .children()
            .expect("constructed")
            .find(0xA2)
            .expect("well formed")
            .expect("present");
        let name = inner
            .children()
            .expect("constructed")
            .find(0x5F20)
            .expect("well formed")
            .expect("present");
        assert_eq!(name.value(), b"A");
    }

    #[test]
    fn children_of_a_primitive_tlv_is_an_error() {
        assert_eq!(
            one(&[0x80, 0x00]).expect("ok").children().err(),
            Some(ApduError::TlvNotConstructed { tag: 0x80 })
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        // MAX_DEPTH + 2 nested empty-ended A0 wrappers.
        const LEVELS: usize = MAX_DEPTH as usize + 2;
        let mut buf = [0u8; 2 * LEVELS];
        for (i, pair) in buf.chunks_mut(2).enumerate() {
            pair[0] = 0xA0;
            #[allow(clippy::cast_possible_truncation)]
            let remaining = (2 * (LEVELS - i - 1)) as u8;
            pair[1] = remaining;
        }
        let mut tlv = one(&buf).expect("ok");
        let mut depth = 0;
        let err = loop {
            match tlv.children() {
                Ok(mut c) => {
                    tlv = c.next().expect("nested").expect("ok");
                    depth += 1;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err, ApduError::TlvTooDeep);
        assert_eq!(depth, usize::from(MAX_DEPTH));
    }
}
