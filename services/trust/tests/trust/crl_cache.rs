//! The CRL cache: verification before installation, rollback refusal, persistence across
//! restarts, and scheduled fetching over HTTP (EX_OPE_5050).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use passerelle_testpki::{CrlKind as PkiCrlKind, Revocation, names as n};
use passerelle_trust::{CrlKind, Refusal, TrustError, TrustStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, der, file, now, pki};

#[test]
fn ex_ope_5050_crls_persist_across_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(common::store(dir.path()));
    let reopened = TrustStore::load(&common::config(dir.path(), "")).expect("reload");
    let err = reopened
        .validate(
            "mssante-server",
            &der(n::SERVER_A_REVOKED_DELTA),
            &[],
            now(),
        )
        .expect_err("revoked");
    assert!(
        matches!(err.refusal(), Some(Refusal::RevokedDelta { .. })),
        "{err}"
    );
    assert!(
        dir.path()
            .join("crl")
            .join(format!("{}.full.crl", file(n::ACI_EL_ORG)))
            .is_file()
    );
    assert!(
        dir.path()
            .join("crl")
            .join(format!("{}.delta.crl", file(n::ACI_EL_ORG)))
            .is_file()
    );
}

#[test]
fn ex_ope_5050_older_crl_is_not_installed_and_newer_full_supersedes_the_delta() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let older = pki()
        .crl(n::ACI_EL_ORG, &[], PkiCrlKind::Full { number: 99 })
        .expect("crl");
    let err = store
        .install_crl(older.der(), "older")
        .expect_err("rollback");
    assert!(
        err.to_string().contains("older than the cached full CRL"),
        "{err}"
    );
    // The held CRL is untouched: the revoked certificate stays revoked.
    assert!(
        store
            .validate("mssante-server", &der(n::SERVER_A_REVOKED), &[], now())
            .is_err()
    );

    // A newer complete CRL that lists only the delta's revocation: the old delta (101, base 100)
    // no longer applies, the new full CRL decides.
    let delta_victim = pki().cert(n::SERVER_A_REVOKED_DELTA).expect("cert");
    let entry = Revocation {
        serial: delta_victim.serial().to_vec(),
        revoked_at: pki().day(),
        reason: None,
    };
    let newer = pki()
        .crl(n::ACI_EL_ORG, &[entry], PkiCrlKind::Full { number: 102 })
        .expect("crl");
    let update = store.install_crl(newer.der(), "newer").expect("install");
    assert!(update.changed);
    assert_eq!(
        (update.kind, update.number.as_deref()),
        (CrlKind::Full, Some("102"))
    );
    store
        .validate("mssante-server", &der(n::SERVER_A_REVOKED), &[], now())
        .expect("no longer listed");
    let err = store
        .validate(
            "mssante-server",
            &der(n::SERVER_A_REVOKED_DELTA),
            &[],
            now(),
        )
        .expect_err("listed");
    assert!(
        matches!(err.refusal(), Some(Refusal::RevokedFull { .. })),
        "{err}"
    );
    // Installing the same CRL again changes nothing.
    assert!(
        !store
            .install_crl(newer.der(), "again")
            .expect("same")
            .changed
    );
}

#[test]
fn ex_ope_5050_crl_from_an_unpinned_ca_or_with_a_bad_signature_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let public = pki().full_crl(n::PUBLIC_ROOT).expect("crl");
    let err = store
        .install_crl(public.der(), "public")
        .expect_err("foreign");
    assert!(
        err.to_string().contains("not a CA of the local store"),
        "{err}"
    );
    // Same issuer name as the ORGANISATIONS CA, signed with another key.
    let rogue = pki().full_crl(n::ROGUE_ACI_EL_ORG).expect("crl");
    let err = store
        .install_crl(rogue.der(), "rogue")
        .expect_err("bad signature");
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
    let err = store
        .install_crl(b"\x30\x00", "garbage")
        .expect_err("garbage");
    assert!(
        matches!(err, TrustError::Crl { .. }) && err.to_string().contains("not a DER CRL"),
        "{err}"
    );
}

/// Requests served so far, with a wake-up on each.
#[derive(Default)]
struct Hits {
    count: AtomicUsize,
    notify: tokio::sync::Notify,
}

/// A one-route-per-path HTTP/1.1 server; answers 404 elsewhere. Bound before it is returned, so
/// it is ready when the test connects.
async fn serve(routes: HashMap<String, Vec<u8>>) -> (std::net::SocketAddr, Arc<Hits>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let routes = Arc::new(routes);
    let hits = Arc::new(Hits::default());
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let routes = Arc::clone(&routes);
            let hits = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => request.extend_from_slice(&buf[..k]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) = match routes.get(&path) {
                    Some(body) => ("200 OK", body.clone()),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                hits.count.fetch_add(1, Ordering::SeqCst);
                hits.notify.notify_waiters();
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn ex_ope_5050_refresh_fetches_full_and_delta_crls_over_http() {
    let full = pki().full_crl(n::ACI_EL_ORG).expect("crl").der().to_vec();
    let delta = pki().delta_crl(n::ACI_EL_ORG).expect("crl").der().to_vec();
    let (addr, _) = serve(HashMap::from([
        ("/crl/aci-el-org.crl".to_owned(), full),
        ("/crl/aci-el-org-delta.crl".to_owned(), delta),
        (
            "/crl/public.crl".to_owned(),
            pki().full_crl(n::PUBLIC_ROOT).expect("crl").der().to_vec(),
        ),
    ]))
    .await;
    let sources = format!(
        "[[crl_sources]]\nurl = \"http://{addr}/crl/aci-el-org.crl\"\n\
         [[crl_sources]]\nurl = \"http://{addr}/crl/aci-el-org-delta.crl\"\n\
         [[crl_sources]]\nurl = \"http://{addr}/crl/missing.crl\"\n\
         [[crl_sources]]\nurl = \"http://{addr}/crl/public.crl\"\n"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let store = TrustStore::load(&common::config(dir.path(), &sources)).expect("load");
    let before = store
        .validate("mssante-server", &der(n::SERVER_A), &[], now())
        .expect_err("no CRL yet");
    assert!(
        matches!(before.refusal(), Some(Refusal::RevocationUnknown { .. })),
        "{before}"
    );

    let report = store.refresh().await;
    let kinds: Vec<CrlKind> = report.changed.iter().map(|u| u.kind).collect();
    assert_eq!(kinds, [CrlKind::Full, CrlKind::Delta], "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(report.failed[0].1.contains("HTTP status 404"), "{report:?}");
    assert!(
        report.failed[1].1.contains("not a CA of the local store"),
        "{report:?}"
    );
    store
        .validate("mssante-server", &der(n::SERVER_A), &[], now())
        .expect("now checkable");
    let err = store
        .validate(
            "mssante-server",
            &der(n::SERVER_A_REVOKED_DELTA),
            &[],
            now(),
        )
        .expect_err("delta");
    assert!(
        matches!(err.refusal(), Some(Refusal::RevokedDelta { .. })),
        "{err}"
    );

    let again = store.refresh().await;
    assert!(
        again.changed.is_empty() && again.unchanged.len() == 2,
        "{again:?}"
    );
}

#[test]
fn crl_sources_other_than_http_or_ldap_are_config_errors() {
    for (url, why) in [
        (
            "ldap://annuaire.sesam-vitale.fr/cn=AC-FACTURATION?userPassword",
            "the attribute must be certificateRevocationList",
        ),
        (
            "ldaps://annuaire.sesam-vitale.fr/cn=AC-FACTURATION",
            "only http://",
        ),
        (
            "https://igc-sante.esante.gouv.fr/CRL/ACI-EL-ORG.crl",
            "only http://",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let config = common::config(dir.path(), &format!("[[crl_sources]]\nurl = {url:?}\n"));
        let err = TrustStore::load(&config).expect_err(url).to_string();
        assert!(err.contains(why), "{url}: {err}");
    }
}

#[tokio::test]
async fn ex_ope_5050_refresh_runs_on_its_schedule_until_shutdown() {
    let full = pki().full_crl(n::ACI_EL_ORG).expect("crl").der().to_vec();
    let (addr, hits) = serve(HashMap::from([("/full.crl".to_owned(), full)])).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = common::config(
        dir.path(),
        &format!("[[crl_sources]]\nurl = \"http://{addr}/full.crl\"\n"),
    );
    let store = TrustStore::load(&config).expect("load");
    // Stop once the schedule has fetched three times: the first fetch is immediate, the others
    // follow the (short) period.
    let shutdown = async {
        loop {
            let notified = hits.notify.notified();
            if hits.count.load(Ordering::SeqCst) >= 3 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        store.refresh_periodically(Duration::from_millis(20), shutdown),
    )
    .await
    .expect("the refresh loop stops when shutdown completes");
    assert!(hits.count.load(Ordering::SeqCst) >= 3);
    // Only the full CRL was served: a missing delta is not an unknown status.
    store
        .validate("mssante-server", &der(n::SERVER_A), &[], now())
        .expect("checkable with the scheduled full CRL");
}
