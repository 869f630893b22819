//! An isolated pcscd with the vpcd virtual reader driver.
//!
//! Isolation: pcscd 1.9.9 hard-codes `/run/pcscd` for its socket and pid file (the daemon
//! ignores `PCSCLITE_CSOCK_NAME`; only the client library honours it), and vpcd listens on
//! 0.0.0.0. So pcscd runs under `unshare --mount --net`: a temp dir is bind-mounted over
//! `/run` in its private mount namespace, and its private network namespace has only `lo`,
//! so vpcd's port is reachable from nowhere else. Clients find the socket through the temp
//! dir with `PCSCLITE_CSOCK_NAME`; the virtual card joins the network namespace from a
//! dedicated thread (see [`crate::VirtualCard`]). Nothing in /etc or the host's /run is
//! touched and parallel tests cannot collide on ports.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{loopback, require_binary, PeerDir, PeerProcess};
use crate::vcard::{ApduHandler, VirtualCard};
use crate::{HarnessError, Result};

const PEER: &str = "pcscd";
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// vpcd's default port; free to use since the network namespace is private.
const VPCD_PORT: u16 = 0x8C7B;
/// vpcd makes this many readers, on consecutive ports.
const VPCD_SLOTS: u8 = 2;

/// Builder for [`Pcscd`].
#[derive(Debug, Clone, Default)]
pub struct PcscdBuilder {
    apdu_log: bool,
}

impl PcscdBuilder {
    /// Logs every APDU and response in pcscd's log (`pcscd -a`).
    #[must_use]
    pub fn apdu_log(mut self, on: bool) -> Self {
        self.apdu_log = on;
        self
    }

    pub fn start(self) -> Result<Pcscd> {
        let pcscd = require_binary(PEER, "pcscd", "pcscd")?;
        let unshare = require_binary(PEER, "unshare", "util-linux")?;
        require_binary(PEER, "ip", "iproute2")?;
        if !Path::new(VPCD_DRIVER).is_file() {
            return Err(HarnessError::MissingBinary {
                peer: PEER,
                binary: VPCD_DRIVER,
                package: "vsmartcard-vpcd",
            });
        }
        let dir = PeerDir::new(PEER)?;
        let run_dir = dir.mkdir("run")?;
        let conf_dir = dir.mkdir("reader.conf.d")?;
        dir.write(
            "reader.conf.d/vpcd",
            &format!(
                "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x{VPCD_PORT:04X}\n\
                 LIBPATH {VPCD_DRIVER}\nCHANNELID 0x{VPCD_PORT:04X}\n"
            ),
        )?;
        // Not "host:port" in DEVICENAME: that makes vpcd connect out to the card instead,
        // and vpcd 0.8 then crashes pcscd on the first poll (FD_SET(-1), fortify abort).
        let script =
            r#"ip link set lo up && mount --bind "$1" /run && exec "$2" -f -i -c "$3" ${4:+"$4"}"#;
        let mut cmd = Command::new(unshare);
        cmd.args([
            "--mount",
            "--net",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&run_dir)
        .arg(&pcscd)
        .arg(&conf_dir)
        // Empty when APDU logging is off; the script then passes no argument at all
        // (pcscd refuses an empty one as an unknown option).
        .arg(if self.apdu_log { "-a" } else { "" });
        let mut process = PeerProcess::spawn(PEER, &mut cmd, dir.join("pcscd.log"))?;
        let socket = run_dir.join("pcscd").join("pcscd.comm");
        process.wait_ready("socket accepts connections", || {
            UnixStream::connect(&socket)
                .map(drop)
                .map_err(|e| format!("connect {}: {e}", socket.display()))
        })?;
        // unshare and sh exec into pcscd, so the child's pid is pcscd's.
        let netns_path = format!("/proc/{}/ns/net", process.id());
        let netns = File::open(&netns_path)
            .map_err(|e| HarnessError::io(PEER, format!("open {netns_path}"), e))?;
        let ours = std::fs::metadata("/proc/self/ns/net")
            .map_err(|e| HarnessError::io(PEER, "stat own netns", e))?;
        let theirs = netns
            .metadata()
            .map_err(|e| HarnessError::io(PEER, "stat pcscd netns", e))?;
        if ours.ino() == theirs.ino() {
            return Err(HarnessError::protocol(
                PEER,
                "network namespace",
                "pcscd runs in the test's own network namespace: unshare --net did not apply",
            ));
        }
        tracing::info!(socket = %socket.display(), "pcscd ready");
        Ok(Pcscd {
            process,
            socket,
            netns,
            dir,
        })
    }
}

/// A running isolated pcscd; killed and its temp dir removed on drop.
#[derive(Debug)]
pub struct Pcscd {
    // Field order matters: the process must die before its dir goes.
    process: PeerProcess,
    socket: PathBuf,
    netns: File,
    dir: PeerDir,
}

impl Pcscd {
    pub fn builder() -> PcscdBuilder {
        PcscdBuilder::default()
    }

    /// The daemon's socket, as seen from the test (inside the temp dir).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Name of vpcd reader `slot` (0 or 1) as PC/SC lists it: `Virtual PCD 00 0<slot>`.
    pub fn reader_name(&self, slot: u8) -> String {
        format!("Virtual PCD 00 {slot:02}")
    }

    /// Environment for child processes that use PC/SC (`PCSCLITE_CSOCK_NAME`).
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![(
            "PCSCLITE_CSOCK_NAME".into(),
            self.socket.clone().into_os_string(),
        )]
    }

    /// Sets `PCSCLITE_CSOCK_NAME` in this test process, for the in-process `pcsc` crate.
    /// Call it before the first PC/SC call: libpcsclite reads it once. Process-wide: relies
    /// on nextest's process per test.
    pub fn set_process_env(&self) {
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// A virtual card for reader `slot` (0 or 1), not inserted yet.
    pub fn virtual_card<H: ApduHandler>(&self, slot: u8, handler: H) -> Result<VirtualCard<H>> {
        if slot >= VPCD_SLOTS {
            return Err(HarnessError::protocol(
                PEER,
                "virtual card",
                format!("vpcd has slots 0..{VPCD_SLOTS}, not {slot}"),
            ));
        }
        let netns = self
            .netns
            .try_clone()
            .map_err(|e| HarnessError::io(PEER, "dup netns handle", e))?;
        Ok(VirtualCard::new(
            netns,
            vpcd_addr(slot),
            self.reader_name(slot),
            handler,
        ))
    }
}

fn vpcd_addr(slot: u8) -> SocketAddr {
    loopback(VPCD_PORT + u16::from(slot))
}
