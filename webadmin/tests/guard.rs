//! The security properties over real HTTPS: setup then locked, every route guarded (walked from
//! the route table), CSRF, lockout, cookies, escaping, languages, uploads, the HTTP redirect.

mod common;

use std::time::Duration;

use common::{ADMIN, PASSWORD, TestServer, default_lockout, logged_in, setup_fields};
use hyper::StatusCode;
use passerelle_webadmin::{Access, AdminServices, CSP, LockoutPolicy, ROUTES};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `{param}` segments replaced by a plausible value.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_is_open_only_until_done_then_every_route_needs_a_session() -> anyhow::Result<()> {
    let server = TestServer::start(AdminServices::default(), default_lockout()).await?;
    let mut c = server.client();

    // Before setup: the admin pages lead to the setup.
    let r = c.get("/").await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/setup"))
    );
    let r = c.get("/login").await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/setup"))
    );

    let r = c.setup().await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/login")),
        "{}",
        r.body
    );
    // The token PIN went to its file, readable by the owner only.
    let pin_file = server.dir.path().join("token.pin");
    assert_eq!(std::fs::read_to_string(&pin_file)?, "1234\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&pin_file)?.permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Setup is locked now, even with a valid pre-session CSRF token.
    let r = c.get("/setup").await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/login"))
    );
    let csrf = c.get("/login").await?.csrf()?;
    let r = c.post_form("/setup", &setup_fields(&csrf)).await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/login"))
    );

    // The only public routes are the login form and its assets, and the PSC callback, which
    // only bounces the browser to a route that needs the session (its cookie is
    // SameSite=Strict, so PSC's cross-site redirect arrives without it).
    let public: Vec<(&str, &str)> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        public,
        [
            ("GET", "/static/app.css"),
            ("GET", "/static/app.js"),
            ("GET", "/login"),
            ("POST", "/login"),
            ("GET", "/messagerie/psc/callback"),
        ]
    );

    // Every other route, walked from the one table, serves nothing without a session.
    let mut anonymous = server.client();
    for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
        let path = concrete(route.path);
        let r = anonymous
            .send(
                route.method,
                &path,
                Some("application/x-www-form-urlencoded"),
                b"csrf=x".to_vec(),
            )
            .await?;
        let to_login = r.status == StatusCode::FOUND && r.location() == Some("/login");
        assert!(
            to_login || r.status == StatusCode::UNAUTHORIZED,
            "{} {path} without a session: {} {:?}",
            route.method,
            r.status,
            r.location()
        );
        assert!(
            !r.body.contains("<nav"),
            "{} {path} served a page",
            route.method
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_sdt_5010_setup_refuses_without_an_ntp_server_with_the_message_next_to_the_field()
-> anyhow::Result<()> {
    let server = TestServer::start(AdminServices::default(), default_lockout()).await?;
    let mut c = server.client();
    let csrf = c.get("/setup").await?.csrf()?;
    let mut fields = setup_fields(&csrf);
    fields.retain(|(k, _)| *k != "ntp");
    fields.push(("ntp", ""));
    let r = c.post_form("/setup", &fields).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"err-ntp\""), "{}", r.body);
    assert!(r.body.contains("Au moins un serveur NTP"));
    // Still not set up.
    assert_eq!(c.get("/setup").await?.status, StatusCode::OK);

    // Other fields are validated too, each message beside its field.
    let bad = [
        ("csrf", csrf.as_str()),
        ("user", "a"),
        ("password", "short"),
        ("password2", "x"),
        ("profile", "nope"),
        ("network", "static"),
        ("address", "999.1.1.1/40"),
        ("gateway", "x"),
        ("dns", ""),
        ("ntp", "bad host!"),
        ("pin", "12ab"),
    ];
    let r = c.post_form("/setup", &bad).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in [
        "user", "password", "profile", "address", "gateway", "dns", "ntp", "pin",
    ] {
        assert!(
            r.body.contains(&format!("id=\"err-{field}\"")),
            "no message for {field}"
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_without_or_with_a_wrong_csrf_token_is_refused() -> anyhow::Result<()> {
    let (server, mut c) = logged_in(AdminServices::default()).await?;
    let csrf = c.session_csrf().await?;
    let r = c.post_form("/logout", &[]).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .post_form(
            "/logout",
            &[("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
        )
        .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .post_form("/cles/generer", &[("label", "k"), ("algorithm", "ec-p256")])
        .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .send(
            "POST",
            "/cles/certificat",
            Some("multipart/form-data; boundary=b"),
            b"--b--\r\n".to_vec(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Still logged in: the refused logout did nothing.
    assert_eq!(c.get("/").await?.status, StatusCode::OK);
    // The refusal is in the audit log.
    let journal = c.get("/journal?action=csrf_refused").await?;
    assert!(journal.body.contains("csrf_refused"));
    // With the token, logout works.
    let r = c.post_form("/logout", &[("csrf", &csrf)]).await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/login"))
    );

    // Login without the pre-session token is refused too.
    let mut fresh = server.client();
    let r = fresh
        .post_form("/login", &[("user", ADMIN), ("password", PASSWORD)])
        .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sets_a_strict_session_cookie_and_logout_ends_the_session() -> anyhow::Result<()> {
    let server = TestServer::start(AdminServices::default(), default_lockout()).await?;
    let mut c = server.client();
    c.setup().await?;
    let r = c.login(ADMIN, PASSWORD).await?;
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-session="))
        .expect("session cookie");
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let r = c.get("/").await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok()),
        Some(CSP)
    );
    assert!(!r.body.contains("<script>"), "no inline script");
    let old = c.cookies.clone();
    let csrf = r.csrf()?;
    c.post_form("/logout", &[("csrf", &csrf)]).await?;
    c.cookies = old; // replaying the old cookie after logout
    let r = c.get("/").await?;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, Some("/login"))
    );
    let journal_client = &mut server.client();
    journal_client.login(ADMIN, PASSWORD).await?;
    let j = journal_client.get("/journal").await?;
    for action in ["setup", "login", "logout"] {
        assert!(
            j.body.contains(&format!(">{action}<")),
            "audit lacks {action}"
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failures_lock_the_account_temporarily() -> anyhow::Result<()> {
    let policy = LockoutPolicy {
        max_failures: 3,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(300),
    };
    let server = TestServer::start(AdminServices::default(), policy).await?;
    let mut c = server.client();
    c.setup().await?;
    for _ in 0..2 {
        let r = c.login(ADMIN, "wrong password").await?;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("incorrect"), "{}", r.body);
    }
    let r = c.login(ADMIN, "wrong password").await?;
    assert!(r.body.contains("Réessayez dans 5 min"), "{}", r.body);
    // Locked: even the right password is refused, with the remaining time.
    let r = c.login(ADMIN, PASSWORD).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Réessayez dans"), "{}", r.body);
    assert!(!c.cookies.contains_key("__Host-session"));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn user_typed_values_come_back_escaped() -> anyhow::Result<()> {
    let server = TestServer::start(AdminServices::default(), default_lockout()).await?;
    let mut c = server.client();
    let csrf = c.get("/setup").await?.csrf()?;
    let xss = "<script>alert(1)</script>\"'";
    let mut fields = setup_fields(&csrf);
    fields.retain(|(k, _)| *k != "user");
    fields.push(("user", xss));
    let r = c.post_form("/setup", &fields).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!r.body.contains("<script>alert"), "reflected unescaped");
    assert!(
        r.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;"),
        "{}",
        r.body
    );

    c.setup().await?;
    c.login(xss, "whatever").await?; // the failed login's actor is the typed name
    c.login(ADMIN, PASSWORD).await?;
    let r = c
        .get("/journal?actor=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%27")
        .await?;
    assert!(!r.body.contains("<script>alert"));
    assert!(r.body.contains("&lt;script&gt;alert(1)"));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_are_french_by_default_english_by_accept_language_or_the_switch() -> anyhow::Result<()>
{
    let (server, mut c) = logged_in(AdminServices::default()).await?;
    let r = c.get("/").await?;
    assert!(r.body.contains("<html lang=\"fr\">") && r.body.contains("Tableau de bord"));
    c.extra_headers
        .push(("accept-language".into(), "en-GB,en;q=0.8".into()));
    let r = c.get("/").await?;
    assert!(r.body.contains("<html lang=\"en\">") && r.body.contains("Dashboard"));
    c.extra_headers.clear();
    let r = c.get("/journal?lang=en").await?;
    assert!(r.body.contains("Audit log"));
    assert!(r.set_cookies().iter().any(|s| s.starts_with("lang=en")));
    let r = c.get("/cles").await?; // the switch is remembered
    assert!(r.body.contains("Pinned trust anchors"));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_only_redirects_to_https() -> anyhow::Result<()> {
    let server = TestServer::start(AdminServices::default(), default_lockout()).await?;
    let mut tcp = tokio::net::TcpStream::connect(server.http).await?;
    tcp.write_all(
        b"GET /journal?x=1 HTTP/1.1\r\nHost: passerelle.local:8080\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    assert!(out.starts_with("HTTP/1.1 301"), "{out}");
    let expected = format!(
        "location: https://passerelle.local:{}/journal?x=1",
        server.https.port()
    );
    assert!(out.to_ascii_lowercase().contains(&expected), "{out}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn capability_pages_not_landed_say_what_is_coming() -> anyhow::Result<()> {
    let (server, mut c) = logged_in(AdminServices::default()).await?;
    for (path, marker) in [
        ("/messagerie", "issue #4"),
        ("/facturation", "issue #6"),
        ("/cartes", "issue #7"),
        ("/mises-a-jour", "issue #9"),
    ] {
        let r = c.get(path).await?;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.body.contains("Cette page arrive avec") && r.body.contains(marker),
            "{path}"
        );
    }
    for path in ["/", "/cles", "/liste-blanche", "/annuaire", "/journal"] {
        let r = c.get(path).await?;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    server.stop().await;
    Ok(())
}
