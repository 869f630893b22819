//! Postfix with its own config, queue and data dirs, smtpd on an ephemeral loopback port,
//! nothing ever leaving the machine.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{
    chown_to, free_ports, loopback, probe_banner, require_binary, run, PeerDir, PeerProcess,
    PORT_ATTEMPTS,
};
use crate::{HarnessError, Result, TlsFiles};

const PEER: &str = "postfix";

/// Services Postfix needs, all with `chroot n` (the temp dir has no chroot jail).
const MASTER_CF_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Builder for [`Postfix`].
#[derive(Debug, Clone)]
pub struct PostfixBuilder {
    domain: String,
    hostname: String,
    lmtp: Option<SocketAddr>,
    tls: Option<TlsFiles>,
    client_cert_fingerprints: Option<Vec<String>>,
    extra: Vec<String>,
}

impl Default for PostfixBuilder {
    fn default() -> Self {
        Self {
            domain: "passerelle.test".to_owned(),
            hostname: "mx.passerelle.test".to_owned(),
            lmtp: None,
            tls: None,
            client_cert_fingerprints: None,
            extra: Vec::new(),
        }
    }
}

impl PostfixBuilder {
    /// The mail domain this Postfix is final destination for (default `passerelle.test`).
    #[must_use]
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// `myhostname`, shown in the banner (default `mx.passerelle.test`).
    #[must_use]
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Delivers mail for the domain over LMTP (e.g. [`crate::Dovecot::lmtp_addr`]).
    /// Without it, local mail is bounced like everything else.
    #[must_use]
    pub fn deliver_to_lmtp(mut self, addr: SocketAddr) -> Self {
        self.lmtp = Some(addr);
        self
    }

    /// Offers STARTTLS with the caller's PEM files.
    #[must_use]
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Requires TLS and a client certificate whose SHA-256 fingerprint (Postfix format:
    /// uppercase hex pairs separated by `:`) is in `fingerprints`; everyone else is
    /// rejected at RCPT. Needs [`Self::tls`].
    #[must_use]
    pub fn require_client_cert(mut self, fingerprints: Vec<String>) -> Self {
        self.client_cert_fingerprints = Some(fingerprints);
        self
    }

    /// A raw main.cf line appended at the end (later lines win in Postfix).
    #[must_use]
    pub fn main_cf(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    pub fn start(self) -> Result<Postfix> {
        let binary = require_binary(PEER, "postfix", "postfix")?;
        if self.client_cert_fingerprints.is_some() && self.tls.is_none() {
            return Err(HarnessError::protocol(
                PEER,
                "configure",
                "require_client_cert needs tls(...)",
            ));
        }
        let mut attempt = 1;
        loop {
            match self.try_start(&binary) {
                Err(e) if e.is_port_race() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!("{e}; retrying with another port");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(&self, binary: &Path) -> Result<Postfix> {
        let dir = PeerDir::new(PEER)?;
        let conf = dir.mkdir("conf")?;
        dir.mkdir("queue")?;
        // master.lock lives here and master runs its lock as the postfix user.
        let data = dir.mkdir("data")?;
        chown_to(PEER, &data, "postfix")?;
        let [port] = free_ports(PEER)?;

        let main_cf = self.main_cf_text(&dir, port)?;
        dir.write("conf/main.cf", &main_cf)?;
        dir.write(
            "conf/master.cf",
            &format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF_SERVICES}"),
        )?;

        let mut process = PeerProcess::spawn(
            PEER,
            Command::new(binary).arg("-c").arg(&conf).arg("start-fg"),
            dir.join("postfix.log"),
        )?;
        let addr = loopback(port);
        let ready = process.wait_ready("SMTP banner", || probe_banner(addr, "220 "));
        if let Err(HarnessError::NotReady {
            peer,
            step,
            waited,
            detail,
        }) = ready
        {
            // `postfix check` explains most configuration mistakes better than the log.
            let check = match run(
                PEER,
                "postfix check",
                Command::new(binary).arg("-c").arg(&conf).arg("check"),
            ) {
                Ok(out) | Err(HarnessError::Command { output: out, .. }) => out,
                Err(e) => e.to_string(),
            };
            return Err(HarnessError::NotReady {
                peer,
                step,
                waited,
                detail: format!("{detail}\n--- postfix check ---\n{check}"),
            });
        }
        ready?;
        // master detaches into its own session, out of reach of our process group. It may
        // answer on port 25 a moment before its pid file is written (seen under load).
        let pid_file = dir.join("queue/pid/master.pid");
        let master_pid = process.wait_ready("master.pid", || {
            let text = std::fs::read_to_string(&pid_file)
                .map_err(|e| format!("read {}: {e}", pid_file.display()))?;
            text.trim()
                .parse::<i32>()
                .map_err(|e| format!("{text:?}: {e}"))
        })?;
        process.adopt_group(master_pid);
        tracing::info!(%addr, dir = %dir.path().display(), "postfix ready");
        Ok(Postfix {
            process,
            addr,
            conf,
            dir,
        })
    }

    fn main_cf_text(&self, dir: &PeerDir, port: u16) -> Result<String> {
        let base = dir.path().display();
        let (domain, hostname) = (&self.domain, &self.hostname);
        let mut c = format!(
            "# Written by passerelle-harness; nothing here is read from /etc/postfix.
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-{port}
maillog_file = /dev/stdout
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {hostname}
mydomain = {domain}
myorigin = $mydomain
mydestination = {domain}
# Loopback must not be trusted by IP: tests are all on 127.0.0.1.
mynetworks = 127.0.0.2/32
alias_maps =
alias_database =
local_recipient_maps =
smtpd_banner = $myhostname ESMTP passerelle-harness
# smtpd sleeps 1 s before each reject reply by default: pointless slowness in tests.
smtpd_error_sleep_time = 0s
# Nothing leaves the machine.
default_transport = error:5.7.1 passerelle test harness sends no outbound mail
relay_transport = error:5.7.1 passerelle test harness sends no outbound mail
# Retry quickly: a test should not wait minutes for a deferred message.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"
        );
        match self.lmtp {
            Some(lmtp) => {
                let _ = writeln!(c, "local_transport = lmtp:inet:{lmtp}");
            }
            None => c.push_str(
                "local_transport = error:5.1.1 no mailbox delivery configured in the harness\n",
            ),
        }
        if let Some(tls) = &self.tls {
            let _ = write!(
                c,
                "smtpd_tls_cert_file = {}
smtpd_tls_key_file = {}
smtpd_tls_CAfile = {}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
",
                tls.cert.display(),
                tls.key.display(),
                tls.ca.display()
            );
        }
        if let Some(fingerprints) = &self.client_cert_fingerprints {
            let mut map = String::new();
            for fp in fingerprints {
                let _ = writeln!(map, "{fp} ok");
            }
            let map_path = dir.write("conf/relay_clientcerts", &map)?;
            let _ = write!(
                c,
                "smtpd_tls_security_level = encrypt
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_fingerprint_digest = sha256
relay_clientcerts = texthash:{}
smtpd_relay_restrictions = permit_tls_clientcerts, reject_unauth_destination
smtpd_recipient_restrictions = permit_tls_clientcerts, reject
",
                map_path.display()
            );
        }
        for line in &self.extra {
            c.push_str(line);
            c.push('\n');
        }
        Ok(last_entry_wins(&c))
    }
}

/// main.cf with only the last entry of each parameter. Postfix would take the last one
/// too, but every process warns about each overridden entry through the postlog socket at
/// start; with a dozen such warnings queued before postlogd reads, postlogd blocked sending
/// its own warning to that full socket, and then every process that logs (smtpd before its
/// banner) blocked on it: a Postfix that never greets.
fn last_entry_wins(main_cf: &str) -> String {
    // Entries with their continuation lines (those starting with white space).
    let mut entries: Vec<(Option<&str>, String)> = Vec::new();
    for line in main_cf.lines() {
        match entries.last_mut() {
            Some((Some(_), text)) if line.starts_with([' ', '\t']) => {
                text.push('\n');
                text.push_str(line);
            }
            _ => {
                let key = line
                    .split_once('=')
                    .map(|(k, _)| k.trim())
                    .filter(|k| !k.is_empty() && !line.trim_start().starts_with('#'));
                entries.push((key, line.to_owned()));
            }
        }
    }
    let mut out = String::with_capacity(main_cf.len());
    for (n, (key, text)) in entries.iter().enumerate() {
        let overridden =
            key.is_some_and(|k| entries[n + 1..].iter().any(|(later, _)| *later == Some(k)));
        if !overridden {
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::last_entry_wins;

    #[test]
    fn a_later_main_cf_entry_replaces_the_earlier_one_with_its_continuation_lines() {
        let cf = "# a = comment\nmynetworks = 127.0.0.2/32\nrelay = x,\n    y\nmynetworks = 127.0.0.0/8\nrelay = z\n";
        assert_eq!(
            last_entry_wins(cf),
            "# a = comment\nmynetworks = 127.0.0.0/8\nrelay = z\n"
        );
    }
}

/// A running Postfix; stopped and its temp dir removed on drop.
#[derive(Debug)]
pub struct Postfix {
    // Field order matters: the process must die before its dir goes.
    process: PeerProcess,
    addr: SocketAddr,
    conf: PathBuf,
    dir: PeerDir,
}

impl Postfix {
    pub fn builder() -> PostfixBuilder {
        PostfixBuilder::default()
    }

    /// smtpd's loopback address.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The config dir (`postfix -c <dir> …`, `postqueue -c <dir> -p`).
    pub fn config_dir(&self) -> &Path {
        &self.conf
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last `lines` lines of Postfix's log (maillog goes there), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
