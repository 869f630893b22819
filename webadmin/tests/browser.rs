//! End-to-end in a real headless Chromium driven over WebDriver (chromedriver): first-run setup,
//! login, every page and its main action, logout, lockout, a form posted without its CSRF
//! token, the language switch. Screenshots go to `target/webadmin-screenshots/`.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{ADMIN, PASSWORD, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use passerelle_webadmin::{AdminServices, LockoutPolicy};

const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on an ephemeral port and a Chromium session; both end on drop.
struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
    name: &'static str,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("webadmin-screenshots")
}

impl Browser {
    async fn start(name: &'static str) -> anyhow::Result<Self> {
        if !std::path::Path::new(CHROMIUM).exists() {
            bail!("{CHROMIUM} missing: apt-get install -y chromium chromium-driver");
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver missing: apt-get install -y chromium-driver")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir()?;
        let caps = serde_json::json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=fr-FR",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": { "intl": { "accept_languages": "fr-FR,fr" } },
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            bail!("capabilities")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("WebDriver session")?;
        Ok(Self {
            driver,
            client,
            _profile: profile,
            name,
        })
    }

    async fn shot(&self, page: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{}-{page}.png", self.name)), png)?;
        Ok(())
    }

    async fn fill(&self, id: &str, value: &str) -> anyhow::Result<()> {
        let el = self.client.find(Locator::Id(id)).await?;
        el.clear().await?;
        el.send_keys(value).await?;
        Ok(())
    }

    async fn click(&self, id: &str) -> anyhow::Result<()> {
        self.client.find(Locator::Id(id)).await?.click().await?;
        Ok(())
    }

    async fn text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    async fn wait_for(&self, css: &str) -> anyhow::Result<()> {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for {css}"))?;
        Ok(())
    }

    async fn login(&self, base: &str, password: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("{base}/login")).await?;
        self.fill("user", ADMIN).await?;
        self.fill("password", password).await?;
        self.click("login-submit").await?;
        Ok(())
    }
}

async fn setup_in_browser(b: &Browser, base: &str) -> anyhow::Result<()> {
    b.client.goto(&format!("{base}/")).await?;
    b.wait_for("#setup-submit").await?;
    assert!(b.client.current_url().await?.path() == "/setup");
    assert!(b.text().await?.contains("Première mise en service"));
    // A first try without NTP: the message appears next to the field.
    b.fill("user", ADMIN).await?;
    b.fill("password", PASSWORD).await?;
    b.fill("password2", PASSWORD).await?;
    b.fill("pin", "1234").await?;
    b.click("setup-submit").await?;
    b.wait_for("#err-ntp").await?;
    b.shot("setup-error").await?;
    b.fill("password", PASSWORD).await?;
    b.fill("password2", PASSWORD).await?;
    b.fill("pin", "1234").await?;
    b.fill("ntp", "ntp1.example.fr").await?;
    b.client
        .find(Locator::Id("profile"))
        .await?
        .select_by_value("practice")
        .await?;
    b.shot("setup").await?;
    b.click("setup-submit").await?;
    b.wait_for("#login-submit").await?;
    Ok(())
}

/// Every page of the menu, reached by clicking it, with a screenshot.
async fn visit_every_page(b: &Browser) -> anyhow::Result<()> {
    let links = b.client.find_all(Locator::Css("nav a")).await?;
    let mut hrefs = Vec::new();
    for l in links {
        hrefs.push(l.attr("href").await?.unwrap_or_default());
    }
    assert_eq!(hrefs.len(), 9);
    for href in &hrefs {
        b.client
            .find(Locator::Css(&format!("nav a[href='{href}']")))
            .await?
            .click()
            .await?;
        b.wait_for(&format!("nav a.current[href='{href}']")).await?;
        let name = if href == "/" {
            "dashboard"
        } else {
            href.trim_start_matches('/')
        };
        b.shot(name).await?;
    }

    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_setup_login_every_page_main_actions_and_logout() -> anyhow::Result<()> {
    let hsm = passerelle_harness::SoftHsm::builder().build()?;
    hsm.set_process_env();
    let pin_dir = tempfile::tempdir()?;
    let pin_file = pin_dir.path().join("user.pin");
    std::fs::write(&pin_file, format!("{}\n", hsm.token().user_pin))?;
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let keystore = passerelle_keystore::Keystore::open(&passerelle_keystore::KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    })
    .await?;
    let services = AdminServices {
        keystore: Some(keystore),
        ..AdminServices::default()
    };
    let server = TestServer::start(services, LockoutPolicy::default()).await?;
    let base = format!("https://127.0.0.1:{}", server.https.port());
    let b = Browser::start("main").await?;

    setup_in_browser(&b, &base).await?;
    // Setup is locked: its URL now leads to the login.
    b.client.goto(&format!("{base}/setup")).await?;
    b.wait_for("#login-submit").await?;
    assert_eq!(b.client.current_url().await?.path(), "/login");
    b.shot("login").await?;

    b.login(&base, PASSWORD).await?;
    b.wait_for("nav").await?;
    let text = b.text().await?;
    assert!(
        text.contains("Tableau de bord") && text.contains("Files d'attente"),
        "{text}"
    );
    b.shot("dashboard").await?;

    visit_every_page(&b).await?;

    // Clés et certificats: generate a key in the token.
    b.client.goto(&format!("{base}/cles")).await?;
    b.fill("gen-label", "navigateur").await?;
    b.click("generate-submit").await?;
    b.wait_for("#notice").await?;
    let text = b.text().await?;
    assert!(text.contains("Clé générée : navigateur"), "{text}");
    assert!(
        b.client
            .find(Locator::Css("#keys"))
            .await?
            .text()
            .await?
            .contains("navigateur")
    );
    b.shot("cles-generated").await?;

    // Journal: the actions are there, and the filter works.
    b.client
        .goto(&format!("{base}/journal?action=key_generate"))
        .await?;
    let audit = b.client.find(Locator::Id("audit")).await?.text().await?;
    assert!(
        audit.contains("key_generate") && !audit.contains("logout"),
        "{audit}"
    );
    b.shot("journal-filtered").await?;

    // The switch to English, remembered.
    b.client.goto(&format!("{base}/")).await?;
    b.client
        .find(Locator::Css("span.lang a"))
        .await?
        .click()
        .await?;
    b.wait_for("html[lang='en']").await?;
    assert!(b.text().await?.contains("Dashboard"));
    b.client.goto(&format!("{base}/cles")).await?;
    assert!(b.text().await?.contains("Keys and certificates"));
    b.shot("english").await?;

    b.click("logout").await?;
    b.wait_for("#login-submit").await?;
    b.client.goto(&format!("{base}/journal")).await?;
    b.wait_for("#login-submit").await?;
    assert_eq!(b.client.current_url().await?.path(), "/login");
    b.client.clone().close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_lockout_after_repeated_failures_and_post_without_csrf_refused()
-> anyhow::Result<()> {
    let policy = LockoutPolicy {
        max_failures: 3,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(600),
    };
    let server = TestServer::start(AdminServices::default(), policy).await?;
    let base = format!("https://127.0.0.1:{}", server.https.port());
    let b = Browser::start("security").await?;
    setup_in_browser(&b, &base).await?;

    // A form whose CSRF field was removed is refused.
    b.client.goto(&format!("{base}/login")).await?;
    b.client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(function (e) { e.remove(); });",
            vec![],
        )
        .await?;
    b.fill("user", ADMIN).await?;
    b.fill("password", PASSWORD).await?;
    b.click("login-submit").await?;
    b.wait_for("body").await?;
    let text = b.text().await?;
    assert!(text.contains("jeton anti-falsification"), "{text}");
    b.shot("csrf-refused").await?;

    for _ in 0..2 {
        b.login(&base, "not the password").await?;
        b.wait_for("#login-error").await?;
        assert!(b.text().await?.contains("incorrect"));
    }
    b.login(&base, "not the password").await?;
    b.wait_for("#login-error").await?;
    b.login(&base, PASSWORD).await?;
    b.wait_for("#login-error").await?;
    let text = b.text().await?;
    assert!(
        text.contains("connexion bloquée") && text.contains("Réessayez dans 10 min"),
        "{text}"
    );
    b.shot("locked").await?;
    b.client.clone().close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_cps_pin_entry_on_the_cards_page() -> anyhow::Result<()> {
    use passerelle_harness::{CpsCard, CpsGeneration, CpsIdentity, Pcscd};
    let pki = passerelle_testpki::TestPki::generate(&passerelle_testpki::PkiOptions::new(7))?;
    let cert = pki.cert(passerelle_testpki::names::CPS_AUTH)?;
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
    .with_pin("48213579")?;
    let pcscd = Pcscd::builder().start()?;
    pcscd.set_process_env();
    let mut card = pcscd.virtual_card(0, card)?;
    let service = passerelle_cards::CardService::start(passerelle_cards::CardsConfig::default())?;
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
    let services = AdminServices {
        cards: Some(service),
        ..AdminServices::default()
    };
    let server = TestServer::start(services, LockoutPolicy::default()).await?;
    let base = format!("https://127.0.0.1:{}", server.https.port());
    let b = Browser::start("cards").await?;
    setup_in_browser(&b, &base).await?;
    b.login(&base, PASSWORD).await?;
    b.wait_for("nav").await?;

    // The identity is read in the background: reload until the form is there.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.client.goto(&format!("{base}/cartes")).await?;
        if b.client.find(Locator::Id("pin-form")).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PIN form: {}",
            b.text().await?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let field = b.client.find(Locator::Id("pin")).await?;
    assert_eq!(field.attr("type").await?.as_deref(), Some("password"));
    assert_eq!(field.attr("autocomplete").await?.as_deref(), Some("off"));
    b.shot("cartes-pin").await?;

    b.fill("pin", "97531864").await?;
    b.click("pin-submit").await?;
    b.wait_for("#failure").await?;
    let text = b.text().await?;
    assert!(
        text.contains("Code PIN erroné, essais restants : 2"),
        "{text}"
    );
    assert_eq!(card.handler().tries_left(), 2);
    b.shot("cartes-pin-wrong").await?;

    b.fill("pin", "48213579").await?;
    b.click("pin-submit").await?;
    b.wait_for("#notice").await?;
    let text = b.text().await?;
    assert!(text.contains("Code PIN vérifié."), "{text}");
    assert!(!b.client.source().await?.contains("48213579"));
    assert_eq!(card.handler().tries_left(), 3);
    b.shot("cartes-pin-verified").await?;

    b.client.clone().close().await?;
    server.stop().await;
    Ok(())
}

/// Polls the text of `css` until it contains `want`.
async fn wait_text(b: &Browser, css: &str, want: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(el) = b.client.find(Locator::Css(css)).await {
            let text = el.text().await.unwrap_or_default();
            if text.contains(want) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("{css}: {text:?} never contained {want:?}");
            }
        } else if Instant::now() > deadline {
            bail!("{css} never appeared");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_oa_07_messagerie_psc_sign_in_connection_test_and_app_bal() -> anyhow::Result<()> {
    use common::fixtures::{MailFixture, PER_BAL, PscFixture};
    let mail = MailFixture::start().await?;
    let psc = PscFixture::start(&mail.pki).await?;
    psc.fake.set_next_login(PER_BAL, "899700218896");
    psc.psc
        .mark_reauth_required(PER_BAL, "PSC refused the refresh token")
        .await?;
    let services = AdminServices {
        queue: Some(std::sync::Arc::clone(&mail.queue)
            as std::sync::Arc<dyn passerelle_webadmin::QueueMetricsSource>),
        keystore: Some(psc.keystore.clone()),
        mail: Some(mail.handle.clone()),
        psc: Some(psc.psc.clone()),
        ..AdminServices::default()
    };
    let authorize = psc.fake.authorize_url();
    let server = TestServer::start_with(services, move |c| {
        c.psc_authorize_url = Some(authorize);
    })
    .await?;
    let base = format!("https://127.0.0.1:{}", server.https.port());
    let b = Browser::start("messagerie").await?;
    setup_in_browser(&b, &base).await?;
    b.login(&base, PASSWORD).await?;
    b.wait_for("nav").await?;

    b.client.goto(&format!("{base}/messagerie")).await?;
    b.wait_for("#bals").await?;
    let text = b.text().await?;
    assert!(
        text.contains("connectée") && text.contains("ré-authentification requise"),
        "{text}"
    );
    b.shot("messagerie").await?;

    // Test a connection: the real Postfix, STARTTLS, client certificate, AUTH PLAIN.
    b.click("test-app").await?;
    let notice = wait_text(&b, "#notice", "Connexion réussie").await?;
    assert!(
        notice.contains("mail.operateur-a.mssante.fr") && notice.contains("PLAIN"),
        "{notice}"
    );
    b.shot("messagerie-test").await?;

    // Sign in the PER BAL with (the fake) Pro Santé Connect: authorize, consent, callback.
    b.click("psc-dr").await?;
    b.wait_for("#psc-approve").await?;
    assert!(
        b.client
            .current_url()
            .await?
            .path()
            .ends_with("/openid-connect/auth")
    );
    b.shot("psc-consent").await?;
    b.click("psc-approve").await?;
    let notice = wait_text(&b, "#notice", "Connexion Pro Santé Connect enregistrée").await?;
    assert!(notice.contains(PER_BAL), "{notice}");
    assert_eq!(b.client.current_url().await?.path(), "/messagerie/psc/fin");
    assert_eq!(
        psc.psc.session(PER_BAL),
        Some(passerelle_psc::SessionState::Active)
    );
    assert_eq!(psc.fake.code_exchanges(), 1);
    assert!(b.text().await?.contains("session active"));
    b.shot("messagerie-psc-done").await?;

    // Add an applicative BAL with the token's ORG AUTH_CLI certificate: a wrong port first.
    b.client.goto(&format!("{base}/messagerie")).await?;
    b.fill("bal-name", "compta").await?;
    b.fill("bal-address", "compta@cabinet.medecin.mssante.fr")
        .await?;
    b.fill("bal-password", "mot-de-passe-operateur").await?;
    b.fill("bal-host", "mail.operateur-a.mssante.fr").await?;
    b.fill("bal-port", "0").await?;
    b.click("add-bal-submit").await?;
    b.wait_for("#err-port").await?;
    b.shot("messagerie-add-error").await?;
    b.fill("bal-port", "587").await?;
    b.fill("bal-password", "mot-de-passe-operateur").await?;
    b.click("add-bal-submit").await?;
    let notice = wait_text(&b, "#notice", "appliqué au prochain redémarrage").await?;
    assert!(notice.contains("compta"), "{notice}");
    b.wait_for("#bal-compta").await?;
    assert!(
        passerelle_api_lps::BalOverlay::load(&mail.overlay)?
            .bals
            .iter()
            .any(|o| o.bal.name == "compta")
    );
    b.shot("messagerie-bal-added").await?;

    b.client.clone().close().await?;
    server.stop().await;
    mail.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_facturation_resend_and_mises_a_jour_check_install_with_live_progress()
-> anyhow::Result<()> {
    use common::fixtures::{BillingFixture, UpdaterFixture};
    let billing = BillingFixture::start().await?;
    let updater = UpdaterFixture::start();
    let services = AdminServices {
        billing: Some(billing.status.clone()),
        updates: Some(updater.handle.clone()),
        ..AdminServices::default()
    };
    let server = TestServer::start(services, LockoutPolicy::default()).await?;
    let base = format!("https://127.0.0.1:{}", server.https.port());
    let b = Browser::start("billing-updates").await?;
    setup_in_browser(&b, &base).await?;
    b.login(&base, PASSWORD).await?;
    b.wait_for("nav").await?;

    // Facturation: the rejected lot, its history, then Renvoyer.
    b.client.goto(&format!("{base}/facturation")).await?;
    b.wait_for("#lots").await?;
    let text = b.text().await?;
    assert!(
        text.contains("rejeté") && text.contains("acquitté"),
        "{text}"
    );
    b.shot("facturation").await?;
    b.client
        .goto(&format!("{base}/facturation?lot={}", billing.rejected))
        .await?;
    b.wait_for("#history").await?;
    b.shot("facturation-history").await?;
    b.click(&format!("resend-{}", billing.rejected)).await?;
    wait_text(&b, "#notice", "Lot remis en envoi").await?;
    assert_eq!(
        billing
            .status
            .lot(&billing.rejected)
            .await?
            .expect("lot")
            .lot
            .state,
        passerelle_billing::LotState::Received
    );
    b.shot("facturation-resent").await?;

    // Mises à jour: check now, the bar follows the updater live (SSE), then install.
    b.client.goto(&format!("{base}/mises-a-jour")).await?;
    b.wait_for("#update-live").await?;
    assert!(b.text().await?.contains("1.2.0"));
    b.click("update-check").await?;
    wait_text(&b, "#notice", "Vérification demandée").await?;
    wait_text(
        &b,
        "#update-state",
        "vérification et téléchargement en cours",
    )
    .await?;
    b.shot("mises-a-jour-checking").await?;
    updater.release.notify_one();
    // No reload: the page's event stream brings the new state.
    wait_text(&b, "#update-state", "prête").await?;
    let value = b
        .client
        .find(Locator::Id("update-progress"))
        .await?
        .attr("value")
        .await?;
    assert_eq!(value.as_deref(), Some("100"));
    b.shot("mises-a-jour-armed").await?;
    b.client.goto(&format!("{base}/mises-a-jour")).await?;
    b.click("update-install").await?;
    wait_text(&b, "#notice", "Installation demandée").await?;
    assert_eq!(updater.reboots.load(std::sync::atomic::Ordering::SeqCst), 1);
    let history = b
        .client
        .find(Locator::Id("update-history"))
        .await?
        .text()
        .await?;
    assert!(
        history.contains("armed") && history.contains("1.3.0"),
        "{history}"
    );
    b.shot("mises-a-jour-install").await?;

    b.client.clone().close().await?;
    server.stop().await;
    Ok(())
}
