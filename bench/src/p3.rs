//! P3: encryption of a 10 MB billing lot into the SESAM-Vitale CMS EnvelopedData
//! (AES-128-CBC, RSA-2048 PKCS#1 v1.5 key transport, DER), passerelle's streaming encryption
//! against the reference command `openssl cms -encrypt -binary -aes-128-cbc -outform der`
//! (the anchor). Same lot, same certificate, both reading and writing files on the same disk,
//! neither syncing. Median of 3 runs each; throughput in MB/s (10^6 bytes) of plaintext.
//!
//! The anchor's time includes starting the openssl process; ours is measured in-process
//! (certificate parsing included). Peak RSS: ours is this process's VmHWM, reset through
//! `/proc/self/clear_refs` just before encrypting (so it includes the bench binary itself);
//! openssl's is the "Maximum resident set size" of `/usr/bin/time -v`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use passerelle_sesam::Recipient;

const LOT_BYTES: usize = 10 * 1000 * 1000;
/// `LOT_BYTES` in MB (10^6 bytes), for throughput.
const LOT_MEGABYTES: f64 = 10.0;
const RUNS: usize = 3;

pub fn run() -> anyhow::Result<()> {
    let root = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .to_owned();
    let dir = tempfile::tempdir_in(root)?;
    let (cert, lot) = (dir.path().join("cert.pem"), dir.path().join("lot.b2"));
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=amo_pj.test@test.rss.fr",
            "-days",
            "2",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("openssl req")?;
    ensure!(status.status.success(), "openssl req failed");
    let mut bytes = vec![0u8; LOT_BYTES];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    File::create(&lot)?.write_all(&bytes)?;
    drop(bytes);
    let pem = std::fs::read(&cert)?;

    let ours_out = dir.path().join("ours.pkcs7");
    let mut ours = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        encrypt_ours(&pem, &lot, &ours_out)?;
        ours.push(t.elapsed());
    }
    let anchor_out = dir.path().join("anchor.pkcs7");
    let mut anchor = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-binary",
                "-aes-128-cbc",
                "-outform",
                "der",
                "-in",
            ])
            .arg(&lot)
            .arg("-out")
            .arg(&anchor_out)
            .arg(&cert)
            .output()
            .context("openssl cms")?;
        anchor.push(t.elapsed());
        ensure!(out.status.success(), "openssl cms -encrypt failed");
    }
    // Same structure: the outputs differ only in key, IV and ciphertext, not in size.
    ensure!(
        std::fs::metadata(&ours_out)?.len() == std::fs::metadata(&anchor_out)?.len(),
        "our CMS object and openssl's differ in size"
    );
    let mbps = |d: Duration| LOT_MEGABYTES / d.as_secs_f64();
    let (o, a) = (mbps(median(&mut ours)), mbps(median(&mut anchor)));
    println!(
        "BENCH P3 encrypt-10mb ours={o:.1} anchor={a:.1} unit=MB/s ratio={:.2}",
        o / a
    );

    let ours_rss = ours_peak_rss(&pem, &lot, &ours_out)?;
    let anchor_rss = anchor_peak_rss(&cert, &lot, &anchor_out)?;
    println!(
        "BENCH P3 encrypt-10mb-peak-rss ours={ours_rss:.1} anchor={anchor_rss:.1} unit=MiB ratio={:.2}",
        ours_rss / anchor_rss
    );
    Ok(())
}

fn encrypt_ours(pem: &[u8], lot: &Path, out: &Path) -> anyhow::Result<()> {
    let recipient = Recipient::from_pem(pem)?;
    let input = File::open(lot)?;
    let len = input.metadata()?.len();
    let mut w = BufWriter::with_capacity(128 * 1024, File::create(out)?);
    passerelle_sesam::encrypt(
        &recipient,
        BufReader::with_capacity(128 * 1024, input),
        len,
        &mut w,
    )?;
    w.flush()?;
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// VmHWM of this process (MiB) around one encryption, after resetting it.
fn ours_peak_rss(pem: &[u8], lot: &Path, out: &Path) -> anyhow::Result<f64> {
    std::fs::write("/proc/self/clear_refs", "5").context("reset VmHWM (/proc/self/clear_refs)")?;
    encrypt_ours(pem, lot, out)?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib / 1024.0)
}

/// openssl's maximum RSS (MiB) under `/usr/bin/time -v`.
fn anchor_peak_rss(cert: &Path, lot: &Path, out: &Path) -> anyhow::Result<f64> {
    let output = Command::new("/usr/bin/time")
        .args([
            "-v",
            "openssl",
            "cms",
            "-encrypt",
            "-binary",
            "-aes-128-cbc",
            "-outform",
            "der",
            "-in",
        ])
        .arg(lot)
        .arg("-out")
        .arg(out)
        .arg(cert)
        .output()
        .context("/usr/bin/time -v openssl")?;
    if !output.status.success() {
        bail!("/usr/bin/time -v openssl cms failed");
    }
    let report = String::from_utf8_lossy(&output.stderr);
    let kib: f64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .context("no maximum RSS in the time -v report")?;
    Ok(kib / 1024.0)
}
