//! The PSC token manager against the fake Pro Santé Connect over HTTPS.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::ensure;
use common::{BAL, IDNAT, setup};
use passerelle_psc::{PscError, SessionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oa_09_refresh_token_is_stored_encrypted_and_survives_a_restart() -> anyhow::Result<()> {
    let s = setup().await?;
    let psc = s.psc().await?;
    let refresh = s.fake.login(BAL, IDNAT);
    s.fake.set_rotation(false);
    psc.set_refresh_token(BAL, &refresh).await?;
    let stored = std::fs::read_to_string(psc.store_path())?;
    ensure!(!stored.contains(&refresh), "refresh token stored in clear");
    ensure!(stored.contains(BAL), "the BAL names its entry");
    drop(psc);

    // A restart derives the same key from the token and reads the store back.
    let psc = s.psc().await?;
    let token = psc.access_token(BAL).await?;
    ensure!(token.secret().split('.').count() == 3, "a JWT");
    ensure!(
        !format!("{token:?}").contains(token.secret()),
        "Debug shows the token"
    );
    ensure!(psc.session(BAL) == Some(SessionState::Active));

    // Another token key cannot open the store.
    s.keystore
        .delete(&passerelle_keystore::KeyRef::from("psc-store"))
        .await?;
    s.keystore
        .generate("psc-store", passerelle_keystore::KeyAlgorithm::Rsa2048)
        .await?;
    let err = s
        .psc()
        .await
        .expect_err("another key must not open the store");
    ensure!(err.to_string().contains("does not decrypt"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_0900_access_token_is_cached_until_shortly_before_expiry() -> anyhow::Result<()> {
    let s = setup().await?;
    let psc = s.psc().await?;
    psc.set_refresh_token(BAL, &s.fake.login(BAL, IDNAT))
        .await?;
    let first = psc.access_token(BAL).await?;
    let again = psc.access_token(BAL).await?;
    ensure!(first.secret() == again.secret(), "a 60 s token is reused");
    ensure!(s.fake.token_requests() == 1);
    ensure!(first.expires_at() > SystemTime::now() + Duration::from_secs(40));

    // OA-05: a token with less than the margin left is never handed out.
    s.fake.set_access_lifetime(Duration::from_secs(10));
    psc.evict(BAL);
    let short = psc.access_token(BAL).await?;
    let next = psc.access_token(BAL).await?;
    ensure!(
        short.secret() != next.secret(),
        "a token inside the margin is refreshed"
    );
    ensure!(s.fake.token_requests() == 3);

    // Rotated refresh tokens replace the stored one (the old one is dead at PSC).
    s.fake.set_access_lifetime(Duration::from_secs(60));
    psc.evict(BAL);
    psc.access_token(BAL).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oa_07_refused_refresh_token_marks_the_bal_reauth_required() -> anyhow::Result<()> {
    let s = setup().await?;
    let psc = s.psc().await?;
    psc.set_refresh_token(BAL, &s.fake.login(BAL, IDNAT))
        .await?;
    psc.access_token(BAL).await?;

    // PSC temporarily down: temporary, the session stays.
    s.fake.set_unavailable(true);
    psc.evict(BAL);
    let err = psc.access_token(BAL).await.expect_err("PSC is down");
    ensure!(err.is_temporary(), "{err}");
    ensure!(psc.session(BAL) == Some(SessionState::Active));
    s.fake.set_unavailable(false);

    // SSO session over: invalid_grant → re-auth required, visible, persisted.
    s.fake.end_sessions(BAL);
    let err = psc.access_token(BAL).await.expect_err("session over");
    ensure!(matches!(err, PscError::ReauthRequired { .. }), "{err}");
    let requests = s.fake.token_requests();
    let err = psc.access_token(BAL).await.expect_err("still over");
    ensure!(matches!(err, PscError::ReauthRequired { .. }), "{err}");
    ensure!(
        s.fake.token_requests() == requests,
        "no retry loop against PSC"
    );
    drop(psc);
    let psc = s.psc().await?;
    ensure!(
        matches!(psc.session(BAL), Some(SessionState::ReauthRequired { .. })),
        "{:?}",
        psc.sessions()
    );

    // A new CPS login clears it.
    psc.set_refresh_token(BAL, &s.fake.login(BAL, IDNAT))
        .await?;
    psc.access_token(BAL).await?;
    ensure!(psc.session(BAL) == Some(SessionState::Active));
    ensure!(matches!(
        psc.access_token("autre@medecin.mssante.fr").await,
        Err(PscError::NoSession { .. })
    ));
    Ok(())
}
