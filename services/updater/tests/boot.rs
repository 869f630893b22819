//! systemd-boot entries on a directory standing for the ESP; systemd-boot's own renames of the
//! counter (`+3-0` → `+2-1` → … → `+0-3`) are simulated.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use passerelle_updater::boot::{
    EntryTemplate, Fallback, Slot, Slots, SystemdBoot, commit_when_healthy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn boot(esp: &Path, current: Slot) -> SystemdBoot {
    SystemdBoot::new(
        esp,
        current,
        [esp.join("slot-a"), esp.join("slot-b")],
        EntryTemplate::standard(),
    )
}

fn entries(esp: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(esp.join("loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// What systemd-boot does when it starts an entry with a counter.
fn systemd_boot_attempt(esp: &Path, from: &str, to: &str) {
    let dir = esp.join("loader/entries");
    std::fs::rename(dir.join(from), dir.join(to)).unwrap();
}

/// A `/healthz` endpoint answering `status` to every request.
async fn healthz(status: u16) -> hyper::Uri {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/healthz").parse().unwrap()
}

fn installed() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().to_owned();
    boot(&esp, Slot::A)
        .install(Slot::A, "1.1.0".parse().unwrap())
        .unwrap();
    (dir, esp)
}

#[test]
fn arming_writes_a_one_shot_entry_with_tries_for_the_inactive_slot() {
    let (_d, esp) = installed();
    let loader = std::fs::read_to_string(esp.join("loader/loader.conf")).unwrap();
    assert!(loader.contains("default passerelle-*"));
    let a = boot(&esp, Slot::A);
    assert_eq!(a.inactive_path(), esp.join("slot-b"));
    a.arm("1.2.0".parse().unwrap(), 3).unwrap();
    assert_eq!(
        entries(&esp),
        ["passerelle-a.conf", "passerelle-b+3-0.conf"]
    );
    let entry = std::fs::read_to_string(esp.join("loader/entries/passerelle-b+3-0.conf")).unwrap();
    assert!(entry.contains("version 1.2.0"));
    assert!(entry.contains("root=PARTLABEL=root-b"));
    assert!(entry.contains("passerelle.slot=b"));
    // Re-arming replaces the previous attempt rather than adding a second entry.
    a.arm("1.2.1".parse().unwrap(), 3).unwrap();
    assert_eq!(
        entries(&esp),
        ["passerelle-a.conf", "passerelle-b+3-0.conf"]
    );
    assert_eq!(a.take_fallback().unwrap(), None);
}

#[tokio::test]
async fn healthy_boot_of_the_armed_slot_is_committed() {
    let (_d, esp) = installed();
    boot(&esp, Slot::A)
        .arm("1.2.0".parse().unwrap(), 3)
        .unwrap();
    systemd_boot_attempt(&esp, "passerelle-b+3-0.conf", "passerelle-b+2-1.conf");
    let b = boot(&esp, Slot::B);
    commit_when_healthy(&b, &healthz(200).await, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(entries(&esp), ["passerelle-a.conf", "passerelle-b.conf"]);
}

#[tokio::test]
async fn unhealthy_boot_is_not_committed() {
    let (_d, esp) = installed();
    boot(&esp, Slot::A)
        .arm("1.2.0".parse().unwrap(), 3)
        .unwrap();
    systemd_boot_attempt(&esp, "passerelle-b+3-0.conf", "passerelle-b+2-1.conf");
    let b = boot(&esp, Slot::B);
    let err = commit_when_healthy(&b, &healthz(503).await, Duration::from_millis(800))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not committed"), "{err}");
    assert_eq!(
        entries(&esp),
        ["passerelle-a.conf", "passerelle-b+2-1.conf"]
    );
}

#[test]
fn fallback_is_reported_once_when_the_tries_run_out() {
    let (_d, esp) = installed();
    boot(&esp, Slot::A)
        .arm("1.3.0".parse().unwrap(), 3)
        .unwrap();
    systemd_boot_attempt(&esp, "passerelle-b+3-0.conf", "passerelle-b+2-1.conf");
    systemd_boot_attempt(&esp, "passerelle-b+2-1.conf", "passerelle-b+1-2.conf");
    systemd_boot_attempt(&esp, "passerelle-b+1-2.conf", "passerelle-b+0-3.conf");
    // systemd-boot sorted the bad entry last and booted A again.
    let a = boot(&esp, Slot::A);
    assert_eq!(
        a.take_fallback().unwrap(),
        Some(Fallback {
            slot: Slot::B,
            version: Some("1.3.0".parse().unwrap()),
            tries_done: 3,
        })
    );
    assert_eq!(a.take_fallback().unwrap(), None);
    assert_eq!(entries(&esp), ["passerelle-a.conf"]);
    // Committing the running, never-armed slot changes nothing.
    a.commit().unwrap();
    assert_eq!(entries(&esp), ["passerelle-a.conf"]);
}

#[test]
fn corrupt_boot_counter_is_reported_not_guessed() {
    let (_d, esp) = installed();
    std::fs::write(esp.join("loader/entries/passerelle-b+x-1.conf"), "garbage").unwrap();
    let a = boot(&esp, Slot::A);
    let err = a.take_fallback().unwrap_err();
    assert!(err.to_string().contains("boot counter"), "{err}");
    // The next update replaces the corrupt entry of the inactive slot.
    a.arm("1.2.0".parse().unwrap(), 3).unwrap();
    assert_eq!(
        entries(&esp),
        ["passerelle-a.conf", "passerelle-b+3-0.conf"]
    );
}

#[test]
fn running_slot_comes_from_the_kernel_command_line() {
    assert_eq!(
        Slot::from_cmdline("ro passerelle.slot=b quiet"),
        Some(Slot::B)
    );
    assert_eq!(Slot::from_cmdline("ro quiet"), None);
    assert_eq!(Slot::from_cmdline("passerelle.slot=c"), None);
}
