use std::fmt;

use passerelle_apdu::cps::{PIN_MAX, PIN_MIN, PIN_PAD, PIN_REF};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{CardError, Result};

/// A PIN on its way to the card: digits only, zeroized on drop, never printed.
pub struct Pin(Zeroizing<Vec<u8>>);

impl Pin {
    /// Takes the PIN the user typed; the `String` is consumed and zeroized.
    pub fn new(typed: String) -> Result<Self> {
        let bytes = Zeroizing::new(typed.into_bytes());
        if !(PIN_MIN..=PIN_MAX).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(CardError::InvalidPinFormat);
        }
        Ok(Self(bytes))
    }

    /// VERIFY `cla 20 00 81 08 <PIN padded with FF>`, in a buffer zeroized on drop.
    pub(crate) fn verify_apdu(&self, cla: u8) -> Zeroizing<[u8; 5 + PIN_MAX]> {
        let mut apdu = Zeroizing::new([PIN_PAD; 5 + PIN_MAX]);
        #[expect(clippy::cast_possible_truncation, reason = "PIN_MAX is 8")]
        apdu[..5].copy_from_slice(&[cla, 0x20, 0x00, PIN_REF, PIN_MAX as u8]);
        apdu[5..5 + self.0.len()].copy_from_slice(&self.0);
        apdu
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(****)")
    }
}

/// The PIN state shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum PinState {
    /// Not asked yet (the card was just inserted).
    Unknown,
    /// Not verified; `tries_left` before the card blocks it.
    NotVerified { tries_left: u8 },
    /// Verified for this card session (until removal or reset).
    Verified,
    /// Blocked: three wrong PINs.
    Blocked,
}

#[cfg(test)]
mod tests {
    use super::Pin;

    #[test]
    fn pin_debug_hides_the_digits_and_bad_formats_are_refused() {
        let pin = Pin::new("1234".into()).expect("valid");
        assert_eq!(format!("{pin:?}"), "Pin(****)");
        let apdu = pin.verify_apdu(0);
        assert_eq!(
            &apdu[..],
            [
                0x00, 0x20, 0x00, 0x81, 0x08, b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
        for bad in ["123", "123456789", "12a4", ""] {
            assert!(Pin::new(bad.into()).is_err(), "{bad}");
        }
    }
}
