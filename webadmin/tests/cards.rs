//! Cartes CPS on a real pcscd + vpcd with the harness's virtual CPS3 card: the reader, the
//! card and its holder appear on the page and in the live status.

mod common;

use std::time::{Duration, Instant};

use common::logged_in;
use passerelle_cards::{CardService, CardsConfig};
use passerelle_harness::{CpsCard, CpsGeneration, CpsIdentity, Pcscd};
use passerelle_testpki::{PkiOptions, TestPki, names};
use passerelle_webadmin::AdminServices;

#[tokio::test(flavor = "multi_thread")]
async fn cards_page_shows_the_reader_the_cps_card_and_its_holder() -> anyhow::Result<()> {
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
    )?;
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
    let (server, mut c) = logged_in(AdminServices {
        cards: Some(service),
        ..AdminServices::default()
    })
    .await?;

    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = c.get("/cartes").await?;
        if page.body.contains("DUPONT") || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.body.contains("JEAN DUPONT"), "{}", page.body);
    assert!(page.body.contains("CPS3 (contact)") && page.body.contains("899700218896"));
    assert!(
        page.body.contains("id=\"live-cards\">2 / 1<"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Cette page arrive avec"));
    server.stop().await;
    Ok(())
}
