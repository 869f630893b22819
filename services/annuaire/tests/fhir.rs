//! The FHIR source against a fake Annuaire Santé gateway on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use passerelle_annuaire::{AnnuaireConfig, AnnuaireError, Cache, Query, QueryLimits, refresh};
use serde_json::{Value, json};

const KEY: &str = "test-api-key";

fn mailbox(mail: &str, bal_type: &str, liste_rouge: bool) -> Value {
    json!({
        "system": "email",
        "value": mail,
        "extension": [{
            "url": "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata",
            "extension": [
                {"url": "type", "valueCodeableConcept": {"coding": [{
                    "system": "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie",
                    "code": bal_type}]}},
                {"url": "listeRouge", "valueBoolean": liste_rouge}
            ]
        }]
    })
}

fn page(next: Option<&str>, entries: Vec<Value>) -> Value {
    let mut link = vec![json!({"relation": "self", "url": "ignored"})];
    if let Some(next) = next {
        link.push(json!({"relation": "next", "url": next}));
    }
    json!({"resourceType": "Bundle", "type": "searchset", "link": link,
           "entry": entries.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
}

#[derive(Clone)]
struct Fake {
    base: String,
    pages_served: Arc<AtomicUsize>,
}

async fn first(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if headers.get("ESANTE-API-KEY").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    fake.pages_served.fetch_add(1, Ordering::SeqCst);
    Json(page(
        Some(&format!("{}/PractitionerRole/page2", fake.base)),
        vec![
            json!({"resourceType": "Practitioner", "id": "p1",
                   "name": [{"family": "Lefèvre", "given": ["Hélène"]}]}),
            json!({"resourceType": "PractitionerRole", "id": "r1",
                   "practitioner": {"reference": "Practitioner/p1"},
                   "organization": {"display": "Cabinet du Parc"},
                   "code": [{"coding": [{"display": "Médecin"}]}],
                   "specialty": [{"coding": [{"display": "Cardiologie"}]}],
                   "telecom": [mailbox("helene.lefevre@fhir.mssante.fr", "PER", false),
                               mailbox("rouge@fhir.mssante.fr", "PER", true)]}),
        ],
    ))
    .into_response()
}

async fn second(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if headers.get("ESANTE-API-KEY").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    fake.pages_served.fetch_add(1, Ordering::SeqCst);
    Json(page(
        None,
        vec![json!({"resourceType": "PractitionerRole", "id": "r2",
            "organization": {"display": "Centre Hospitalier de Saint-Étienne"},
            "telecom": [mailbox("secretariat@fhir.mssante.fr", "ORG", false),
                        mailbox("dpi@fhir.mssante.fr", "APP", false),
                        {"system": "phone", "value": "0102030405"}]})],
    ))
    .into_response()
}

async fn serve(router: Router<Fake>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/fhir/v2", listener.local_addr().expect("addr"));
    let pages_served = Arc::new(AtomicUsize::new(0));
    let app = router.with_state(Fake {
        base: base.clone(),
        pages_served: Arc::clone(&pages_served),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, pages_served)
}

fn config(dir: &std::path::Path, base: &str, timeout: &str) -> AnnuaireConfig {
    let key = dir.join("api-key");
    std::fs::write(&key, format!("{KEY}\n")).expect("key file");
    toml::from_str(&format!(
        "cache_dir = {:?}\n[fhir]\nbase_url = \"{base}\"\napi_key_file = {:?}\nmailbox_contains = \"mssante.fr\"\nbal_types = [\"PER\", \"ORG\"]\ntimeout = \"{timeout}\"\n",
        dir.join("cache").display().to_string(),
        key.display().to_string(),
    ))
    .expect("config")
}

#[tokio::test]
async fn re_2_1_5030_fhir_pages_are_fetched_with_the_api_key_and_bal_types_filtered_locally() {
    let (base, pages) = serve(
        Router::new()
            .route("/fhir/v2/PractitionerRole", get(first))
            .route("/fhir/v2/PractitionerRole/page2", get(second)),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &base, "5s");
    let cache = Cache::open(&config.cache_dir).await.expect("cache");
    let report = refresh(&config, &cache).await.expect("refresh");
    assert_eq!(pages.load(Ordering::SeqCst), 2);
    // Red-listed and APP mailboxes are left out; PER and ORG kept.
    assert_eq!(report.status.entries, 2);
    assert_eq!(report.status.sources, "fhir");
    let q = Query::free_text("helene cardio", &QueryLimits::default()).expect("query");
    let found = cache.search(&q, 10).await.expect("search");
    assert_eq!(found.entries.len(), 1);
    let e = &found.entries[0];
    assert_eq!((e.nom.as_str(), e.prenom.as_str()), ("Lefèvre", "Hélène"));
    assert_eq!(e.organisation, "Cabinet du Parc");
    assert_eq!(e.raw["id"], "r1");
    let q = Query::free_text("saint-etienne", &QueryLimits::default()).expect("query");
    let found = cache.search(&q, 10).await.expect("search");
    assert_eq!(found.entries[0].mail, "secretariat@fhir.mssante.fr");
    assert_eq!(found.entries[0].bal_type, "ORG");
}

#[tokio::test]
async fn ex_2_1_3_5020_a_stalled_or_refusing_fhir_gateway_leaves_the_cache_serving() {
    let (base, _) = serve(
        Router::new()
            .route("/fhir/v2/PractitionerRole", get(first))
            .route("/fhir/v2/PractitionerRole/page2", get(second))
            .route(
                "/stall/PractitionerRole",
                get(|| async {
                    std::future::pending::<()>().await;
                    StatusCode::OK
                }),
            ),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = config(dir.path(), &base, "5s");
    let cache = Cache::open(&good.cache_dir).await.expect("cache");
    let before = refresh(&good, &cache).await.expect("refresh").status;

    let stalled_base = base.replace("/fhir/v2", "/stall");
    let stalled = config(dir.path(), &stalled_base, "300ms");
    let started = Instant::now();
    let err = refresh(&stalled, &cache).await.expect_err("stalled");
    assert!(matches!(err, AnnuaireError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    std::fs::write(dir.path().join("api-key"), "wrong").expect("key");
    let mut refused = good.clone();
    refused.fhir.as_mut().expect("fhir").timeout = Duration::from_secs(5);
    let err = refresh(&refused, &cache).await.expect_err("401");
    assert!(err.to_string().contains("401"), "{err}");

    let after = cache.status().expect("status");
    assert_eq!(after.refreshed_at, before.refreshed_at);
    let q = Query::free_text("lefevre", &QueryLimits::default()).expect("query");
    assert_eq!(cache.search(&q, 10).await.expect("search").entries.len(), 1);
}

#[tokio::test]
async fn a_next_link_to_another_server_is_refused_so_the_api_key_stays_home() {
    let (base, pages) = serve(Router::new().route(
        "/fhir/v2/PractitionerRole",
        get(|headers: HeaderMap| async move {
            assert_eq!(
                headers.get("ESANTE-API-KEY").and_then(|v| v.to_str().ok()),
                Some(KEY)
            );
            Json(page(Some("http://198.51.100.7/steal"), Vec::new()))
        }),
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &base, "5s");
    let cache = Cache::open(&config.cache_dir).await.expect("cache");
    let err = refresh(&config, &cache)
        .await
        .expect_err("foreign next link");
    assert!(err.to_string().contains("is not under"), "{err}");
    assert_eq!(pages.load(Ordering::SeqCst), 0);
    assert!(cache.status().is_none());
}
