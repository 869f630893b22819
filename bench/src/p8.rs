//! P8: bytes per second written into the inactive slot by the updater against
//! `dd if=image of=slot bs=4M conv=fsync` of the same image to the same kind of target: a
//! pre-sized file on the same file system (under target/). Best of two alternating runs each,
//! so both see the same page-cache state.
//!
//! Two figures. `slot-write` is the slot phase: a staged image whose SHA-256 matched is copied
//! into the slot (header last, fsync, CRC read-back) — the step that `dd` does. `end-to-end`
//! also counts the download's sink: staging the bytes on the data partition and hashing them,
//! which on a device runs at network speed while the download arrives, and which is what
//! keeps the slot untouched by a bad image (see `passerelle_updater::slot`).

use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use passerelle_updater::slot::{SlotWriter, Verified, WRITE_CHUNK, hash_prefix};

const IMAGE_LEN: usize = 256 << 20;

/// Runs P8 and prints its `BENCH P8 …` line.
pub fn run() -> anyhow::Result<()> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base).context("P8 work dir under target/")?;
    let image = dir.path().join("image.img");
    let slot = dir.path().join("slot.img");
    // Incompressible-looking content; the file system does not dedupe or compress it.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let content: Vec<u8> = (0..IMAGE_LEN / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    std::fs::write(&image, &content)?;
    std::fs::write(&slot, vec![0u8; IMAGE_LEN])?;
    let sha = hash_prefix(&std::fs::File::open(&image)?, IMAGE_LEN as u64)?;
    drop(content);

    let mut slot_phase = 0f64;
    let mut end_to_end = 0f64;
    let mut anchor = 0f64;
    for _ in 0..2 {
        anchor = anchor.max(mb_per_s(|| dd(&image, &slot))?);
        let verified = stage(&image, &slot, &sha)?;
        slot_phase = slot_phase.max(mb_per_s(|| Ok(verified.install()?))?);
        end_to_end = end_to_end.max(mb_per_s(|| Ok(stage(&image, &slot, &sha)?.install()?))?);
    }
    println!(
        "BENCH P8 slot-write ours={slot_phase:.1} anchor={anchor:.1} unit=MB/s ratio={:.2}",
        slot_phase / anchor
    );
    println!(
        "BENCH P8 end-to-end ours={end_to_end:.1} anchor={anchor:.1} unit=MB/s ratio={:.2}",
        end_to_end / anchor
    );
    Ok(())
}

fn mb_per_s(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    f()?;
    #[allow(clippy::cast_precision_loss)] // 256 MiB is exact in f64
    Ok(IMAGE_LEN as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Stages and verifies the image as a download does; the slot is not touched yet.
fn stage(image: &Path, slot: &Path, sha: &[u8; 32]) -> anyhow::Result<Verified> {
    let staging = slot.with_extension("staging");
    let mut writer = SlotWriter::open(slot, &staging, "p8.img", IMAGE_LEN as u64)?;
    let mut src = std::fs::File::open(image)?;
    let mut buf = vec![0; WRITE_CHUNK];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
    }
    Ok(writer.verify(sha)?)
}

fn dd(image: &Path, slot: &Path) -> anyhow::Result<()> {
    let status = Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", slot.display()))
        .args(["bs=4M", "conv=fsync,notrunc", "status=none"])
        .status()
        .context("running dd")?;
    ensure!(status.success(), "dd failed: {status}");
    Ok(())
}
