//! Messagerie, Facturation, Mises à jour and the dashboard over real HTTPS, with the services
//! behind them running for real (Postfix + Dovecot operator, fake PSC, lot store, updater
//! handle): status, actions, validation next to the field, escaping, CSRF, audit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixtures::{
    BillingFixture, MailFixture, PER_BAL, PscFixture, TOKEN_CERT_LABEL, UpdaterFixture,
};
use common::logged_in;
use hyper::StatusCode;
use passerelle_api_lps::BalOverlay;
use passerelle_billing::LotState;
use passerelle_psc::SessionState;
use passerelle_updater::service::UpdateStatus;
use passerelle_webadmin::{AdminServices, QueueMetricsSource, ROUTES};

#[tokio::test(flavor = "multi_thread")]
async fn every_new_post_route_refuses_a_missing_or_wrong_csrf_token() -> anyhow::Result<()> {
    let billing = BillingFixture::start().await?;
    let updater = UpdaterFixture::start();
    let (server, mut c) = logged_in(AdminServices {
        billing: Some(billing.status.clone()),
        updates: Some(updater.handle.clone()),
        ..AdminServices::default()
    })
    .await?;
    for route in ROUTES.iter().filter(|r| r.method == "POST") {
        if matches!(route.path, "/login" | "/setup" | "/cles/certificat") {
            continue; // pre-session and multipart forms: guard.rs
        }
        for body in [
            vec![("lot", billing.rejected.as_str())],
            vec![("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
        ] {
            let r = c.post_form(route.path, &body).await?;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "POST {}", route.path);
        }
    }
    // Nothing happened: the lot is still rejected, no update command was sent.
    let lot = billing.status.lot(&billing.rejected).await?.expect("lot");
    assert_eq!(lot.lot.state, LotState::Rejected);
    assert_eq!(*updater.handle.status.borrow(), UpdateStatus::Idle);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn messagerie_shows_each_bal_tests_a_connection_against_postfix_and_adds_an_app_bal()
-> anyhow::Result<()> {
    let mail = MailFixture::start().await?;
    let psc = PscFixture::start(&mail.pki).await?;
    let (server, mut c) = logged_in(AdminServices {
        queue: Some(Arc::clone(&mail.queue) as Arc<dyn QueueMetricsSource>),
        keystore: Some(psc.keystore.clone()),
        mail: Some(mail.handle.clone()),
        psc: Some(psc.psc.clone()),
        ..AdminServices::default()
    })
    .await?;
    let page = c.get("/messagerie?lang=en").await?;
    assert!(page.body.contains("Mailboxes (BALs)") && page.body.contains("Test the connection"));
    let page = c.get("/messagerie?lang=fr").await?;
    assert_eq!(page.status, StatusCode::OK);
    for marker in [
        "id=\"bal-app\"",
        "id=\"bal-dr\"",
        "connectée",
        "data-live=\"bal-app\"",
    ] {
        assert!(page.body.contains(marker), "{marker}: {}", page.body);
    }
    let csrf = page.csrf()?;

    // The connection test: STARTTLS, client certificate and AUTH PLAIN on the real Postfix.
    let r = c
        .post_form("/messagerie/test", &[("csrf", &csrf), ("bal", "app")])
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body
            .contains("Connexion réussie à mail.operateur-a.mssante.fr")
            && r.body.contains("authentification PLAIN acceptée"),
        "{}",
        r.body
    );
    // The PER BAL has no PSC session: the test says so, and marks nothing.
    let r = c
        .post_form("/messagerie/test", &[("csrf", &csrf), ("bal", "dr")])
        .await?;
    assert!(r.body.contains("Échec"), "{}", r.body);
    assert_eq!(psc.psc.session(PER_BAL), None);
    let r = c
        .post_form("/messagerie/test", &[("csrf", &csrf), ("bal", "nope")])
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    add_app_bal(&mut c, &csrf, &mail).await?;

    let journal = c.get("/journal").await?;
    for action in ["bal_test", "bal_added"] {
        assert!(journal.body.contains(action), "audit lacks {action}");
    }
    assert!(
        !journal.body.contains("mot-de-passe-operateur"),
        "no secret in the audit"
    );
    server.stop().await;
    mail.stop().await;
    Ok(())
}

/// The add-BAL form: refused field by field, then accepted into the overlay.
async fn add_app_bal(c: &mut common::Client, csrf: &str, mail: &MailFixture) -> anyhow::Result<()> {
    // Adding an applicative BAL: every field checked, messages beside the fields, escaped.
    let r = c
        .post_form(
            "/messagerie/bal",
            &[
                ("csrf", csrf),
                ("name", "<b>Compta</b>"),
                ("address", "pas une adresse"),
                ("key", "inconnue"),
                ("password", ""),
                ("host", "front.example.fr"),
                ("port", "99999"),
            ],
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["name", "address", "key", "password", "port"] {
        assert!(
            r.body.contains(&format!("id=\"err-{field}\"")),
            "no message for {field}"
        );
    }
    assert!(!r.body.contains("<b>Compta</b>") && r.body.contains("&lt;b&gt;Compta"));
    assert!(!mail.overlay.exists(), "nothing written");

    let fields = [
        ("csrf", csrf),
        ("name", "compta"),
        ("address", "compta@cabinet.medecin.mssante.fr"),
        ("key", TOKEN_CERT_LABEL),
        ("password", "mot-de-passe-operateur"),
        ("host", ""),
        ("port", ""),
        ("accounts", common::fixtures::lps::LAN_USER),
    ];
    let r = c.post_form("/messagerie/bal", &fields).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body
            .contains("BAL ajoutée compta : appliqué au prochain redémarrage"),
        "{}",
        r.body
    );
    assert!(r.body.contains("id=\"bal-compta\""));
    // Persisted where the practice mail service reads it at start, password beside it.
    let overlay = BalOverlay::load(&mail.overlay)?;
    let mut next = mail.config.clone();
    overlay.apply(&mut next)?;
    let added = next.bal("compta").expect("merged at the next start");
    assert_eq!(added.client_key_label.as_deref(), Some(TOKEN_CERT_LABEL));
    assert!(next.accounts[0].bals.contains(&"compta".to_owned()));
    let password_file = added.password_file.clone().expect("password file");
    assert_eq!(
        std::fs::read_to_string(&password_file)?,
        "mot-de-passe-operateur\n"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&password_file)?.permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The same name again is refused beside the field.
    let r = c.post_form("/messagerie/bal", &fields).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("existe déjà"), "{}", r.body);

    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oa_07_psc_sign_in_finishes_only_for_the_session_that_started_it() -> anyhow::Result<()> {
    let mail = MailFixture::start().await?;
    let psc = PscFixture::start(&mail.pki).await?;
    psc.psc
        .mark_reauth_required(PER_BAL, "PSC refused the refresh token")
        .await?;
    let services = AdminServices {
        mail: Some(mail.handle.clone()),
        psc: Some(psc.psc.clone()),
        ..AdminServices::default()
    };
    let server = common::TestServer::start_with(services, |c| {
        c.psc_authorize_url = Some("https://127.0.0.1:1/auth".to_owned());
    })
    .await?;
    let mut c = server.client();
    c.setup().await?;
    c.login(common::ADMIN, common::PASSWORD).await?;
    let page = c.get("/messagerie").await?;
    assert!(
        page.body.contains("ré-authentification requise"),
        "{}",
        page.body
    );
    let csrf = page.csrf()?;

    // Only the PER/ORG BALs can be signed in.
    let r = c
        .post_form("/messagerie/psc", &[("csrf", &csrf), ("bal", "x@y.fr")])
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = c
        .post_form("/messagerie/psc", &[("csrf", &csrf), ("bal", PER_BAL)])
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    let marker = "http-equiv=\"refresh\" content=\"0;url=";
    let start = r.body.find(marker).expect("bounce") + marker.len();
    let url = r.body[start..]
        .split('"')
        .next()
        .unwrap_or("")
        .replace("&amp;", "&");
    assert!(url.starts_with("https://127.0.0.1:1/auth?"), "{url}");
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(url.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        "https://passerelle.local/messagerie/psc/callback"
    );

    // The callback needs no session: it only bounces, escaping what it got.
    let mut anonymous = server.client();
    let r = anonymous
        .get(&format!(
            "/messagerie/psc/callback?code=abc&state={}",
            q["state"]
        ))
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("/messagerie/psc/fin?code=abc&amp;state="));
    assert!(!r.body.contains("<nav"));
    let r = anonymous
        .get("/messagerie/psc/callback?code=%3Cscript%3E&state=x")
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Finishing needs the session …
    let r = anonymous
        .get(&format!(
            "/messagerie/psc/fin?code=abc&state={}",
            q["state"]
        ))
        .await?;
    assert_eq!(r.status, StatusCode::FOUND);
    // … and the very session that started it.
    let mut other = server.client();
    other.login(common::ADMIN, common::PASSWORD).await?;
    let r = other
        .get(&format!(
            "/messagerie/psc/fin?code=abc&state={}",
            q["state"]
        ))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("inconnue ou expirée"), "{}", r.body);
    let r = c.get("/messagerie/psc/fin?code=abc&state=unknown").await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(matches!(
        psc.psc.session(PER_BAL),
        Some(SessionState::ReauthRequired { .. })
    ));
    let journal = c.get("/journal?action=psc_sign_in").await?;
    assert!(journal.body.contains("unknown or expired state"));
    server.stop().await;
    mail.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn facturation_lists_filters_shows_history_and_resends_a_rejected_lot() -> anyhow::Result<()>
{
    let billing = BillingFixture::start().await?;
    let (server, mut c) = logged_in(AdminServices {
        billing: Some(billing.status.clone()),
        ..AdminServices::default()
    })
    .await?;
    let rejected = billing.rejected.to_string();
    let acknowledged = billing.acknowledged.to_string();
    let r = c.get("/facturation").await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(&format!("id=\"lot-{rejected}\"")));
    assert!(r.body.contains(&format!("id=\"lot-{acknowledged}\"")));
    assert!(r.body.contains("ARL négatif") && r.body.contains("positif"));
    assert!(r.body.contains(&format!("id=\"resend-{rejected}\"")));
    assert!(!r.body.contains(&format!("id=\"resend-{acknowledged}\"")));
    let csrf = r.csrf()?;

    let r = c.get("/facturation?etat=rejected").await?;
    assert!(r.body.contains(&rejected) && !r.body.contains(&format!("lot-{acknowledged}")));
    let r = c.get("/facturation?etat=%3Cx%3E").await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"err-etat\""));
    let r = c.get("/facturation?lang=en").await?;
    assert!(r.body.contains("Lots by state") && r.body.contains("Resend"));
    let r = c.get("/facturation?lang=fr").await?;
    assert!(r.body.contains("Lots par état"));
    let r = c.get(&format!("/facturation?lot={rejected}")).await?;
    assert!(r.body.contains("id=\"history\"") && r.body.contains("lot illisible"));

    let r = c
        .post_form(
            "/facturation/renvoyer",
            &[("csrf", &csrf), ("lot", &rejected)],
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Lot remis en envoi"), "{}", r.body);
    let lot = billing.status.lot(&billing.rejected).await?.expect("lot");
    assert_eq!(lot.lot.state, LotState::Received);
    assert_eq!(lot.lot.round, 1);
    let queued: u64 = billing
        .queue
        .metrics()
        .await?
        .kinds
        .iter()
        .filter(|k| k.kind == passerelle_billing::QUEUE_KIND)
        .map(|k| k.depth)
        .sum();
    assert!(queued >= 1, "the resend is queued");
    // An acknowledged lot is not resent; a malformed id is refused beside the field.
    let r = c
        .post_form(
            "/facturation/renvoyer",
            &[("csrf", &csrf), ("lot", &acknowledged)],
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("Renvoi refusé"), "{}", r.body);
    let r = c
        .post_form("/facturation/renvoyer", &[("csrf", &csrf), ("lot", "../x")])
        .await?;
    assert!(r.body.contains("id=\"err-lot\""));
    let journal = c.get("/journal?action=lot_resend").await?;
    assert!(journal.body.contains(&rejected));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mises_a_jour_checks_then_installs_through_the_updater_handle() -> anyhow::Result<()> {
    let updater = UpdaterFixture::start();
    let mut status = updater.handle.status.clone();
    let (server, mut c) = logged_in(AdminServices {
        updates: Some(updater.handle.clone()),
        ..AdminServices::default()
    })
    .await?;
    let r = c.get("/mises-a-jour?lang=en").await?;
    assert!(r.body.contains("Check now") && r.body.contains("Running version"));
    let r = c.get("/mises-a-jour?lang=fr").await?;
    assert!(r.body.contains("1.2.0") && r.body.contains("id=\"update-progress\""));
    let csrf = r.csrf()?;
    let r = c
        .post_form("/mises-a-jour/installer", &[("csrf", &csrf)])
        .await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("Aucune mise à jour prête"));

    let r = c
        .post_form("/mises-a-jour/verifier", &[("csrf", &csrf)])
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Vérification demandée"));
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| *s == UpdateStatus::Checking),
    )
    .await??;
    updater.release.notify_one();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| matches!(s, UpdateStatus::RebootPending { .. })),
    )
    .await??;
    let r = c
        .post_form("/mises-a-jour/installer", &[("csrf", &csrf)])
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    while updater.reboots.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no reboot asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.get("/mises-a-jour").await?;
    for marker in ["checking", "armed", "1.3.0", "update_install"] {
        assert!(r.body.contains(marker), "history lacks {marker}");
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_link_state_and_alerts_for_reauth_and_rejected_services()
-> anyhow::Result<()> {
    let mail = MailFixture::start().await?;
    let psc = PscFixture::start(&mail.pki).await?;
    psc.psc
        .mark_reauth_required(PER_BAL, "session over")
        .await?;
    let (server, mut c) = logged_in(AdminServices {
        queue: Some(Arc::clone(&mail.queue) as Arc<dyn QueueMetricsSource>),
        mail: Some(mail.handle.clone()),
        psc: Some(psc.psc.clone()),
        ..AdminServices::default()
    })
    .await?;
    let r = c.get("/").await?;
    assert!(r.body.contains("id=\"links\""), "{}", r.body);
    assert!(r.body.contains("Opérateur MSSanté (API LPS)"));
    assert!(
        r.body.contains(&format!(
            "Ré-authentification Pro Santé Connect requise pour {PER_BAL}"
        )),
        "{}",
        r.body
    );
    server.stop().await;
    mail.stop().await;
    Ok(())
}
