//! The virtual CPS card on a real pcscd + vpcd, driven with the `pcsc` crate and
//! `passerelle-apdu`: what passerelle's card service will see from a real CPS3/CPS4.
//!
//! Each test starts its own pcscd and sets `PCSCLITE_CSOCK_NAME` before its first PC/SC
//! call (nextest runs one process per test).

use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use passerelle_apdu::cps::{
    self, id_tags, MseTemplate, ALG_RSA_PKCS1, CPS3_CLA, CPS4_CLA, EF_CERT_AUTH, EF_IDENTITY,
    EF_SN_ICC, KEY_REF_AUTH, PIN_REF,
};
use passerelle_apdu::tlv::TlvIter;
use passerelle_apdu::{transceive, Response, ShortCommand, StatusWord, TransceiveError, Transport};
use passerelle_harness::{
    CpsCard, CpsGeneration, CpsIdentity, Pcscd, VirtualCard, CPS_DEFAULT_PIN,
};
use passerelle_testpki::{names, PkiOptions, TestPki};

const WRONG_PIN: &str = "9999";

/// `passerelle-apdu`'s transport over a PC/SC card handle.
struct Pcsc<'a>(&'a pcsc::Card);

impl Transport for Pcsc<'_> {
    type Error = pcsc::Error;

    fn transmit(&mut self, cmd: &[u8], resp: &mut [u8]) -> Result<usize, pcsc::Error> {
        self.0.transmit(cmd, resp).map(<[u8]>::len)
    }
}

/// A running pcscd with a CPS card inserted and connected.
struct Rig {
    pcscd: Pcscd,
    card: VirtualCard<CpsCard>,
    conn: pcsc::Card,
    _ctx: pcsc::Context,
}

impl Rig {
    fn start(card: CpsCard) -> anyhow::Result<Self> {
        let pcscd = Pcscd::builder().apdu_log(true).start()?;
        pcscd.set_process_env();
        let mut card = pcscd.virtual_card(0, card)?;
        let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
        let reader = CString::new(card.reader_name())?;
        card.insert()?;
        wait_present(&ctx, &reader)?;
        let conn = ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)?;
        Ok(Self {
            pcscd,
            card,
            conn,
            _ctx: ctx,
        })
    }

    /// Sends `cmd`, following 61xx/6Cxx; returns the data and the final status word.
    fn send(&self, cmd: &ShortCommand) -> anyhow::Result<(Vec<u8>, StatusWord)> {
        let mut out = vec![0u8; 4096];
        let (n, sw) = transceive(&mut Pcsc(&self.conn), cmd, &mut out)
            .map_err(|e| anyhow::anyhow!("{e}\n{}", self.pcscd.log_tail(20)))?;
        out.truncate(n);
        Ok((out, sw))
    }

    fn sw(&self, cmd: &ShortCommand) -> anyhow::Result<StatusWord> {
        Ok(self.send(cmd)?.1)
    }

    /// A whole EF, read in 256-byte READ BINARY steps until a short answer.
    fn read_ef(&self, cla: u8, fid: u16) -> anyhow::Result<Vec<u8>> {
        ensure!(
            self.sw(&cps::select_file(cla, fid)?)? == StatusWord::Ok,
            "select {fid:04X}"
        );
        let mut file = Vec::new();
        loop {
            let offset = u16::try_from(file.len())?;
            let (chunk, sw) = self.send(&cps::read_binary(cla, offset, 256)?)?;
            match sw {
                StatusWord::Ok => file.extend_from_slice(&chunk),
                // The offset landed exactly on the end of the file.
                StatusWord::WrongP1P2 if !file.is_empty() => return Ok(file),
                sw => bail!("READ BINARY {fid:04X} at {offset}: {sw}"),
            }
            if chunk.len() < 256 {
                return Ok(file);
            }
        }
    }

    fn verify(&self, pin: &str) -> anyhow::Result<StatusWord> {
        self.sw(&cps::verify(CPS3_CLA, PIN_REF, pin.as_bytes())?)
    }
}

/// Waits (bounded) for the card, with PC/SC's own change notification.
fn wait_present(ctx: &pcsc::Context, reader: &CString) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states = [pcsc::ReaderState::new(reader.clone(), pcsc::State::UNAWARE)];
    loop {
        match ctx.get_status_change(Duration::from_millis(500), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(e).context("SCardGetStatusChange"),
        }
        if states[0].event_state().contains(pcsc::State::PRESENT) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{reader:?} never saw the card");
        states[0].sync_current_state();
    }
}

fn identity() -> CpsIdentity {
    CpsIdentity {
        national_id: "899700218896".into(),
        family_name: "DUPONT".into(),
        given_name: "JEAN".into(),
        profession: "Médecin".into(),
    }
}

fn pki() -> anyhow::Result<TestPki> {
    Ok(TestPki::generate(&PkiOptions::new(7))?)
}

fn cps3(pki: &TestPki) -> anyhow::Result<CpsCard> {
    let cert = pki.cert(names::CPS_AUTH)?;
    Ok(CpsCard::new(
        CpsGeneration::Cps3,
        &identity(),
        cert.der().to_vec(),
        cert.key().pkcs8_der(),
    )?)
}

/// SHA-256 DigestInfo (RFC 8017 §9.2) of `msg`, as the host sends it to the card.
fn sha256_digest_info(msg: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut di = PREFIX.to_vec();
    di.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, msg).as_ref());
    di
}

fn select_ias(rig: &Rig) -> anyhow::Result<()> {
    let sw = rig.sw(&cps::select_aid(CPS3_CLA, &cps::CPS3_IAS_AID)?)?;
    ensure!(sw == StatusWord::Ok, "SELECT IAS: {sw}");
    Ok(())
}

#[test]
fn cps3_selects_ias_aid_and_reads_ef_sn_icc_identity_and_auth_certificate() -> anyhow::Result<()> {
    let pki = pki()?;
    let rig = Rig::start(cps3(&pki)?)?;
    assert_eq!(rig.conn.status2_owned()?.atr(), cps::CPS3_ATR);
    select_ias(&rig)?;

    let sn = rig.read_ef(CPS3_CLA, EF_SN_ICC)?;
    assert_eq!(sn.len(), cps::EF_SN_ICC_LEN);
    assert_eq!(sn[2..7], cps::ANS_ISSUER);

    let id = rig.read_ef(CPS3_CLA, EF_IDENTITY)?;
    let field = |tag| -> anyhow::Result<String> {
        let tlv = TlvIter::new(&id)
            .find(tag)?
            .with_context(|| format!("tag {tag:X}"))?;
        Ok(String::from_utf8(tlv.value().to_vec())?)
    };
    assert_eq!(field(id_tags::NATIONAL_ID)?, "899700218896");
    assert_eq!(field(id_tags::FAMILY_NAME)?, "DUPONT");
    assert_eq!(field(id_tags::GIVEN_NAME)?, "JEAN");
    assert_eq!(field(id_tags::PROFESSION)?, "Médecin");

    let cert = rig.read_ef(CPS3_CLA, EF_CERT_AUTH)?;
    assert_eq!(cert, pki.cert(names::CPS_AUTH)?.der());

    assert_eq!(
        rig.sw(&cps::select_file(CPS3_CLA, 0xD0FF)?)?,
        StatusWord::FileNotFound
    );
    Ok(())
}

#[test]
fn cps3_verify_wrong_wrong_right_answers_63c2_63c1_then_9000_and_resets_tries() -> anyhow::Result<()>
{
    let rig = Rig::start(cps3(&pki()?)?)?;
    select_ias(&rig)?;
    let status = cps::verify_status(CPS3_CLA, PIN_REF);
    assert_eq!(rig.sw(&status)?, StatusWord::PinTriesLeft(3));
    assert_eq!(rig.verify(WRONG_PIN)?, StatusWord::PinTriesLeft(2));
    // Asking the counter does not spend a try.
    assert_eq!(rig.sw(&status)?, StatusWord::PinTriesLeft(2));
    assert_eq!(rig.verify(WRONG_PIN)?, StatusWord::PinTriesLeft(1));
    assert_eq!(rig.verify(CPS_DEFAULT_PIN)?, StatusWord::Ok);
    assert_eq!(rig.card.handler().tries_left(), 3);
    assert_eq!(rig.sw(&status)?, StatusWord::Ok);
    Ok(())
}

#[test]
fn cps3_three_wrong_pins_block_it_6983_and_the_right_pin_is_then_refused() -> anyhow::Result<()> {
    let rig = Rig::start(cps3(&pki()?)?)?;
    select_ias(&rig)?;
    assert_eq!(rig.verify(WRONG_PIN)?, StatusWord::PinTriesLeft(2));
    assert_eq!(rig.verify(WRONG_PIN)?, StatusWord::PinTriesLeft(1));
    assert_eq!(rig.verify(WRONG_PIN)?, StatusWord::PinBlocked);
    assert_eq!(rig.verify(CPS_DEFAULT_PIN)?, StatusWord::PinBlocked);
    assert_eq!(
        rig.sw(&cps::verify_status(CPS3_CLA, PIN_REF))?,
        StatusWord::PinBlocked
    );
    Ok(())
}

#[test]
fn cps3_internal_authenticate_before_verify_is_refused_6982_and_signs_nothing() -> anyhow::Result<()>
{
    let card = cps3(&pki()?)?;
    let signatures = card.signatures();
    let rig = Rig::start(card)?;
    select_ias(&rig)?;
    let mse = cps::mse_set(
        CPS3_CLA,
        MseTemplate::Authentication,
        ALG_RSA_PKCS1,
        KEY_REF_AUTH,
    )?;
    assert_eq!(rig.sw(&mse)?, StatusWord::Ok);
    let auth = cps::internal_authenticate(CPS3_CLA, &sha256_digest_info(b"challenge"))?;
    assert_eq!(rig.sw(&auth)?, StatusWord::SecurityStatusNotSatisfied);
    assert_eq!(signatures.get(), 0);
    Ok(())
}

#[test]
fn cps3_internal_authenticate_after_verify_signs_with_the_cps_auth_key_and_counts(
) -> anyhow::Result<()> {
    let pki = pki()?;
    let card = cps3(&pki)?;
    let signatures = card.signatures();
    let rig = Rig::start(card)?;
    select_ias(&rig)?;
    assert_eq!(rig.verify(CPS_DEFAULT_PIN)?, StatusWord::Ok);
    let mse = cps::mse_set(
        CPS3_CLA,
        MseTemplate::Authentication,
        ALG_RSA_PKCS1,
        KEY_REF_AUTH,
    )?;
    assert_eq!(rig.sw(&mse)?, StatusWord::Ok);

    // The public key comes from the certificate read off the card.
    let cert_der = rig.read_ef(CPS3_CLA, EF_CERT_AUTH)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)?;
    let spki = cert.public_key().subject_public_key.data.to_vec();
    let public =
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, spki);
    for (i, msg) in [&b"TLS handshake transcript"[..], b"second"]
        .iter()
        .enumerate()
    {
        let auth = cps::internal_authenticate(CPS3_CLA, &sha256_digest_info(msg))?;
        let (sig, sw) = rig.send(&auth)?;
        assert_eq!(sw, StatusWord::Ok);
        assert_eq!(sig.len(), 256, "RSA-2048 signature");
        public
            .verify(msg, &sig)
            .map_err(|_| anyhow::anyhow!("signature {i} does not verify with cps-auth"))?;
        assert_eq!(signatures.get(), u64::try_from(i)? + 1);
    }
    Ok(())
}

#[test]
fn cps3_internal_authenticate_without_mse_set_is_refused_6985() -> anyhow::Result<()> {
    let rig = Rig::start(cps3(&pki()?)?)?;
    select_ias(&rig)?;
    assert_eq!(rig.verify(CPS_DEFAULT_PIN)?, StatusWord::Ok);
    let auth = cps::internal_authenticate(CPS3_CLA, &sha256_digest_info(b"x"))?;
    assert_eq!(rig.sw(&auth)?, StatusWord::Other(0x6985));
    Ok(())
}

#[test]
fn cps4_has_its_atr_and_its_applet_only_on_logical_channel_1() -> anyhow::Result<()> {
    let pki = pki()?;
    let cert = pki.cert(names::CPS_AUTH)?;
    let card = CpsCard::new(
        CpsGeneration::Cps4,
        &identity(),
        cert.der().to_vec(),
        &cert.key().pkcs1_der().context("RSA key")?,
    )?;
    let rig = Rig::start(card)?;
    assert_eq!(rig.conn.status2_owned()?.atr(), cps::CPS4_ATR);
    let select = cps::select_aid(CPS4_CLA, &cps::CPS4_APPLET_AID)?;
    assert_eq!(
        rig.sw(&select)?,
        StatusWord::Other(0x6881),
        "channel 1 not open"
    );
    assert_eq!(
        rig.sw(&cps::select_aid(0, &cps::CPS4_APPLET_AID)?)?,
        StatusWord::FileNotFound
    );
    assert_eq!(
        rig.sw(&ShortCommand::new(0, 0x70, 0x00, 0x01))?,
        StatusWord::Ok
    );
    assert_eq!(rig.sw(&select)?, StatusWord::Ok);
    let sn = rig.read_ef(CPS4_CLA, EF_SN_ICC)?;
    assert_eq!(sn[2..7], cps::ANS_ISSUER);
    Ok(())
}

#[test]
fn malformed_one_byte_answer_is_rejected_by_transceive_not_misread() -> anyhow::Result<()> {
    let rig = Rig::start(cps3(&pki()?)?.with_malformed_answers(true))?;
    let mut out = [0u8; 16];
    let select = cps::select_aid(CPS3_CLA, &cps::CPS3_IAS_AID)?;
    match transceive(&mut Pcsc(&rig.conn), &select, &mut out) {
        Err(TransceiveError::Apdu(e)) => {
            assert_eq!(e, passerelle_apdu::ApduError::ResponseTooShort { len: 1 });
        }
        other => bail!("expected a malformed-response error, got {other:?}"),
    }
    let mut raw = [0u8; 258];
    let answer = rig.conn.transmit(&select.to_vec::<32>()?, &mut raw)?;
    assert!(Response::parse(answer).is_err());
    Ok(())
}
