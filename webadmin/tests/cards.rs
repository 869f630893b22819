//! Cartes CPS on a real pcscd + vpcd with the harness's virtual CPS3 card: the reader, the
//! card and its holder appear on the page and in the live status; the PIN is presented from
//! the page on an explicit request, never echoed nor audited, and the last try is only spent
//! with the confirmation box ticked.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::{Client, Reply, TestServer, logged_in};
use hyper::StatusCode;
use passerelle_cards::{CardService, CardsConfig};
use passerelle_harness::{CpsCard, CpsGeneration, CpsIdentity, Pcscd, VirtualCard};
use passerelle_testpki::{PkiOptions, TestPki, names};
use passerelle_webadmin::AdminServices;

/// The card's PIN in these tests: not the harness default, so that no other "1234" on a
/// page (the setup form's token PIN) can hide an echo.
const CARD_PIN: &str = "48213579";
const WRONG_PIN: &str = "97531864";

struct Rig {
    // Field order is drop order: the server and the service before the card and pcscd.
    server: TestServer,
    client: Client,
    card: VirtualCard<CpsCard>,
    _pcscd: Pcscd,
}

impl Rig {
    async fn start() -> anyhow::Result<Self> {
        let pki = TestPki::generate(&PkiOptions::new(7))?;
        let cert = pki.cert(names::CPS_AUTH)?;
        let identity = CpsIdentity {
            national_id: "899700218896".into(),
            family_name: "DUPONT".into(),
            given_name: "JEAN".into(),
            profession: "Médecin".into(),
        };
        let card = CpsCard::new(
            CpsGeneration::Cps3,
            &identity,
            cert.der().to_vec(),
            cert.key().pkcs8_der(),
        )?
        .with_pin(CARD_PIN)?;
        let pcscd = Pcscd::builder().apdu_log(true).start()?;
        pcscd.set_process_env();
        let mut card = pcscd.virtual_card(0, card)?;
        let service = CardService::start(CardsConfig::default())?;
        // The monitor first sees the empty reader, so the insertion is a change it reports.
        let deadline = Instant::now() + Duration::from_secs(5);
        while service
            .readers()
            .iter()
            .all(|r| r.name != card.reader_name())
        {
            assert!(Instant::now() < deadline, "reader never listed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        card.insert()?;
        let (server, client) = logged_in(AdminServices {
            cards: Some(service),
            ..AdminServices::default()
        })
        .await?;
        Ok(Self {
            server,
            client,
            card,
            _pcscd: pcscd,
        })
    }

    /// The Cartes CPS page once the card's identity has been read.
    async fn page(&mut self) -> anyhow::Result<Reply> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let page = self.client.get("/cartes").await?;
            if page.body.contains("DUPONT") || Instant::now() > deadline {
                return Ok(page);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits the PIN form of `page` with `pin`, ticking the last-try box or not.
    async fn present(&mut self, page: &Reply, pin: &str, confirm: bool) -> anyhow::Result<Reply> {
        let csrf = page.csrf()?;
        let reader = hidden(page, "reader")?;
        let generation = hidden(page, "generation")?;
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("reader", reader.as_str()),
            ("generation", generation.as_str()),
            ("pin", pin),
        ];
        if confirm {
            fields.push(("confirm_last_try", "1"));
        }
        self.client.post_form("/cartes/pin", &fields).await
    }

    fn tries_left(&self) -> u8 {
        self.card.handler().tries_left()
    }
}

fn hidden(page: &Reply, name: &str) -> anyhow::Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .body
        .find(&marker)
        .with_context(|| format!("no {name} field: {}", page.body))?
        + marker.len();
    let end = page.body[start..].find('"').context("unterminated")? + start;
    Ok(page.body[start..end].to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn cards_page_shows_the_reader_the_cps_card_and_its_holder() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let page = rig.page().await?;
    assert!(page.body.contains("JEAN DUPONT"), "{}", page.body);
    assert!(page.body.contains("CPS3 (contact)") && page.body.contains("899700218896"));
    assert!(
        page.body.contains("id=\"live-cards\">2 / 1<"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Cette page arrive avec"));
    rig.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_wrong_then_right_is_shown_counted_and_never_echoed() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let page = rig.page().await?;
    // The state was asked without spending a try, and the form offers no last-try box.
    assert!(
        page.body.contains("non vérifié, essais restants : 3"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("type=\"password\" name=\"pin\" id=\"pin\" autocomplete=\"off\"")
    );
    assert!(!page.body.contains("confirm-last-try"));
    assert_eq!(rig.tries_left(), 3);

    // Bad format: refused on the server, next to the field, nothing sent.
    let r = rig.present(&page, "12a4", false).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("id=\"err-pin\">Le code PIN compte de 4 à 8 chiffres."),
        "{}",
        r.body
    );
    assert!(!r.body.contains("12a4"));
    assert_eq!(rig.tries_left(), 3);

    // No CSRF token: 403, nothing sent.
    let r = rig
        .client
        .post_form(
            "/cartes/pin",
            &[
                ("reader", &hidden(&page, "reader")?),
                ("generation", &hidden(&page, "generation")?),
                ("pin", WRONG_PIN),
            ],
        )
        .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(rig.tries_left(), 3);

    let r = rig.present(&page, WRONG_PIN, false).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("Code PIN erroné, essais restants : 2"),
        "{}",
        r.body
    );
    assert!(r.body.contains("non vérifié, essais restants : 2"));
    assert!(!r.body.contains(WRONG_PIN));
    assert_eq!(rig.tries_left(), 2, "the card counted one wrong PIN");

    let r = rig.present(&r, CARD_PIN, false).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("id=\"notice\">Code PIN vérifié."),
        "{}",
        r.body
    );
    assert!(r.body.contains("<span class=\"ok\">vérifié</span>"));
    assert!(!r.body.contains(CARD_PIN));
    assert_eq!(rig.tries_left(), 3);
    let page = rig.client.get("/cartes").await?;
    assert!(page.body.contains("<span class=\"ok\">vérifié</span>"));
    assert!(
        !page.body.contains("id=\"pin-form\""),
        "no form once verified"
    );

    let journal = rig.client.get("/journal").await?;
    assert!(
        journal.body.contains("PIN presented for card ")
            && journal.body.contains(": wrong PIN, 2 tries left"),
        "{}",
        journal.body
    );
    assert!(journal.body.contains(": verified"), "{}", journal.body);
    assert!(!journal.body.contains(CARD_PIN) && !journal.body.contains(WRONG_PIN));
    rig.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_last_try_is_spent_only_with_the_confirmation_box() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let mut page = rig.page().await?;
    for _ in 0..2 {
        page = rig.present(&page, WRONG_PIN, false).await?;
    }
    assert_eq!(rig.tries_left(), 1);
    assert!(
        page.body.contains("id=\"confirm-last-try\""),
        "{}",
        page.body
    );

    // Without the box: refused, and no VERIFY reached the card (even with the right PIN).
    let r = rig.present(&page, CARD_PIN, false).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("id=\"err-pin\">Confirmation requise, il ne reste qu&#39;un essai")
            || r.body
                .contains("id=\"err-pin\">Confirmation requise, il ne reste qu'un essai"),
        "{}",
        r.body
    );
    assert_eq!(rig.tries_left(), 1, "the try counter did not move");
    assert!(!r.body.contains(CARD_PIN));

    // With the box: VERIFY is sent (here the right PIN, which resets the counter).
    let r = rig.present(&r, CARD_PIN, true).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Code PIN vérifié."));
    assert_eq!(rig.tries_left(), 3);

    let journal = rig.client.get("/journal").await?;
    assert!(
        journal.body.contains("not sent: last try not confirmed"),
        "{}",
        journal.body
    );
    assert!(!journal.body.contains(CARD_PIN) && !journal.body.contains(WRONG_PIN));
    rig.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_blocked_by_the_confirmed_last_wrong_try_is_shown_and_the_form_gone()
-> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let mut page = rig.page().await?;
    for _ in 0..2 {
        page = rig.present(&page, WRONG_PIN, false).await?;
    }
    let r = rig.present(&page, WRONG_PIN, true).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("id=\"failure\">Code PIN bloqué"),
        "{}",
        r.body
    );
    assert!(r.body.contains("<span class=\"bad\">bloqué</span>"));
    assert!(!r.body.contains("id=\"pin-form\""));
    assert_eq!(rig.tries_left(), 0);
    let journal = rig.client.get("/journal").await?;
    assert!(journal.body.contains(": blocked"), "{}", journal.body);
    rig.server.stop().await;
    Ok(())
}
