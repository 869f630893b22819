//! The server engine against real clients (swaks, Postfix) and hostile raw input.

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{Pki, TestServer, tls_config};
use passerelle_harness::Postfix;
use passerelle_smtp::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A raw line client for hostile input.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(server: &TestServer) -> anyhow::Result<Self> {
        let mut raw = Self {
            reader: BufReader::new(TcpStream::connect(server.addr).await?),
        };
        let banner = raw.reply().await?;
        ensure!(banner.starts_with("220 "), "banner {banner}");
        Ok(raw)
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(bytes).await?;
        Ok(())
    }

    /// The last line of the next reply (empty string at EOF).
    async fn reply(&mut self) -> anyhow::Result<String> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
                .await
                .context("no reply")??;
            if n == 0 {
                return Ok(String::new());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line.trim_end().to_owned());
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> anyhow::Result<String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }
}

fn plain_config() -> ServerConfig {
    ServerConfig::new("mx.test.passerelle")
}

async fn swaks(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = tokio::process::Command::new("swaks")
        .args(args)
        .output()
        .await
        .context("run swaks (apt-get install -y swaks)")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5040_swaks_starttls_auth_plain_pipelining() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut config = tls_config(&pki)?;
    config.require_tls_before_mail = true;
    config.require_auth = true;
    let server = TestServer::start(config).await?;
    let addr = server.addr.to_string();
    let (ok, log) = swaks(&[
        "--server",
        &addr,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "secret",
        "--pipeline",
        "--from",
        "alice@medecin.mssante.fr",
        "--to",
        "bob@medecin.mssante.fr,refused@medecin.mssante.fr,carol@medecin.mssante.fr",
        "--header",
        "Subject: pipelined",
    ])
    .await?;
    ensure!(ok, "swaks failed:\n{log}");
    ensure!(log.contains("PIPELINING"), "{log}");
    ensure!(
        log.contains("<~  235 2.7.0") || log.contains("<~ 235 2.7.0"),
        "{log}"
    );
    server
        .recorder
        .wait_messages(1, Duration::from_secs(10))
        .await?;
    let seen = server.recorder.seen.lock().expect("lock");
    let (env, message) = &seen.messages[0];
    assert_eq!(env.mail_from.address, "alice@medecin.mssante.fr");
    // Mixed list: only the refused recipient is dropped.
    assert_eq!(
        env.recipients,
        ["bob@medecin.mssante.fr", "carol@medecin.mssante.fr"]
    );
    assert!(String::from_utf8_lossy(message).contains("Subject: pipelined"));
    assert_eq!(seen.auths[0].1, "alice");
    assert_eq!(seen.tls.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_gbm_4410_ten_mb_accepted_larger_refused_552_5_3_4() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut config = tls_config(&pki)?;
    config.max_message_size = 11 * 1024 * 1024;
    let server = TestServer::start(config).await?;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir()?;
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.0123456789\r\n";
    let write = |name: &str, bytes: usize| -> anyhow::Result<String> {
        let mut body = String::from("Subject: big\r\n\r\n");
        while body.len() < bytes {
            body.push_str(line);
        }
        let path = dir.path().join(name);
        std::fs::write(&path, body)?;
        Ok(path.display().to_string())
    };
    let ten = write("ten", 10 * 1024 * 1024)?;
    let (ok, log) = swaks(&[
        "--server",
        &addr,
        "--tls",
        "--from",
        "a@x.mssante.fr",
        "--to",
        "b@y.mssante.fr",
        "--data",
        &ten,
    ])
    .await?;
    ensure!(
        ok,
        "10 MB refused:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    server
        .recorder
        .wait_messages(1, Duration::from_secs(30))
        .await?;
    {
        let seen = server.recorder.seen.lock().expect("lock");
        let size = seen.messages[0].1.len();
        ensure!(size >= 10 * 1024 * 1024, "stored {size} bytes");
    }
    let twelve = write("twelve", 12 * 1024 * 1024)?;
    let (ok, log) = swaks(&[
        "--server",
        &addr,
        "--tls",
        "--from",
        "a@x.mssante.fr",
        "--to",
        "b@y.mssante.fr",
        "--data",
        &twelve,
    ])
    .await?;
    ensure!(
        !ok && log.contains("552 5.3.4"),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert_eq!(server.recorder.messages(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5040_server_speaks_rfc5321_to_real_postfix() -> anyhow::Result<()> {
    let server = TestServer::start(plain_config()).await?;
    let postfix = Postfix::builder()
        .main_cf("mynetworks = 127.0.0.0/8")
        .main_cf("default_transport = smtp")
        .main_cf("relay_transport = smtp")
        .main_cf(format!("relayhost = [127.0.0.1]:{}", server.addr.port()))
        .start()?;
    let relay = postfix.smtp_addr();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut c = passerelle_harness::lineclient::LineClient::connect(relay)?;
        c.smtp_reply()?;
        for cmd in [
            "EHLO client.test",
            "MAIL FROM:<alice@passerelle.test>",
            "RCPT TO:<bob@operateur-b.mssante.fr>",
            "RCPT TO:<refused@operateur-b.mssante.fr>",
        ] {
            let r = c.smtp_command(cmd)?;
            ensure!(r.is_positive(), "{cmd}: {r:?}");
        }
        let r = c.smtp_command("DATA")?;
        ensure!(r.code == 354, "{r:?}");
        // smtp_data dot-stuffs; Postfix stuffs again toward us.
        c.smtp_data("Subject: relayed\r\n\r\nvia Postfix\r\n.leading dot\r\n")?;
        Ok(())
    })
    .await?
    .with_context(|| postfix.log_tail(30))?;
    server
        .recorder
        .wait_messages(1, Duration::from_secs(30))
        .await
        .with_context(|| postfix.log_tail(30))?;
    let seen = server.recorder.seen.lock().expect("lock");
    let (env, message) = &seen.messages[0];
    assert_eq!(env.recipients, ["bob@operateur-b.mssante.fr"]);
    let text = String::from_utf8_lossy(message);
    assert!(
        text.contains("\r\n.leading dot\r\n"),
        "dot-unstuffed: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_injection_plaintext_after_starttls_is_discarded() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let server = TestServer::start(tls_config(&pki)?).await?;
    let mut raw = Raw::connect(&server).await?;
    raw.cmd("EHLO attacker.test").await?;
    // Both commands in one segment: the MAIL must die with the plaintext buffer.
    raw.send(b"STARTTLS\r\nMAIL FROM:<x@evil.test>\r\n").await?;
    let ready = raw.reply().await?;
    ensure!(ready.starts_with("220 2.0.0"), "{ready}");
    let tcp = raw.reader.into_inner();
    let connector = tokio_rustls::TlsConnector::from(pki.rustls_client(false)?);
    let tls = connector.connect(common::server_name(), tcp).await?;
    let mut tls = BufReader::new(tls);
    // Had the injected MAIL been run, its 250 or 503 would come first.
    tls.get_mut().write_all(b"NOOP\r\n").await?;
    let mut line = String::new();
    tls.read_line(&mut line).await?;
    assert_eq!(line.trim_end(), "250 2.0.0 OK");
    tls.get_mut().write_all(b"MAIL FROM:<a@b.test>\r\n").await?;
    line.clear();
    tls.read_line(&mut line).await?;
    assert!(
        line.starts_with("503 5.5.1"),
        "EHLO again after TLS: {line}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_no_mail_before_starttls_530_5_7_0() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut config = tls_config(&pki)?;
    config.require_tls_before_mail = true;
    let server = TestServer::start(config).await?;
    let mut raw = Raw::connect(&server).await?;
    raw.cmd("EHLO c.test").await?;
    let r = raw.cmd("MAIL FROM:<a@b.mssante.fr>").await?;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    let r = raw.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await?;
    assert!(r.starts_with("530 5.7.0"), "AUTH in clear: {r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_replies() -> anyhow::Result<()> {
    let server = TestServer::start(plain_config()).await?;
    let mut raw = Raw::connect(&server).await?;
    let r = raw.cmd("MAIL FROM:<a@b.test>").await?;
    assert!(r.starts_with("503 5.5.1"), "MAIL before EHLO: {r}");
    let r = raw.cmd("EHLO").await?;
    assert!(r.starts_with("501 5.5.4"), "{r}");
    raw.cmd("EHLO c.test").await?;
    let r = raw.cmd("RCPT TO:<b@c.test>").await?;
    assert!(r.starts_with("503 5.5.1"), "RCPT before MAIL: {r}");
    let r = raw.cmd("DATA").await?;
    assert!(r.starts_with("503 5.5.1"), "{r}");
    let r = raw.cmd("FROB").await?;
    assert!(r.starts_with("500 5.5.1"), "{r}");
    let r = raw.cmd(&format!("NOOP {}", "x".repeat(5000))).await?;
    assert!(r.starts_with("500 5.5.2"), "{r}");
    let r = raw.cmd("MAIL FROM:a@b").await?;
    assert!(r.starts_with("501 5.5.4"), "{r}");
    let r = raw.cmd("VRFY bob").await?;
    assert!(r.starts_with("252"), "{r}");
    raw.send(b"\xff\xfe\x00\r\n").await?;
    let r = raw.reply().await?;
    assert!(r.starts_with("500"), "{r}");
    // Overlong text line inside DATA: the message is refused, the session goes on.
    raw.cmd("MAIL FROM:<a@b.test>").await?;
    raw.cmd("RCPT TO:<c@d.test>").await?;
    let r = raw.cmd("DATA").await?;
    assert!(r.starts_with("354"), "{r}");
    let r = raw
        .cmd(&format!("Subject: x\r\n\r\n{}\r\n.", "y".repeat(1200)))
        .await?;
    assert!(r.starts_with("500 5.5.2"), "{r}");
    let r = raw.cmd("NOOP").await?;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(server.recorder.messages(), 0);
    // Error budget: the session is dropped with 421.
    let mut last = String::new();
    for _ in 0..10 {
        last = raw.cmd("FROB").await?;
        if last.starts_with("421") {
            break;
        }
    }
    assert!(last.starts_with("421 4.7.0"), "{last}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggled_bare_lf_dot_does_not_end_data() -> anyhow::Result<()> {
    let server = TestServer::start(plain_config()).await?;
    let mut raw = Raw::connect(&server).await?;
    raw.cmd("EHLO c.test").await?;
    raw.cmd("MAIL FROM:<a@b.test>").await?;
    raw.cmd("RCPT TO:<c@d.test>").await?;
    raw.cmd("DATA").await?;
    let r = raw
        .cmd("Subject: s\r\n\r\nbody\n.\nMAIL FROM:<evil@x.test>\r\n.")
        .await?;
    assert!(r.starts_with("250"), "{r}");
    let r = raw.cmd("NOOP").await?;
    assert!(r.starts_with("250 2.0.0 OK"), "{r}");
    assert_eq!(server.recorder.messages(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_client_gets_421_4_4_2() -> anyhow::Result<()> {
    let mut config = plain_config();
    config.command_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await?;
    let mut raw = Raw::connect(&server).await?;
    let r = raw.reply().await?;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_beyond_the_bound_get_421_4_3_2() -> anyhow::Result<()> {
    let mut config = plain_config();
    config.max_sessions = 1;
    let server = TestServer::start(config).await?;
    let _first = Raw::connect(&server).await?;
    let mut second = BufReader::new(TcpStream::connect(server.addr).await?);
    let mut line = String::new();
    second.read_line(&mut line).await?;
    assert!(line.starts_with("421 4.3.2"), "{line}");
    Ok(())
}
