//! EX_2.2_5010, EX_2.2_5030, EX_2.2_5035, RE_2.2_5010: fetch over real HTTPS from a fake
//! liste blanche server (the national one cannot run here), local copy, swap, cold start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle_liste_blanche::{
    ADHOC_HTTPS_PROFILE, ADHOC_PROFILE, ListeBlancheConfig, ListeBlancheError, ListeBlancheService,
    ListeBlancheState, LocalCopy,
};
use passerelle_testpki::{LeafSpec, PkiOptions, TestPki, names};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::*;

/// What the fake server answers, one per request.
#[derive(Clone)]
enum Answer {
    List(Vec<u8>),
    Status(u16),
    Hang,
}

struct FakeServer {
    port: u16,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl FakeServer {
    fn push(&self, answer: Answer) {
        self.answers.lock().expect("lock").push_back(answer);
    }
}

/// A PKI with an IGC-Santé server certificate for `localhost`, and the environment built on it.
fn env_with_https() -> (Env, TestPki) {
    let mut pki = TestPki::generate(&PkiOptions::new(5)).expect("pki");
    pki.issue_leaf(
        names::ACI_EL_ORG,
        LeafSpec::mssante_server(
            "lb-https",
            "localhost",
            "318751275100020",
            "AGENCE DU NUMERIQUE EN SANTE",
            "Paris (75)",
        )
        .expect("spec"),
    )
    .expect("leaf");
    (Env::with(&pki), pki)
}

async fn start_server(pki: &TestPki) -> FakeServer {
    let chain: Vec<CertificateDer<'static>> = pki
        .chain("lb-https")
        .expect("chain")
        .iter()
        .filter(|c| c.issuer().is_some())
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pki.cert("lb-https")
            .expect("leaf")
            .key()
            .pkcs8_der()
            .to_vec(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answers: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
    let queue = Arc::clone(&answers);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let answer = queue
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or(Answer::Status(404));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = match answer {
                    Answer::List(body) => {
                        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    Answer::Status(code) => format!(
                        "HTTP/1.1 {code} Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes(),
                    Answer::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                };
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    FakeServer { port, answers }
}

fn config(port: u16) -> ListeBlancheConfig {
    ListeBlancheConfig {
        url: format!("https://localhost:{port}/listeblanchemssante.xml"),
        refresh_every: Duration::from_hours(24),
        stale_after: Duration::from_hours(72),
        fetch_timeout: Duration::from_secs(2),
        signer_profile: ADHOC_PROFILE.to_owned(),
        https_profile: ADHOC_HTTPS_PROFILE.to_owned(),
        signer_subject: None,
        signer_ou: Some(ANS_OU.to_owned()),
    }
}

fn data_dir(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("data")
}

fn domains(state: &ListeBlancheState) -> usize {
    state.list().map_or(0, |l| l.domain_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_2_2_5030_ex_2_2_5035_fetched_list_is_stored_byte_for_byte_and_failures_keep_the_last_verified_one()
 {
    let (env, pki) = env_with_https();
    let server = start_server(&pki).await;
    let first = signed_sample(&env);
    let second = env.sign(
        &list_template(&[("operateur-a.mssante.fr", &[SERVER_A_DN])]),
        names::LISTE_BLANCHE,
    );
    server.push(Answer::List(first.clone()));
    server.push(Answer::List(replace(
        &second,
        "<Nom>operateur-a.",
        "<Nom>operateur-z.",
    )));
    server.push(Answer::Status(500));
    server.push(Answer::Hang);
    server.push(Answer::List(second.clone()));
    let cfg = config(server.port);
    let service =
        ListeBlancheService::open(&cfg, &data_dir(&env), Arc::clone(&env.store)).expect("open");
    let handle = service.handle();

    // EX_2.2_5010, EX_2.2_5030: fetched, verified, stored byte for byte.
    let meta = service.refresh().await.expect("first list");
    assert_eq!(meta.domain_count, 4);
    let current = LocalCopy::open(&data_dir(&env))
        .expect("local")
        .current_path();
    assert_eq!(std::fs::read(&current).expect("stored"), first);
    assert_eq!(domains(&handle.state(now())), 4);

    // Tampered download: refused, list kept, file untouched.
    let err = service.refresh().await.expect_err("tampered");
    assert!(matches!(err, ListeBlancheError::DigestMismatch), "{err}");
    // HTTP 500, then a server that never answers.
    let err = service.refresh().await.expect_err("500");
    assert!(err.to_string().contains("500"), "{err}");
    let err = service.refresh().await.expect_err("timeout");
    assert!(err.to_string().contains("no complete answer"), "{err}");
    assert_eq!(domains(&handle.state(now())), 4);
    assert_eq!(std::fs::read(&current).expect("stored"), first);

    // A newer valid list is swapped in; the previous one is kept beside it.
    service.refresh().await.expect("second list");
    let state = handle.state(now());
    assert_eq!(domains(&state), 1);
    assert!(matches!(
        state,
        ListeBlancheState::Verified { stale: false, .. }
    ));
    assert_eq!(std::fs::read(&current).expect("stored"), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_2_2_5035_cold_start_without_a_list_refuses_exchange() {
    let (env, pki) = env_with_https();
    let server = start_server(&pki).await;
    server.push(Answer::Status(503));
    server.push(Answer::List(replace(
        &signed_sample(&env),
        "<Nom>hopital-a.",
        "<Nom>hopital-b.",
    )));
    let service = ListeBlancheService::open(
        &config(server.port),
        &data_dir(&env),
        Arc::clone(&env.store),
    )
    .expect("open");
    let handle = service.handle();
    assert!(matches!(
        handle.state(now()),
        ListeBlancheState::NoVerifiedList
    ));
    service.refresh().await.expect_err("503");
    service.refresh().await.expect_err("tampered");
    assert!(matches!(
        handle.state(now()),
        ListeBlancheState::NoVerifiedList
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_2_2_5010_local_copy_is_verified_again_at_load_and_tampering_is_caught() {
    let (env, pki) = env_with_https();
    let server = start_server(&pki).await;
    let first = signed_sample(&env);
    let second = env.sign(
        &list_template(&[("operateur-a.mssante.fr", &[SERVER_A_DN])]),
        names::LISTE_BLANCHE,
    );
    server.push(Answer::List(first));
    server.push(Answer::List(second.clone()));
    let cfg = config(server.port);
    {
        let service =
            ListeBlancheService::open(&cfg, &data_dir(&env), Arc::clone(&env.store)).expect("open");
        service.refresh().await.expect("first");
        service.refresh().await.expect("second");
    }
    // Restart: the copy in use loads after verification.
    let service =
        ListeBlancheService::open(&cfg, &data_dir(&env), Arc::clone(&env.store)).expect("reopen");
    assert_eq!(domains(&service.handle().state(now())), 1);
    // Tampered on disk: refused at load, the previous verified copy is used instead.
    let current = LocalCopy::open(&data_dir(&env))
        .expect("local")
        .current_path();
    std::fs::write(
        &current,
        replace(&second, "<Nom>operateur-a.", "<Nom>operateur-z."),
    )
    .expect("tamper");
    // The running service notices at its next check; the list in memory stays.
    let err = service.recheck_local_copy().await.expect_err("tampered");
    assert!(matches!(err, ListeBlancheError::DigestMismatch), "{err}");
    assert_eq!(domains(&service.handle().state(now())), 1);
    let service =
        ListeBlancheService::open(&cfg, &data_dir(&env), Arc::clone(&env.store)).expect("reopen");
    assert_eq!(domains(&service.handle().state(now())), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_2_2_5010_server_certificate_outside_igc_sante_is_refused() {
    // The same server, but the client trusts only a PKI of another seed: the TLS handshake fails.
    let (env, _) = env_with_https();
    let mut other = TestPki::generate(&PkiOptions::new(6)).expect("pki");
    other
        .issue_leaf(
            names::ACI_EL_ORG,
            LeafSpec::mssante_server("lb-https", "localhost", "1", "X", "Paris (75)")
                .expect("spec"),
        )
        .expect("leaf");
    let server = start_server(&other).await;
    server.push(Answer::List(signed_sample(&env)));
    let service = ListeBlancheService::open(
        &config(server.port),
        &data_dir(&env),
        Arc::clone(&env.store),
    )
    .expect("open");
    let err = service.refresh().await.expect_err("untrusted server");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(matches!(
        service.handle().state(now()),
        ListeBlancheState::NoVerifiedList
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_2_2_5035_list_older_than_stale_after_is_flagged_but_still_used() {
    let (env, pki) = env_with_https();
    let server = start_server(&pki).await;
    server.push(Answer::List(signed_sample(&env)));
    let service = ListeBlancheService::open(
        &config(server.port),
        &data_dir(&env),
        Arc::clone(&env.store),
    )
    .expect("open");
    service.refresh().await.expect("list");
    let later = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
        now().as_secs() + 73 * 3600,
    ));
    let state = service.handle().state(later);
    assert!(matches!(
        state,
        ListeBlancheState::Verified { stale: true, .. }
    ));
    assert_eq!(domains(&state), 4);
}

#[test]
fn liste_blanche_config_parses_with_daily_defaults_and_needs_one_identity() {
    let parse = |text: &str| toml::from_str::<ListeBlancheConfig>(text);
    let config = parse("signer_profile = 'ans-signer'\nhttps_profile = 'mssante-server'\nsigner_ou = '318751275100020'\n").expect("config");
    assert_eq!(config.url, passerelle_liste_blanche::PRODUCTION_URL);
    assert_eq!(config.refresh_every, Duration::from_hours(24));
    assert!(config.identity().is_ok());
    let both = parse(
        "signer_profile = 'a'\nhttps_profile = 'b'\nsigner_ou = '1'\nsigner_subject = 'CN=x'\n",
    )
    .expect("config");
    assert!(both.identity().is_err());
    let bad_dn = parse("signer_profile = 'a'\nhttps_profile = 'b'\nsigner_subject = 'not a dn'\n")
        .expect("config");
    assert!(bad_dn.identity().is_err());
    assert!(parse("signer_profile = 'a'\nhttps_profile = 'b'\nverify = false\n").is_err());
}
