use core::fmt;

/// Everything that can be wrong with an APDU or a TLV, on either side of the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApduError {
    /// The output buffer cannot hold what must be written into it.
    BufferTooSmall { needed: usize, available: usize },
    /// Command data longer than the command's capacity or than ISO 7816-4 allows.
    DataTooLong { len: usize, max: usize },
    /// Le outside `1..=65536` (or `1..=256` where only a short APDU is possible).
    InvalidLe { le: u32 },
    /// A response shorter than its two status bytes.
    ResponseTooShort { len: usize },
    /// SW1 outside `61..6F` and `90..9F`: not a status word, the response is garbage.
    InvalidStatusWord { sw: u16 },
    /// A BER-TLV runs past the end of its input.
    TlvTruncated { offset: usize },
    /// A BER-TLV tag longer than three bytes.
    TlvTagTooLong { offset: usize },
    /// A BER-TLV length that is indefinite (`80`) or wider than three bytes.
    TlvBadLength { offset: usize },
    /// A BER-TLV value longer than [`crate::tlv::MAX_VALUE_LEN`].
    TlvTooLong { offset: usize, len: usize },
    /// BER-TLV nesting deeper than [`crate::tlv::MAX_DEPTH`].
    TlvTooDeep,
    /// Asked for the children of a primitive BER-TLV.
    TlvNotConstructed { tag: u32 },
    /// A builder argument out of range (the argument is named).
    InvalidArgument { what: &'static str },
}

impl fmt::Display for ApduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "buffer too small: {needed} bytes needed, {available} available"
                )
            }
            Self::DataTooLong { len, max } => {
                write!(f, "command data of {len} bytes, at most {max} allowed")
            }
            Self::InvalidLe { le } => write!(f, "Le {le} out of range"),
            Self::ResponseTooShort { len } => {
                write!(f, "response of {len} bytes, shorter than SW1 SW2")
            }
            Self::InvalidStatusWord { sw } => write!(f, "not a status word: {sw:04X}"),
            Self::TlvTruncated { offset } => write!(f, "TLV truncated at offset {offset}"),
            Self::TlvTagTooLong { offset } => {
                write!(f, "TLV tag longer than 3 bytes at offset {offset}")
            }
            Self::TlvBadLength { offset } => {
                write!(
                    f,
                    "TLV length indefinite or wider than 3 bytes at offset {offset}"
                )
            }
            Self::TlvTooLong { offset, len } => {
                write!(
                    f,
                    "TLV value of {len} bytes at offset {offset} over the limit"
                )
            }
            Self::TlvTooDeep => write!(f, "TLV nested too deep"),
            Self::TlvNotConstructed { tag } => write!(f, "TLV tag {tag:X} is primitive"),
            Self::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApduError {}
