//! OCSP (EX_OPE_5050) against a real responder: `openssl ocsp` serving an index built from the
//! test PKI.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use passerelle_testpki::{Dn, ExtendedKeyUsagePurpose, LeafSpec, PkiOptions, TestPki, names as n};
use passerelle_trust::{Refusal, TrustError, TrustStore};

use crate::common::{self, der, file, now, pki};

/// `openssl ocsp` as a responder on a loopback port, killed on drop.
struct Responder {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serial of a test certificate as `openssl ca` writes it in `index.txt` (upper-case hex).
fn serial_hex(name: &str) -> String {
    let (_, cert) =
        x509_parser::parse_x509_certificate(pki().cert(name).expect("cert").der()).expect("parse");
    let bytes = cert.serial.to_bytes_be();
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02X}").expect("fmt");
        s
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// Start `openssl ocsp` for the CA `aci-el-org`, signing with `signer` (a name of the test PKI):
/// `server-a` is good, `server-a-revoked` revoked, everything else unknown.
fn responder(signer: &str) -> Responder {
    responder_of(pki(), signer)
}

/// [`responder`] with the certificates and keys of `pki` (the shared one plus extra leaves).
fn responder_of(pki: &TestPki, signer: &str) -> Responder {
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write_to(dir.path()).expect("write pki");
    let index = format!(
        "V\t361231235959Z\t\t{}\tunknown\t/CN=server-a\n\
         R\t361231235959Z\t250101000000Z,keyCompromise\t{}\tunknown\t/CN=server-a-revoked\n",
        serial_hex(n::SERVER_A),
        serial_hex(n::SERVER_A_REVOKED),
    );
    std::fs::write(dir.path().join("index.txt"), index).expect("index");
    let pem = |name: &str, kind: &str| dir.path().join(format!("{name}.{kind}.pem"));
    let port = free_port();
    let child = Command::new("openssl")
        .arg("ocsp")
        .arg("-index")
        .arg(dir.path().join("index.txt"))
        .args(["-port", &port.to_string()])
        .arg("-rsigner")
        .arg(pem(signer, "crt"))
        .arg("-rkey")
        .arg(pem(signer, "key"))
        .arg("-CA")
        .arg(pem(n::ACI_EL_ORG, "crt"))
        .args(["-ndays", "1", "-ignore_err", "-timeout", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl ocsp");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut responder = Responder {
        child,
        addr,
        _dir: dir,
    };
    // Ready when it answers HTTP. A connection closed without a request would stall the
    // single-threaded responder until its -timeout, so the probe sends one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers_http(addr) {
        if let Ok(Some(status)) = responder.child.try_wait() {
            panic!("openssl ocsp exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "openssl ocsp not listening on {addr}"
        );
        std::thread::yield_now();
    }
    responder
}

fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let mut answer = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| stream.write_all(b"GET / HTTP/1.0\r\n\r\n"))
        .and_then(|()| stream.read_to_end(&mut answer))
        .is_ok_and(|_| answer.starts_with(b"HTTP/1."))
}

/// OCSP profiles pointing at `url`: hard-fail, soft-fail, and OCSP then CRL.
fn ocsp_store(dir: &Path, url: &str) -> TrustStore {
    let mut extra = String::new();
    for (name, method, policy) in [
        ("ocsp-hard", "ocsp", "hard-fail"),
        ("ocsp-soft", "ocsp", "soft-fail"),
        ("ocsp-then-crl", "ocsp-then-crl", "hard-fail"),
    ] {
        write!(
            extra,
            "[profiles.{name}]\nrole = 'tls-server'\nanchors = ['{}']\nallowed_issuers = ['{}']\n\
             revocation = '{method}'\nunknown_status = '{policy}'\nocsp_url = '{url}'\nocsp_timeout = '5s'\n",
            file(n::ACR_EL),
            file(n::ACI_EL_ORG),
        )
        .expect("fmt");
    }
    TrustStore::load(&common::config(dir, &extra)).expect("load")
}

fn refusal(result: Result<passerelle_trust::Validated, TrustError>) -> Refusal {
    result
        .expect_err("refused")
        .refusal()
        .expect("a refusal")
        .clone()
}

#[tokio::test]
async fn ex_ope_5050_ocsp_good_status_is_accepted() {
    let responder = responder(n::ACI_EL_ORG);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = ocsp_store(dir.path(), &format!("http://{}/", responder.addr));
    let leaf = der(n::SERVER_A);

    // No CRL is installed: only the responder can have vouched for it.
    let validated = store
        .validate_online("ocsp-hard", &leaf, &[], now())
        .await
        .expect("good");
    assert!(validated.revocation_unknown.is_none());

    // The answer is cached until its nextUpdate: the synchronous path (TLS verifiers) uses it,
    // even with the responder gone.
    drop(responder);
    store
        .validate("ocsp-hard", &leaf, &[], now())
        .expect("good from the cache");
}

#[tokio::test]
async fn ex_ope_5050_ocsp_revoked_status_is_refused() {
    let responder = responder(n::ACI_EL_ORG);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ocsp_store(dir.path(), &format!("http://{}/", responder.addr));
    let leaf = der(n::SERVER_A_REVOKED);
    for profile in ["ocsp-hard", "ocsp-soft", "ocsp-then-crl"] {
        let reason = refusal(store.validate_online(profile, &leaf, &[], now()).await);
        assert!(
            matches!(&reason, Refusal::RevokedOcsp { serial, .. } if *serial == serial_hex(n::SERVER_A_REVOKED)),
            "{profile}: {reason}"
        );
        assert_eq!(reason.requirement(), "EX_OPE_5050");
    }
}

#[tokio::test]
async fn ex_ope_5050_ocsp_unknown_or_unreachable_follows_the_unknown_status_policy() {
    let responder = responder(n::ACI_EL_ORG);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ocsp_store(dir.path(), &format!("http://{}/", responder.addr));
    // Not in the responder's index: certStatus unknown.
    let unlisted = der(n::SERVER_COMMA);
    let reason = refusal(
        store
            .validate_online("ocsp-hard", &unlisted, &[], now())
            .await,
    );
    assert!(
        matches!(&reason, Refusal::RevocationUnknown { why } if why.contains("does not know")),
        "{reason}"
    );
    let accepted = store
        .validate_online("ocsp-soft", &unlisted, &[], now())
        .await
        .expect("soft-fail accepts");
    assert!(
        matches!(&accepted.revocation_unknown, Some(Refusal::RevocationUnknown { why }) if why.contains("does not know"))
    );

    // Nothing listens: unreachable.
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let store = ocsp_store(dir.path(), &closed);
    let leaf = der(n::SERVER_A);
    let reason = refusal(store.validate_online("ocsp-hard", &leaf, &[], now()).await);
    assert!(
        matches!(&reason, Refusal::RevocationUnknown { why } if why.contains("request failed")),
        "{reason}"
    );
    let accepted = store
        .validate_online("ocsp-soft", &leaf, &[], now())
        .await
        .expect("soft-fail accepts");
    assert!(accepted.revocation_unknown.is_some());
    // ocsp-then-crl: without CRLs still unknown (hard-fail); with them, the CRL decides.
    let reason = refusal(
        store
            .validate_online("ocsp-then-crl", &leaf, &[], now())
            .await,
    );
    assert!(
        matches!(&reason, Refusal::RevocationUnknown { why } if why.contains("then CRL")),
        "{reason}"
    );
    common::install_crls(&store, true);
    let accepted = store
        .validate_online("ocsp-then-crl", &leaf, &[], now())
        .await
        .expect("the CRL says good");
    assert!(accepted.revocation_unknown.is_none());
    let reason = refusal(
        store
            .validate_online("ocsp-then-crl", &der(n::SERVER_A_REVOKED), &[], now())
            .await,
    );
    assert!(matches!(reason, Refusal::RevokedFull { .. }), "{reason}");
    drop(responder);
}

/// The shared PKI (same seed, so the same CAs) plus OCSP responder certificates with EKU
/// id-kp-OCSPSigning: `ocsp-responder` issued by `aci-el-org`, `ocsp-responder-other-ca` by
/// `aci-el-pp`.
fn pki_with_responders() -> TestPki {
    let mut pki = TestPki::generate(&PkiOptions::new(3)).expect("test PKI");
    for (name, ca) in [
        ("ocsp-responder", n::ACI_EL_ORG),
        ("ocsp-responder-other-ca", n::ACI_EL_PP),
    ] {
        let mut spec = LeafSpec::new(name, Dn::igc_sante_ca(name));
        spec.extended_key_usage = vec![ExtendedKeyUsagePurpose::OcspSigning];
        pki.issue_leaf(ca, spec).expect("responder certificate");
    }
    pki
}

#[tokio::test]
async fn ex_ope_5050_ocsp_response_signed_by_a_delegated_responder_of_the_ca_is_accepted() {
    let pki = pki_with_responders();
    let responder = responder_of(&pki, "ocsp-responder");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ocsp_store(dir.path(), &format!("http://{}/", responder.addr));
    store
        .validate_online("ocsp-hard", &der(n::SERVER_A), &[], now())
        .await
        .expect("good, signed by the delegated responder");
    let reason = refusal(
        store
            .validate_online("ocsp-hard", &der(n::SERVER_A_REVOKED), &[], now())
            .await,
    );
    assert!(matches!(reason, Refusal::RevokedOcsp { .. }), "{reason}");
}

#[tokio::test]
async fn ex_ope_5050_ocsp_response_signed_by_an_unauthorised_responder_is_refused() {
    // server-a is issued by the right CA but has no EKU id-kp-OCSPSigning.
    let responder = responder(n::SERVER_A);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ocsp_store(dir.path(), &format!("http://{}/", responder.addr));
    let reason = refusal(
        store
            .validate_online("ocsp-hard", &der(n::SERVER_A), &[], now())
            .await,
    );
    assert!(
        matches!(&reason, Refusal::RevocationUnknown { why }
            if why.contains("not signed by the issuing CA or an authorised responder")
                && why.contains("lacks EKU id-kp-OCSPSigning")),
        "{reason}"
    );
    drop(responder);

    // An OCSP signing certificate, but of another CA.
    let pki = pki_with_responders();
    let responder = responder_of(&pki, "ocsp-responder-other-ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ocsp_store(dir.path(), &format!("http://{}/", responder.addr));
    let reason = refusal(
        store
            .validate_online("ocsp-hard", &der(n::SERVER_A), &[], now())
            .await,
    );
    assert!(
        matches!(&reason, Refusal::RevocationUnknown { why }
            if why.contains("is not issued by the certificate's CA")),
        "{reason}"
    );
}
