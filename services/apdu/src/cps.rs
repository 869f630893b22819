//! CPS card constants and the commands the card service sends.
//!
//! Card facts (ATRs, AIDs, EF.SN.ICC, MSE/PSO/INTERNAL AUTHENTICATE headers) come from the
//! ANS Cryptolib CPS sources (see /work/shared/spec/anchors-health-it.md §1.1). Where the
//! digest is silent, the choice made here is marked **ours**: it is what passerelle and its
//! virtual test card agree on, to be checked against a real card (issue #7).

use crate::{ApduError, ShortCommand};

/// CPS3 contact ATR.
pub const CPS3_ATR: [u8; 17] = [
    0x3B, 0xAC, 0x00, 0x40, 0x2A, 0x00, 0x12, 0x25, 0x00, 0x64, 0x80, 0x00, 0x03, 0x10, 0x00, 0x90,
    0x00,
];
/// CPS4 ATR.
pub const CPS4_ATR: [u8; 17] = [
    0x3B, 0x9B, 0x18, 0x80, 0x01, 0x00, 0x12, 0x25, 0x00, 0x64, 0x80, 0x04, 0x01, 0x00, 0x00, 0x90,
    0x44,
];
/// CPS3 IAS application (contact).
pub const CPS3_IAS_AID: [u8; 13] = [
    0xE8, 0x28, 0xBD, 0x08, 0x0F, 0x80, 0x25, 0x00, 0x00, 0x01, 0xFF, 0x00, 0x10,
];
/// CPS4 ChipDoc applet, selected on logical channel 1 ([`CPS4_CLA`]).
pub const CPS4_APPLET_AID: [u8; 8] = [0x80, 0x25, 0x00, 0x00, 0x01, 0xFF, 0x01, 0x00];
/// CLA of the CPS4 applet: logical channel 1.
pub const CPS4_CLA: u8 = 0x01;
/// CLA of the CPS3 IAS application: basic channel.
pub const CPS3_CLA: u8 = 0x00;

/// The master file.
pub const MF: u16 = 0x3F00;
/// EF.SN.ICC, under the MF: 12 bytes, bytes 2..6 are [`ANS_ISSUER`].
pub const EF_SN_ICC: u16 = 0xD003;
/// Length of EF.SN.ICC.
pub const EF_SN_ICC_LEN: usize = 12;
/// The ANS issuer number found in EF.SN.ICC bytes 2..6.
pub const ANS_ISSUER: [u8; 5] = [0x80, 0x25, 0x00, 0x00, 0x01];
/// Identity EF (**ours**): BER-TLV, tags in [`id_tags`].
pub const EF_IDENTITY: u16 = 0xD0E1;
/// Authentication certificate EF (**ours**): the DER certificate, read with READ BINARY.
pub const EF_CERT_AUTH: u16 = 0xD0E2;
/// PIN reference for VERIFY P2 (**ours**: a local PIN, `0x80 | 1`).
pub const PIN_REF: u8 = 0x81;
/// Authentication private key reference for MSE SET tag 84 (**ours**).
pub const KEY_REF_AUTH: u8 = 0x81;
/// Algorithm reference for MSE SET tag 80: RSA PKCS#1 v1.5 over a DigestInfo the host
/// built (**ours**).
pub const ALG_RSA_PKCS1: u8 = 0x02;
/// PIN length bounds and the padded length sent in VERIFY.
pub const PIN_MIN: usize = 4;
pub const PIN_MAX: usize = 8;
/// PIN padding (**ours**): ASCII digits, right-padded with `FF` to [`PIN_MAX`] bytes, as
/// IAS-ECC cards usually expect; the digest does not say.
pub const PIN_PAD: u8 = 0xFF;

/// Tags of the identity EF (**ours**, not the real card's layout).
pub mod id_tags {
    /// National health professional id (`8` + RPPS), ASCII.
    pub const NATIONAL_ID: u32 = 0x80;
    /// Family name, UTF-8.
    pub const FAMILY_NAME: u32 = 0x81;
    /// Given name, UTF-8.
    pub const GIVEN_NAME: u32 = 0x82;
    /// Profession label, UTF-8.
    pub const PROFESSION: u32 = 0x83;
}

/// The security environment template of MSE SET (P2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MseTemplate {
    /// `A4`: authentication (INTERNAL AUTHENTICATE).
    Authentication,
    /// `B6`: digital signature (PSO CDS).
    DigitalSignature,
    /// `B8`: confidentiality (decipher).
    Confidentiality,
}

impl MseTemplate {
    pub const fn p2(self) -> u8 {
        match self {
            Self::Authentication => 0xA4,
            Self::DigitalSignature => 0xB6,
            Self::Confidentiality => 0xB8,
        }
    }

    pub const fn from_p2(p2: u8) -> Option<Self> {
        match p2 {
            0xA4 => Some(Self::Authentication),
            0xB6 => Some(Self::DigitalSignature),
            0xB8 => Some(Self::Confidentiality),
            _ => None,
        }
    }
}

/// SELECT by AID: `cla A4 04 00 Lc AID` (FCI returned; a `61xx` is followed by `transceive`).
pub fn select_aid(cla: u8, aid: &[u8]) -> Result<ShortCommand, ApduError> {
    if aid.is_empty() || aid.len() > 16 {
        return Err(ApduError::InvalidArgument {
            what: "AID must be 1..=16 bytes",
        });
    }
    ShortCommand::new(cla, 0xA4, 0x04, 0x00).with_data(aid)
}

/// SELECT by file id: `cla A4 00 0C 02 fid` (P1 00: MF, DF or EF by id; P2 0C: no answer
/// data).
pub fn select_file(cla: u8, fid: u16) -> Result<ShortCommand, ApduError> {
    ShortCommand::new(cla, 0xA4, 0x00, 0x0C).with_data(&fid.to_be_bytes())
}

/// READ BINARY of the current EF: `cla B0 offset Le` with a 15-bit offset, `le` 1..=256.
pub fn read_binary(cla: u8, offset: u16, le: u16) -> Result<ShortCommand, ApduError> {
    if offset > 0x7FFF {
        return Err(ApduError::InvalidArgument {
            what: "READ BINARY offset over 0x7FFF (P1 bit 8 means SFI)",
        });
    }
    if le == 0 || u32::from(le) > crate::MAX_SHORT_LE {
        return Err(ApduError::InvalidLe { le: u32::from(le) });
    }
    let [p1, p2] = offset.to_be_bytes();
    Ok(ShortCommand::new(cla, 0xB0, p1, p2).with_le(u32::from(le)))
}

/// VERIFY `cla 20 00 ref Lc PIN`, the PIN padded as [`PIN_PAD`] says. Only ASCII digits,
/// [`PIN_MIN`]..=[`PIN_MAX`] of them.
pub fn verify(cla: u8, pin_ref: u8, pin: &[u8]) -> Result<ShortCommand, ApduError> {
    if !(PIN_MIN..=PIN_MAX).contains(&pin.len()) || !pin.iter().all(u8::is_ascii_digit) {
        return Err(ApduError::InvalidArgument {
            what: "PIN must be 4 to 8 ASCII digits",
        });
    }
    let mut padded = [PIN_PAD; PIN_MAX];
    padded[..pin.len()].copy_from_slice(pin);
    ShortCommand::new(cla, 0x20, 0x00, pin_ref).with_data(&padded)
}

/// VERIFY without data: asks the tries left (`63 Cx`) without spending one.
pub fn verify_status(cla: u8, pin_ref: u8) -> ShortCommand {
    ShortCommand::new(cla, 0x20, 0x00, pin_ref)
}

/// MSE SET: `cla 22 41 <template> Lc 80 01 alg 84 01 key`.
pub fn mse_set(
    cla: u8,
    template: MseTemplate,
    algorithm: u8,
    key_ref: u8,
) -> Result<ShortCommand, ApduError> {
    ShortCommand::new(cla, 0x22, 0x41, template.p2())
        .with_data(&[0x80, 0x01, algorithm, 0x84, 0x01, key_ref])
}

/// PSO COMPUTE DIGITAL SIGNATURE: `cla 2A 9E 9A Lc data 00`.
pub fn pso_cds(cla: u8, data: &[u8]) -> Result<ShortCommand, ApduError> {
    Ok(ShortCommand::new(cla, 0x2A, 0x9E, 0x9A)
        .with_data(data)?
        .with_le(256))
}

/// INTERNAL AUTHENTICATE: `cla 88 00 00 Lc data 00` (data: the DigestInfo to sign).
pub fn internal_authenticate(cla: u8, data: &[u8]) -> Result<ShortCommand, ApduError> {
    Ok(ShortCommand::new(cla, 0x88, 0x00, 0x00)
        .with_data(data)?
        .with_le(256))
}

#[cfg(test)]
mod tests {
    use super::{
        CPS3_IAS_AID, EF_SN_ICC, MseTemplate, PIN_REF, internal_authenticate, mse_set, pso_cds,
        read_binary, select_aid, select_file, verify, verify_status,
    };
    use crate::ShortCommand;

    fn bytes(c: &ShortCommand) -> heapless::Vec<u8, 300> {
        c.to_vec().expect("encodes")
    }

    #[test]
    fn select_ias_aid_encodes_00_a4_04_00() {
        let c = select_aid(0, &CPS3_IAS_AID).expect("valid");
        let b = bytes(&c);
        assert_eq!(&b[..5], [0x00, 0xA4, 0x04, 0x00, 13]);
        assert_eq!(&b[5..], CPS3_IAS_AID);
    }

    #[test]
    fn select_aid_refuses_empty_or_over_16_bytes() {
        assert!(select_aid(0, &[]).is_err());
        assert!(select_aid(0, &[0; 17]).is_err());
    }

    #[test]
    fn select_file_encodes_the_fid_big_endian() {
        assert_eq!(
            &bytes(&select_file(0, EF_SN_ICC).expect("valid"))[..],
            [0x00, 0xA4, 0x00, 0x0C, 0x02, 0xD0, 0x03]
        );
    }

    #[test]
    fn read_binary_puts_the_offset_in_p1p2_and_refuses_sfi_range() {
        let c = read_binary(0, 0x0102, 256).expect("valid");
        assert_eq!(&bytes(&c)[..], [0x00, 0xB0, 0x01, 0x02, 0x00]);
        assert!(read_binary(0, 0x8000, 1).is_err());
        assert!(read_binary(0, 0, 0).is_err());
        assert!(read_binary(0, 0, 257).is_err());
    }

    #[test]
    fn verify_pads_the_pin_with_ff_to_8_bytes() {
        let c = verify(0, PIN_REF, b"1234").expect("valid");
        assert_eq!(
            &bytes(&c)[..],
            [
                0x00, 0x20, 0x00, 0x81, 0x08, b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
    }

    #[test]
    fn verify_refuses_non_digits_and_bad_lengths() {
        assert!(verify(0, PIN_REF, b"123").is_err());
        assert!(verify(0, PIN_REF, b"123456789").is_err());
        assert!(verify(0, PIN_REF, b"12a4").is_err());
    }

    #[test]
    fn verify_status_has_no_data() {
        assert_eq!(
            &bytes(&verify_status(0, PIN_REF))[..],
            [0x00, 0x20, 0x00, 0x81]
        );
    }

    #[test]
    fn mse_set_uses_p1_41_and_the_template_as_p2() {
        for (t, p2) in [
            (MseTemplate::Authentication, 0xA4),
            (MseTemplate::DigitalSignature, 0xB6),
            (MseTemplate::Confidentiality, 0xB8),
        ] {
            let c = mse_set(0, t, 0x02, 0x81).expect("valid");
            assert_eq!(
                &bytes(&c)[..],
                [
                    0x00, 0x22, 0x41, p2, 0x06, 0x80, 0x01, 0x02, 0x84, 0x01, 0x81
                ]
            );
            assert_eq!(MseTemplate::from_p2(p2), Some(t));
        }
    }

    #[test]
    fn pso_cds_and_internal_authenticate_headers_and_le_00() {
        let c = pso_cds(0, &[1, 2]).expect("valid");
        assert_eq!(&bytes(&c)[..], [0x00, 0x2A, 0x9E, 0x9A, 0x02, 1, 2, 0x00]);
        let c = internal_authenticate(0, &[1, 2]).expect("valid");
        assert_eq!(&bytes(&c)[..], [0x00, 0x88, 0x00, 0x00, 0x02, 1, 2, 0x00]);
    }
}
