//! TM5.1P autoconfiguration against a real DNS server (dnsmasq on a loopback port,
//! Debian package `dnsmasq-base`) publishing the four EX_LPS_0300 records.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use common::{APP_BAL, DOCTOR, Operator, Pki, lan_client, submit};
use passerelle_api_lps::autoconfig::{Autoconfig, Service};
use passerelle_api_lps::{BalConfig, BalKind, DnsConfig};

const DOMAIN: &str = "cabinet.medecin.mssante.fr";
const PSC_FRONT: &str = "psc.operateur-a.mssante.fr";

/// dnsmasq in the foreground; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

impl Dnsmasq {
    fn start(records: &[String]) -> anyhow::Result<Self> {
        let port = common::free_port()?;
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--user=root",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .context("run dnsmasq (apt-get install dnsmasq-base)")?;
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }
}

fn bal(kind: BalKind, address: &str) -> BalConfig {
    BalConfig {
        name: "b".into(),
        address: address.into(),
        kind,
        client_key_label: None,
        password_file: None,
        submission: None,
        connections: 1,
    }
}

async fn ready(ac: &Autoconfig) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ac
            .srv(DOMAIN, Service::Submission)
            .await
            .is_ok_and(|r| !r.is_empty())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("dnsmasq never answered");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_0300_srv_autoconfig_priority_selects_the_front_never_mixed() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let operator = Operator::start(&pki, vec![pki.org_auth_cli_fingerprint()?])?;
    let port = operator.postfix.smtp_addr().port();
    // The four records of EX_LPS_0300 for the BAL's domain (the APP front being our
    // Postfix), and a domain that publishes only the PSC front.
    let dns = Dnsmasq::start(&[
        format!("--srv-host=_submission._tcp.{DOMAIN},{PSC_FRONT},587,10,100"),
        format!(
            "--srv-host=_submission._tcp.{DOMAIN},{},{port},20,100",
            common::FRONT
        ),
        format!("--srv-host=_imap._tcp.{DOMAIN},{PSC_FRONT},143,10,100"),
        format!(
            "--srv-host=_imap._tcp.{DOMAIN},{},143,20,100",
            common::FRONT
        ),
        format!("--srv-host=_submission._tcp.psc-only.mssante.fr,{PSC_FRONT},587,10,100"),
        format!("--host-record={},127.0.0.1", common::FRONT),
        format!("--host-record={PSC_FRONT},127.0.0.2"),
    ])?;
    let dns_config = DnsConfig {
        nameserver: Some(dns.addr),
    };
    let upstream = pki.upstream_tls(pki.software_org_auth_cli()?)?;
    let ac = Autoconfig::new(&dns_config, upstream)?;
    ready(&ac).await?;

    let per = ac
        .submission(&bal(BalKind::Per, &format!("dr@{DOMAIN}")))
        .await?;
    ensure!((per.host.as_str(), per.port) == (PSC_FRONT, 587), "{per:?}");
    let app = ac.submission(&bal(BalKind::App, APP_BAL)).await?;
    ensure!(
        (app.host.as_str(), app.port) == (common::FRONT, port),
        "{app:?}"
    );
    let imap = ac.imap(&bal(BalKind::App, APP_BAL)).await?;
    ensure!(
        (imap.host.as_str(), imap.port) == (common::FRONT, 143),
        "{imap:?}"
    );
    ensure!(ac.resolve(PSC_FRONT, 587).await?.ip().to_string() == "127.0.0.2");
    // Only the PSC front published: an APP BAL gets no fallback to it (AC-02).
    let e = ac
        .submission(&bal(BalKind::App, "app@psc-only.mssante.fr"))
        .await
        .expect_err("no priority-20 record");
    ensure!(e.to_string().contains("priority 20"), "{e}");

    // End to end: the APP BAL without a configured front finds Postfix by SRV.
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let mut config = common::config(
        operator.postfix.smtp_addr(),
        operator.dovecot.lmtp_addr(),
        &secret,
    );
    config.bals[0].submission = None;
    config.dns = dns_config;
    let (mail, _q) = common::start(
        &pki,
        &config,
        &dir.path().join("q"),
        pki.software_org_auth_cli()?,
    )
    .await?;
    let mut client = lan_client(&pki, mail.local_addr()).await?;
    submit(&mut client, "srv", &[DOCTOR]).await?;
    operator.wait_inbox(DOCTOR, 1, Duration::from_secs(60))?;
    Ok(())
}
