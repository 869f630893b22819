//! EX_OPE_5010 / TLS-01, TLS-02: a listener built from the MSSanté profile, probed by the real
//! `openssl s_client` as the offending (or conforming) client.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;

use passerelle_testpki::names as n;
use passerelle_trust::{ProfileClientVerifier, TlsOptions, TrustStore, mssante_server_config};
use rustls::crypto::ring::default_provider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::PrivateKeyDer;

use crate::common::{self, der, pki};

/// The server side of one connection: the negotiated suite, or the handshake error.
type Outcome = Result<String, String>;

/// Listen on a loopback port with `config`; each accepted connection's outcome goes to the
/// channel. The listener is bound before this returns, so clients can connect at once.
fn listen(config: ServerConfig) -> (u16, mpsc::Receiver<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = Arc::new(config);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            let mut conn = ServerConnection::new(Arc::clone(&config)).expect("conn");
            let mut outcome = Ok(String::new());
            while conn.is_handshaking() {
                if let Err(e) = conn.complete_io(&mut sock) {
                    outcome = Err(e.to_string());
                    break;
                }
            }
            if outcome.is_ok() {
                outcome = Ok(format!(
                    "{:?}",
                    conn.negotiated_cipher_suite().map(|s| s.suite())
                ));
                let _ = conn.writer().write_all(b"220 ok\r\n");
                conn.send_close_notify();
                let _ = conn.complete_io(&mut sock);
            }
            if tx.send(outcome).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn server_config(store: Arc<TrustStore>, tls13: bool) -> ServerConfig {
    let server = pki().cert(n::SERVER_A).expect("cert");
    let key = PrivateKeyDer::Pkcs8(server.key().pkcs8_der().to_vec().into());
    let signing_key = default_provider()
        .key_provider
        .load_private_key(key)
        .expect("key");
    let certified = CertifiedKey::new(vec![der(n::SERVER_A)], signing_key);
    let verifier = ProfileClientVerifier::new(store, "mssante-client-auth").expect("verifier");
    mssante_server_config(
        Arc::new(SingleCertAndKey::from(certified)),
        Arc::new(verifier),
        TlsOptions { tls13 },
    )
    .expect("server config")
}

/// Run `openssl s_client` against the port; true when it completed a handshake.
fn s_client(port: u16, args: &[&str]) -> bool {
    let status = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-brief",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl s_client (is openssl installed?)");
    status.success()
}

/// Client certificate and key files for s_client.
fn client_identity(dir: &Path, name: &str) -> (String, String) {
    let cert = pki().cert(name).expect("cert");
    let cert_path = dir.join(format!("{name}.crt.pem"));
    let key_path = dir.join(format!("{name}.key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, cert.key().pkcs8_pem()).expect("write");
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    port: u16,
    outcomes: mpsc::Receiver<Outcome>,
    cert: String,
    key: String,
}

fn fixture(tls13: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(common::store(dir.path()));
    let (port, outcomes) = listen(server_config(store, tls13));
    let (cert, key) = client_identity(dir.path(), n::ORG_AUTH_CLI);
    Fixture {
        dir,
        port,
        outcomes,
        cert,
        key,
    }
}

impl Fixture {
    fn probe(&self, args: &[&str]) -> (bool, Outcome) {
        let mut all = vec!["-cert", &self.cert, "-key", &self.key];
        all.extend_from_slice(args);
        let client_ok = s_client(self.port, &all);
        let server = self.outcomes.recv().expect("server outcome");
        (client_ok, server)
    }
}

#[test]
fn ex_ope_5010_tls_01_listener_refuses_a_tls_1_1_only_client() {
    let f = fixture(false);
    // SECLEVEL=0 so that OpenSSL 3 really sends a TLS 1.1 ClientHello.
    let (client_ok, server) = f.probe(&["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(!client_ok);
    // rustls stops at the first thing a TLS 1.1 ClientHello lacks (signature_algorithms).
    let err = server.expect_err("TLS 1.1 must fail");
    assert!(err.starts_with("peer is incompatible"), "{err}");
}

#[test]
fn ex_ope_5010_tls_02_listener_refuses_rsa_key_exchange_suite() {
    let f = fixture(false);
    let (client_ok, server) = f.probe(&["-tls1_2", "-cipher", "AES128-GCM-SHA256"]);
    assert!(!client_ok);
    // Without an ECDHE suite OpenSSL sends no supported_groups: no key exchange in common.
    let err = server.expect_err("TLS_RSA_WITH_AES_128_GCM_SHA256 must fail");
    assert!(err.starts_with("peer is incompatible"), "{err}");
}

#[test]
fn ex_ope_5010_tls_02_listener_refuses_a_cbc_suite_of_the_list() {
    let f = fixture(false);
    let (client_ok, server) = f.probe(&["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"]);
    assert!(!client_ok);
    let err = server.expect_err("CBC must fail");
    assert!(err.contains("NoCipherSuitesInCommon"), "{err}");
}

#[test]
fn ex_ope_5010_listener_accepts_ecdhe_rsa_aes256_gcm_with_an_org_client_certificate() {
    let f = fixture(false);
    let (client_ok, server) = f.probe(&["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"]);
    assert_eq!(
        server.as_deref(),
        Ok("Some(TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)")
    );
    assert!(client_ok);
    // And TLS 1.3 is refused unless enabled.
    let (client_ok, server) = f.probe(&["-tls1_3"]);
    assert!(!client_ok && server.is_err(), "{server:?}");
}

#[test]
fn tls_04_tls_1_3_is_accepted_when_enabled() {
    let f = fixture(true);
    let (client_ok, server) = f.probe(&["-tls1_3"]);
    assert!(client_ok, "{server:?}");
    assert!(server.expect("TLS 1.3").starts_with("Some(TLS13_"));
}

#[test]
fn ex_ope_5020_listener_requires_a_valid_client_certificate() {
    let f = fixture(false);
    // No client certificate at all.
    let client_ok = s_client(
        f.port,
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
    );
    let server = f.outcomes.recv().expect("outcome");
    assert!(!client_ok);
    let err = server.expect_err("no client cert");
    assert!(err.contains("peer sent no certificates"), "{err}");
    // A certificate from the wrong branch (ELEMENTAIRE PERSONNES).
    let (cert, key) = client_identity(f.dir.path(), n::SERVER_A_BY_EL_PP);
    let ok = s_client(f.port, &["-cert", &cert, "-key", &key, "-tls1_2"]);
    let server = f.outcomes.recv().expect("outcome");
    let err = server.expect_err("wrong branch");
    assert!(!ok);
    assert!(err.contains("WrongBranch"), "{err}");
}
