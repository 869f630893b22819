//! Shared fixtures: each test process generates the PKI once (keys come
//! from the on-disk cache after the first run).

use std::path::Path;
use std::process::Command;

use passerelle_testpki::{PkiOptions, TestPki};

pub const SEED: u64 = 2;

pub fn pki() -> TestPki {
    // Real time: openssl verify checks against the clock.
    TestPki::generate(&PkiOptions::new(SEED)).expect("generate test PKI")
}

pub fn written() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    pki.write_to(dir.path()).expect("write_to");
    (dir, pki)
}

/// Runs openssl with `args` in `dir`; returns (success, stdout + stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
