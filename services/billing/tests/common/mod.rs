//! Shared fixtures: the test PKI on disk, a trust store pinned to its SESAM-Vitale CAs, the
//! recipient certificate store holding `sv-amo-test`, the lot service on a temp dir, and the
//! fake caisse front (real Postfix with STARTTLS delivering by LMTP into a real Dovecot).
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle_billing::{Intake, LotMeta, LotStore, RecipientKind, Route, Sender};
use passerelle_harness::{Dovecot, Postfix, TlsFiles};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_sesam::{Env, Flow, Profiles, RecipientCertificates};
use passerelle_testpki::{PkiOptions, TestPki, names as n};
use passerelle_trust::{TrustConfig, TrustStore, sha256_hex};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

pub const CAISSE: &str = "caisse@passerelle.test";
pub const BILLING: &str = "facturation@passerelle.test";
/// OCT profile: a practice's mailbox its returns are forwarded to.
pub const PRACTICE: &str = "cabinet@passerelle.test";
pub const SERVER_NAME: &str = "mail.operateur-a.mssante.fr";
/// A renewed AMO test certificate, published in the directory after the stored one.
pub const SV_AMO_TEST_RENEWED: &str = "sv-amo-test-renewed";

pub fn b2(seed: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for rec in [
        format!("000TE12345678901234CP  B2128{seed}"),
        "1LOT001".to_owned(),
    ] {
        out.extend_from_slice(format!("{rec:<128}").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn fse_meta(name: &str) -> LotMeta {
    LotMeta {
        flow: Flow::Fse,
        env: Env::Test,
        recipient: RecipientKind::Amo,
        subject: format!("SV140610/00000001/20261123/{name}"),
        file_name: name.to_owned(),
    }
}

pub struct Front {
    pub pki: TestPki,
    pub dir: tempfile::TempDir,
    pub trust: Arc<TrustStore>,
    pub dovecot: Dovecot,
    pub postfix: Postfix,
}

impl Front {
    /// The PKI, the trust store (CRLs installed or not) and the fake caisse front.
    pub fn start(with_crls: bool) -> anyhow::Result<Self> {
        let mut pki = TestPki::generate(&PkiOptions::new(6006))?;
        issue_renewed(&mut pki)?;
        let dir = tempfile::tempdir()?;
        pki.write_to(&dir.path().join("pki"))?;
        let trust = Arc::new(trust_store(&pki, dir.path(), with_crls)?);
        let dovecot = Dovecot::builder()
            .user(CAISSE, "caisse-pw")
            .user(BILLING, "billing-pw")
            .user(PRACTICE, "practice-pw")
            .pop3(true)
            .tls(server_files(dir.path()))
            .start()?;
        let postfix = Postfix::builder()
            .tls(server_files(dir.path()))
            .deliver_to_lmtp(dovecot.lmtp_addr())
            .start()?;
        Ok(Self {
            pki,
            dir,
            trust,
            dovecot,
            postfix,
        })
    }

    pub fn pki_path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("pki").join(rel)
    }

    pub fn client_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(
            self.pki.cert(n::ACR_EL)?.der().to_vec(),
        ))?;
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
        ))
    }

    /// The billing service on `smtp` (Postfix, or a fault proxy in front of it), with
    /// `sv-amo-test` as the FSE test certificate.
    pub async fn sender(&self, smtp: std::net::SocketAddr) -> anyhow::Result<Sender> {
        let state = self.dir.path().join("billing");
        let queue_config = QueueConfig {
            first_retry: Duration::from_millis(20),
            max_retry: Duration::from_millis(50),
            retry_jitter: 0.0,
            ..QueueConfig::default()
        };
        let intake = Intake {
            store: LotStore::open(&state.join("lots")).await?,
            queue: Queue::open_sqlite(state.join("queue"), queue_config).await?,
            max_lot_bytes: 1 << 20,
        };
        let mut certs = RecipientCertificates::open(&state.join("certs"), Profiles::default())?;
        // Installed with the CRLs present; a test without CRLs installs its own trust.
        let with_crls = trust_store(&self.pki, &self.dir.path().join("install"), true)?;
        certs.offer(
            &with_crls,
            &[self.pki.cert(n::SV_AMO_TEST)?.der().to_vec()],
            Flow::Fse,
            Env::Test,
            UnixTime::now(),
        )?;
        Ok(Sender {
            intake,
            certs: Arc::new(Mutex::new(certs)),
            trust: Arc::clone(&self.trust),
            route: Route {
                addr: smtp,
                server_name: ServerName::try_from(SERVER_NAME)?.to_owned(),
                tls: self.client_tls()?,
                auth: None,
                helo: "passerelle.test".into(),
                from: BILLING.into(),
                to_amo: CAISSE.into(),
                to_amc: CAISSE.into(),
            },
            compress: false,
            work_dir: state.join("work"),
        })
    }

    /// The caisse's mails, oldest first (raw).
    pub fn caisse_mails(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let d = self.dovecot.maildir(CAISSE).join(sub);
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd {
                    files.push(e?.path());
                }
            }
        }
        files.sort();
        Ok(files
            .iter()
            .map(std::fs::read)
            .collect::<Result<Vec<_>, _>>()?)
    }

    pub fn wait_caisse(&self, count: usize) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| {
            self.dovecot
                .wait_for_inbox_count(CAISSE, count, Duration::from_secs(30))
        })?;
        Ok(())
    }

    /// What the caisse does with a lot mail: take the one attachment, decrypt it with the
    /// AMO test key (`openssl cms -decrypt`), return the lot bytes and the Message-ID.
    pub fn caisse_decrypt(&self, raw: &[u8]) -> anyhow::Result<(Vec<u8>, String)> {
        let msg = mail_parser::MessageParser::default()
            .parse(raw)
            .ok_or_else(|| anyhow::anyhow!("unparsable mail"))?;
        let id = format!("<{}>", msg.message_id().unwrap_or_default());
        // One file per MIME entity: the attachment, or the message's single part.
        let part = msg
            .attachments()
            .next()
            .or_else(|| msg.parts.first())
            .map(|p| p.contents().to_vec())
            .ok_or_else(|| anyhow::anyhow!("no attachment"))?;
        let tmp = self.dir.path().join("received.pkcs7");
        std::fs::write(&tmp, part)?;
        let out = std::process::Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "der", "-binary", "-in"])
            .arg(&tmp)
            .arg("-recip")
            .arg(self.pki_path(&format!("{}.crt.pem", n::SV_AMO_TEST)))
            .arg("-inkey")
            .arg(self.pki_path(&format!("{}.key.pem", n::SV_AMO_TEST)))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl cms -decrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.stdout, id))
    }
}

fn server_files(dir: &Path) -> TlsFiles {
    let p = dir.join("pki");
    TlsFiles {
        cert: p.join(format!("chain-{}.pem", n::SERVER_A)),
        key: p.join(format!("{}.key.pem", n::SERVER_A)),
        ca: p.join(format!("anchors/{}-bundle.pem", n::ACR_EL)),
    }
}

fn file(name: &str) -> String {
    format!("{name}.der")
}

/// A trust store with the real and test SESAM-Vitale branches pinned, CRLs installed or not.
pub fn trust_store(pki: &TestPki, dir: &Path, with_crls: bool) -> anyhow::Result<TrustStore> {
    let anchors = dir.join("anchors");
    std::fs::create_dir_all(&anchors)?;
    let mut pins = String::new();
    for name in [
        n::SV_ROOT,
        n::SV_FACTURATION,
        n::SV_TEST_ROOT,
        n::SV_TEST_FACTURATION,
    ] {
        let der = pki.cert(name)?.der();
        std::fs::write(anchors.join(file(name)), der)?;
        writeln!(pins, "{}  {}", sha256_hex(der), file(name))?;
    }
    std::fs::write(dir.join("pins.sha256"), pins)?;
    let text = format!(
        r#"anchors_dir = '{}'
pins_file = '{}'
crl_cache_dir = '{}'

[profiles.sesam-vitale]
role = "any"
anchors = ["{root}"]
allowed_issuers = ["{fact}"]

[profiles.sesam-vitale-test]
role = "any"
anchors = ["{test_root}"]
allowed_issuers = ["{test_fact}"]
"#,
        anchors.display(),
        dir.join("pins.sha256").display(),
        dir.join("crl").display(),
        root = file(n::SV_ROOT),
        fact = file(n::SV_FACTURATION),
        test_root = file(n::SV_TEST_ROOT),
        test_fact = file(n::SV_TEST_FACTURATION),
    );
    let config: TrustConfig = toml::from_str(&text)?;
    let store = TrustStore::load(&config)?;
    if with_crls {
        for name in [n::SV_FACTURATION, n::SV_TEST_FACTURATION] {
            store.install_crl(pki.full_crl(name)?.der(), name)?;
        }
    }
    Ok(store)
}

impl Front {
    /// The returns processor sharing `sender`'s lot store, reading the billing mailbox.
    pub fn returns(&self, sender: &Sender) -> passerelle_billing::Returns {
        let state = self.dir.path().join("billing");
        passerelle_billing::Returns {
            intake: sender.intake.clone(),
            certs: Arc::clone(&sender.certs),
            trust: Arc::clone(&sender.trust),
            directory: None,
            raw_dir: state.join("returns/raw"),
            lps_out_dir: state.join("returns/lps"),
            max_mail_bytes: 4 << 20,
        }
    }

    pub fn pop3_route(&self) -> anyhow::Result<passerelle_billing::Pop3Route> {
        Ok(passerelle_billing::Pop3Route {
            addr: self
                .dovecot
                .pop3_addr()
                .ok_or_else(|| anyhow::anyhow!("POP3 off"))?,
            server_name: ServerName::try_from(SERVER_NAME)?.to_owned(),
            tls: self.client_tls()?,
            user: BILLING.into(),
            password: "billing-pw".into(),
            timeout: Duration::from_secs(10),
        })
    }

    /// The caisse answers into the billing mailbox (LMTP into the real Dovecot).
    pub fn answer(&self, message: &str) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.dovecot.deliver(CAISSE, BILLING, message))?;
        Ok(())
    }
}

/// A return mail carrying one NOEMIE file (ARL or RSP) under `description`.
pub fn noemie_mail(in_reply_to: &str, subject: &str, description: &str, file: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(file);
    format!(
        "From: {CAISSE}\r\nTo: {BILLING}\r\nSubject: {subject}\r\nMessage-ID: <{}@caisse.test>\r\n\
         In-Reply-To: {in_reply_to}\r\nMIME-Version: 1.0\r\n\
         Content-Type: Application/EDI-consent\r\nContent-Description: {description}\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n",
        fastrand::u64(..)
    )
}

/// A service message (text) about the mail `in_reply_to`.
pub fn service_mail(in_reply_to: &str, code: u16, label: &str) -> String {
    format!(
        "From: {CAISSE}\r\nTo: {BILLING}\r\nSubject: Message de service {code} - {label}\r\n\
         Message-ID: <{}@caisse.test>\r\nIn-Reply-To: {in_reply_to}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nCode {code}: {label}.\r\n",
        fastrand::u64(..)
    )
}

/// A NOEMIE ARL, positive or negative (format not in our sources: `000` header, `@` ends).
pub fn arl(positive: bool) -> Vec<u8> {
    let verdict = if positive {
        "ARL POSITIF"
    } else {
        "ARL NEGATIF"
    };
    format!("000CP0000000000001TE12345678901234{verdict}@").into_bytes()
}

/// `sv-amo-test-renewed`: same label, newer validity, its own key.
fn issue_renewed(pki: &mut TestPki) -> anyhow::Result<()> {
    use passerelle_testpki::{Attr, Dn, KeyAlg, KeyUsageBit, LeafSpec, Validity};
    let day = pki.day();
    let dn = Dn::new()
        .push(Attr::C, "FR")
        .push(Attr::O, "sesam-vitale")
        .push(Attr::Ou, "AC-SESAM-VITALE-TEST-2034")
        .push(Attr::Ou, "AC-FACTURATION-TEST")
        .push(Attr::Cn, "amo_pj.test@test.rss.fr");
    let spec = LeafSpec::new(SV_AMO_TEST_RENEWED, dn)
        .with_key("sv-renewed", KeyAlg::Rsa(2048))
        .with_key_usage(
            &[
                KeyUsageBit::DigitalSignature,
                KeyUsageBit::NonRepudiation,
                KeyUsageBit::KeyEncipherment,
            ],
            true,
        )
        .with_sans(vec![passerelle_testpki::email_san(
            "amo_pj.test@test.rss.fr",
        )?])
        .with_validity(Validity::Explicit {
            not_before: day,
            not_after: day + time::Duration::days(730),
        });
    pki.issue_leaf(n::SV_TEST_FACTURATION, spec)?;
    Ok(())
}

impl Front {
    /// slapd shaped like the directory's TEST branch, publishing the renewed AMO certificate.
    pub fn directory(&self) -> anyhow::Result<passerelle_harness::Slapd> {
        const BRANCH: &str = "ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
        const CA: &str = "cn=AC-FACTURATION-TEST,ou=AC-FACTURATION-TEST,ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
        use base64::Engine as _;
        let b64 = |name: &str| -> anyhow::Result<String> {
            Ok(base64::engine::general_purpose::STANDARD.encode(self.pki.cert(name)?.der()))
        };
        let ldif = format!(
            "dn: {BRANCH}\nobjectClass: organizationalUnit\nou: AC-SESAM-VITALE-TEST-2034\n\n\
             dn: ou=AC-FACTURATION-TEST,{BRANCH}\nobjectClass: organizationalUnit\nou: AC-FACTURATION-TEST\n\n\
             dn: {CA}\nobjectClass: applicationProcess\nobjectClass: pkiCA\ncn: AC-FACTURATION-TEST\n\
             cACertificate;binary:: {ca}\n\n\
             dn: cn=amo_pj.test@test.rss.fr,{CA}\nobjectClass: applicationProcess\nobjectClass: pkiUser\n\
             cn: amo_pj.test@test.rss.fr\nuserCertificate;binary:: {old}\nuserCertificate;binary:: {renewed}\n",
            ca = b64(n::SV_TEST_FACTURATION)?,
            old = b64(n::SV_AMO_TEST)?,
            renewed = b64(SV_AMO_TEST_RENEWED)?,
        );
        Ok(passerelle_harness::Slapd::builder()
            .suffix("o=sesam-vitale,c=fr")
            .ldif(ldif)
            .start()?)
    }

    /// Decrypt with the renewed certificate's key.
    pub fn caisse_decrypt_renewed(&self, raw: &[u8]) -> anyhow::Result<Vec<u8>> {
        let dir = self.dir.path().join("renewed");
        std::fs::create_dir_all(&dir)?;
        let cert = self.pki.cert(SV_AMO_TEST_RENEWED)?;
        std::fs::write(dir.join("c.pem"), cert.pem())?;
        std::fs::write(dir.join("k.pem"), cert.key().pkcs8_pem())?;
        let msg = mail_parser::MessageParser::default()
            .parse(raw)
            .ok_or_else(|| anyhow::anyhow!("unparsable mail"))?;
        let part = msg
            .attachments()
            .next()
            .or_else(|| msg.parts.first())
            .map(|p| p.contents().to_vec())
            .ok_or_else(|| anyhow::anyhow!("no attachment"))?;
        std::fs::write(dir.join("in.pkcs7"), part)?;
        let out = std::process::Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "der", "-binary", "-in"])
            .arg(dir.join("in.pkcs7"))
            .arg("-recip")
            .arg(dir.join("c.pem"))
            .arg("-inkey")
            .arg(dir.join("k.pem"))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl cms -decrypt (renewed key): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    }
}

impl Front {
    /// The billing mailbox over IMAP (STARTTLS) on the same Dovecot.
    pub fn imap_route(
        &self,
        after: passerelle_billing::AfterHandling,
    ) -> anyhow::Result<passerelle_billing::ImapRoute> {
        Ok(passerelle_billing::ImapRoute {
            addr: self.dovecot.imap_addr(),
            server_name: ServerName::try_from(SERVER_NAME)?.to_owned(),
            tls: self.client_tls()?,
            user: BILLING.into(),
            password: "billing-pw".into(),
            folder: "INBOX".into(),
            after,
            timeout: Duration::from_secs(10),
        })
    }
}
