//! The local JSON search API.

use std::sync::Arc;
use std::time::Duration;

use passerelle_annuaire::{AnnuaireConfig, Cache, refresh};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/extraction_correspondance_mssante.txt"
);

async fn get(addr: std::net::SocketAddr, target: &str) -> (u16, serde_json::Value) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(format!("GET {target} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("response");
    let code = head[9..12].parse().expect("status code");
    (code, serde_json::from_str(body).expect("json body"))
}

#[tokio::test]
async fn re_2_1_5030_json_api_searches_the_cache_and_reports_its_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config: AnnuaireConfig = toml::from_str(&format!(
        "cache_dir = {:?}\n[extraction]\nurl = \"file://{FIXTURE}\"\n",
        dir.path().join("cache").display().to_string()
    ))
    .expect("config");
    let cache = Arc::new(Cache::open(&config.cache_dir).await.expect("cache"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = passerelle_annuaire::api::router(Arc::clone(&cache), Duration::from_secs(3600));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Before any refresh: empty and stale.
    let (code, body) = get(addr, "/annuaire/status").await;
    assert_eq!(code, 200);
    assert_eq!(body["stale"], true);

    refresh(&config, &cache).await.expect("refresh");
    let (code, body) = get(addr, "/annuaire/status").await;
    assert_eq!(code, 200);
    assert_eq!(body["stale"], false);
    assert_eq!(body["status"]["entries"], 30);

    let (code, body) = get(addr, "/annuaire/search?q=h%C3%A9l%C3%A8ne%20SAINT-ETIENNE").await;
    assert_eq!(code, 200);
    assert_eq!(
        body["entries"][0]["mail"],
        "helene.lefevre@exemple-sante.mssante.fr"
    );
    assert_eq!(body["entries"][0]["nom"], "Lefèvre");

    let (code, body) = get(addr, "/annuaire/search?q=exemple&limit=3").await;
    assert_eq!(code, 200);
    assert_eq!(body["entries"].as_array().expect("entries").len(), 3);
    assert_eq!(body["truncated"], true);

    let (code, body) = get(addr, "/annuaire/search?q=%20").await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().expect("reason").contains("empty"));
}
