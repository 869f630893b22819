//! The rights proxy end to end: an LPS client → the proxy's local HTTPS endpoint → mutual TLS
//! with the virtual CPS card (real pcscd + vpcd) → a fake AMC that requires a certificate
//! chaining to the test CPS root and checks the test CRLs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use passerelle_cards::{CardEvent, CardService, CardsConfig, Pin};
use passerelle_fake_amc::{FakeAmc, PublicCa, cps_trust_store};
use passerelle_harness::{
    CPS_DEFAULT_PIN, CpsCard, CpsGeneration, CpsIdentity, Pcscd, VirtualCard,
};
use passerelle_rights::{RightsConfig, RightsProxy, serve};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpListener;

struct Rig {
    _pcscd: Pcscd,
    _dir: tempfile::TempDir,
    card: VirtualCard<CpsCard>,
    cards: CardService,
    amc: FakeAmc,
    port: u16,
    lps_tls: Arc<rustls::ClientConfig>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

struct Answer {
    status: u16,
    body: String,
}

fn cps_card(pki: &TestPki, cert_name: &str) -> anyhow::Result<CpsCard> {
    let cert = pki.cert(cert_name)?;
    Ok(CpsCard::new(
        CpsGeneration::Cps3,
        &CpsIdentity {
            national_id: "899700218896".into(),
            family_name: "DUPONT".into(),
            given_name: "JEAN".into(),
            profession: "Médecin".into(),
        },
        cert.der().to_vec(),
        cert.key().pkcs8_der(),
    )?)
}

impl Rig {
    async fn start(
        card: impl FnOnce(&TestPki) -> anyhow::Result<CpsCard>,
        tune: impl FnOnce(&mut RightsConfig),
    ) -> anyhow::Result<Self> {
        let pki = TestPki::generate(&PkiOptions::new(7))?;
        let dir = tempfile::tempdir()?;
        let pcscd = Pcscd::builder().apdu_log(true).start()?;
        pcscd.set_process_env();
        let card = pcscd.virtual_card(0, card(&pki)?)?;
        let cards = CardService::start(CardsConfig::default())?;

        let public = PublicCa::generate()?;
        let store = cps_trust_store(&pki, &dir.path().join("trust"))?;
        let amc = FakeAmc::start(&public, FakeAmc::cps_verifier(store)?).await?;
        let bundle = dir.path().join("public-ca.pem");
        std::fs::write(&bundle, &public.ca_pem)?;

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut config = RightsConfig::new(listener.local_addr()?, amc.url(), bundle);
        tune(&mut config);
        let proxy = RightsProxy::new(config, cards.clone())?;
        proxy.watch_card_removals();

        // The local endpoint's certificate: any; the LPS side trusts it explicitly.
        let device = PublicCa::generate()?;
        let (chain, key) = device.server_identity();
        let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            Arc::clone(&proxy),
            listener,
            Arc::new(server_tls),
            async move {
                let _ = rx.await;
            },
        ));
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(device.ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let lps_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            _pcscd: pcscd,
            _dir: dir,
            card,
            cards,
            amc,
            port,
            lps_tls: Arc::new(lps_tls),
            _shutdown: tx,
        })
    }

    /// Inserts the card and waits for its identity read.
    async fn insert(&mut self) -> anyhow::Result<()> {
        let mut events = self.cards.subscribe();
        self.card.insert()?;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let CardEvent::CardReady { identity, .. } = events.recv().await? {
                    // A card whose identity could not be read is ready but unusable: say why.
                    anyhow::ensure!(
                        identity.is_some(),
                        "card identity not read: {:?}",
                        self.cards.readers()
                    );
                    return anyhow::Ok(());
                }
            }
        })
        .await?
    }

    async fn insert_with_pin(&mut self) -> anyhow::Result<()> {
        self.insert().await?;
        self.cards
            .verify_pin(Pin::new(CPS_DEFAULT_PIN.into())?, false)
            .await?;
        Ok(())
    }

    /// One LPS request on its own connection to the proxy.
    async fn post(&self, content_type: &str, body: String) -> anyhow::Result<Answer> {
        Lps {
            port: self.port,
            lps_tls: Arc::clone(&self.lps_tls),
        }
        .post(content_type, body)
        .await
    }

    async fn rights(&self, id: u32) -> anyhow::Result<Answer> {
        self.post(SOAP12, demande(id)).await
    }
}

const SOAP12: &str = "application/soap+xml; charset=utf-8; action=\"urn:demandeDroits\"";

fn demande(id: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\"><env:Body>\
         <dr:demandeDroits xmlns:dr=\"urn:test:visiodroits\"><dr:idDemande>{id}</dr:idDemande>\
         </dr:demandeDroits></env:Body></env:Envelope>"
    )
}

/// The fault's code and subcode, checked to be a SOAP 1.2 fault with a French reason.
fn fault(answer: &Answer) -> anyhow::Result<(String, String)> {
    const ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
    let doc = roxmltree::Document::parse(&answer.body)?;
    let f = doc
        .descendants()
        .find(|n| n.has_tag_name((ENV, "Fault")))
        .context("no env:Fault")?;
    let values: Vec<&str> = f
        .descendants()
        .filter(|n| n.has_tag_name((ENV, "Value")))
        .filter_map(|n| n.text())
        .collect();
    let text = f
        .descendants()
        .find(|n| n.has_tag_name((ENV, "Text")))
        .context("no reason")?;
    ensure!(
        text.attribute(("http://www.w3.org/XML/1998/namespace", "lang")) == Some("fr"),
        "reason not in French"
    );
    Ok((
        values.first().copied().unwrap_or_default().to_owned(),
        values.get(1).copied().unwrap_or_default().to_owned(),
    ))
}

fn assert_answers(answer: &Answer, id: u32) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .body
            .contains(&format!("<dr:idDemande>{id}</dr:idDemande>"))
            && answer.body.contains(&format!("D-{id}")),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rights_requests_go_over_mutual_tls_with_the_cps_card_and_one_signature_serves_them_all()
-> anyhow::Result<()> {
    let mut rig = Rig::start(|p| cps_card(p, names::CPS_AUTH), |_| {}).await?;
    let signatures = rig.card.handler().signatures();
    rig.insert_with_pin().await?;
    for id in 1..=5 {
        assert_answers(&rig.rights(id).await?, id);
    }
    assert_eq!(signatures.get(), 1, "keep-alive: one handshake");
    assert_eq!(rig.amc.connections(), 1);
    let pki = TestPki::generate(&PkiOptions::new(7))?;
    assert_eq!(
        rig.amc.client_certificates(),
        vec![pki.cert(names::CPS_AUTH)?.der().to_vec()]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_pool_tls_session_resumption_still_spares_the_card() -> anyhow::Result<()> {
    let mut rig = Rig::start(|p| cps_card(p, names::CPS_AUTH), |c| c.pool_max_idle = 0).await?;
    let signatures = rig.card.handler().signatures();
    rig.insert_with_pin().await?;
    for id in 1..=4 {
        assert_answers(&rig.rights(id).await?, id);
    }
    assert_eq!(rig.amc.connections(), 4);
    assert_eq!(rig.amc.resumed_handshakes(), 3);
    assert_eq!(signatures.get(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_card_is_a_receiver_fault_and_nothing_reaches_the_amc() -> anyhow::Result<()> {
    let rig = Rig::start(|p| cps_card(p, names::CPS_AUTH), |_| {}).await?;
    let answer = rig.rights(1).await?;
    assert_eq!(answer.status, 500);
    assert_eq!(fault(&answer)?, ("env:Receiver".into(), "p:NoCard".into()));
    assert_eq!(rig.amc.connections(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_not_entered_is_a_fault_and_spends_no_pin_try() -> anyhow::Result<()> {
    let mut rig = Rig::start(|p| cps_card(p, names::CPS_AUTH), |_| {}).await?;
    rig.insert().await?;
    let answer = rig.rights(1).await?;
    assert_eq!(
        fault(&answer)?,
        ("env:Receiver".into(), "p:PinNotVerified".into())
    );
    assert_eq!(rig.card.handler().tries_left(), 3);
    assert_eq!(rig.amc.connections(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn card_removal_flushes_connections_and_sessions_and_a_new_card_signs_again()
-> anyhow::Result<()> {
    let mut rig = Rig::start(|p| cps_card(p, names::CPS_AUTH), |_| {}).await?;
    let signatures = rig.card.handler().signatures();
    rig.insert_with_pin().await?;
    assert_answers(&rig.rights(1).await?, 1);
    let mut events = rig.cards.subscribe();
    rig.card.remove();
    tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(events.recv().await, Ok(CardEvent::CardRemoved { .. })) {}
    })
    .await?;
    let answer = rig.rights(2).await?;
    assert_eq!(fault(&answer)?, ("env:Receiver".into(), "p:NoCard".into()));

    rig.insert_with_pin().await?;
    assert_answers(&rig.rights(3).await?, 3);
    // A full handshake again: neither the old connection nor its session was reused.
    assert_eq!(signatures.get(), 2);
    assert_eq!(rig.amc.full_handshakes(), 2);
    assert_eq!(rig.amc.resumed_handshakes(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn card_removed_during_the_handshake_signature_is_a_card_removed_fault() -> anyhow::Result<()>
{
    let mut rig = Rig::start(
        |p| Ok(cps_card(p, names::CPS_AUTH)?.with_delay(Duration::from_millis(150))),
        |_| {},
    )
    .await?;
    rig.insert_with_pin().await?;
    let signatures_before = rig.cards.signatures_requested();
    let t0 = Instant::now();
    let request = {
        let (port, lps_tls) = (rig.port, Arc::clone(&rig.lps_tls));
        tokio::spawn(async move {
            let client = Lps { port, lps_tls };
            client.post(SOAP12, demande(7)).await
        })
    };
    // Wait until the handshake asks the card to sign, then pull the card out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.cards.signatures_requested() == signatures_before {
        ensure!(
            Instant::now() < deadline,
            "the handshake never asked the card"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.card.remove();
    let answer = request.await??;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(
        fault(&answer)?,
        ("env:Receiver".into(), "p:CardRemoved".into()),
        "{}",
        answer.body
    );
    assert_eq!(rig.amc.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_a_receiver_fault() -> anyhow::Result<()> {
    let mut rig = Rig::start(|p| cps_card(p, names::CPS_AUTH), |_| {}).await?;
    rig.insert_with_pin().await?;
    rig.amc.set_down(true);
    let answer = rig.rights(1).await?;
    assert_eq!(answer.status, 502);
    assert_eq!(
        fault(&answer)?,
        ("env:Receiver".into(), "p:UpstreamDown".into())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_is_a_timeout_fault_not_a_hang() -> anyhow::Result<()> {
    let mut rig = Rig::start(
        |p| cps_card(p, names::CPS_AUTH),
        |c| c.upstream_timeout = Duration::from_millis(500),
    )
    .await?;
    rig.insert_with_pin().await?;
    rig.amc.set_answer_delay(Duration::from_secs(5));
    let t0 = Instant::now();
    let answer = rig.rights(1).await?;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(answer.status, 504);
    assert_eq!(
        fault(&answer)?,
        ("env:Receiver".into(), "p:UpstreamTimeout".into())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soap_request_over_the_limit_gets_413_and_a_sender_fault() -> anyhow::Result<()> {
    let mut rig = Rig::start(
        |p| cps_card(p, names::CPS_AUTH),
        |c| c.max_request_bytes = 1024,
    )
    .await?;
    rig.insert_with_pin().await?;
    let answer = rig.post(SOAP12, "x".repeat(2048)).await?;
    assert_eq!(answer.status, 413);
    assert_eq!(
        fault(&answer)?,
        ("env:Sender".into(), "p:RequestTooLarge".into())
    );
    let answer = rig.post("text/xml", demande(1)).await?;
    assert_eq!(answer.status, 415, "SOAP 1.1 content type refused");
    assert_eq!(rig.amc.connections(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fake_amc_refuses_a_client_certificate_outside_the_cps_hierarchy() -> anyhow::Result<()>
{
    // An IGC-Santé organisation certificate on the card: valid, but not a CPS one.
    let mut rig = Rig::start(|p| cps_card(p, names::ORG_AUTH_CLI), |_| {}).await?;
    rig.insert_with_pin().await?;
    let answer = rig.rights(1).await?;
    assert_eq!(
        fault(&answer)?,
        ("env:Receiver".into(), "p:UpstreamDown".into())
    );
    assert_eq!(rig.amc.refused_handshakes(), 1);
    assert_eq!(rig.amc.requests(), 0);
    Ok(())
}

/// An LPS client detached from the rig, for requests run in a task.
struct Lps {
    port: u16,
    lps_tls: Arc<rustls::ClientConfig>,
}

impl Lps {
    async fn post(&self, content_type: &str, body: String) -> anyhow::Result<Answer> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.lps_tls))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::post("/droits")
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .context("proxy hung")??;
        let status = resp.status().as_u16();
        let body = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
        Ok(Answer { status, body })
    }
}

/// The card's PKCS#11 module path, with SoftHSM2 standing in for the Cryptolib CPS module: a
/// real PKCS#11 module holding the CPS authentication key under its Cryptolib label.
#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_module_key_cps_priv_aut_authenticates_the_rights_connection() -> anyhow::Result<()>
{
    let pki = TestPki::generate(&PkiOptions::new(7))?;
    let dir = tempfile::tempdir()?;
    let hsm = passerelle_harness::SoftHsm::builder().build()?;
    hsm.set_process_env();
    let pcscd = Pcscd::builder().apdu_log(true).start()?;
    pcscd.set_process_env();
    let cps = pki.cert(names::CPS_AUTH)?;
    let key_pem = dir.path().join("cps-auth.key.pem");
    std::fs::write(&key_pem, cps.key().pkcs8_pem())?;
    let token = hsm.token();
    let status = std::process::Command::new("softhsm2-util")
        .envs(hsm.env())
        .args(["--import"])
        .arg(&key_pem)
        .args(["--token", &token.label, "--pin", &token.user_pin])
        .args(["--label", passerelle_cards::CPS_PRIV_AUT, "--id", "01"])
        .output()?;
    ensure!(
        status.status.success(),
        "softhsm2-util --import: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let pin_file = dir.path().join("user.pin");
    std::fs::write(&pin_file, &token.user_pin)?;
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let keystore = passerelle_keystore::Keystore::open(&passerelle_keystore::KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: token.label.clone(),
        pin_file,
    })
    .await?;
    let cert_path = dir.path().join("cps-auth.crt.der");
    std::fs::write(&cert_path, cps.der())?;
    keystore
        .import_certificate(
            &passerelle_keystore::KeyRef::Label(passerelle_cards::CPS_PRIV_AUT.into()),
            &cert_path,
        )
        .await?;
    let resolver = passerelle_cards::pkcs11_cert_resolver(&keystore).await?;

    let cards = CardService::start(CardsConfig::default())?;
    let public = PublicCa::generate()?;
    let store = cps_trust_store(&pki, &dir.path().join("trust"))?;
    let amc = FakeAmc::start(&public, FakeAmc::cps_verifier(store)?).await?;
    let bundle = dir.path().join("public-ca.pem");
    std::fs::write(&bundle, &public.ca_pem)?;
    let config = RightsConfig::new("127.0.0.1:0".parse()?, amc.url(), bundle);
    let proxy = RightsProxy::with_client_auth(
        config,
        cards,
        passerelle_rights::ClientAuth::Pkcs11(Arc::new(resolver)),
    )?;
    for id in 1..=3 {
        let resp = proxy
            .forward(
                demande(id).into(),
                hyper::header::HeaderValue::from_static(SOAP12),
            )
            .await?;
        assert_eq!(resp.status(), 200);
        let body = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
        assert!(body.contains(&format!("D-{id}")), "{body}");
    }
    assert_eq!(amc.full_handshakes(), 1);
    assert_eq!(amc.client_certificates(), vec![cps.der().to_vec()]);
    Ok(())
}
