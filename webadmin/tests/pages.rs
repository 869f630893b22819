//! Pages with their services: queue depth, oldest age and the 24 h chart from recorded samples,
//! live status over SSE, pinned anchors with fingerprints, the liste blanche state; session
//! idle timeout and lifetime; the configuration table.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ADMIN, PASSWORD, TestServer, logged_in};
use hyper::StatusCode;
use passerelle_queue::{NewItem, Queue, QueueConfig};
use passerelle_testpki::{PkiOptions, TestPki};
use passerelle_webadmin::{AdminServices, AnchorFiles, WebadminConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn queue_with_items(
    dir: &std::path::Path,
) -> anyhow::Result<Queue<impl passerelle_queue::Store>> {
    let queue = Queue::open_sqlite(dir, QueueConfig::default()).await?;
    for i in 0..3 {
        queue
            .enqueue(NewItem::new(
                "mssante.outbox",
                format!("k{i}"),
                b"x".to_vec(),
            ))
            .await?;
    }
    queue
        .enqueue(NewItem::new("sesam.lots", "lot-1", b"y".to_vec()))
        .await?;
    Ok(queue)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_depth_and_oldest_per_flow_with_the_24h_chart_and_live_status()
-> anyhow::Result<()> {
    let qdir = tempfile::tempdir()?;
    let queue = queue_with_items(qdir.path()).await?;
    let services = AdminServices {
        queue: Some(Arc::new(queue)),
        ..AdminServices::default()
    };
    let (server, mut c) = logged_in(services).await?;

    // The sampler records at start; the chart appears once a sample exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = c.get("/").await?;
        if page.body.contains("<polyline") || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<svg"), "no chart: {}", page.body);
    assert!(page.body.contains(">mssante.outbox<") && page.body.contains(">sesam.lots<"));
    assert!(page.body.contains("<td>3</td>"), "depth of the outbox");
    assert!(page.body.contains("id=\"live-total\">4<"), "live total");

    // Server-Sent Events: a `status` event with the pending total.
    let mut tls = c.connect().await?;
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: passerelle.local\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
        c.cookie_header()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("\"total\":4") {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(read.is_ok(), "no SSE event: {text}");
    assert!(
        text.contains("text/event-stream") && text.contains("event: status"),
        "{text}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn re_ope_5040_keys_page_lists_the_pinned_anchors_with_their_fingerprints()
-> anyhow::Result<()> {
    let pki = TestPki::generate(&PkiOptions::new(8))?;
    let dir = tempfile::tempdir()?;
    let anchors_dir = dir.path().join("anchors");
    std::fs::create_dir(&anchors_dir)?;
    let mut pins = Vec::new();
    let roots = pki.anchors();
    let (tampered, pinned) = roots
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no anchor"))?;
    for anchor in pinned {
        let hex = anchor
            .sha256_fingerprint()
            .replace(':', "")
            .to_ascii_lowercase();
        std::fs::write(
            anchors_dir.join(format!("{}.pem", anchor.name())),
            anchor.pem(),
        )?;
        pins.push(format!("{hex}  {}.pem", anchor.name()));
    }
    // One anchor whose file is not the pinned one.
    std::fs::write(
        anchors_dir.join(format!("{}.pem", tampered.name())),
        tampered.pem(),
    )?;
    pins.push(format!("{}  {}.pem", "ab".repeat(32), tampered.name()));
    let pins_file = dir.path().join("pins.txt");
    std::fs::write(&pins_file, pins.join("\n"))?;
    let anchors = AnchorFiles {
        dir: anchors_dir,
        pins_file,
    };
    let (server, mut c) = logged_in(AdminServices {
        anchors: Some(anchors),
        ..AdminServices::default()
    })
    .await?;
    let page = c.get("/cles").await?;
    assert_eq!(page.status, StatusCode::OK);
    for anchor in pki.anchors() {
        assert!(
            page.body.contains(&anchor.sha256_fingerprint()),
            "{} fingerprint missing",
            anchor.name()
        );
    }
    assert!(page.body.contains(">conforme<") && page.body.contains(">non conforme<"));
    // The dashboard raises the mismatch as an alert.
    let dash = c.get("/").await?;
    assert!(dash.body.contains("écart avec la liste épinglée"));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_2_2_5040_liste_blanche_page_and_dashboard_say_when_no_list_is_verified()
-> anyhow::Result<()> {
    let handle = passerelle_liste_blanche::ListeBlancheHandle::empty(Duration::from_secs(86_400));
    let (server, mut c) = logged_in(AdminServices {
        liste_blanche: Some(handle),
        ..AdminServices::default()
    })
    .await?;
    let page = c.get("/liste-blanche").await?;
    assert!(
        page.body.contains("Aucune liste blanche vérifiée"),
        "{}",
        page.body
    );
    let dash = c.get("/").await?;
    assert!(
        dash.body.contains("class=\"alert\"")
            && dash.body.contains("Aucune liste blanche vérifiée")
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_or_expired_session_leads_back_to_the_login() -> anyhow::Result<()> {
    for adjust in [
        (|c: &mut WebadminConfig| c.idle_timeout = Duration::ZERO) as fn(&mut WebadminConfig),
        |c: &mut WebadminConfig| c.session_lifetime = Duration::ZERO,
    ] {
        let server = TestServer::start_with(AdminServices::default(), adjust).await?;
        let mut c = server.client();
        c.setup().await?;
        let r = c.login(ADMIN, PASSWORD).await?;
        assert_eq!(r.status, StatusCode::FOUND);
        let r = c.get("/").await?;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::FOUND, Some("/login"))
        );
        server.stop().await;
    }
    Ok(())
}

#[test]
fn the_config_table_has_defaults_and_refuses_unknown_keys() -> anyhow::Result<()> {
    let config: WebadminConfig = toml::from_str(
        r#"
        listen = "0.0.0.0:443"
        redirect_listen = "0.0.0.0:80"
        data_dir = "/var/lib/passerelle/webadmin"
        token_pin_file = "/etc/passerelle/token.pin"
        idle_timeout = "20m"
        [lockout]
        max_failures = 5
        window = "15m"
        duration = "30m"
        "#,
    )?;
    assert_eq!(config.idle_timeout, Duration::from_secs(1200));
    assert_eq!(config.session_lifetime, Duration::from_secs(8 * 3600));
    assert_eq!(config.lockout.duration, Duration::from_secs(1800));
    let err =
        toml::from_str::<WebadminConfig>("listen = \"0.0.0.0:443\"\ndata_dir = \"/x\"\nport = 1\n")
            .expect_err("unknown key");
    assert!(err.to_string().contains("unknown field"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn annuaire_page_searches_the_local_cache() -> anyhow::Result<()> {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/annuaire/tests/fixtures/extraction_correspondance_mssante.txt"
    );
    let dir = tempfile::tempdir()?;
    let config: passerelle_annuaire::AnnuaireConfig = toml::from_str(&format!(
        "cache_dir = {:?}\n[extraction]\nurl = \"file://{fixture}\"\n",
        dir.path().join("cache").display().to_string()
    ))?;
    let cache = Arc::new(passerelle_annuaire::Cache::open(&config.cache_dir).await?);
    passerelle_annuaire::refresh(&config, &cache).await?;
    let (server, mut c) = logged_in(AdminServices {
        annuaire: Some(cache),
        ..AdminServices::default()
    })
    .await?;
    let page = c
        .get("/annuaire?q=h%C3%A9l%C3%A8ne%20SAINT-ETIENNE")
        .await?;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("helene.lefevre@exemple-sante.mssante.fr"),
        "{}",
        page.body
    );
    let none = c.get("/annuaire?q=zzzzzz").await?;
    assert!(none.body.contains("Aucun résultat."));
    server.stop().await;
    Ok(())
}
