//! RFC 3464 DSNs read back by an independent MIME parser (Python's `email`) and
//! delivered by LMTP into a real Dovecot.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use passerelle_harness::Dovecot;
use passerelle_smtp::{
    ClientConfig, Dsn, DsnAction, DsnRecipient, Envelope, MailFrom, Reply, SmtpClient, build_dsn,
};

const ORIGINAL: &[u8] = b"From: Dr Jean Dupont <jean.dupont@medecin.mssante.fr>\r\n\
To: bob@operateur-b.mssante.fr, carol@operateur-b.mssante.fr\r\n\
Subject: =?utf-8?q?R=C3=A9sultats?=\r\n\
X-Custom: h\xc3\xa9\r\n\
Message-ID: <orig-1@medecin.mssante.fr>\r\n\
\r\n\
SECRET CLINICAL BODY\r\n";

fn dsn() -> Vec<u8> {
    build_dsn(&Dsn {
        reporting_mta: "passerelle.cabinet.test",
        from: "MAILER-DAEMON@passerelle.cabinet.test",
        to: "jean.dupont@medecin.mssante.fr",
        message_id: "dsn-1@passerelle.cabinet.test",
        date: 1_763_900_000,
        original: ORIGINAL,
        recipients: vec![
            DsnRecipient {
                address: "bob@operateur-b.mssante.fr".into(),
                action: DsnAction::Failed,
                reply: Some(Reply::new(550, (5, 1, 1), "No such user\nsecond line")),
                status: None,
                remote_mta: Some("mx.operateur-b.mssante.fr".into()),
                reason: None,
            },
            DsnRecipient {
                address: "carol@operateur-b.mssante.fr".into(),
                action: DsnAction::Delayed,
                reply: Some(Reply::new(451, (4, 3, 0), "Try later")),
                status: None,
                remote_mta: None,
                reason: None,
            },
        ],
    })
    .expect("a DSN is due")
}

const CHECK: &str = r#"
import email, sys
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read())
print("type", m.get_content_type(), m.get_param("report-type"))
print("auto", m["Auto-Submitted"])
parts = m.get_payload()
print("parts", [p.get_content_type() for p in parts])
print("text", "pas pu être remis" in parts[0].get_payload(decode=True).decode("utf-8"))
blocks = parts[1].get_payload()
print("mta", blocks[0]["Reporting-MTA"])
for b in blocks[1:]:
    print("rcpt", b["Final-Recipient"], "|", b["Action"], "|", b["Status"], "|", b["Diagnostic-Code"])
print("headers", "orig-1@medecin.mssante.fr" in parts[2].get_payload(decode=True).decode("utf-8", "replace"))
"#;

#[test]
fn rfc3464_dsn_parses_with_an_independent_mime_parser() -> anyhow::Result<()> {
    let dsn = dsn();
    let text = String::from_utf8_lossy(&dsn);
    ensure!(
        !text.contains("SECRET CLINICAL BODY"),
        "the body leaked: {text}"
    );
    let mut child = Command::new("python3")
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run python3 (apt-get install -y python3)")?;
    child.stdin.take().context("stdin")?.write_all(&dsn)?;
    let out = child.wait_with_output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "type multipart/report delivery-status",
        "auto auto-replied",
        "parts ['text/plain', 'message/delivery-status', 'text/rfc822-headers']",
        "text True",
        "mta dns; passerelle.cabinet.test",
        "rcpt rfc822; bob@operateur-b.mssante.fr | failed | 5.1.1 | smtp; 550 5.1.1 No such user second line",
        "rcpt rfc822; carol@operateur-b.mssante.fr | delayed | 4.3.0 | smtp; 451 4.3.0 Try later",
        "headers True",
    ] {
        ensure!(
            report.lines().any(|l| l == expected),
            "missing {expected:?} in\n{report}\n{text}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dsn_is_accepted_by_real_dovecot_from_the_null_sender() -> anyhow::Result<()> {
    let user = "jean.dupont@medecin.mssante.fr";
    let dovecot = Dovecot::builder().user(user, "pw").start()?;
    let mut config = ClientConfig::new("passerelle.cabinet.test");
    config.lmtp = true;
    config.require_tls = false;
    let mut client = SmtpClient::connect(dovecot.lmtp_addr(), config).await?;
    let envelope = Envelope {
        mail_from: MailFrom {
            address: String::new(),
            size: None,
            eight_bit: true,
        },
        recipients: vec![user.to_owned()],
    };
    let delivery = client.send(&envelope, &dsn()).await?;
    ensure!(delivery.recipients[0].delivered(), "{delivery:?}");
    tokio::task::block_in_place(|| dovecot.wait_for_inbox_count(user, 1, Duration::from_secs(30)))?;
    Ok(())
}
