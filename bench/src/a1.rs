//! A1: p99 latency of substring searches over LDAP, passerelle's LAN directory against a
//! real slapd (the anchor) holding the same 100 000 entries. Both are queried over loopback
//! by the same client (ldap3), one search at a time, with the same 1 000 filters; slapd runs
//! with the harness's settings (mdb, no extra index), passerelle from its FTS5 trigram cache.
//!
//! slapd is started here rather than by `passerelle_harness::Slapd` only because 100 000
//! entries overflow the harness's fixed 64 MiB mdb map; the configuration is otherwise the
//! harness's.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use ldap3::{LdapConnAsync, Scope};
use passerelle_annuaire::extraction::{self, Limits};
use passerelle_annuaire::ldap_server::LdapServer;
use passerelle_annuaire::{Cache, Entry, LdapServerConfig, LoadInfo};

const ENTRIES: usize = 100_000;
const SEARCHES: usize = 1_000;
const WARMUP: usize = 20;
const BASE: &str = "ou=annuaire,o=passerelle";

/// Runs A1 on its own thread and runtime (callable from inside or outside tokio) and prints
/// its `BENCH A1 …` line.
pub fn run() -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("bench-a1".to_owned())
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("A1 runtime")?
                .block_on(a1())
        })
        .context("A1 thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("A1 thread panicked"))?
}

async fn a1() -> anyhow::Result<()> {
    let data = extraction::synthetic(ENTRIES);
    let parsed = extraction::parse("synthetic", data.as_bytes(), &Limits::default())?;
    ensure!(
        parsed.entries.len() == ENTRIES,
        "synthetic extraction lost rows"
    );

    let dir = tempfile::tempdir().context("A1 scratch dir")?;
    let cache = Arc::new(Cache::open(&dir.path().join("cache")).await?);
    cache
        .replace(
            &parsed.entries,
            &LoadInfo {
                sources: "synthetic".to_owned(),
                rejected: 0,
                sanity_floor_percent: 0,
            },
        )
        .await?;
    let server = LdapServer::bind(
        LdapServerConfig {
            listen: "127.0.0.1:0".parse()?,
            base_dn: BASE.to_owned(),
            size_limit: 1000,
            time_limit: Duration::from_secs(30),
            max_connections: 8,
            allow_anonymous: true,
            accounts: Vec::new(),
        },
        Arc::clone(&cache),
    )
    .await?;
    let ours_url = format!("ldap://{}", server.local_addr()?);
    let serving = tokio::spawn(server.run());

    let ldif = ldif(&parsed.entries);
    let slapd = tokio::task::spawn_blocking(move || BigSlapd::start(&ldif)).await??;

    let filters = filters(&parsed.entries);
    let ours = p99(&ours_url, &filters).await?;
    let anchor = p99(&slapd.url, &filters).await?;
    serving.abort();
    ensure!(
        ours.1 == anchor.1,
        "the two directories disagree: {} entries found by passerelle, {} by slapd",
        ours.1,
        anchor.1
    );
    let (ours, anchor) = (ms(ours.0), ms(anchor.0));
    println!(
        "BENCH A1 ldap-substring-p99 ours={ours:.2} anchor={anchor:.2} unit=ms ratio={:.2}",
        ours / anchor
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The entries as slapd loads them, with the attributes passerelle's server returns.
fn ldif(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(entries.len() * 400);
    for e in entries {
        let _ = write!(
            out,
            "dn: mail={mail},{BASE}\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: {sn}\ngivenName: {gn}\nmail: {mail}\no: {o}\nl: {l}\npostalCode: {pc}\ntitle: {title}\ndescription: {bal}\n\n",
            mail = e.mail,
            cn = e.common_name(),
            sn = e.nom,
            gn = e.prenom,
            o = e.organisation,
            l = e.ville,
            pc = e.code_postal,
            title = e.profession,
            bal = e.bal_type,
        );
    }
    out
}

/// 1 000 substring filters over cn, sn and mail, each naming one entry by a fragment taken
/// from its values (spread over the whole set).
fn filters(entries: &[Entry]) -> Vec<String> {
    (0..SEARCHES)
        .map(|i| {
            let e = &entries[(i * 7919 + 10_000) % entries.len()];
            let tail = |s: &str, n: usize| {
                s.chars()
                    .skip(s.chars().count().saturating_sub(n))
                    .collect::<String>()
            };
            match i % 3 {
                0 => format!("(sn=*{}*)", tail(&e.nom, 8)),
                1 => format!("(cn=*{}*)", tail(&e.common_name(), 10)),
                _ => format!("(mail=*{}*)", e.mail.split('@').next().unwrap_or_default()),
            }
        })
        .collect()
}

/// p99 latency of the filters against `url`, and the total entries found.
async fn p99(url: &str, filters: &[String]) -> anyhow::Result<(Duration, usize)> {
    let (conn, mut ldap) = LdapConnAsync::new(url)
        .await
        .with_context(|| format!("connect {url}"))?;
    ldap3::drive!(conn);
    for filter in filters.iter().take(WARMUP) {
        ldap.search(BASE, Scope::Subtree, filter, vec!["mail"])
            .await?
            .success()?;
    }
    let mut latencies = Vec::with_capacity(filters.len());
    let mut found = 0;
    for filter in filters {
        let started = Instant::now();
        let (entries, _) = ldap
            .search(BASE, Scope::Subtree, filter, vec!["mail"])
            .await?
            .success()
            .with_context(|| format!("{url} {filter}"))?;
        latencies.push(started.elapsed());
        found += entries.len();
    }
    let _ = ldap.unbind().await;
    latencies.sort_unstable();
    let at = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    Ok((latencies[at], found))
}

/// slapd with a map large enough for the bench; killed on drop.
struct BigSlapd {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl BigSlapd {
    fn start(ldif: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("slapd dir")?;
        let base = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("db")).context("slapd db dir")?;
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {base}/slapd.pid
argsfile {base}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 1073741824
suffix \"{BASE}\"
rootdn \"cn=admin,{BASE}\"
rootpw bench
directory {base}/db
"
            ),
        )
        .context("slapd.conf")?;
        let data = dir.path().join("data.ldif");
        std::fs::write(
            &data,
            format!("dn: {BASE}\nobjectClass: organizationalUnit\nou: annuaire\n\n{ldif}"),
        )
        .context("data.ldif")?;
        let status = std::process::Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data)
            .status()
            .context("slapadd (package slapd)")?;
        ensure!(status.success(), "slapadd failed: {status}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("ldap://127.0.0.1:{port}/");
        let child = std::process::Command::new("slapd")
            .args(["-d", "0", "-h", &url, "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("slapd")?;
        let slapd = Self {
            child,
            url,
            _dir: dir,
        };
        // Ready when it accepts connections (never a fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "slapd not listening after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(slapd)
    }
}

impl Drop for BigSlapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
