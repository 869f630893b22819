//! Temp dirs, child processes, ports and readiness loops shared by all peers.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use crate::{HarnessError, Result};

/// Set this variable (to anything) to keep every peer's temp dir after the test.
pub const KEEP_DIRS_VAR: &str = "PASSERELLE_KEEP_TEST_DIRS";

/// How long a peer may take to become ready. Generous: 2 shared cores under parallel builds.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting a peer when it lost the race for its ephemeral port.
pub(crate) const PORT_ATTEMPTS: u32 = 3;

/// A peer's temp dir: removed on drop unless [`KEEP_DIRS_VAR`] is set.
#[derive(Debug)]
pub(crate) struct PeerDir {
    peer: &'static str,
    dir: Option<tempfile::TempDir>,
}

impl PeerDir {
    pub(crate) fn new(peer: &'static str) -> Result<Self> {
        // Directly under /tmp, not $TMPDIR: Dovecot and pcscd put unix sockets in here and
        // socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix(&format!("pas-{peer}-"))
            .tempdir_in("/tmp")
            .map_err(|e| HarnessError::io(peer, "create temp dir", e))?;
        // Peers drop privileges (postfix, dovecot, mail users) and must traverse it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| HarnessError::io(peer, "chmod temp dir", e))?;
        Ok(Self {
            peer,
            dir: Some(dir),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    pub(crate) fn join(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub(crate) fn write(&self, rel: &str, contents: &str) -> Result<PathBuf> {
        let path = self.join(rel);
        fs::write(&path, contents)
            .map_err(|e| HarnessError::io(self.peer, format!("write {}", path.display()), e))?;
        Ok(path)
    }

    pub(crate) fn mkdir(&self, rel: &str) -> Result<PathBuf> {
        let path = self.join(rel);
        fs::create_dir_all(&path)
            .map_err(|e| HarnessError::io(self.peer, format!("mkdir {}", path.display()), e))?;
        Ok(path)
    }
}

impl Drop for PeerDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_DIRS_VAR).is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("{}: kept test dir {}", self.peer, kept.display());
            }
        }
    }
}

/// A peer process in its own process group, output captured to a log file; on drop the
/// whole group gets SIGTERM, then SIGKILL if it lingers.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    peer: &'static str,
    child: Child,
    log: PathBuf,
    /// Process groups the peer made itself (Postfix's master calls setsid), killed too.
    detached: Vec<Pid>,
}

impl PeerProcess {
    pub(crate) fn spawn(peer: &'static str, cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let out = File::create(&log).map_err(|e| HarnessError::io(peer, "create log file", e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io(peer, "dup log file", e))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        tracing::debug!(peer, ?cmd, "spawning");
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(peer, format!("spawn {cmd:?}"), e))?;
        Ok(Self {
            peer,
            child,
            log,
            detached: Vec::new(),
        })
    }

    /// Also kill the process group led by `pid` on drop: for daemons that leave our group.
    pub(crate) fn adopt_group(&mut self, pid: i32) {
        if let Some(pid) = Pid::from_raw(pid) {
            self.detached.push(pid);
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `probe` until it succeeds, the process exits or [`READY_TIMEOUT`] passes;
    /// short back-off between attempts, and the log tail in the error.
    pub(crate) fn wait_ready<T>(
        &mut self,
        step: &str,
        mut probe: impl FnMut() -> std::result::Result<T, String>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let last = match probe() {
                Ok(v) => {
                    tracing::debug!(peer = self.peer, step, elapsed = ?start.elapsed(), "ready");
                    return Ok(v);
                }
                Err(e) => e,
            };
            let exited = self.exited();
            if exited.is_some() || start.elapsed() > READY_TIMEOUT {
                let last = match exited {
                    Some(status) => format!("process exited ({status}); last probe: {last}"),
                    None => last,
                };
                return Err(HarnessError::not_ready(
                    self.peer,
                    step,
                    start.elapsed(),
                    &last,
                    &self.log,
                    &self.log_tail(40),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let mut groups = vec![Pid::from_child(&self.child)];
        groups.extend(self.detached.iter().copied());
        for &pgid in &groups {
            // ESRCH just means the group is already gone.
            let _ = kill_process_group(pgid, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while (self.exited().is_none() || self.detached.iter().any(|&p| alive(p)))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Children that outlive their master (or ignore SIGTERM) go too.
        for &pgid in &groups {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// Whether a process that is not our child still runs. Zombies count as dead: PID 1 in
/// these containers does not always reap orphans.
fn alive(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

/// The last `lines` lines of a log file (whole file read from the last 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Finds `binary` in the usual places or says which package provides it.
pub(crate) fn require_binary(
    peer: &'static str,
    binary: &'static str,
    package: &'static str,
) -> Result<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    // Root's PATH usually has the sbin dirs, but not every CI shell's does.
    let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path_var)
        .chain(extra)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .ok_or(HarnessError::MissingBinary {
            peer,
            binary,
            package,
        })
}

/// `N` distinct free TCP ports on 127.0.0.1, all held open until every one is picked (a
/// port released and picked again made Dovecot refuse its config: "duplicate listener").
/// The peer binds them later, so another process may win the race: callers retry on
/// "address in use" (see [`PORT_ATTEMPTS`]).
pub(crate) fn free_ports<const N: usize>(peer: &'static str) -> Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io(peer, "pick an ephemeral port", e))?;
        *port = listener
            .local_addr()
            .map_err(|e| HarnessError::io(peer, "pick an ephemeral port", e))?
            .port();
        held.push(listener);
    }
    Ok(ports)
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Connects and reads the first line; Ok if it starts with `prefix`.
pub(crate) fn probe_banner(addr: SocketAddr, prefix: &str) -> std::result::Result<(), String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read banner from {addr}: {e}"))?;
    if line.starts_with(prefix) {
        Ok(())
    } else {
        Err(format!("unexpected banner from {addr}: {line:?}"))
    }
}

/// Runs a helper command to completion; a failure carries its output.
pub(crate) fn run(peer: &'static str, step: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(peer, format!("{step}: spawn {cmd:?}"), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(HarnessError::Command {
            peer,
            step: step.to_owned(),
            status: out.status.to_string(),
            output: text,
        })
    }
}

/// uid and gid of a system user (created by the peer's Debian package), from /etc/passwd.
pub(crate) fn system_user(peer: &'static str, user: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| HarnessError::io(peer, "read /etc/passwd", e))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            HarnessError::protocol(
                peer,
                "look up system user",
                format!("no user `{user}` in /etc/passwd (is the package installed?)"),
            )
        })
}

/// chown to a system user; peers that drop privileges must write there.
pub(crate) fn chown_to(peer: &'static str, path: &Path, user: &str) -> Result<()> {
    let (uid, gid) = system_user(peer, user)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| HarnessError::io(peer, format!("chown {} to {user}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_package() {
        let err = require_binary("demo", "passerelle-no-such-binary", "demo-package")
            .expect_err("must not exist");
        let msg = err.to_string();
        assert!(msg.contains("apt-get install -y demo-package"), "{msg}");
        assert!(msg.contains("passerelle-no-such-binary"), "{msg}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        fs::write(&log, "a\nb\nc\n").expect("write");
        assert_eq!(log_tail(&log, 2), "b\nc");
        assert!(log_tail(&dir.path().join("none"), 2).starts_with("(no log"));
    }
}
