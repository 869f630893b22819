//! P6: memory of the running daemon (`passerelle run`, the release binary) with 10 000
//! 50 KB messages in its outbox, first idle while the operator is unreachable, then while it
//! drains them to the same real Postfix sink as P1 (client certificate from the SoftHSM2
//! token, AUTH PLAIN). Anchor: a Postfix relay holding the same 10 000 messages, idle then
//! flushing — every process of that Postfix instance counted.
//!
//! Figures are PSS (proportional set size: shared library pages split between the processes
//! sharing them), the fair total for a multi-process server, sampled every 100 ms: idle is
//! the largest sample over 5 s after start-up, draining the largest sample until the sink
//! has accepted all 10 000. Our RSS is printed beside it for the issue's absolute goals
//! (≤ 40 MiB idle, ≤ 64 MiB draining).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use argon2::password_hash::{PasswordHasher as _, SaltString};
use passerelle_fake_psc::env::{TestEnv, secret_file};
use passerelle_faultproxy::{FaultProxy, Mode};
use passerelle_keystore::{Department, KeyAlgorithm, KeyRef, Keystore, Subject};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_testpki::names;

use crate::p1::{
    BAL, MESSAGES, PASSWORD, SERVER_NAME, fill_outbox, fill_relay, fingerprint, free_port,
    release_relay, sink_count, start_relay, start_sink,
};

const IDLE_WINDOW: Duration = Duration::from_secs(5);
const SAMPLE: Duration = Duration::from_millis(100);
const CLIENT_KEY: &str = "org-auth-cli";

pub fn run() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(p6())
}

/// Memory of a set of processes, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss: u64,
    pss: u64,
}

impl Memory {
    fn max(self, other: Self) -> Self {
        Self {
            rss: self.rss.max(other.rss),
            pss: self.pss.max(other.pss),
        }
    }
}

/// A `Key: <n> kB` field of a `/proc` file.
fn kib_field(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn memory_of(pids: &[u32]) -> Memory {
    pids.iter().fold(Memory::default(), |sum, pid| {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        Memory {
            rss: sum.rss + kib_field(&proc_dir.join("status"), "VmRSS:"),
            pss: sum.pss + kib_field(&proc_dir.join("smaps_rollup"), "Pss:"),
        }
    })
}

/// `root` and every process below it.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // The parent pid is the 2nd field after the parenthesised command name.
            let parent_pid = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                });
            if let Some(parent_pid) = parent_pid {
                parents.push((pid, parent_pid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

fn postfix_master(config_dir: &Path) -> anyhow::Result<u32> {
    let out = Command::new("postconf")
        .arg("-c")
        .arg(config_dir)
        .args(["-h", "queue_directory"])
        .output()?;
    let queue_dir = String::from_utf8(out.stdout)?;
    let pid_file = Path::new(queue_dir.trim()).join("pid/master.pid");
    std::fs::read_to_string(&pid_file)
        .with_context(|| format!("{}", pid_file.display()))?
        .trim()
        .parse()
        .context("master.pid")
}

/// Largest sample of `pids()` over `window`.
async fn peak_over(window: Duration, pids: impl Fn() -> Vec<u32>) -> Memory {
    let end = Instant::now() + window;
    let mut peak = Memory::default();
    while Instant::now() < end {
        peak = peak.max(memory_of(&pids()));
        tokio::time::sleep(SAMPLE).await;
    }
    peak
}

/// Largest sample of `pids()` until the sink has accepted `target` messages.
async fn peak_until_drained(
    sink_log: &Path,
    target: usize,
    pids: impl Fn() -> Vec<u32>,
) -> anyhow::Result<Memory> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut peak = Memory::default();
    while sink_count(sink_log) < target {
        ensure!(
            Instant::now() < deadline,
            "sink stuck at {}",
            sink_count(sink_log)
        );
        peak = peak.max(memory_of(&pids()));
        tokio::time::sleep(SAMPLE).await;
    }
    Ok(peak)
}

fn mib(kib: u64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "memory sizes fit an f64 exactly"
    )]
    let k = kib as f64;
    k / 1024.0
}

#[allow(
    clippy::too_many_lines,
    reason = "one linear scenario: token, sink, ours, anchor"
)]
async fn p6() -> anyhow::Result<()> {
    let bin = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .join("passerelle");
    ensure!(
        bin.exists(),
        "{} missing: `make bench` builds it (cargo build --release -p passerelle)",
        bin.display()
    );
    // PKI, pinned anchors with their CRLs installed, a SoftHSM2 token (SOFTHSM2_CONF set
    // for this process, inherited by the daemon).
    let env = TestEnv::new()?;
    let cert_der = client_certificate(&env).await?;

    let server_files = env.operator_tls();
    let org_auth_cli = env.pki.cert(names::ORG_AUTH_CLI)?.der().to_vec();
    let (dovecot, sink) = tokio::task::block_in_place(|| {
        start_sink(
            &server_files,
            vec![fingerprint(&cert_der), fingerprint(&org_auth_cli)],
        )
    })?;
    let sink_log = sink.log_path().to_owned();
    let proxy = FaultProxy::start(sink.smtp_addr()).await?;
    proxy.set_mode(Mode::Refuse).await?;

    let data = env.dir.path().join("data");
    {
        let queue = Queue::open_sqlite(data.join("queue"), QueueConfig::default()).await?;
        fill_outbox(&queue).await?;
    }
    let status_port = free_port()?;
    let config = daemon_config(
        &env,
        &data,
        status_port,
        proxy.local_addr(),
        dovecot.lmtp_addr(),
    )?;
    let log = env.dir.path().join("passerelle.log");
    let mut daemon = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting passerelle")?;
    let pid = daemon.id();
    let measured = async {
        wait_healthy(status_port, &mut daemon).await?;
        let idle = peak_over(IDLE_WINDOW, || vec![pid]).await;
        let before = sink_count(&sink_log);
        proxy.set_mode(Mode::Pass).await?;
        let draining = peak_until_drained(&sink_log, before + MESSAGES, || vec![pid]).await?;
        anyhow::Ok((idle, draining))
    }
    .await;
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = daemon.wait();
    let (ours_idle, ours_draining) = measured.with_context(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "the daemon's last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })?;

    // Anchor: a Postfix relay holding the same messages, idle then flushing.
    let relay = tokio::task::block_in_place(|| {
        start_relay(env.dir.path(), &env.pki_path(""), &server_files, &sink)
    })?;
    fill_relay(relay.smtp_addr()).await?;
    let master = postfix_master(relay.config_dir())?;
    let anchor_idle = peak_over(IDLE_WINDOW, || process_tree(master)).await;
    let before = sink_count(&sink_log);
    tokio::task::block_in_place(|| release_relay(&relay))?;
    let anchor_draining =
        peak_until_drained(&sink_log, before + MESSAGES, || process_tree(master)).await?;

    for (what, ours, anchor) in [
        ("pss-idle-10000-queued", ours_idle, anchor_idle),
        ("pss-draining-10000", ours_draining, anchor_draining),
    ] {
        println!(
            "BENCH P6 {what} ours={:.1} anchor={:.1} unit=MiB ratio={:.2}",
            mib(ours.pss),
            mib(anchor.pss),
            mib(ours.pss) / mib(anchor.pss)
        );
    }
    println!(
        "# P6 daemon RSS idle {:.1} MiB (goal <= 40), draining {:.1} MiB (goal <= 64)",
        mib(ours_idle.rss),
        mib(ours_draining.rss)
    );
    Ok(())
}

/// The BAL's ORG AUTH_CLI key generated in the token, its CSR signed by the test ORG CA and
/// the certificate imported; returns its DER.
async fn client_certificate(env: &TestEnv) -> anyhow::Result<Vec<u8>> {
    let keystore = Keystore::open(&env.keystore).await?;
    let key = KeyRef::from(CLIENT_KEY);
    keystore.generate(CLIENT_KEY, KeyAlgorithm::Rsa2048).await?;
    let csr = keystore
        .csr(
            &key,
            &Subject::OrgAuthCli {
                id_nat_struct: "318751275100020".to_owned(),
                organization: "CABINET MEDICAL DU PARC".to_owned(),
                department: Department {
                    name: "Paris".to_owned(),
                    code: "75".to_owned(),
                },
            },
        )
        .await?;
    let dir = env.dir.path();
    let (pem, der) = (dir.join("bal.crt.pem"), dir.join("bal.crt.der"));
    passerelle_testpki::openssl_issue(
        &env.pki_path(""),
        names::ACI_EL_ORG,
        &csr,
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n",
        0x5036_3031,
        &pem,
    )?;
    keystore.import_certificate(&key, &pem).await?;
    let converted = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .output()?;
    ensure!(converted.status.success(), "openssl x509 -outform DER");
    Ok(std::fs::read(der)?)
}

/// The daemon's configuration: practice profile, one applicative BAL whose front is behind
/// the fault proxy.
fn daemon_config(
    env: &TestEnv,
    data: &Path,
    status_port: u16,
    front: std::net::SocketAddr,
    lmtp: std::net::SocketAddr,
) -> anyhow::Result<PathBuf> {
    let dir = env.dir.path();
    let password = secret_file(dir, "bal.password", PASSWORD)?;
    let salt = SaltString::encode_b64(b"bench-salt-16byt").map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(b"unused", &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let trust = dir.join("trust");
    let text = format!(
        "[general]\nprofile = \"practice\"\ndata_dir = \"{data}\"\n\
         [logging]\nlevel = \"warn\"\n\
         [status]\nlisten = \"127.0.0.1:{status_port}\"\n\
         [keystore]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{pin}\"\n\
         [device]\nname = \"passerelle.bench\"\norganization = \"Cabinet de test\"\n\
         [trust]\nanchors_dir = \"{anchors}\"\npins_file = \"{pins}\"\ncrl_cache_dir = \"{crl}\"\n\
         [trust.profiles.mssante-server]\nrole = \"tls-server\"\nanchors = [\"{acr}.der\"]\n\
         allowed_issuers = [\"{org}.der\"]\n\
         [practice_mail]\nlisten = \"127.0.0.1:{lan}\"\nhostname = \"passerelle.bench\"\n\
         device_key_label = \"device\"\nx_mss_nil = \"PASSERELLE/BENCH/1\"\ndsn_lmtp = \"{lmtp}\"\n\
         [[practice_mail.accounts]]\nuser = \"bench\"\npassword_hash = \"{hash}\"\n\
         mailbox = \"bench@cabinet.local\"\nbals = [\"app\"]\n\
         [[practice_mail.bals]]\nname = \"app\"\naddress = \"{BAL}\"\nkind = \"app\"\n\
         client_key_label = \"{CLIENT_KEY}\"\npassword_file = \"{password}\"\nconnections = 8\n\
         [practice_mail.bals.submission]\nhost = \"{SERVER_NAME}\"\nport = {port}\naddress = \"{front}\"\n",
        data = data.display(),
        module = env.hsm.module_path().display(),
        label = env.hsm.token().label,
        pin = env.keystore.pin_file.display(),
        anchors = trust.join("anchors").display(),
        pins = trust.join("pins.sha256").display(),
        crl = trust.join("crl").display(),
        acr = names::ACR_EL,
        org = names::ACI_EL_ORG,
        lan = free_port()?,
        port = front.port(),
        password = password.display(),
    );
    let path = dir.join("passerelle.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Polls the status listener's `/healthz` until it answers 200.
async fn wait_healthy(port: u16, daemon: &mut Child) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        ensure!(
            daemon.try_wait()?.is_none(),
            "passerelle exited before it was healthy"
        );
        ensure!(Instant::now() < deadline, "passerelle never became healthy");
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await?;
            if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(SAMPLE).await;
    }
}
