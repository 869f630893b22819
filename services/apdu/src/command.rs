use heapless::Vec;

use crate::ApduError;

/// Most data bytes a short APDU carries (Lc on one byte).
pub const MAX_SHORT_DATA: usize = 255;
/// Largest Le of a short APDU (`00` means 256).
pub const MAX_SHORT_LE: u32 = 256;
/// Largest Le of an extended APDU (`00 00` means 65536).
pub const MAX_EXTENDED_LE: u32 = 65_536;
/// Most data bytes an extended APDU carries (Lc on two bytes).
const MAX_EXTENDED_DATA: usize = 65_535;
/// CLA bit for "more commands of this chain follow".
const CLA_CHAINING: u8 = 0x10;

/// A C-APDU whose data holds at most `N` bytes: `N` ≤ 255 is always encoded short; a larger
/// `N` allows extended length, used only when the data or Le do not fit a short APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<const N: usize = MAX_SHORT_DATA> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    data: Vec<u8, N>,
    le: Option<u32>,
}

/// A command that always fits a short APDU.
pub type ShortCommand = Command<MAX_SHORT_DATA>;

impl<const N: usize> Command<N> {
    /// A command without data nor Le (ISO case 1).
    pub const fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// Sets the data; fails if it exceeds the capacity `N` or 65535 bytes.
    pub fn with_data(mut self, data: &[u8]) -> Result<Self, ApduError> {
        let max = N.min(MAX_EXTENDED_DATA);
        if data.len() > max {
            return Err(ApduError::DataTooLong {
                len: data.len(),
                max,
            });
        }
        self.data.clear();
        self.data
            .extend_from_slice(data)
            .map_err(|()| ApduError::DataTooLong {
                len: data.len(),
                max,
            })?;
        Ok(self)
    }

    /// Sets Le, the number of response bytes expected: 1..=256 short, up to 65536 extended
    /// (checked when encoding, where the short or extended form is known).
    #[must_use]
    pub const fn with_le(mut self, le: u32) -> Self {
        self.le = Some(le);
        self
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub const fn le(&self) -> Option<u32> {
        self.le
    }

    /// True if this command needs the extended-length encoding.
    pub fn is_extended(&self) -> bool {
        self.data.len() > MAX_SHORT_DATA || self.le.is_some_and(|le| le > MAX_SHORT_LE)
    }

    /// Number of bytes [`Command::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let ext = self.is_extended();
        let lc = match (self.data.is_empty(), ext) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 3,
        };
        let le = match (self.le.is_some(), ext, self.data.is_empty()) {
            (false, _, _) => 0,
            (true, false, _) => 1,
            // Extended case 2 carries the 00 marker with Le; case 4 shares Lc's marker.
            (true, true, true) => 3,
            (true, true, false) => 2,
        };
        4 + lc + self.data.len() + le
    }

    /// Encodes into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ApduError> {
        let needed = self.encoded_len();
        let Some(out) = out.get_mut(..needed) else {
            return Err(ApduError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let ext = self.is_extended();
        let le = match self.le {
            None => None,
            Some(le) if le == 0 || le > MAX_EXTENDED_LE => return Err(ApduError::InvalidLe { le }),
            // 256 and 65536 are encoded as 00 and 00 00: truncation is the encoding.
            #[allow(clippy::cast_possible_truncation)]
            Some(le) => Some(le as u16),
        };
        let mut w = Writer { out, at: 0 };
        w.put(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            #[allow(clippy::cast_possible_truncation)] // bounded by MAX_EXTENDED_DATA
            let lc = self.data.len() as u16;
            if ext {
                w.put(&[0]);
                w.put(&lc.to_be_bytes());
            } else {
                w.put(&lc.to_be_bytes()[1..]);
            }
            w.put(&self.data);
        }
        if let Some(le) = le {
            if ext {
                if self.data.is_empty() {
                    w.put(&[0]);
                }
                w.put(&le.to_be_bytes());
            } else {
                w.put(&le.to_be_bytes()[1..]);
            }
        }
        Ok(w.at)
    }

    /// Encodes into a fixed-capacity vector.
    pub fn to_vec<const M: usize>(&self) -> Result<Vec<u8, M>, ApduError> {
        let mut v = Vec::new();
        v.resize_default(self.encoded_len().min(M))
            .map_err(|()| ApduError::BufferTooSmall {
                needed: self.encoded_len(),
                available: M,
            })?;
        let n = self.encode(&mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Splits the data into short commands of at most `chunk` (1..=255) bytes each, every one
    /// but the last with the chaining bit (`CLA | 0x10`); only the last carries Le.
    pub fn chain(&self, chunk: usize) -> Result<Chain<'_>, ApduError> {
        if chunk == 0 || chunk > MAX_SHORT_DATA {
            return Err(ApduError::InvalidArgument {
                what: "chain chunk size must be 1..=255",
            });
        }
        if self.le.is_some_and(|le| le > MAX_SHORT_LE) {
            return Err(ApduError::InvalidLe {
                le: self.le.unwrap_or_default(),
            });
        }
        Ok(Chain {
            header: [self.cla, self.ins, self.p1, self.p2],
            rest: &self.data,
            le: self.le,
            chunk,
            first: true,
        })
    }
}

/// Iterator over the short commands of a chain; see [`Command::chain`].
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    header: [u8; 4],
    rest: &'a [u8],
    le: Option<u32>,
    chunk: usize,
    first: bool,
}

impl Iterator for Chain<'_> {
    type Item = ShortCommand;

    fn next(&mut self) -> Option<ShortCommand> {
        if self.rest.is_empty() && !self.first {
            return None;
        }
        self.first = false;
        let (part, rest) = self.rest.split_at(self.chunk.min(self.rest.len()));
        self.rest = rest;
        let [cla, ins, p1, p2] = self.header;
        let last = rest.is_empty();
        let cla = if last { cla } else { cla | CLA_CHAINING };
        let mut data = Vec::new();
        // Cannot fail: part.len() <= chunk <= 255 == capacity.
        let _ = data.extend_from_slice(part);
        Some(Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le: if last { self.le } else { None },
        })
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Callers size `out` with `encoded_len` first, so this never runs out of room; if it
    /// did, the bytes are dropped rather than panicking.
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.out.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::{Command, ShortCommand};
    use crate::ApduError;

    fn encode<const N: usize>(c: &Command<N>) -> heapless::Vec<u8, 300> {
        c.to_vec().expect("encodes")
    }

    #[test]
    fn case1_is_the_header_alone() {
        assert_eq!(
            &encode(&ShortCommand::new(0, 0x20, 0, 0x81))[..],
            [0, 0x20, 0, 0x81]
        );
    }

    #[test]
    fn case2_short_encodes_le_256_as_00() {
        let c = ShortCommand::new(0, 0xB0, 0, 0).with_le(256);
        assert_eq!(&encode(&c)[..], [0, 0xB0, 0, 0, 0]);
        let c = ShortCommand::new(0, 0xB0, 0, 0).with_le(12);
        assert_eq!(&encode(&c)[..], [0, 0xB0, 0, 0, 12]);
    }

    #[test]
    fn case3_and_case4_short_put_lc_before_data_and_le_after() {
        let c = ShortCommand::new(0, 0xA4, 4, 0)
            .with_data(&[1, 2])
            .expect("fits");
        assert_eq!(&encode(&c)[..], [0, 0xA4, 4, 0, 2, 1, 2]);
        let c = c.with_le(256);
        assert_eq!(&encode(&c)[..], [0, 0xA4, 4, 0, 2, 1, 2, 0]);
    }

    #[test]
    fn extended_case2_has_a_zero_marker_then_two_byte_le() {
        let c = ShortCommand::new(0, 0xB0, 0, 0).with_le(65_536);
        assert_eq!(&encode(&c)[..], [0, 0xB0, 0, 0, 0, 0, 0]);
        let c = ShortCommand::new(0, 0xB0, 0, 0).with_le(300);
        assert_eq!(&encode(&c)[..], [0, 0xB0, 0, 0, 0, 0x01, 0x2C]);
    }

    #[test]
    fn extended_case4_has_three_byte_lc_and_two_byte_le() {
        let data = [7u8; 256];
        let c = Command::<512>::new(0, 0x2A, 0x80, 0x86)
            .with_data(&data)
            .expect("fits")
            .with_le(256);
        let v = encode(&c);
        assert_eq!(v.len(), 4 + 3 + 256 + 2);
        assert_eq!(&v[..7], [0, 0x2A, 0x80, 0x86, 0, 0x01, 0x00]);
        assert_eq!(&v[v.len() - 2..], [0x01, 0x00]);
    }

    #[test]
    fn data_over_capacity_is_refused() {
        assert_eq!(
            ShortCommand::new(0, 0, 0, 0).with_data(&[0; 256]),
            Err(ApduError::DataTooLong { len: 256, max: 255 })
        );
    }

    #[test]
    fn le_zero_or_over_65536_is_refused_at_encoding() {
        let mut buf = [0u8; 16];
        for le in [0, 65_537] {
            assert_eq!(
                ShortCommand::new(0, 0, 0, 0).with_le(le).encode(&mut buf),
                Err(ApduError::InvalidLe { le })
            );
        }
    }

    #[test]
    fn encode_into_too_small_buffer_is_an_error_not_a_panic() {
        let c = ShortCommand::new(0, 0xA4, 4, 0)
            .with_data(&[1, 2, 3])
            .expect("fits");
        let mut buf = [0u8; 7];
        assert_eq!(
            c.encode(&mut buf),
            Err(ApduError::BufferTooSmall {
                needed: 8,
                available: 7
            })
        );
        assert_eq!(
            c.to_vec::<4>(),
            Err(ApduError::BufferTooSmall {
                needed: 8,
                available: 4
            })
        );
    }

    #[test]
    fn chain_splits_600_bytes_into_255_255_90_with_chaining_bit_on_all_but_last() {
        let data = [0xAB; 600];
        let c = Command::<600>::new(0, 0x2A, 0x80, 0x86)
            .with_data(&data)
            .expect("fits")
            .with_le(256);
        let parts: heapless::Vec<ShortCommand, 4> = c.chain(255).expect("valid").collect();
        let lens: heapless::Vec<usize, 4> = parts.iter().map(|p| p.data().len()).collect();
        assert_eq!(&lens[..], [255, 255, 90]);
        assert_eq!(
            parts
                .iter()
                .map(|p| p.cla)
                .collect::<heapless::Vec<u8, 4>>(),
            [0x10, 0x10, 0x00]
        );
        assert_eq!(
            parts
                .iter()
                .map(ShortCommand::le)
                .collect::<heapless::Vec<_, 4>>(),
            [None, None, Some(256)]
        );
    }

    #[test]
    fn chain_of_empty_data_is_the_single_command() {
        let c = ShortCommand::new(0, 0x88, 0, 0).with_le(256);
        let parts: heapless::Vec<ShortCommand, 2> = c.chain(255).expect("valid").collect();
        assert_eq!(&parts[..], core::slice::from_ref(&c));
    }

    #[test]
    fn chain_chunk_size_outside_1_to_255_is_refused() {
        let c = ShortCommand::new(0, 0, 0, 0);
        assert!(c.chain(0).is_err());
        assert!(c.chain(256).is_err());
    }
}
