//! P7: card signatures for 100 Visiodroits rights requests (the seed's "reuse the connection
//! as long as possible"), passerelle's rights proxy against a naive client opening a new TLS
//! connection per request (the anchor, 100 by construction of the seed's complaint).
//!
//! Both use the same virtual CPS3 card on a real pcscd + vpcd, the same card signer and the
//! same fake AMC (mutual TLS, CPS chain and CRL checked); the card's own signature counter is
//! the measure. The 100 requests run back to back, well inside the 15 minutes of the goal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use passerelle_cards::{CardCertResolver, CardEvent, CardService, CardsConfig, Pin};
use passerelle_fake_amc::{FakeAmc, PublicCa, cps_trust_store};
use passerelle_harness::{CPS_DEFAULT_PIN, CpsCard, CpsGeneration, CpsIdentity, Pcscd};
use passerelle_rights::{RightsConfig, RightsProxy};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;

const REQUESTS: u32 = 100;
const SOAP12: &str = "application/soap+xml; charset=utf-8";

/// Runs P7 on its own thread and runtime and prints its `BENCH P7 …` line.
pub fn run() -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("bench-p7".to_owned())
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(measure())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("P7 thread panicked"))?
}

fn demande(id: u32) -> Bytes {
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\"><env:Body>\
         <dr:demandeDroits xmlns:dr=\"urn:test:visiodroits\"><dr:idDemande>{id}</dr:idDemande>\
         </dr:demandeDroits></env:Body></env:Envelope>"
    ))
}

async fn measure() -> anyhow::Result<()> {
    let pki = TestPki::generate(&PkiOptions::new(7))?;
    let dir = tempfile::tempdir()?;
    let pcscd = Pcscd::builder().apdu_log(true).start()?;
    pcscd.set_process_env();
    let cert = pki.cert(names::CPS_AUTH)?;
    let card = CpsCard::new(
        CpsGeneration::Cps3,
        &CpsIdentity {
            national_id: "899700218896".into(),
            family_name: "DUPONT".into(),
            given_name: "JEAN".into(),
            profession: "Médecin".into(),
        },
        cert.der().to_vec(),
        cert.key().pkcs8_der(),
    )?;
    let signatures = card.signatures();
    let mut card = pcscd.virtual_card(0, card)?;
    let cards = CardService::start(CardsConfig::default())?;
    let mut events = cards.subscribe();
    card.insert()?;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let CardEvent::CardReady { .. } = events.recv().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("card never ready")??;
    cards
        .verify_pin(Pin::new(CPS_DEFAULT_PIN.into())?, false)
        .await?;

    let public = PublicCa::generate()?;
    let store = cps_trust_store(&pki, &dir.path().join("trust"))?;
    let amc = FakeAmc::start(&public, FakeAmc::cps_verifier(store)?).await?;
    let bundle = dir.path().join("public-ca.pem");
    std::fs::write(&bundle, &public.ca_pem)?;

    // Passerelle: the rights proxy (keep-alive pool + TLS session resumption).
    let config = RightsConfig::new("127.0.0.1:0".parse()?, amc.url(), bundle);
    let proxy = RightsProxy::new(config, cards.clone())?;
    let before = signatures.get();
    for id in 1..=REQUESTS {
        let resp = proxy
            .forward(demande(id), HeaderValue::from_static(SOAP12))
            .await?;
        ensure!(
            resp.status() == 200,
            "proxy request {id}: {}",
            resp.status()
        );
    }
    let ours = signatures.get() - before;

    // Anchor: a new TLS connection per request, no session resumption, same card signer.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(public.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let mut naive = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])?
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(CardCertResolver::new(cards.clone())));
    naive.resumption = rustls::client::Resumption::disabled();
    let naive = Arc::new(naive);
    let port = amc.addr().port();
    let before = signatures.get();
    for id in 1..=REQUESTS {
        let tcp = tokio::net::TcpStream::connect(("localhost", port)).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&naive))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::post("/amc/droits")
            .header(hyper::header::HOST, format!("localhost:{port}"))
            .header(hyper::header::CONTENT_TYPE, SOAP12)
            .body(Full::new(demande(id)))?;
        let resp = sender.send_request(req).await?;
        ensure!(
            resp.status() == 200,
            "naive request {id}: {}",
            resp.status()
        );
        resp.into_body().collect().await?;
    }
    let anchor = signatures.get() - before;
    ensure!(anchor > 0, "the naive client made no signature");
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts of at most a few hundred"
    )]
    let ratio = ours as f64 / anchor as f64;
    println!(
        "BENCH P7 card-signatures-100-requests ours={ours} anchor={anchor} unit=signatures ratio={ratio:.2}"
    );
    drop(card);
    Ok(())
}
