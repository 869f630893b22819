//! The services behind the Messagerie, Facturation and Mises à jour pages, for real: practice
//! mail against a real Postfix + Dovecot operator (the api_lps test fixtures), Pro Santé
//! Connect against the fake PSC, a billing lot store with a rejected lot, and an updater
//! handle whose loop is played by the test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use passerelle_api_lps::{
    BalConfig, BalKind, Endpoint, MailHandle, PracticeMail, PracticeMailConfig,
};
use passerelle_billing::{BillingStatus, Intake, LotId, LotMeta, LotState, RecipientKind};
use passerelle_fake_psc::FakePsc;
use passerelle_fake_psc::env::{TestEnv, secret_file};
use passerelle_keystore::{Department, KeyAlgorithm, KeyRef, Keystore, Subject};
use passerelle_psc::{Psc, PscConfig};
use passerelle_queue::{Queue, SqliteStore};
use passerelle_updater::service::{Command, Handle, UpdateStatus};

#[path = "../../../services/api_lps/tests/common/mod.rs"]
pub mod lps;

/// The PER BAL signed in with PSC in the tests.
pub const PER_BAL: &str = lps::DOCTOR;

/// Practice mail: an APP BAL (`app`, software ORG AUTH_CLI) and a PER BAL (`dr`) sending to
/// a real Postfix that requires the client certificate and AUTH (SASL by Dovecot).
pub struct MailFixture {
    pub pki: lps::Pki,
    pub operator: lps::Operator,
    pub mail: Option<PracticeMail>,
    pub queue: Arc<Queue<SqliteStore>>,
    pub config: PracticeMailConfig,
    pub handle: MailHandle,
    pub overlay: PathBuf,
    pub dir: tempfile::TempDir,
}

impl MailFixture {
    pub async fn start() -> anyhow::Result<Self> {
        let pki = lps::Pki::new()?;
        let operator = lps::Operator::start(&pki, vec![pki.org_auth_cli_fingerprint()?])?;
        let dir = tempfile::tempdir()?;
        let password = lps::write_secret(dir.path(), lps::APP_PASSWORD)?;
        let front = operator.postfix.smtp_addr();
        let mut config = lps::config(front, operator.dovecot.lmtp_addr(), &password);
        config.bals.push(BalConfig {
            name: "dr".into(),
            address: PER_BAL.into(),
            kind: BalKind::Per,
            client_key_label: None,
            password_file: None,
            submission: Some(Endpoint {
                host: lps::FRONT.into(),
                port: front.port(),
                address: Some(front),
            }),
            connections: 1,
        });
        let (mail, queue) = lps::start(
            &pki,
            &config,
            &dir.path().join("queue"),
            pki.software_org_auth_cli()?,
        )
        .await?;
        let overlay = dir.path().join("bal-overlay.json");
        let handle = mail.handle(&config, Some(overlay.clone()));
        Ok(Self {
            pki,
            operator,
            mail: Some(mail),
            queue,
            config,
            handle,
            overlay,
            dir,
        })
    }

    pub async fn stop(mut self) {
        if let Some(mail) = self.mail.take() {
            mail.shutdown().await;
        }
    }
}

/// Pro Santé Connect: the fake, its trust store, and a token (SoftHSM2) with the store key
/// and an ORG AUTH_CLI key whose certificate the test PKI issued.
pub struct PscFixture {
    pub env: TestEnv,
    pub fake: FakePsc,
    pub keystore: Keystore,
    pub psc: Psc,
}

/// Label of the token key with an ORG AUTH_CLI certificate.
pub const TOKEN_CERT_LABEL: &str = "org-cabinet";

impl PscFixture {
    pub async fn start(mail_pki: &lps::Pki) -> anyhow::Result<Self> {
        let env = TestEnv::new()?;
        env.hsm.set_process_env();
        let fake = FakePsc::start(&env.pki).await?;
        let keystore = Keystore::open(&env.keystore).await?;
        keystore
            .generate("psc-store", KeyAlgorithm::Rsa2048)
            .await?;
        keystore
            .generate(TOKEN_CERT_LABEL, KeyAlgorithm::Rsa2048)
            .await?;
        let csr = keystore
            .csr(
                &KeyRef::Label(TOKEN_CERT_LABEL.into()),
                &Subject::OrgAuthCli {
                    id_nat_struct: "318751275100020".into(),
                    organization: "CABINET MEDICAL".into(),
                    department: Department {
                        name: "Paris".into(),
                        code: "75".into(),
                    },
                },
            )
            .await?;
        let cert = lps::issue_org_auth_cli(mail_pki, &csr)?;
        keystore
            .import_certificate(&KeyRef::Label(TOKEN_CERT_LABEL.into()), &cert)
            .await?;
        let config = PscConfig {
            token_url: fake.token_url(),
            client_id: passerelle_fake_psc::CLIENT_ID.to_owned(),
            client_secret_file: secret_file(
                env.dir.path(),
                "psc.secret",
                passerelle_fake_psc::CLIENT_SECRET,
            )?,
            https_profile: "mssante-server".to_owned(),
            store_file: env.dir.path().join("psc-sessions.json"),
            store_key_label: "psc-store".to_owned(),
            refresh_margin: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        };
        let psc = Psc::open(&config, Arc::clone(&env.trust), &keystore).await?;
        Ok(Self {
            env,
            fake,
            keystore,
            psc,
        })
    }
}

/// A billing lot store with one acknowledged lot and one rejected lot (negative ARL).
pub struct BillingFixture {
    pub status: BillingStatus,
    pub queue: Queue<SqliteStore>,
    pub rejected: LotId,
    pub acknowledged: LotId,
    pub dir: tempfile::TempDir,
}

fn b2(seed: &str) -> Vec<u8> {
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

fn meta(name: &str) -> LotMeta {
    LotMeta {
        flow: passerelle_sesam::Flow::Fse,
        env: passerelle_sesam::Env::Test,
        recipient: RecipientKind::Amo,
        subject: format!("SV140610/00000001/20261123/{name}"),
        file_name: name.to_owned(),
    }
}

impl BillingFixture {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let queue = Queue::open_sqlite(&dir.path().join("queue"), lps::queue_config()).await?;
        let intake = Intake {
            store: passerelle_billing::LotStore::open(&dir.path().join("lots")).await?,
            queue: queue.clone(),
            max_lot_bytes: 10 * 1024 * 1024,
        };
        let mut ids = Vec::new();
        for (name, positive) in [("F0001", false), ("F0002", true)] {
            let id = intake.accept(&meta(name), &b2(name)).await?.lot_id;
            let store = &intake.store;
            store
                .transition(&id, LotState::Encrypted, "for sv-amo-test")
                .await?;
            store
                .mark_sent(&id, &format!("<{name}@passerelle>"))
                .await?;
            let (to, why) = if positive {
                (LotState::Acknowledged, "ARL positif")
            } else {
                (LotState::Rejected, "ARL négatif : <rejet> lot illisible")
            };
            store.transition(&id, to, why).await?;
            ids.push(id);
        }
        let status = BillingStatus::new(intake, Duration::from_secs(48 * 3600));
        Ok(Self {
            status,
            queue,
            acknowledged: ids.remove(1),
            rejected: ids.remove(0),
            dir,
        })
    }
}

/// The updater's loop as the test plays it: "check now" goes checking then arms 1.3.0;
/// "reboot now" is recorded.
pub struct UpdaterFixture {
    pub handle: Handle,
    pub reboots: Arc<std::sync::atomic::AtomicUsize>,
    pub release: Arc<tokio::sync::Notify>,
}

impl UpdaterFixture {
    pub fn start() -> Self {
        let (status_tx, status) = tokio::sync::watch::channel(UpdateStatus::Idle);
        let (commands, mut rx) = tokio::sync::mpsc::channel(1);
        let reboots = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The check holds in "checking" until the test releases it, so the page is seen
        // mid-way.
        let release = Arc::new(tokio::sync::Notify::new());
        let (r, rel) = (Arc::clone(&reboots), Arc::clone(&release));
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::CheckNow => {
                        status_tx.send_replace(UpdateStatus::Checking);
                        rel.notified().await;
                        status_tx.send_replace(UpdateStatus::RebootPending {
                            version: "1.3.0"
                                .parse()
                                .unwrap_or(passerelle_updater::Version(1, 3, 0)),
                        });
                    }
                    Command::RebootNow => {
                        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        });
        Self {
            handle: Handle {
                version: passerelle_updater::Version(1, 2, 0),
                slot: passerelle_updater::boot::Slot::A,
                status,
                commands,
            },
            reboots,
            release,
        }
    }
}
