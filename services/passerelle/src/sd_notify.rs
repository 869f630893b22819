//! systemd service notifications (`sd_notify(3)`): `READY=1` once the listeners are bound,
//! `WATCHDOG=1` at half the unit's `WatchdogSec=`, `STOPPING=1` on shutdown. One datagram to
//! `$NOTIFY_SOCKET` each; outside systemd (no socket) they are no-ops. Proven by the qemu
//! system test (tests/system): the unit is `Type=notify` with `WatchdogSec=`.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` to systemd; `Ok(false)` when not started by systemd with `Type=notify`.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // Abstract namespace, as systemd uses for the system manager's socket.
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// Half the unit's watchdog timeout, when systemd expects pings from this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Logs instead of failing: a lost notification is systemd's to notice (it times out).
pub fn send(state: &str) {
    if let Err(err) = notify(state) {
        tracing::warn!(error = %err, state, "sd_notify failed");
    }
}
