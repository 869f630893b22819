//! The interactive login (authorization code + PKCE S256, state, nonce) against the fake Pro
//! Santé Connect over HTTPS: the browser's part is played by a small HTTP client.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use common::{BAL, IDNAT, Setup, setup};
use passerelle_psc::{PscError, SessionState};
use passerelle_testpki::names;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const REDIRECT: &str = "https://passerelle.local/messagerie/psc/callback";

/// One HTTP/1.1 exchange with the fake (`Connection: close`), trusting the test PKI root.
async fn http(s: &Setup, method: &str, url: &str, body: &str) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.env.pki.cert(names::ACR_EL)?.der().to_vec().into())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(s.fake.addr()).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into()?, tcp)
        .await?;
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .context("path")?;
    tls.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    Ok(out)
}

fn query_of(url: &str) -> HashMap<String, String> {
    form_urlencoded::parse(url.split_once('?').map_or("", |(_, q)| q).as_bytes())
        .into_owned()
        .collect()
}

/// What the practitioner's click on the consent page answers: the redirect's location.
async fn approve(s: &Setup, authorize_url: &str) -> anyhow::Result<String> {
    let page = http(s, "GET", authorize_url, "").await?;
    ensure!(page.contains("id=\"psc-approve\""), "{page}");
    let q = query_of(authorize_url);
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            [
                "client_id",
                "redirect_uri",
                "state",
                "nonce",
                "code_challenge",
            ]
            .iter()
            .map(|k| (*k, q[*k].as_str())),
        )
        .finish();
    let answer = http(s, "POST", &s.fake.authorize_url(), &form).await?;
    ensure!(answer.starts_with("HTTP/1.1 302"), "{answer}");
    Ok(answer
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .context("no location")?
        .trim()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oa_07_interactive_login_with_pkce_stores_a_session_and_clears_reauth() -> anyhow::Result<()>
{
    let s = setup().await?;
    let psc = s.psc().await?;
    s.fake.set_next_login(BAL, IDNAT);
    psc.mark_reauth_required(BAL, "session over").await?;

    let request =
        psc.authorization_request(&s.fake.authorize_url(), REDIRECT, "openid scope_all")?;
    ensure!(!format!("{request:?}").contains(request.code_verifier.as_str()));
    let location = approve(&s, &request.url).await?;
    ensure!(location.starts_with(REDIRECT), "{location}");
    let back = query_of(&location);
    ensure!(back["state"] == request.state, "state comes back unchanged");

    psc.complete_login(BAL, &request, &back["code"], REDIRECT)
        .await?;
    ensure!(psc.session(BAL) == Some(SessionState::Active));
    ensure!(s.fake.code_exchanges() == 1);
    // The stored session works: an access token for the BAL.
    psc.access_token(BAL).await?;

    // A code is good once.
    let err = psc
        .complete_login(BAL, &request, &back["code"], REDIRECT)
        .await
        .expect_err("replayed code");
    ensure!(matches!(err, PscError::LoginRefused { .. }), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_exchanged_with_another_login_s_verifier_or_redirect_is_refused()
-> anyhow::Result<()> {
    let s = setup().await?;
    let psc = s.psc().await?;
    let first = psc.authorization_request(&s.fake.authorize_url(), REDIRECT, "openid")?;
    let other = psc.authorization_request(&s.fake.authorize_url(), REDIRECT, "openid")?;
    let code = query_of(&approve(&s, &first.url).await?)["code"].clone();
    // Another login's verifier (a stolen code without its verifier).
    let err = psc
        .complete_login(BAL, &other, &code, REDIRECT)
        .await
        .expect_err("wrong verifier");
    ensure!(err.to_string().contains("PKCE"), "{err}");
    let code = query_of(&approve(&s, &first.url).await?)["code"].clone();
    let err = psc
        .complete_login(BAL, &first, &code, "https://elsewhere.example/cb")
        .await
        .expect_err("wrong redirect");
    ensure!(matches!(err, PscError::LoginRefused { .. }), "{err}");
    ensure!(psc.session(BAL).is_none(), "nothing stored");
    Ok(())
}
