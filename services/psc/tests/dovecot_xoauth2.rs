//! EX_LPS_0700/0710/0900 against a real Dovecot acting as the operator's IMAP front, its
//! `oauth2` passdb asking the fake Pro Santé Connect about each bearer token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use common::{BAL, IDNAT, setup};
use passerelle_fake_psc::env::OPERATOR_NAME;
use passerelle_harness::Dovecot;
use passerelle_trust::{ProfileServerVerifier, TrustStore, mssante_client_config};
use rustls::client::ResolvesClientCert;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

#[derive(Debug)]
struct NoCert;
impl ResolvesClientCert for NoCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

struct Imap<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Imap<S> {
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        ensure!(self.stream.read_line(&mut line).await? > 0, "closed");
        Ok(line.trim_end().to_owned())
    }

    /// Sends `tag command`, returns (untagged lines, tagged completion).
    async fn command(&mut self, tag: &str, command: &str) -> anyhow::Result<(Vec<String>, String)> {
        self.stream
            .get_mut()
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await?;
            if line.starts_with(&format!("{tag} ")) {
                return Ok((untagged, line));
            }
            if line.starts_with('+') {
                // OA-04: answer an XOAUTH2 error challenge with an empty line.
                self.stream.get_mut().write_all(b"\r\n").await?;
            }
            untagged.push(line);
        }
    }
}

/// STARTTLS to the operator with the MSSanté client profile; returns the TLS session.
async fn connect(
    addr: std::net::SocketAddr,
    trust: &Arc<TrustStore>,
) -> anyhow::Result<Imap<tokio_rustls::client::TlsStream<TcpStream>>> {
    let mut plain = Imap {
        stream: BufReader::new(TcpStream::connect(addr).await?),
    };
    ensure!(plain.line().await?.starts_with("* OK"));
    let (_, ok) = plain.command("s1", "STARTTLS").await?;
    ensure!(ok.starts_with("s1 OK"), "{ok}");
    ensure!(plain.stream.buffer().is_empty());
    let verifier = ProfileServerVerifier::new(Arc::clone(trust), "mssante-server")?;
    let config = mssante_client_config(Arc::new(NoCert), Arc::new(verifier), trust.tls_options())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from(OPERATOR_NAME)?,
            plain.stream.into_inner(),
        )
        .await?;
    Ok(Imap {
        stream: BufReader::new(tls),
    })
}

fn xoauth2(user: &str, token: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_0700_xoauth2_with_a_psc_access_token_opens_the_bal_on_dovecot() -> anyhow::Result<()>
{
    let s = setup().await?;
    let dovecot = Dovecot::builder()
        .tls(s.env.operator_tls())
        .user(BAL, "unused-password")
        .extra_config(s.env.dovecot_oauth2(&s.fake)?)
        .start()?;
    let psc = s.psc().await?;
    psc.set_refresh_token(BAL, &s.fake.login(BAL, IDNAT))
        .await?;

    let mut imap = connect(dovecot.imap_addr(), &s.env.trust).await?;
    let (caps, _) = imap.command("a1", "CAPABILITY").await?;
    let caps = caps.join(" ");
    ensure!(
        caps.contains("SASL-IR") && caps.contains("AUTH=XOAUTH2"),
        "EX_LPS_0700 capabilities: {caps}"
    );
    let token = psc.access_token(BAL).await?;
    // SASL-IR: the whole credential in one command (OA-01).
    let (_, done) = imap
        .command(
            "a2",
            &format!("AUTHENTICATE XOAUTH2 {}", xoauth2(BAL, token.secret())),
        )
        .await?;
    ensure!(
        done.starts_with("a2 OK"),
        "{done}\n{}",
        dovecot.log_tail(30)
    );
    ensure!(s.fake.introspections() >= 1, "Dovecot asked PSC");
    let (_, sel) = imap.command("a3", "SELECT INBOX").await?;
    ensure!(sel.starts_with("a3 OK"), "{sel}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_0900_expired_unknown_or_foreign_tokens_get_no_authentication_failed()
-> anyhow::Result<()> {
    let s = setup().await?;
    let dovecot = Dovecot::builder()
        .tls(s.env.operator_tls())
        .user(BAL, "unused-password")
        .user("autre@medecin.mssante.fr", "unused-password")
        .extra_config(s.env.dovecot_oauth2(&s.fake)?)
        .start()?;
    let psc = s.psc().await?;
    psc.set_refresh_token(BAL, &s.fake.login(BAL, IDNAT))
        .await?;
    let token = psc.access_token(BAL).await?;

    let cases = [
        ("unknown", xoauth2(BAL, "eyJhbGciOiJSUzI1NiJ9.e30.AAAA")),
        // A valid token presented for a BAL its holder is not authorised on (step 8).
        (
            "foreign BAL",
            xoauth2("autre@medecin.mssante.fr", token.secret()),
        ),
        ("expired", {
            s.fake.expire_access_tokens();
            xoauth2(BAL, token.secret())
        }),
    ];
    for (what, response) in cases {
        let mut imap = connect(dovecot.imap_addr(), &s.env.trust).await?;
        let (_, done) = imap
            .command("b1", &format!("AUTHENTICATE XOAUTH2 {response}"))
            .await
            .with_context(|| what.to_owned())?;
        // EX_LPS_0710: a tagged NO (Dovecot: "[AUTHENTICATIONFAILED] Authentication failed.").
        ensure!(
            done.starts_with("b1 NO") && done.contains("Authentication failed"),
            "{what}: {done}"
        );
    }

    // After evict the manager refreshes and the BAL opens again (slowly: Dovecot's auth
    // penalty delays a loopback client after three failures).
    psc.evict(BAL);
    let fresh = psc.access_token(BAL).await?;
    let mut imap = connect(dovecot.imap_addr(), &s.env.trust).await?;
    let (_, done) = tokio::time::timeout(
        Duration::from_secs(60),
        imap.command(
            "c1",
            &format!("AUTHENTICATE XOAUTH2 {}", xoauth2(BAL, fresh.secret())),
        ),
    )
    .await??;
    ensure!(done.starts_with("c1 OK"), "{done}");
    Ok(())
}
