//! The AC-FACTURATION CRL downloads from a real slapd: no CRL blocks sending ([CE2]) until
//! the download installs one; weekly in the installation's 02:00–22:00 slot, daily after a
//! failure or the same CRL again; an expired CRL raises the alert but is not [CE2] ([CP2]);
//! the schedule survives a restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{Front, b2, fse_meta};
use passerelle_billing::{BillingStatus, CrlOutcome, CrlWatch, LotState};
use passerelle_harness::Slapd;
use passerelle_testpki::names as n;
use time::OffsetDateTime;

const CA_DN: &str = "cn=AC-FACTURATION-TEST,ou=AC-FACTURATION-TEST,ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";

fn directory_with_crl(front: &Front) -> anyhow::Result<Slapd> {
    use base64::Engine as _;
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    let branch = "ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
    let ldif = format!(
        "dn: {branch}\nobjectClass: organizationalUnit\nou: AC-SESAM-VITALE-TEST-2034\n\n\
         dn: ou=AC-FACTURATION-TEST,{branch}\nobjectClass: organizationalUnit\nou: AC-FACTURATION-TEST\n\n\
         dn: {CA_DN}\nobjectClass: applicationProcess\nobjectClass: pkiCA\ncn: AC-FACTURATION-TEST\n\
         cACertificate;binary:: {ca}\ncertificateRevocationList;binary:: {crl}\n",
        ca = b64(front.pki.cert(n::SV_TEST_FACTURATION)?.der()),
        crl = b64(front.pki.full_crl(n::SV_TEST_FACTURATION)?.der()),
    );
    Ok(Slapd::builder()
        .suffix("o=sesam-vitale,c=fr")
        .ldif(ldif)
        .start()?)
}

fn crl_url(slapd: &Slapd) -> String {
    format!("{}{CA_DN}", slapd.url())
}

fn at(t: std::time::SystemTime) -> OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0)).expect("time")
}

fn in_window(t: OffsetDateTime) -> bool {
    (2..22).contains(&t.hour())
}

#[tokio::test(flavor = "multi_thread")]
async fn ce2_no_crl_blocks_sending_until_the_download_installs_it_then_weekly_slot()
-> anyhow::Result<()> {
    let front = Front::start(false)?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let status = BillingStatus::new(sender.intake.clone(), Duration::from_secs(86_400));
    let id = sender
        .intake
        .accept(&fse_meta("F0400"), &b2("crl"))
        .await?
        .lot_id;
    assert_eq!(sender.run_once().await?, 0);
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Blocked);
    assert!(lot.reason.starts_with("[CE2]"), "{}", lot.reason);

    let slapd = directory_with_crl(&front)?;
    let state_dir = front.dir.path().join("billing");
    let new_watch = || {
        CrlWatch::new(
            Arc::clone(&sender.trust),
            Arc::clone(&sender.certs),
            vec![crl_url(&slapd)],
            "box-1",
            &state_dir,
            status.clone(),
        )
    };
    let mut watch = new_watch();
    assert!(status.crl().is_empty(), "nothing before the first tick");
    let now = OffsetDateTime::now_utc();
    let next = watch.tick(now).await.expect("a next download");
    let crl = status.crl();
    assert_eq!(crl.len(), 1);
    let c = &crl[0];
    assert_eq!(c.last_outcome, Some(CrlOutcome::Installed), "{c:?}");
    assert!(!c.missing && !c.alert, "{c:?}");
    assert!(
        c.ca.as_deref()
            .is_some_and(|ca| ca.contains("AC-FACTURATION-TEST")),
        "{c:?}"
    );
    let next_update = at(c.next_update.expect("nextUpdate"));
    assert_eq!(next_update, front.pki.day() + time::Duration::days(7));
    // Weekly in the slot, or earlier when the CRL expires before that (the test CRL is
    // valid 7 days from midnight): three days before its nextUpdate.
    assert!(next <= now + time::Duration::days(7), "{next}");
    assert!(next < next_update - time::Duration::days(2), "{next}");
    assert!(in_window(next), "{next}");

    // The blocked lot goes out once the CRL is installed (the queue retries it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while sender.run_once().await? == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the lot stayed blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    front.wait_caisse(1)?;
    assert_eq!(
        sender.intake.store.get(&id).await?.expect("lot").state,
        LotState::Sent
    );

    // Not due: nothing downloaded. A restart keeps the weekly rhythm.
    drop(watch);
    let mut watch = new_watch();
    assert_eq!(watch.tick(now + time::Duration::hours(1)).await, Some(next));
    assert_eq!(status.crl()[0].last_attempt, crl[0].last_attempt);

    // The next download serves the same CRL: a failure by the rules, retried daily.
    let retry = watch.tick(next).await.expect("retry");
    let c = &status.crl()[0];
    assert_eq!(c.last_outcome, Some(CrlOutcome::Unchanged), "{c:?}");
    assert_eq!(retry.date(), (next + time::Duration::days(1)).date());
    assert!(in_window(retry), "{retry}");
    assert!(!c.alert, "{c:?}");
    // Still the same CRL once it has expired: alert, but not [CE2] ([CP2]).
    watch.tick(next_update + time::Duration::days(1)).await;
    let c = &status.crl()[0];
    assert!(c.alert && !c.missing, "{c:?}");
    assert!(status.crl_alert());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cp2_failing_downloads_alert_before_the_crl_expires_and_retry_daily() -> anyhow::Result<()>
{
    let front = Front::start(false)?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let status = BillingStatus::new(sender.intake.clone(), Duration::from_secs(86_400));
    let slapd = directory_with_crl(&front)?;
    let url = crl_url(&slapd);
    let mut watch = CrlWatch::new(
        Arc::clone(&sender.trust),
        Arc::clone(&sender.certs),
        vec![url],
        "box-2",
        &front.dir.path().join("billing"),
        status.clone(),
    );
    // Installed at day + 1 h; the CRL's nextUpdate is day + 7: fetched again at day + 4.
    let day = front.pki.day();
    let next = watch
        .tick(day + time::Duration::hours(1))
        .await
        .expect("next");
    assert!(!status.crl()[0].alert);
    assert_eq!(next.date(), (day + time::Duration::days(4)).date());
    drop(slapd); // the directory goes away

    // Three days before expiry: the download fails, no alert yet, retried the next day.
    let retry = watch.tick(next).await.expect("retry");
    let c = status.crl()[0].clone();
    assert!(
        matches!(c.last_outcome, Some(CrlOutcome::Failed(_))),
        "{c:?}"
    );
    assert!(!c.alert, "{c:?}");
    assert_eq!(retry.date(), (next + time::Duration::days(1)).date());
    // Two days before expiry, still failing: alert (A4 §6.3.3), not [CE2].
    watch.tick(retry).await;
    let c = status.crl()[0].clone();
    assert!(
        matches!(c.last_outcome, Some(CrlOutcome::Failed(_))),
        "{c:?}"
    );
    assert!(c.alert && !c.missing, "{c:?}");
    // Sending is not blocked by the CRL at all meanwhile (it is installed and current now).
    let id = sender
        .intake
        .accept(&fse_meta("F0401"), &b2("cp2"))
        .await?
        .lot_id;
    assert_eq!(sender.run_once().await?, 1);
    assert_eq!(
        sender.intake.store.get(&id).await?.expect("lot").state,
        LotState::Sent
    );
    Ok(())
}
