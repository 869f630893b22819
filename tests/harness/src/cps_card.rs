//! A virtual CPS card (CPS3 IAS-ECC or CPS4 ChipDoc) for the vpcd reader of [`crate::Pcscd`].
//!
//! It implements what passerelle's card service sends, with the card facts of
//! test-infra.md "PC/SC" (ATRs, AIDs, EF.SN.ICC, MSE SET / INTERNAL AUTHENTICATE headers):
//!
//! | command | behaviour |
//! |---|---|
//! | SELECT by AID `A4 04 00` | CPS3: the IAS AID on channel 0; CPS4: the applet AID on channel 1 (after MANAGE CHANNEL `70 00 01`); else `6A 82` |
//! | SELECT by FID `A4 00 0C` | MF `3F00`, EF.SN.ICC `D003`, identity `D0E1`, auth certificate `D0E2`; else `6A 82` |
//! | READ BINARY `B0` | the current EF from offset P1P2, at most Le bytes, `90 00` (also when fewer remain); past the end `6B 00` |
//! | VERIFY `20 00 81` | PIN padded with `FF` to 8 bytes; wrong: `63 C2`, `63 C1`, then `69 83`; right resets the counter; no data: `63 Cx` (or `90 00` once verified) without spending a try |
//! | MSE SET `22 41 A4/B6/B8` | records the template; tag `84` must name the authentication key `81` for `A4` |
//! | INTERNAL AUTHENTICATE `88 00 00` | `69 82` before VERIFY, `69 85` without MSE SET `A4`; else RSA PKCS#1 v1.5 over the DigestInfo sent, counted |
//! | VERIFY, MSE SET, INTERNAL AUTHENTICATE before the application is selected | `69 85` |
//! | anything else | `6D 00` (`6E 00` for an unknown CLA) |
//!
//! Layouts the digest does not give are **ours**, shared with `passerelle_apdu::cps`: the file
//! ids `D0E1`/`D0E2`, the PIN reference and padding, and the identity EF, a BER-TLV list
//! `80` national id, `81` family name, `82` given name, `83` profession (UTF-8). EF.SN.ICC is
//! `5A 0A` + the ANS issuer `80 25 00 00 01` + a 5-byte serial, so bytes 2..6 are the issuer
//! as the real driver checks. The PIN counter survives power cycles; the verified state and
//! the security environment do not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use passerelle_apdu::cps::{
    self, id_tags, MseTemplate, ANS_ISSUER, EF_CERT_AUTH, EF_IDENTITY, EF_SN_ICC, KEY_REF_AUTH, MF,
    PIN_MAX, PIN_PAD, PIN_REF,
};
use passerelle_apdu::tlv::TlvIter;
use passerelle_apdu::StatusWord;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};

use crate::vcard::ApduHandler;
use crate::{HarnessError, Result};

const PEER: &str = "virtual CPS card";
/// PIN tries of a fresh card.
pub const CPS_PIN_TRIES: u8 = 3;
/// The PIN of a card built without [`CpsCard::with_pin`].
pub const CPS_DEFAULT_PIN: &str = "1234";
/// Serial number part of EF.SN.ICC (after the issuer).
const SERIAL: [u8; 5] = [0x00, 0x01, 0x23, 0x45, 0x67];
/// `69 85`: conditions of use not satisfied (no application selected, no MSE SET before
/// signing).
const SW_CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
/// `69 86`: command not allowed (no current EF).
const SW_NO_CURRENT_EF: u16 = 0x6986;
/// `6A 88`: referenced data (key) not found.
const SW_REFERENCE_NOT_FOUND: u16 = 0x6A88;
/// `68 81`: logical channel not supported (or not open).
const SW_CHANNEL_NOT_SUPPORTED: u16 = 0x6881;

/// Which generation of card to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpsGeneration {
    /// CPS3: IAS-ECC, IAS AID on the basic channel.
    Cps3,
    /// CPS4: ChipDoc applet on logical channel 1.
    Cps4,
}

/// The professional the card belongs to (written into the identity EF).
#[derive(Debug, Clone)]
pub struct CpsIdentity {
    /// `8` + RPPS, e.g. `899700218896`.
    pub national_id: String,
    pub family_name: String,
    pub given_name: String,
    pub profession: String,
}

impl CpsIdentity {
    /// The identity EF content: BER-TLV `80`/`81`/`82`/`83` (our layout).
    pub fn to_tlv(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, value) in [
            (id_tags::NATIONAL_ID, &self.national_id),
            (id_tags::FAMILY_NAME, &self.family_name),
            (id_tags::GIVEN_NAME, &self.given_name),
            (id_tags::PROFESSION, &self.profession),
        ] {
            // Tags are one byte and values short (checked by `CpsCard::new`).
            out.push(u8::try_from(tag).unwrap_or(0xFF));
            out.push(u8::try_from(value.len()).unwrap_or(0x7F));
            out.extend_from_slice(value.as_bytes());
        }
        out
    }
}

/// How many signatures the card made; a clone shares the count with the card.
#[derive(Debug, Clone, Default)]
pub struct SignatureCounter(Arc<AtomicU64>);

impl SignatureCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The virtual CPS card; give it to [`crate::Pcscd::virtual_card`].
#[derive(Debug)]
pub struct CpsCard {
    generation: CpsGeneration,
    sn_icc: Vec<u8>,
    identity: Vec<u8>,
    auth_cert: Vec<u8>,
    auth_key: RsaPrivateKey,
    pin: [u8; PIN_MAX],
    tries_left: u8,
    session: Session,
    signatures: SignatureCounter,
    delay: Duration,
    malformed: bool,
}

impl CpsCard {
    /// A card holding `auth_cert_der` (e.g. the test PKI's `cps-auth`) and its private key,
    /// PKCS#8 or PKCS#1 DER. PIN [`CPS_DEFAULT_PIN`], [`CPS_PIN_TRIES`] tries.
    pub fn new(
        generation: CpsGeneration,
        identity: &CpsIdentity,
        auth_cert_der: Vec<u8>,
        auth_key_der: &[u8],
    ) -> Result<Self> {
        let auth_key = RsaPrivateKey::from_pkcs8_der(auth_key_der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(auth_key_der))
            .map_err(|e| {
                HarnessError::protocol(PEER, "load auth key", format!("not RSA DER: {e}"))
            })?;
        for field in [
            &identity.national_id,
            &identity.family_name,
            &identity.given_name,
            &identity.profession,
        ] {
            if field.len() > 0x7F {
                return Err(HarnessError::protocol(
                    PEER,
                    "identity",
                    format!("field of {} bytes, at most 127", field.len()),
                ));
            }
        }
        let mut sn_icc = vec![0x5A, 0x0A];
        sn_icc.extend_from_slice(&ANS_ISSUER);
        sn_icc.extend_from_slice(&SERIAL);
        let mut card = Self {
            generation,
            sn_icc,
            identity: identity.to_tlv(),
            auth_cert: auth_cert_der,
            auth_key,
            pin: [PIN_PAD; PIN_MAX],
            tries_left: CPS_PIN_TRIES,
            session: Session::default(),
            signatures: SignatureCounter::default(),
            delay: Duration::ZERO,
            malformed: false,
        };
        card = card.with_pin(CPS_DEFAULT_PIN)?;
        Ok(card)
    }

    /// Sets the PIN (4 to 8 ASCII digits).
    pub fn with_pin(mut self, pin: &str) -> Result<Self> {
        let cmd = cps::verify(0, PIN_REF, pin.as_bytes())
            .map_err(|e| HarnessError::protocol(PEER, "set PIN", e.to_string()))?;
        self.pin.copy_from_slice(cmd.data());
        Ok(self)
    }

    /// Answers every APDU only after `delay` (a slow card, for timeout tests).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers every APDU with the single byte `90` (not even a status word).
    #[must_use]
    pub fn with_malformed_answers(mut self, on: bool) -> Self {
        self.malformed = on;
        self
    }

    /// A handle on the number of signatures made, readable while the card is in a reader.
    pub fn signatures(&self) -> SignatureCounter {
        self.signatures.clone()
    }

    pub fn tries_left(&self) -> u8 {
        self.tries_left
    }

    fn forget_session(&mut self) {
        self.session = Session::default();
    }

    fn handle(&mut self, capdu: &[u8]) -> (Vec<u8>, StatusWord) {
        let Some(apdu) = Capdu::parse(capdu) else {
            return (Vec::new(), StatusWord::WrongLength);
        };
        let channel = apdu.cla & 0x03;
        if apdu.cla & !0x03 != 0 {
            return (Vec::new(), StatusWord::ClaNotSupported);
        }
        if channel == 1 && !(self.generation == CpsGeneration::Cps4 && self.session.channel1_open) {
            return (Vec::new(), StatusWord::Other(SW_CHANNEL_NOT_SUPPORTED));
        }
        if channel > 1 {
            return (Vec::new(), StatusWord::Other(SW_CHANNEL_NOT_SUPPORTED));
        }
        if matches!(apdu.ins, 0x20 | 0x22 | 0x88) && !self.session.app_selected {
            // The PIN and the keys live in the application, not the MF.
            return (Vec::new(), StatusWord::Other(SW_CONDITIONS_NOT_SATISFIED));
        }
        let sw = match apdu.ins {
            0x70 => self.manage_channel(&apdu),
            0xA4 => self.select(&apdu, channel),
            0xB0 => return self.read_binary(&apdu),
            0x20 => self.verify(&apdu),
            0x22 => self.mse_set(&apdu),
            0x88 => return self.internal_authenticate(&apdu),
            _ => StatusWord::InsNotSupported,
        };
        (Vec::new(), sw)
    }

    fn manage_channel(&mut self, apdu: &Capdu<'_>) -> StatusWord {
        match (self.generation, apdu.p1, apdu.p2) {
            (CpsGeneration::Cps4, 0x00, 0x01) => {
                self.session.channel1_open = true;
                StatusWord::Ok
            }
            (CpsGeneration::Cps4, 0x80, 0x01) => {
                self.session.channel1_open = false;
                StatusWord::Ok
            }
            (CpsGeneration::Cps4, _, _) => StatusWord::IncorrectP1P2,
            (CpsGeneration::Cps3, _, _) => StatusWord::InsNotSupported,
        }
    }

    fn select(&mut self, apdu: &Capdu<'_>, channel: u8) -> StatusWord {
        match (apdu.p1, apdu.p2) {
            (0x04, 0x00) => {
                let ours = match self.generation {
                    CpsGeneration::Cps3 => channel == 0 && apdu.data == cps::CPS3_IAS_AID,
                    CpsGeneration::Cps4 => channel == 1 && apdu.data == cps::CPS4_APPLET_AID,
                };
                self.session.app_selected = ours;
                if ours {
                    self.session.current_ef = None;
                    StatusWord::Ok
                } else {
                    StatusWord::FileNotFound
                }
            }
            (0x00, 0x0C) => {
                let Ok(fid) = <[u8; 2]>::try_from(apdu.data).map(u16::from_be_bytes) else {
                    return StatusWord::WrongLength;
                };
                match fid {
                    MF => {
                        self.session.current_ef = None;
                        StatusWord::Ok
                    }
                    EF_SN_ICC | EF_IDENTITY | EF_CERT_AUTH => {
                        self.session.current_ef = Some(fid);
                        StatusWord::Ok
                    }
                    _ => StatusWord::FileNotFound,
                }
            }
            _ => StatusWord::IncorrectP1P2,
        }
    }

    fn read_binary(&self, apdu: &Capdu<'_>) -> (Vec<u8>, StatusWord) {
        let file = match self.session.current_ef {
            Some(EF_SN_ICC) => &self.sn_icc,
            Some(EF_IDENTITY) => &self.identity,
            Some(EF_CERT_AUTH) => &self.auth_cert,
            _ => return (Vec::new(), StatusWord::Other(SW_NO_CURRENT_EF)),
        };
        if !apdu.data.is_empty() || apdu.p1 & 0x80 != 0 {
            return (Vec::new(), StatusWord::WrongP1P2);
        }
        let offset = usize::from(u16::from_be_bytes([apdu.p1, apdu.p2]));
        let Some(rest) = file.get(offset..) else {
            return (Vec::new(), StatusWord::WrongP1P2);
        };
        let le = apdu.le.unwrap_or(256);
        (rest[..rest.len().min(le)].to_vec(), StatusWord::Ok)
    }

    fn verify(&mut self, apdu: &Capdu<'_>) -> StatusWord {
        if apdu.p1 != 0 || apdu.p2 != PIN_REF {
            return StatusWord::IncorrectP1P2;
        }
        if self.tries_left == 0 {
            return StatusWord::PinBlocked;
        }
        if apdu.data.is_empty() {
            return if self.session.verified {
                StatusWord::Ok
            } else {
                StatusWord::PinTriesLeft(self.tries_left)
            };
        }
        if apdu.data.len() != PIN_MAX {
            return StatusWord::WrongLength;
        }
        if apdu.data == self.pin {
            self.tries_left = CPS_PIN_TRIES;
            self.session.verified = true;
            StatusWord::Ok
        } else {
            self.session.verified = false;
            self.tries_left -= 1;
            if self.tries_left == 0 {
                StatusWord::PinBlocked
            } else {
                StatusWord::PinTriesLeft(self.tries_left)
            }
        }
    }

    fn mse_set(&mut self, apdu: &Capdu<'_>) -> StatusWord {
        let (0x41, Some(template)) = (apdu.p1, MseTemplate::from_p2(apdu.p2)) else {
            return StatusWord::IncorrectP1P2;
        };
        let key = TlvIter::new(apdu.data).find(0x84);
        match key {
            Ok(Some(k))
                if template != MseTemplate::Authentication || k.value() == [KEY_REF_AUTH] =>
            {
                self.session.mse = Some(template);
                StatusWord::Ok
            }
            Ok(_) => StatusWord::Other(SW_REFERENCE_NOT_FOUND),
            Err(_) => StatusWord::Other(0x6A80),
        }
    }

    fn internal_authenticate(&mut self, apdu: &Capdu<'_>) -> (Vec<u8>, StatusWord) {
        if apdu.p1 != 0 || apdu.p2 != 0 {
            return (Vec::new(), StatusWord::IncorrectP1P2);
        }
        if !self.session.verified {
            return (Vec::new(), StatusWord::SecurityStatusNotSatisfied);
        }
        if self.session.mse != Some(MseTemplate::Authentication) {
            return (Vec::new(), StatusWord::Other(SW_CONDITIONS_NOT_SATISFIED));
        }
        match self
            .auth_key
            .sign(Pkcs1v15Sign::new_unprefixed(), apdu.data)
        {
            Ok(sig) => {
                self.signatures.bump();
                (sig, StatusWord::Ok)
            }
            // Input too long for the key: what a card answers to oversized data.
            Err(_) => (Vec::new(), StatusWord::WrongLength),
        }
    }
}

impl ApduHandler for CpsCard {
    fn atr(&self) -> Vec<u8> {
        match self.generation {
            CpsGeneration::Cps3 => cps::CPS3_ATR.to_vec(),
            CpsGeneration::Cps4 => cps::CPS4_ATR.to_vec(),
        }
    }

    fn transmit(&mut self, capdu: &[u8]) -> Vec<u8> {
        if !self.delay.is_zero() {
            // The behaviour under test is the slowness itself, not a readiness wait.
            std::thread::sleep(self.delay);
        }
        if self.malformed {
            return vec![0x90];
        }
        let (mut data, sw) = self.handle(capdu);
        data.extend_from_slice(&sw.to_bytes());
        data
    }

    fn power_off(&mut self) {
        self.forget_session();
    }

    fn power_on(&mut self) {
        self.forget_session();
    }

    fn reset(&mut self) {
        self.forget_session();
    }
}

/// What a power cycle or reset forgets.
#[derive(Debug, Default)]
struct Session {
    verified: bool,
    app_selected: bool,
    channel1_open: bool,
    current_ef: Option<u16>,
    mse: Option<MseTemplate>,
}

/// A short C-APDU as the card sees it (extended length is not supported by the card).
struct Capdu<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    le: Option<usize>,
}

impl<'a> Capdu<'a> {
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let (&[cla, ins, p1, p2], body) = raw.split_first_chunk::<4>()?;
        let le_of = |b: u8| if b == 0 { 256 } else { usize::from(b) };
        let (data, le) = match body {
            [] => (&[][..], None),
            [le] => (&[][..], Some(le_of(*le))),
            [lc, rest @ ..] if *lc != 0 => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc)? {
                    0 => (rest, None),
                    1 => (&rest[..lc], Some(le_of(rest[lc]))),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Self {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }
}
