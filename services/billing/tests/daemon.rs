//! The daemon entry point end to end: a lot written into the spool folder (or mailed to the
//! LAN relay) goes out through the real Postfix to the caisse, whose ARL comes back through
//! the real Dovecot (POP3 STLS, or IMAP STARTTLS) and acknowledges it; then a clean shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{BILLING, Front, SERVER_NAME, arl, b2, noemie_mail};
use passerelle_billing::{BillingConfig, LotId, LotState, LotStore};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_sesam::{Env, Flow, Profiles, RecipientCertificates, SesamConfig};
use passerelle_testpki::names as n;
use rustls::pki_types::UnixTime;
use tokio_util::sync::CancellationToken;

async fn until<F: AsyncFnMut() -> anyhow::Result<bool>>(
    what: &str,
    mut f: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_takes_a_spooled_lot_to_acknowledged() -> anyhow::Result<()> {
    let front = Front::start(true)?;
    let root = front.dir.path().join("daemon");
    let certs_dir = root.join("certs");
    let mut certs = RecipientCertificates::open(&certs_dir, Profiles::default())?;
    certs.offer(
        &front.trust,
        &[front.pki.cert(n::SV_AMO_TEST)?.der().to_vec()],
        Flow::Fse,
        Env::Test,
        UnixTime::now(),
    )?;
    drop(certs);
    std::fs::create_dir_all(root.join("spool"))?;
    std::fs::write(root.join("pop3.pw"), "billing-pw\n")?;
    let ca = front.pki_path(&format!("{}.crt.pem", n::ACR_EL));
    let pop3 = front.dovecot.pop3_addr().expect("pop3");
    let sesam: SesamConfig =
        toml::from_str(&format!("certificates_dir = '{}'", certs_dir.display()))?;
    let config: BillingConfig = toml::from_str(&format!(
        "state_dir = '{state}'
spool_dir = '{spool}'
spool_interval = '50ms'
[route]
host = '127.0.0.1'
port = {smtp_port}
server_name = '{SERVER_NAME}'
ca_file = '{ca}'
from = '{BILLING}'
to_amo = '{caisse}'
to_amc = '{caisse}'
send_interval = '50ms'
[returns]
host = '127.0.0.1'
port = {pop3_port}
server_name = '{SERVER_NAME}'
ca_file = '{ca}'
user = '{BILLING}'
password_file = '{pw}'
poll_interval = '100ms'
lps_out_dir = '{out}'
",
        state = root.join("state").display(),
        spool = root.join("spool").display(),
        smtp_port = front.postfix.smtp_addr().port(),
        ca = ca.display(),
        caisse = common::CAISSE,
        pop3_port = pop3.port(),
        pw = root.join("pop3.pw").display(),
        out = root.join("lps").display(),
    ))?;
    let queue = Queue::open_sqlite(root.join("queue"), QueueConfig::default()).await?;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn({
        let (trust, stop) = (front.trust.clone(), shutdown.clone());
        async move { passerelle_billing::serve(&sesam, &config, queue, trust, stop).await }
    });

    // The LPS's side of the spool protocol.
    let spool = root.join("spool");
    let meta = r#"{"flow":"fse","env":"test","recipient":"amo","subject":"SV140610/00000001/20261123/00001"}"#;
    std::fs::write(spool.join("F0777.meta.json.tmp"), meta)?;
    std::fs::rename(
        spool.join("F0777.meta.json.tmp"),
        spool.join("F0777.meta.json"),
    )?;
    std::fs::write(spool.join("F0777.tmp"), b2("daemon"))?;
    std::fs::rename(spool.join("F0777.tmp"), spool.join("F0777"))?;

    front.wait_caisse(1)?;
    let (plain, mid) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    assert_eq!(plain, b2("daemon"));
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;

    let store = LotStore::open(&root.join("state/lots")).await?;
    let id = LotId::of(&b2("daemon"));
    until("the lot to be acknowledged", async || {
        Ok(store
            .get(&id)
            .await?
            .is_some_and(|l| l.state == LotState::Acknowledged))
    })
    .await?;
    assert!(spool.join("done/F0777").exists());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_starts_the_lan_relay_and_reads_returns_over_imap() -> anyhow::Result<()> {
    let front = Front::start(true)?;
    let root = front.dir.path().join("daemon");
    let certs_dir = root.join("certs");
    let mut certs = RecipientCertificates::open(&certs_dir, Profiles::default())?;
    certs.offer(
        &front.trust,
        &[front.pki.cert(n::SV_AMO_TEST)?.der().to_vec()],
        Flow::Fse,
        Env::Test,
        UnixTime::now(),
    )?;
    drop(certs);
    std::fs::create_dir_all(root.join("spool"))?;
    std::fs::write(root.join("imap.pw"), "billing-pw\n")?;
    let ca = front.pki_path(&format!("{}.crt.pem", n::ACR_EL));
    // A free loopback port for the relay (the configuration names an address).
    let relay_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let sesam: SesamConfig =
        toml::from_str(&format!("certificates_dir = '{}'", certs_dir.display()))?;
    let config: BillingConfig = toml::from_str(&format!(
        "state_dir = '{state}'
spool_dir = '{spool}'
relay_listen = '{relay_addr}'
[route]
host = '127.0.0.1'
port = {smtp_port}
server_name = '{SERVER_NAME}'
ca_file = '{ca}'
from = '{BILLING}'
to_amo = '{caisse}'
to_amc = '{caisse}'
send_interval = '50ms'
[returns]
protocol = 'imap'
host = '127.0.0.1'
port = {imap_port}
server_name = '{SERVER_NAME}'
ca_file = '{ca}'
user = '{BILLING}'
password_file = '{pw}'
poll_interval = '100ms'
after = 'flag'
lps_out_dir = '{out}'
",
        state = root.join("state").display(),
        spool = root.join("spool").display(),
        smtp_port = front.postfix.smtp_addr().port(),
        ca = ca.display(),
        caisse = common::CAISSE,
        imap_port = front.dovecot.imap_addr().port(),
        pw = root.join("imap.pw").display(),
        out = root.join("lps").display(),
    ))?;
    let queue = Queue::open_sqlite(root.join("queue"), QueueConfig::default()).await?;
    let status = passerelle_billing::BillingStatus::open(&sesam, &config, queue).await?;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn({
        let (trust, stop, status) = (front.trust.clone(), shutdown.clone(), status.clone());
        async move { passerelle_billing::serve_with(&sesam, &config, trust, status, None, stop).await }
    });

    // The LPS mails its lot to the relay, as it would to the caisse.
    let reply = lps_mails_lot(relay_addr, &b2("relayed")).await?;
    let id = LotId::of(&b2("relayed"));
    assert!(reply.to_string().contains(id.as_str()), "{reply:?}");

    front.wait_caisse(1)?;
    let (plain, mid) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    assert_eq!(plain, b2("relayed"));
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    until("the lot to be acknowledged", async || {
        Ok(status
            .lot(&id)
            .await?
            .is_some_and(|d| d.lot.state == LotState::Acknowledged))
    })
    .await?;
    let poll = status.last_poll().expect("a poll ran");
    assert_eq!(poll.route, "imap");
    assert!(
        matches!(poll.outcome, passerelle_billing::PollOutcome::Read { .. }),
        "{poll:?}"
    );
    // Flag mode: the return stays in the mailbox, handled once.
    assert_eq!(front.dovecot.inbox_count(BILLING)?, 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await???;
    Ok(())
}

/// The LPS's side of intake (a): its lot mailed to the relay once it listens.
async fn lps_mails_lot(
    relay_addr: std::net::SocketAddr,
    lot: &[u8],
) -> anyhow::Result<passerelle_smtp::Reply> {
    use base64::Engine as _;
    let mut client = None;
    until("the LAN relay to listen", async || {
        let mut c = passerelle_smtp::ClientConfig::new("lps.test");
        c.require_tls = false;
        client = passerelle_smtp::SmtpClient::connect(relay_addr, c)
            .await
            .ok();
        Ok(client.is_some())
    })
    .await?;
    let mut client = client.expect("connected");
    let b64 = base64::engine::general_purpose::STANDARD.encode(lot);
    let mail = format!(
        "From: lps@cabinet.test\r\nTo: 01996@996.01.rss.fr\r\n\
         Subject: SV140610/00000001/20261123/00002\r\nMIME-Version: 1.0\r\n\
         Content-Type: Application/EDI-consent; name=\"F0888\"\r\n\
         Content-Description: FSETEST/B2\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
    );
    let envelope = passerelle_smtp::Envelope {
        mail_from: passerelle_smtp::MailFrom {
            address: "lps@cabinet.test".into(),
            size: None,
            eight_bit: false,
        },
        recipients: vec!["01996@996.01.rss.fr".into()],
    };
    Ok(client.send(&envelope, mail.as_bytes()).await?.recipients[0]
        .reply
        .clone())
}

/// `passerelle sesam resend` from another process while the daemon runs: the CLI opens the
/// lot store on the same directory (not the queue) and puts the rejected lot back; the
/// running daemon's sender queues and sends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_resend_marked_by_another_process_is_sent_by_the_running_daemon() -> anyhow::Result<()> {
    let front = Front::start(true)?;
    let root = front.dir.path().join("daemon");
    let certs_dir = root.join("certs");
    RecipientCertificates::open(&certs_dir, Profiles::default())?.offer(
        &front.trust,
        &[front.pki.cert(n::SV_AMO_TEST)?.der().to_vec()],
        Flow::Fse,
        Env::Test,
        UnixTime::now(),
    )?;
    std::fs::create_dir_all(root.join("spool"))?;
    std::fs::write(root.join("pop3.pw"), "billing-pw\n")?;
    let ca = front.pki_path(&format!("{}.crt.pem", n::ACR_EL));
    let sesam: SesamConfig =
        toml::from_str(&format!("certificates_dir = '{}'", certs_dir.display()))?;
    let config: BillingConfig = toml::from_str(&format!(
        "state_dir = '{state}'
spool_dir = '{spool}'
spool_interval = '50ms'
[route]
host = '127.0.0.1'
port = {smtp_port}
server_name = '{SERVER_NAME}'
ca_file = '{ca}'
from = '{BILLING}'
to_amo = '{caisse}'
to_amc = '{caisse}'
send_interval = '50ms'
[returns]
host = '127.0.0.1'
port = {pop3_port}
server_name = '{SERVER_NAME}'
ca_file = '{ca}'
user = '{BILLING}'
password_file = '{pw}'
poll_interval = '100ms'
lps_out_dir = '{out}'
",
        state = root.join("state").display(),
        spool = root.join("spool").display(),
        smtp_port = front.postfix.smtp_addr().port(),
        ca = ca.display(),
        caisse = common::CAISSE,
        pop3_port = front.dovecot.pop3_addr().expect("pop3").port(),
        pw = root.join("pop3.pw").display(),
        out = root.join("lps").display(),
    ))?;
    let queue = Queue::open_sqlite(root.join("queue"), QueueConfig::default()).await?;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn({
        let (trust, stop) = (front.trust.clone(), shutdown.clone());
        async move { passerelle_billing::serve(&sesam, &config, queue, trust, stop).await }
    });
    let spool = root.join("spool");
    let meta = r#"{"flow":"fse","env":"test","recipient":"amo","subject":"SV140610/00000001/20261123/00003"}"#;
    std::fs::write(spool.join("F0999.meta.json"), meta)?;
    std::fs::write(spool.join("F0999.tmp"), b2("cli-resend"))?;
    std::fs::rename(spool.join("F0999.tmp"), spool.join("F0999"))?;
    front.wait_caisse(1)?;
    let (_, mid) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(false)))?;

    // The CLI's view: its own connection to the same lot store.
    let cli = LotStore::open(&root.join("state/lots")).await?;
    let id = LotId::of(&b2("cli-resend"));
    until("the negative ARL", async || {
        Ok(cli
            .get(&id)
            .await?
            .is_some_and(|l| l.state == LotState::Rejected))
    })
    .await?;
    let resent = passerelle_billing::mark_for_resend(&cli, &id).await?;
    assert_eq!((resent.from, resent.round), (LotState::Rejected, 1));
    front.wait_caisse(2)?;
    until("the resend to be recorded", async || {
        Ok(cli
            .get(&id)
            .await?
            .is_some_and(|l| l.state == LotState::Sent && l.sends == 2))
    })
    .await?;
    for mail in front.caisse_mails()? {
        assert_eq!(front.caisse_decrypt(&mail)?.0, b2("cli-resend"));
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await???;
    Ok(())
}
