//! Card type from the ATR, as the Cryptolib CPS driver does it: exact comparison.

use passerelle_apdu::cps;
use serde::Serialize;

/// CPS3 contactless ATR (Cryptolib CPS `card-cps.c`).
const CPS3_CONTACTLESS_ATR: [u8; 20] = [
    0x3B, 0x8F, 0x80, 0x01, 0x00, 0x31, 0xB8, 0x64, 0x04, 0xB0, 0xEC, 0xC1, 0x73, 0x94, 0x01, 0x80,
    0x82, 0x90, 0x00, 0x0E,
];

/// What is in a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CardKind {
    /// CPS3 through its contacts: identity, PIN and signatures.
    Cps3Contact,
    /// CPS3 through a contactless reader: the card allows no signature in this mode.
    Cps3Contactless,
    /// CPS4 (ChipDoc applet on logical channel 1).
    Cps4,
    /// A Vitale card (an ATR of [`crate::CardsConfig::vitale_atrs`]): reported, not used.
    Vitale,
    /// Anything else.
    Unknown,
}

impl CardKind {
    pub fn classify(atr: &[u8], vitale_atrs: &[Vec<u8>]) -> Self {
        if atr == cps::CPS3_ATR {
            Self::Cps3Contact
        } else if atr == CPS3_CONTACTLESS_ATR {
            Self::Cps3Contactless
        } else if atr == cps::CPS4_ATR {
            Self::Cps4
        } else if vitale_atrs.iter().any(|v| v == atr) {
            Self::Vitale
        } else {
            Self::Unknown
        }
    }

    pub fn is_cps(self) -> bool {
        matches!(self, Self::Cps3Contact | Self::Cps3Contactless | Self::Cps4)
    }

    /// Whether the card's authentication key may sign in this mode.
    pub fn can_sign(self) -> bool {
        matches!(self, Self::Cps3Contact | Self::Cps4)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cps3Contact => "CPS3",
            Self::Cps3Contactless => "CPS3 sans contact",
            Self::Cps4 => "CPS4",
            Self::Vitale => "Vitale",
            Self::Unknown => "inconnue",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CPS3_CONTACTLESS_ATR, CardKind};
    use passerelle_apdu::cps;

    #[test]
    fn atrs_of_the_cryptolib_table_classify_exactly() {
        assert_eq!(
            CardKind::classify(&cps::CPS3_ATR, &[]),
            CardKind::Cps3Contact
        );
        assert_eq!(CardKind::classify(&cps::CPS4_ATR, &[]), CardKind::Cps4);
        assert_eq!(
            CardKind::classify(&CPS3_CONTACTLESS_ATR, &[]),
            CardKind::Cps3Contactless
        );
        assert!(!CardKind::Cps3Contactless.can_sign());
        // One byte off is another card: the driver compares with memcmp.
        let mut near = cps::CPS3_ATR;
        near[16] = 0x01;
        assert_eq!(CardKind::classify(&near, &[]), CardKind::Unknown);
    }

    #[test]
    fn vitale_atrs_come_from_the_configuration() {
        let vitale = vec![0x3B, 0x55, 0x13];
        assert_eq!(
            CardKind::classify(&vitale, std::slice::from_ref(&vitale)),
            CardKind::Vitale
        );
        assert_eq!(CardKind::classify(&vitale, &[]), CardKind::Unknown);
    }
}
