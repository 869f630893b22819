//! The card service on a real pcscd + vpcd with the virtual CPS card of the harness.
//!
//! Each test starts its own pcscd and sets `PCSCLITE_CSOCK_NAME` before its first PC/SC call
//! (nextest runs one process per test).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use passerelle_cards::{
    CardError, CardEvent, CardKind, CardService, CardsConfig, Pin, PinState, sha256_digest_info,
};
use passerelle_harness::{
    CPS_DEFAULT_PIN, CpsCard, CpsGeneration, CpsIdentity, Pcscd, VirtualCard,
};
use passerelle_testpki::{PkiOptions, TestPki, names};
use tokio::sync::broadcast;

const WRONG_PIN: &str = "9999";

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

fn card(pki: &TestPki, generation: CpsGeneration) -> anyhow::Result<CpsCard> {
    let cert = pki.cert(names::CPS_AUTH)?;
    Ok(CpsCard::new(
        generation,
        &identity(),
        cert.der().to_vec(),
        cert.key().pkcs8_der(),
    )?)
}

struct Rig {
    pcscd: Option<Pcscd>,
    card: VirtualCard<CpsCard>,
    service: CardService,
    events: broadcast::Receiver<CardEvent>,
}

impl Rig {
    fn start(card: CpsCard, config: CardsConfig) -> anyhow::Result<Self> {
        // `apdu_log(false)` passes pcscd an empty argument it refuses (harness bug, reported).
        let pcscd = Pcscd::builder().apdu_log(true).start()?;
        pcscd.set_process_env();
        let card = pcscd.virtual_card(0, card)?;
        let service = CardService::start(config)?;
        let events = service.subscribe();
        Ok(Self {
            pcscd: Some(pcscd),
            card,
            service,
            events,
        })
    }

    /// The next event matching `want`, within `within`.
    async fn event(
        &mut self,
        within: Duration,
        want: impl Fn(&CardEvent) -> bool,
    ) -> anyhow::Result<CardEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .context("no such card event in time")??;
            if want(&ev) {
                return Ok(ev);
            }
        }
    }

    /// Inserts the card and waits until its identity was read.
    async fn insert_ready(&mut self) -> anyhow::Result<Option<passerelle_cards::CpsIdentity>> {
        self.card.insert()?;
        match self
            .event(Duration::from_secs(20), |e| {
                matches!(e, CardEvent::CardReady { .. })
            })
            .await?
        {
            CardEvent::CardReady { identity, .. } => Ok(identity),
            _ => unreachable!("filtered"),
        }
    }
}

fn pin(p: &str) -> Pin {
    Pin::new(p.to_owned()).expect("valid PIN format")
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_and_remove_events_are_seen_within_one_second_and_the_identity_is_read()
-> anyhow::Result<()> {
    let pki = pki()?;
    let mut rig = Rig::start(card(&pki, CpsGeneration::Cps3)?, CardsConfig::default())?;
    let reader = rig.card.reader_name().to_owned();
    // vpcd's readers are there from the start: the snapshot lists them (their ReaderAdded
    // events may precede this subscription).
    // Let the monitor settle on the empty reader first, so the insertion is a change.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.service.readers().iter().all(|r| r.name != reader) {
        ensure!(Instant::now() < deadline, "reader never listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let t0 = Instant::now();
    rig.card.insert()?;
    let ev = rig
        .event(Duration::from_secs(1), |e| {
            matches!(e, CardEvent::CardInserted { .. })
        })
        .await?;
    let inserted_after = t0.elapsed();
    assert!(
        matches!(&ev, CardEvent::CardInserted { kind: CardKind::Cps3Contact, reader: r, .. } if *r == reader),
        "{ev:?}"
    );
    let CardEvent::CardReady { identity, .. } = rig
        .event(Duration::from_secs(10), |e| {
            matches!(e, CardEvent::CardReady { .. })
        })
        .await?
    else {
        bail!("filtered")
    };
    let id = identity.context("identity read")?;
    assert_eq!(id.national_id, "899700218896");
    assert_eq!(id.family_name, "DUPONT");
    assert_eq!(id.given_name, "JEAN");
    assert_eq!(id.profession, "Médecin");
    assert_eq!(id.serial, "0001234567");
    let (active_reader, info) = rig.service.active_card().context("active card")?;
    assert_eq!(active_reader, reader);
    assert_eq!(
        info.auth_certificate.as_deref(),
        Some(pki.cert(names::CPS_AUTH)?.der())
    );
    assert_eq!(info.pin, PinState::NotVerified { tries_left: 3 });

    let t1 = Instant::now();
    rig.card.remove();
    rig.event(Duration::from_secs(1), |e| {
        matches!(e, CardEvent::CardRemoved { .. })
    })
    .await?;
    let removed_after = t1.elapsed();
    assert!(rig.service.active_card().is_none());
    assert!(
        inserted_after < Duration::from_secs(1) && removed_after < Duration::from_secs(1),
        "insert seen after {inserted_after:?}, removal after {removed_after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cps4_identity_is_read_through_the_applet_on_logical_channel_1() -> anyhow::Result<()> {
    let mut rig = Rig::start(card(&pki()?, CpsGeneration::Cps4)?, CardsConfig::default())?;
    let id = rig.insert_ready().await?.context("identity")?;
    assert_eq!(id.national_id, "899700218896");
    let (_, info) = rig.service.active_card().context("active")?;
    assert_eq!(info.kind, CardKind::Cps4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_wrong_then_right_and_the_guard_stops_at_the_last_try() -> anyhow::Result<()> {
    let mut rig = Rig::start(card(&pki()?, CpsGeneration::Cps3)?, CardsConfig::default())?;
    rig.insert_ready().await?;
    let s = &rig.service;
    assert!(matches!(
        s.verify_pin(pin(WRONG_PIN), false).await,
        Err(CardError::WrongPin { tries_left: 2 })
    ));
    assert!(matches!(
        s.verify_pin(pin(WRONG_PIN), false).await,
        Err(CardError::WrongPin { tries_left: 1 })
    ));
    // One try left: without confirmation nothing is sent, even the right PIN.
    assert!(matches!(
        s.verify_pin(pin(WRONG_PIN), false).await,
        Err(CardError::LastTryNeedsConfirmation)
    ));
    assert!(matches!(
        s.verify_pin(pin(CPS_DEFAULT_PIN), false).await,
        Err(CardError::LastTryNeedsConfirmation)
    ));
    assert_eq!(rig.card.handler().tries_left(), 1);
    assert_eq!(
        s.pin_status().await?,
        PinState::NotVerified { tries_left: 1 }
    );
    assert_eq!(
        s.verify_pin(pin(CPS_DEFAULT_PIN), true).await?,
        PinState::Verified
    );
    assert_eq!(rig.card.handler().tries_left(), 3);
    let (_, info) = s.active_card().context("active")?;
    assert_eq!(info.pin, PinState::Verified);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_blocked_after_a_confirmed_last_wrong_try_and_never_sent_again() -> anyhow::Result<()> {
    let mut rig = Rig::start(card(&pki()?, CpsGeneration::Cps3)?, CardsConfig::default())?;
    rig.insert_ready().await?;
    let s = &rig.service;
    for _ in 0..2 {
        assert!(matches!(
            s.verify_pin(pin(WRONG_PIN), false).await,
            Err(CardError::WrongPin { .. })
        ));
    }
    assert!(matches!(
        s.verify_pin(pin(WRONG_PIN), true).await,
        Err(CardError::PinBlocked)
    ));
    assert!(matches!(
        s.verify_pin(pin(CPS_DEFAULT_PIN), true).await,
        Err(CardError::PinBlocked)
    ));
    assert_eq!(s.pin_status().await?, PinState::Blocked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn card_signature_needs_the_pin_then_verifies_with_the_card_certificate() -> anyhow::Result<()>
{
    let card = card(&pki()?, CpsGeneration::Cps3)?;
    let signatures = card.signatures();
    let mut rig = Rig::start(card, CardsConfig::default())?;
    rig.insert_ready().await?;
    let s = rig.service.clone();
    let (_, info) = s.active_card().context("active")?;
    let msg = b"TLS 1.2 CertificateVerify transcript".to_vec();
    let di = sha256_digest_info(&msg);
    let (s2, di2, generation) = (s.clone(), di.clone(), info.generation);
    let refused = tokio::task::spawn_blocking(move || s2.sign_blocking(generation, di2)).await?;
    assert!(
        matches!(refused, Err(CardError::PinNotVerified)),
        "{refused:?}"
    );
    assert_eq!(signatures.get(), 0);

    s.verify_pin(pin(CPS_DEFAULT_PIN), false).await?;
    let s2 = s.clone();
    let sig = tokio::task::spawn_blocking(move || s2.sign_blocking(generation, di)).await??;
    let cert_der = info.auth_certificate.context("cert")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        cert.public_key().subject_public_key.data.to_vec(),
    )
    .verify(&msg, &sig)
    .map_err(|_| anyhow::anyhow!("card signature does not verify"))?;
    assert_eq!(signatures.get(), 1);

    // A signer bound to an older insertion refuses instead of using the new card.
    let s2 = s.clone();
    let stale = tokio::task::spawn_blocking(move || {
        s2.sign_blocking(generation + 1, sha256_digest_info(b"x"))
    })
    .await?;
    assert!(
        matches!(stale, Err(CardError::CardRemoved { .. })),
        "{stale:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_card_answers_are_an_error_and_spend_no_pin_try() -> anyhow::Result<()> {
    let mut rig = Rig::start(
        card(&pki()?, CpsGeneration::Cps3)?.with_malformed_answers(true),
        CardsConfig::default(),
    )?;
    assert!(
        rig.insert_ready().await?.is_none(),
        "no identity from garbage"
    );
    let (_, info) = rig.service.active_card().context("card listed")?;
    let error = info.error.context("error shown")?;
    assert!(error.contains("malformed"), "{error}");
    let r = rig.service.verify_pin(pin(CPS_DEFAULT_PIN), true).await;
    assert!(matches!(r, Err(CardError::NoCard)), "{r:?}");
    assert_eq!(rig.card.handler().tries_left(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_card_pin_request_times_out_and_the_pin_is_not_sent_afterwards() -> anyhow::Result<()>
{
    let config = CardsConfig {
        apdu_timeout: Duration::from_millis(300),
        ..CardsConfig::default()
    };
    let mut rig = Rig::start(
        card(&pki()?, CpsGeneration::Cps3)?.with_delay(Duration::from_millis(150)),
        config,
    )?;
    rig.card.insert()?;
    rig.event(Duration::from_secs(2), |e| {
        matches!(e, CardEvent::CardInserted { .. })
    })
    .await?;
    // The identity read (a dozen slow APDUs) holds the card thread: the PIN request waits
    // behind it and the caller gives up.
    let t0 = Instant::now();
    let r = rig.service.verify_pin(pin(WRONG_PIN), true).await;
    assert!(matches!(r, Err(CardError::Timeout { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    rig.event(Duration::from_secs(30), |e| {
        matches!(e, CardEvent::CardReady { .. })
    })
    .await?;
    // Once the card thread is free the stale request is dropped, not sent.
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(s) = rig.service.pin_status().await {
                return s;
            }
        }
    })
    .await?;
    assert_eq!(status, PinState::NotVerified { tries_left: 3 });
    assert_eq!(rig.card.handler().tries_left(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_service_stops_its_threads_promptly() -> anyhow::Result<()> {
    let rig = Rig::start(card(&pki()?, CpsGeneration::Cps3)?, CardsConfig::default())?;
    let t0 = Instant::now();
    drop(rig.service);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pcscd_gone_mid_session_fails_operations_promptly_and_reports_the_card_removed()
-> anyhow::Result<()> {
    let mut rig = Rig::start(card(&pki()?, CpsGeneration::Cps3)?, CardsConfig::default())?;
    rig.insert_ready().await?;
    rig.service.verify_pin(pin(CPS_DEFAULT_PIN), false).await?;
    let (_, info) = rig.service.active_card().context("active")?;
    // The reader stack disappears (as with a reader unplugged): pcscd is killed.
    drop(rig.pcscd.take());
    rig.event(Duration::from_secs(2), |e| {
        matches!(e, CardEvent::CardRemoved { .. })
    })
    .await?;
    let s = rig.service.clone();
    let t0 = Instant::now();
    let signed = tokio::task::spawn_blocking(move || {
        s.sign_blocking(info.generation, sha256_digest_info(b"x"))
    })
    .await?;
    assert!(signed.is_err(), "signed without a reader");
    let verify = rig.service.verify_pin(pin(CPS_DEFAULT_PIN), true).await;
    assert!(matches!(verify, Err(CardError::NoCard)), "{verify:?}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(rig.service.active_card().is_none());
    Ok(())
}
