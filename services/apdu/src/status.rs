use core::fmt;

/// SW1 SW2, named where the card service acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusWord {
    /// `90 00`.
    Ok,
    /// `61 xx`: `xx` more bytes (`00` = 256) to fetch with `GET RESPONSE`.
    MoreData(u8),
    /// `6C xx`: wrong Le, resend the command with Le = `xx`.
    WrongLe(u8),
    /// `63 Cx`: wrong PIN (or PIN status asked), `x` tries left.
    PinTriesLeft(u8),
    /// `69 83`: authentication method blocked (PIN blocked).
    PinBlocked,
    /// `69 82`: security status not satisfied (e.g. signing before VERIFY).
    SecurityStatusNotSatisfied,
    /// `6A 82`: file or application not found.
    FileNotFound,
    /// `6A 86`: incorrect parameters P1-P2.
    IncorrectP1P2,
    /// `6B 00`: wrong parameters P1-P2 (e.g. offset outside the EF).
    WrongP1P2,
    /// `6D 00`: instruction not supported.
    InsNotSupported,
    /// `6E 00`: class not supported.
    ClaNotSupported,
    /// `67 00`: wrong length.
    WrongLength,
    /// Anything else, as `SW1 << 8 | SW2`.
    Other(u16),
}

impl StatusWord {
    pub const fn from_bytes(sw1: u8, sw2: u8) -> Self {
        match (sw1, sw2) {
            (0x90, 0x00) => Self::Ok,
            (0x61, n) => Self::MoreData(n),
            (0x6C, n) => Self::WrongLe(n),
            (0x63, n) if n & 0xF0 == 0xC0 => Self::PinTriesLeft(n & 0x0F),
            (0x69, 0x83) => Self::PinBlocked,
            (0x69, 0x82) => Self::SecurityStatusNotSatisfied,
            (0x6A, 0x82) => Self::FileNotFound,
            (0x6A, 0x86) => Self::IncorrectP1P2,
            (0x6B, 0x00) => Self::WrongP1P2,
            (0x6D, 0x00) => Self::InsNotSupported,
            (0x6E, 0x00) => Self::ClaNotSupported,
            (0x67, 0x00) => Self::WrongLength,
            (a, b) => Self::Other(u16::from_be_bytes([a, b])),
        }
    }

    pub const fn from_u16(sw: u16) -> Self {
        let [a, b] = sw.to_be_bytes();
        Self::from_bytes(a, b)
    }

    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Ok => 0x9000,
            Self::MoreData(n) => u16::from_be_bytes([0x61, n]),
            Self::WrongLe(n) => u16::from_be_bytes([0x6C, n]),
            Self::PinTriesLeft(n) => u16::from_be_bytes([0x63, 0xC0 | (n & 0x0F)]),
            Self::PinBlocked => 0x6983,
            Self::SecurityStatusNotSatisfied => 0x6982,
            Self::FileNotFound => 0x6A82,
            Self::IncorrectP1P2 => 0x6A86,
            Self::WrongP1P2 => 0x6B00,
            Self::InsNotSupported => 0x6D00,
            Self::ClaNotSupported => 0x6E00,
            Self::WrongLength => 0x6700,
            Self::Other(sw) => sw,
        }
    }

    pub const fn to_bytes(self) -> [u8; 2] {
        self.to_u16().to_be_bytes()
    }

    /// `90 00`, or `61 xx` (success, more data waiting).
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Ok | Self::MoreData(_))
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sw = self.to_u16();
        match self {
            Self::Ok => write!(f, "{sw:04X} ok"),
            Self::MoreData(_) => write!(f, "{sw:04X} more data"),
            Self::WrongLe(_) => write!(f, "{sw:04X} wrong Le"),
            Self::PinTriesLeft(n) => write!(f, "{sw:04X} wrong PIN, {n} tries left"),
            Self::PinBlocked => write!(f, "{sw:04X} PIN blocked"),
            Self::SecurityStatusNotSatisfied => write!(f, "{sw:04X} security status not satisfied"),
            Self::FileNotFound => write!(f, "{sw:04X} file not found"),
            Self::IncorrectP1P2 | Self::WrongP1P2 => write!(f, "{sw:04X} wrong P1-P2"),
            Self::InsNotSupported => write!(f, "{sw:04X} instruction not supported"),
            Self::ClaNotSupported => write!(f, "{sw:04X} class not supported"),
            Self::WrongLength => write!(f, "{sw:04X} wrong length"),
            Self::Other(_) => write!(f, "{sw:04X}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StatusWord;

    #[test]
    fn every_named_status_word_round_trips_through_u16() {
        for sw in [
            0x9000, 0x6110, 0x6100, 0x6C20, 0x63C2, 0x63C0, 0x6983, 0x6982, 0x6A82, 0x6A86, 0x6B00,
            0x6D00, 0x6E00, 0x6700, 0x6282, 0x6985, 0x6300,
        ] {
            assert_eq!(StatusWord::from_u16(sw).to_u16(), sw, "{sw:04X}");
        }
    }

    #[test]
    fn pin_tries_left_reads_the_low_nibble_of_63cx() {
        assert_eq!(StatusWord::from_u16(0x63C2), StatusWord::PinTriesLeft(2));
        assert_eq!(StatusWord::from_u16(0x63C0), StatusWord::PinTriesLeft(0));
        // 63 00 is "verification failed" without a counter: not a tries count.
        assert_eq!(StatusWord::from_u16(0x6300), StatusWord::Other(0x6300));
    }

    #[test]
    fn both_wrong_p1p2_words_are_named() {
        assert_eq!(StatusWord::from_u16(0x6A86), StatusWord::IncorrectP1P2);
        assert_eq!(StatusWord::from_u16(0x6B00), StatusWord::WrongP1P2);
    }

    #[test]
    fn unknown_status_word_is_kept_as_other() {
        assert_eq!(StatusWord::from_u16(0x6985), StatusWord::Other(0x6985));
    }
}
