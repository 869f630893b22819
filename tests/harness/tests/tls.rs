//! The TLS builder options produce configurations the real servers accept.
//! Certificates come from the openssl CLI here; real tests use the test PKI's PEM files.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _};
use passerelle_harness::lineclient::LineClient;
use passerelle_harness::{Dovecot, Postfix, TlsFiles};

/// A self-signed P-256 server certificate (also used as its own CA).
fn self_signed(dir: &Path) -> anyhow::Result<TlsFiles> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("run openssl (apt-get install -y openssl)")?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(TlsFiles {
        ca: cert.clone(),
        cert,
        key,
    })
}

#[test]
fn postfix_offers_starttls_and_enforces_client_certs() -> anyhow::Result<()> {
    let pki = tempfile::tempdir()?;
    let tls = self_signed(pki.path())?;

    let postfix = Postfix::builder().tls(tls.clone()).start()?;
    let mut smtp = LineClient::connect(postfix.smtp_addr())?;
    smtp.smtp_reply()?;
    let ehlo = smtp.smtp_command("EHLO client.test")?;
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");

    let strict = Postfix::builder()
        .tls(tls)
        .require_client_cert(vec!["00:11:22".to_owned()])
        .start()?;
    let mut smtp = LineClient::connect(strict.smtp_addr())?;
    smtp.smtp_reply()?;
    smtp.smtp_command("EHLO client.test")?;
    let mail = smtp.smtp_command("MAIL FROM:<a@client.test>")?;
    assert_eq!(mail.code, 530, "TLS is mandatory: {mail:?}");
    Ok(())
}

#[test]
fn dovecot_offers_starttls_and_client_cert_auth() -> anyhow::Result<()> {
    let pki = tempfile::tempdir()?;
    let tls = self_signed(pki.path())?;

    let dovecot = Dovecot::builder()
        .user("alice@passerelle.test", "pw")
        .tls(tls.clone())
        .start()?;
    assert!(dovecot.imaps_addr().is_some());
    let mut imap = LineClient::connect(dovecot.imap_addr())?;
    imap.read_line()?;
    let caps = imap.imap_command("a1", "CAPABILITY")?;
    assert!(caps[0].contains("STARTTLS"), "{caps:?}");

    let strict = Dovecot::builder().tls(tls).client_cert_auth(true).start()?;
    let mut imap = LineClient::connect(strict.imap_addr())?;
    imap.read_line()?;
    let caps = imap.imap_command("a1", "CAPABILITY")?;
    assert!(caps[0].contains("AUTH=EXTERNAL"), "{caps:?}");
    // ssl = required: no authentication before TLS.
    let login = imap.imap_command("a2", "LOGIN alice@passerelle.test pw")?;
    assert!(
        login.last().is_some_and(|l| l.starts_with("a2 NO")),
        "{login:?}"
    );
    Ok(())
}
