//! OCT profile end to end: a practice encrypts its lot with `openssl cms -encrypt` for the
//! OCT certificate (key in a SoftHSM2 token) and mails it to the OCT intake; the OCT opens
//! it in the token, sends it on to the caisse through the real Postfix encrypted for the AMO
//! test certificate (the caisse decrypts the same bytes with the AMO key); the caisse's ARL
//! comes back through the real Dovecot and is forwarded to the practice's mailbox.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Front, PRACTICE, arl, b2, noemie_mail};
use passerelle_billing::{LotId, LotState, OctIntake, Practice, Sender};
use passerelle_keystore::{KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Subject};
use passerelle_smtp::{ClientConfig, Envelope, MailFrom, Reply, ServerConfig, SmtpClient};
use passerelle_testpki::names as n;

const LPS: &str = "lps@cabinet.test";

fn openssl(args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The OCT key generated in a SoftHSM2 token and its certificate, issued by the test PKI's
/// AC-FACTURATION-TEST with openssl (the OCT's own PKI in real life).
async fn oct_key(
    front: &Front,
) -> anyhow::Result<(passerelle_harness::SoftHsm, Keystore, std::path::PathBuf)> {
    let hsm = passerelle_harness::SoftHsm::builder().build()?;
    hsm.set_process_env();
    let dir = front.dir.path().join("oct");
    std::fs::create_dir_all(&dir)?;
    let pin_file = dir.join("user.pin");
    std::fs::write(&pin_file, format!("{}\n", hsm.token().user_pin))?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))?;
    let ks = Keystore::open(&KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    })
    .await?;
    ks.generate("oct", KeyAlgorithm::Rsa2048).await?;
    let csr = ks
        .csr(
            &KeyRef::from("oct"),
            &Subject::Device {
                name: "oct.passerelle.test".into(),
                organization: "OCT TEST".into(),
            },
        )
        .await?;
    let (csr_path, cert) = (dir.join("oct.csr"), dir.join("oct.pem"));
    std::fs::write(&csr_path, csr)?;
    let ca = front.pki.cert(n::SV_TEST_FACTURATION)?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    std::fs::write(&ca_cert, ca.pem())?;
    std::fs::write(&ca_key, ca.key().pkcs8_pem())?;
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment\n",
    )?;
    openssl(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr_path.as_os_str(),
        "-CA".as_ref(),
        ca_cert.as_os_str(),
        "-CAkey".as_ref(),
        ca_key.as_os_str(),
        "-set_serial".as_ref(),
        "4242".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-out".as_ref(),
        cert.as_os_str(),
    ])?;
    Ok((hsm, ks, cert))
}

/// What the practice's LPS does: the reference command with the OCT certificate, then the
/// lot mail (`FSETEST/B2/K`).
fn practice_mail(front: &Front, oct_cert: &std::path::Path, lot: &[u8]) -> anyhow::Result<String> {
    let dir = front.dir.path().join("practice");
    std::fs::create_dir_all(&dir)?;
    let (input, out) = (dir.join("F0500"), dir.join("F0500.pkcs7"));
    std::fs::write(&input, lot)?;
    openssl(&[
        "cms".as_ref(),
        "-encrypt".as_ref(),
        "-binary".as_ref(),
        "-aes-128-cbc".as_ref(),
        "-outform".as_ref(),
        "der".as_ref(),
        "-in".as_ref(),
        input.as_os_str(),
        "-out".as_ref(),
        out.as_os_str(),
        oct_cert.as_os_str(),
    ])?;
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(&out)?)
        .as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n");
    Ok(format!(
        "From: {LPS}\r\nTo: oct@oct.test\r\nSubject: SV140610/00000001/20261123/00005\r\n\
         Message-ID: <lot-5@cabinet.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: Application/EDI-consent; name=\"F0500.pkcs7\"\r\n\
         Content-Disposition: attachment; filename=\"F0500.pkcs7\"\r\n\
         Content-Description: FSETEST/B2/K\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
    ))
}

async fn send(addr: std::net::SocketAddr, from: &str, mail: &str) -> anyhow::Result<Reply> {
    let mut config = ClientConfig::new("cabinet.test");
    config.require_tls = false; // loopback test of the handler
    let mut client = SmtpClient::connect(addr, config).await?;
    let envelope = Envelope {
        mail_from: MailFrom {
            address: from.into(),
            size: None,
            eight_bit: false,
        },
        recipients: vec!["oct@oct.test".into()],
    };
    Ok(client.send(&envelope, mail.as_bytes()).await?.recipients[0]
        .reply
        .clone())
}

async fn start_intake(
    sender: &Sender,
    ks: &Keystore,
    cert: &std::path::Path,
) -> anyhow::Result<std::net::SocketAddr> {
    let intake = OctIntake {
        intake: sender.intake.clone(),
        key: ks.key(&KeyRef::from("oct")).await?,
        certificate: passerelle_trust::certificate_der(&std::fs::read(cert)?)
            .map_err(anyhow::Error::msg)?,
        practices: vec![Practice {
            id: "cabinet".into(),
            senders: vec![LPS.into()],
            return_to: PRACTICE.into(),
        }],
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(passerelle_smtp::serve(
        listener,
        Arc::new(intake),
        ServerConfig::new("oct.test"),
        std::future::pending(),
    ));
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn oct_lot_from_a_practice_is_opened_in_the_token_sent_on_and_its_arl_forwarded()
-> anyhow::Result<()> {
    let front = Front::start(true)?;
    let (_hsm, ks, oct_cert) = oct_key(&front).await?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let addr = start_intake(&sender, &ks, &oct_cert).await?;
    let lot = b2("oct");

    let reply = send(addr, LPS, &practice_mail(&front, &oct_cert, &lot)?).await?;
    assert_eq!(reply.code, 250, "{reply:?}");
    let id = LotId::of(&lot);
    assert!(reply.to_string().contains(id.as_str()), "{reply:?}");
    let origin = sender.intake.store.origin(&id).await?.expect("origin");
    assert_eq!(origin.practice, "cabinet");
    assert_eq!(origin.message_id, "<lot-5@cabinet.test>");

    // Sent on, encrypted for the AMO test certificate: the caisse opens the same bytes.
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(1)?;
    let (plain, mid) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    assert_eq!(plain, lot);

    // The ARL comes back and goes to the practice.
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    let handled = front
        .returns(&sender)
        .poll_pop3(&front.pop3_route()?)
        .await?;
    assert_eq!(handled[0].lot.as_ref(), Some(&id));
    assert_eq!(
        sender.intake.store.get(&id).await?.expect("lot").state,
        LotState::Acknowledged
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sender.forward_returns().await? == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the return was not forwarded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| {
        front
            .dovecot
            .wait_for_inbox_count(PRACTICE, 1, Duration::from_secs(30))
    })?;
    let mut forwarded = String::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(front.dovecot.maildir(PRACTICE).join(sub))? {
            forwarded = std::fs::read_to_string(e?.path())?;
        }
    }
    assert!(
        forwarded.contains(&format!("X-Passerelle-Lot: {id}")),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("X-Passerelle-Practice-Message-ID: <lot-5@cabinet.test>"),
        "{forwarded}"
    );
    assert!(forwarded.contains("ARLTEST/NOEMIE"), "{forwarded}");
    assert_eq!(sender.forward_returns().await?, 0, "forwarded once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oct_refuses_unknown_practices_plain_lots_and_lots_for_another_certificate()
-> anyhow::Result<()> {
    let front = Front::start(true)?;
    let (_hsm, ks, oct_cert) = oct_key(&front).await?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let addr = start_intake(&sender, &ks, &oct_cert).await?;
    let good = practice_mail(&front, &oct_cert, &b2("oct-bad"))?;

    let reply = send(addr, "intruder@elsewhere.test", &good).await?;
    assert_eq!(
        (reply.code, reply.enhanced),
        (550, Some((5, 7, 1))),
        "{reply:?}"
    );
    let plain = good.replace("FSETEST/B2/K", "FSETEST/B2");
    let reply = send(addr, LPS, &plain).await?;
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(reply.to_string().contains("not encrypted"), "{reply:?}");
    // Encrypted for the AMO certificate, not the OCT's.
    let amo = front.pki_path(&format!("{}.crt.pem", n::SV_AMO_TEST));
    let reply = send(addr, LPS, &practice_mail(&front, &amo, &b2("oct-amo"))?).await?;
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(
        reply
            .to_string()
            .contains("not addressed to our certificate"),
        "{reply:?}"
    );
    // Opened but not a lot.
    let reply = send(
        addr,
        LPS,
        &practice_mail(&front, &oct_cert, b"not a B2 file")?,
    )
    .await?;
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(reply.to_string().contains("not a lot"), "{reply:?}");
    assert!(
        sender.intake.store.list(None).await?.is_empty(),
        "nothing taken"
    );
    Ok(())
}

/// The OCT intake started by `serve_with` from `[billing.oct]`, with the token's key, and
/// STARTTLS with the token's server key required before MAIL.
#[tokio::test(flavor = "multi_thread")]
async fn serve_starts_the_oct_intake_from_the_configuration() -> anyhow::Result<()> {
    use passerelle_billing::BillingStatus;
    let front = Front::start(true)?;
    let (_hsm, ks, oct_cert) = oct_key(&front).await?;
    let oct_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let tls = oct_tls_key(&front, &ks).await?;
    let (sesam, config, root) = oct_daemon_config(&front, &oct_cert, oct_addr)?;
    config.check().map_err(anyhow::Error::msg)?;
    let queue = passerelle_queue::Queue::open_sqlite(
        root.join("queue"),
        passerelle_queue::QueueConfig::default(),
    )
    .await?;
    let status = BillingStatus::open(&sesam, &config, queue).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (sesam2, config2) = (sesam.clone(), config.clone());
    let daemon = tokio::spawn({
        let (trust, stop, status, ks) = (
            front.trust.clone(),
            shutdown.clone(),
            status.clone(),
            ks.clone(),
        );
        async move {
            passerelle_billing::serve_with(&sesam, &config, trust, status, Some(&ks), stop).await
        }
    });
    let mail = practice_mail(&front, &oct_cert, &b2("oct-serve"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match send_tls(oct_addr, Arc::clone(&tls), &mail).await {
            Ok(r) => break r,
            Err(e) => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the OCT intake never listened: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(reply.code, 250, "{reply:?}");
    // MAIL before STARTTLS is refused.
    let plain_reply = send(oct_addr, LPS, &mail).await;
    assert!(
        plain_reply.is_err() || plain_reply.as_ref().is_ok_and(|r| r.code == 530),
        "{plain_reply:?}"
    );
    front.wait_caisse(1)?;
    let (plain, _) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    assert_eq!(plain, b2("oct-serve"));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await???;

    // Without a keystore, an OCT configuration is refused at start.
    let err = passerelle_billing::serve_with(
        &sesam2,
        &config2,
        front.trust.clone(),
        status,
        None,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("no keystore");
    assert!(err.to_string().contains("needs [keystore]"), "{err}");
    Ok(())
}

/// The daemon's `[sesam]` and `[billing]` (with `[billing.oct]`) for the serve test.
fn oct_daemon_config(
    front: &Front,
    oct_cert: &std::path::Path,
    oct_addr: std::net::SocketAddr,
) -> anyhow::Result<(
    passerelle_sesam::SesamConfig,
    passerelle_billing::BillingConfig,
    std::path::PathBuf,
)> {
    use passerelle_sesam::{Env, Flow, Profiles, RecipientCertificates};
    let root = front.dir.path().join("daemon");
    let certs_dir = root.join("certs");
    RecipientCertificates::open(&certs_dir, Profiles::default())?.offer(
        &front.trust,
        &[front.pki.cert(n::SV_AMO_TEST)?.der().to_vec()],
        Flow::Fse,
        Env::Test,
        rustls::pki_types::UnixTime::now(),
    )?;
    std::fs::create_dir_all(root.join("spool"))?;
    std::fs::write(root.join("pop3.pw"), "billing-pw\n")?;
    let ca = front.pki_path(&format!("{}.crt.pem", n::ACR_EL));
    let sesam: passerelle_sesam::SesamConfig =
        toml::from_str(&format!("certificates_dir = '{}'", certs_dir.display()))?;
    let config: passerelle_billing::BillingConfig = toml::from_str(&format!(
        "state_dir = '{state}'
spool_dir = '{spool}'
[route]
host = '127.0.0.1'
port = {smtp_port}
server_name = '{server}'
ca_file = '{ca}'
from = '{billing}'
to_amo = '{caisse}'
to_amc = '{caisse}'
send_interval = '50ms'
[returns]
host = '127.0.0.1'
port = {pop3_port}
server_name = '{server}'
ca_file = '{ca}'
user = '{billing}'
password_file = '{pw}'
lps_out_dir = '{out}'
[oct]
listen = '{oct_addr}'
key_label = 'oct'
certificate = '{oct_cert}'
tls_key_label = 'oct-tls'
[[oct.practices]]
id = 'cabinet'
senders = ['{LPS}']
return_to = '{PRACTICE}'
",
        state = root.join("state").display(),
        spool = root.join("spool").display(),
        smtp_port = front.postfix.smtp_addr().port(),
        server = common::SERVER_NAME,
        ca = ca.display(),
        billing = common::BILLING,
        caisse = common::CAISSE,
        pop3_port = front.dovecot.pop3_addr().expect("pop3").port(),
        pw = root.join("pop3.pw").display(),
        out = root.join("lps").display(),
        oct_cert = oct_cert.display(),
    ))?;
    Ok((sesam, config, root))
}

const OCT_FQDN: &str = "oct.passerelle.test";

/// The intake's TLS key in the token with a server certificate for [`OCT_FQDN`] imported
/// beside it; returns the client configuration trusting its issuer.
async fn oct_tls_key(front: &Front, ks: &Keystore) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let dir = front.dir.path().join("oct-tls");
    std::fs::create_dir_all(&dir)?;
    ks.generate("oct-tls", KeyAlgorithm::Rsa2048).await?;
    let subject = Subject::ConnectorServer {
        fqdn: OCT_FQDN.into(),
        id_nat_prefix: "3".into(),
        id_nat_struct: "123456789".into(),
        organization: "OCT TEST".into(),
        department: passerelle_keystore::Department {
            name: "Paris".into(),
            code: "75".into(),
        },
    };
    let csr = ks.csr(&KeyRef::from("oct-tls"), &subject).await?;
    let (csr_path, cert) = (dir.join("tls.csr"), dir.join("tls.pem"));
    std::fs::write(&csr_path, csr)?;
    let ca = front.pki.cert(n::SV_TEST_FACTURATION)?;
    let (ca_cert, ca_key, ext) = (dir.join("ca.pem"), dir.join("ca.key"), dir.join("ext.cnf"));
    std::fs::write(&ca_cert, ca.pem())?;
    std::fs::write(&ca_key, ca.key().pkcs8_pem())?;
    std::fs::write(
        &ext,
        format!(
            "keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = DNS:{OCT_FQDN}\n"
        ),
    )?;
    openssl(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr_path.as_os_str(),
        "-CA".as_ref(),
        ca_cert.as_os_str(),
        "-CAkey".as_ref(),
        ca_key.as_os_str(),
        "-set_serial".as_ref(),
        "4343".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-out".as_ref(),
        cert.as_os_str(),
    ])?;
    ks.import_certificate(&KeyRef::from("oct-tls"), &cert)
        .await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.der().to_vec()))?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ))
}

/// A practice's mail to the intake over STARTTLS.
async fn send_tls(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    mail: &str,
) -> anyhow::Result<Reply> {
    let mut client = SmtpClient::connect(addr, ClientConfig::new("cabinet.test")).await?;
    client
        .starttls(
            tls,
            rustls::pki_types::ServerName::try_from(OCT_FQDN)?.to_owned(),
        )
        .await?;
    let envelope = Envelope {
        mail_from: MailFrom {
            address: LPS.into(),
            size: None,
            eight_bit: false,
        },
        recipients: vec!["oct@oct.test".into()],
    };
    Ok(client.send(&envelope, mail.as_bytes()).await?.recipients[0]
        .reply
        .clone())
}
