//! Dovecot (IMAP, optional POP3, LMTP) with a passwd-file of test users and maildirs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lineclient::LineClient;
use crate::process::{
    chown_to, free_ports, loopback, probe_banner, require_binary, PeerDir, PeerProcess,
    PORT_ATTEMPTS,
};
use crate::{HarnessError, Result, TlsFiles};

const PEER: &str = "dovecot";
/// Mail processes run as Debian's `mail` user: Dovecot refuses root for them.
const MAIL_USER: &str = "mail";

/// Builder for [`Dovecot`].
#[derive(Debug, Clone, Default)]
pub struct DovecotBuilder {
    users: Vec<(String, String)>,
    pop3: bool,
    tls: Option<TlsFiles>,
    client_cert_auth: bool,
    master: Option<(String, String)>,
    mdbox: bool,
    extra: Vec<String>,
}

impl DovecotBuilder {
    /// A user that can log in with PLAIN/LOGIN and receive mail over LMTP. Use full
    /// addresses (`alice@passerelle.test`): Postfix's LMTP client sends them as is.
    #[must_use]
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Also serve POP3 on an ephemeral port.
    #[must_use]
    pub fn pop3(mut self, on: bool) -> Self {
        self.pop3 = on;
        self
    }

    /// STARTTLS on IMAP/POP3 plus an implicit-TLS IMAPS port, with the caller's PEM files.
    #[must_use]
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Requires TLS with a client certificate chaining to the TLS CA and logs users in with
    /// SASL EXTERNAL, the username taken from the certificate's commonName. Any user name
    /// is accepted for mail (static userdb). Needs [`Self::tls`].
    #[must_use]
    pub fn client_cert_auth(mut self, on: bool) -> Self {
        self.client_cert_auth = on;
        self
    }

    /// A master user (Dovecot's `master = yes` passdb): it logs in as any user with SASL
    /// PLAIN, the user as authorization identity, or as `user*master` with LOGIN.
    #[must_use]
    pub fn master_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.master = Some((name.into(), password.into()));
        self
    }

    /// Mailboxes in Dovecot's multi-dbox format instead of maildirs (counted with
    /// `doveadm`).
    #[must_use]
    pub fn mdbox(mut self, on: bool) -> Self {
        self.mdbox = on;
        self
    }

    /// Raw dovecot.conf lines appended at the end (e.g. an oauth2 passdb).
    #[must_use]
    pub fn extra_config(mut self, snippet: impl Into<String>) -> Self {
        self.extra.push(snippet.into());
        self
    }

    pub fn start(self) -> Result<Dovecot> {
        let binary = require_binary(PEER, "dovecot", "dovecot-imapd")?;
        if self.client_cert_auth && self.tls.is_none() {
            return Err(HarnessError::protocol(
                PEER,
                "configure",
                "client_cert_auth needs tls(...)",
            ));
        }
        let mut attempt = 1;
        loop {
            match self.try_start(&binary) {
                Err(e) if e.is_port_race() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!("{e}; retrying with other ports");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(&self, binary: &Path) -> Result<Dovecot> {
        let dir = PeerDir::new(PEER)?;
        let mail = dir.mkdir("mail")?;
        chown_to(PEER, &mail, MAIL_USER)?;
        let [imap, lmtp, pop3, imaps] = free_ports(PEER)?;
        let pop3 = self.pop3.then_some(pop3);
        let imaps = self.tls.is_some().then_some(imaps);

        let mut users = String::new();
        for (name, password) in &self.users {
            // user:password:uid:gid:gecos:home:shell:extra — defaults come from userdb.
            let _ = writeln!(users, "{name}:{{PLAIN}}{password}::::::");
        }
        let users_file = dir.write("users", &users)?;
        let mut conf = self.config(&dir, &mail, &users_file, imap, lmtp, pop3, imaps);
        if let Some((name, password)) = &self.master {
            let masters = dir.write("master-users", &format!("{name}:{{PLAIN}}{password}\n"))?;
            let _ = write!(
                conf,
                "auth_master_user_separator = *
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {}
  master = yes
}}
",
                masters.display()
            );
        }
        let conf_path = dir.write("dovecot.conf", &conf)?;

        let mut process = PeerProcess::spawn(
            PEER,
            Command::new(binary).arg("-F").arg("-c").arg(&conf_path),
            dir.join("dovecot.log"),
        )?;
        process.wait_ready("IMAP greeting", || probe_banner(loopback(imap), "* OK"))?;
        process.wait_ready("LMTP greeting", || probe_banner(loopback(lmtp), "220 "))?;
        if let Some(port) = pop3 {
            process.wait_ready("POP3 greeting", || probe_banner(loopback(port), "+OK"))?;
        }
        tracing::info!(imap, lmtp, dir = %dir.path().display(), "dovecot ready");
        Ok(Dovecot {
            process,
            mail,
            conf_path,
            mdbox: self.mdbox,
            imap: loopback(imap),
            lmtp: loopback(lmtp),
            pop3: pop3.map(loopback),
            imaps: imaps.map(loopback),
            dir,
        })
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    fn config(
        &self,
        dir: &PeerDir,
        mail: &Path,
        users: &Path,
        imap: u16,
        lmtp: u16,
        pop3: Option<u16>,
        imaps: Option<u16>,
    ) -> String {
        let base = dir.path().display();
        let mail = mail.display();
        let users = users.display();
        let protocols = if pop3.is_some() {
            "imap pop3 lmtp"
        } else {
            "imap lmtp"
        };
        let mut c = format!(
            "# Written by passerelle-harness; nothing here is read from /etc/dovecot.
base_dir = {base}/run
state_dir = {base}/state
instance_name = passerelle-{imap}
protocols = {protocols}
listen = 127.0.0.1
log_path = /dev/stderr
disable_plaintext_auth = no
first_valid_uid = 1
mail_uid = {MAIL_USER}
mail_gid = {MAIL_USER}
mail_location = {format}:{mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
  default_fields = uid={MAIL_USER} gid={MAIL_USER} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
",
            imaps = imaps.unwrap_or(0),
            format = if self.mdbox { "mdbox" } else { "maildir" },
        );
        if let Some(port) = pop3 {
            let _ = write!(
                c,
                "service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"
            );
        }
        self.tls_config(&mut c, &mail);
        for extra in &self.extra {
            c.push_str(extra);
            c.push('\n');
        }
        c
    }

    fn tls_config(&self, c: &mut String, mail: &impl std::fmt::Display) {
        match &self.tls {
            None => c.push_str("ssl = no\nauth_mechanisms = plain login\n"),
            Some(tls) => {
                let _ = write!(
                    c,
                    "ssl_cert = <{}\nssl_key = <{}\nssl_ca = <{}\n",
                    tls.cert.display(),
                    tls.key.display(),
                    tls.ca.display()
                );
                if self.client_cert_auth {
                    // Facts from test-infra.md: without ssl_require_crl = no every cert
                    // fails for lack of a CRL; EXTERNAL only via the static passdb.
                    let _ = write!(
                        c,
                        "ssl = required
ssl_verify_client_cert = yes
ssl_require_crl = no
auth_ssl_require_client_cert = yes
auth_ssl_username_from_cert = yes
auth_mechanisms = external plain login
passdb {{
  driver = static
  args = nopassword=y
  mechanisms = external
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER} home={mail}/%u allow_all_users=yes
}}
"
                    );
                } else {
                    c.push_str("ssl = yes\nauth_mechanisms = plain login\n");
                }
            }
        }
    }
}

/// A running Dovecot; killed and its temp dir removed on drop.
#[derive(Debug)]
pub struct Dovecot {
    // Field order matters: the process must die before its dir goes.
    process: PeerProcess,
    mail: PathBuf,
    conf_path: PathBuf,
    mdbox: bool,
    imap: SocketAddr,
    lmtp: SocketAddr,
    pop3: Option<SocketAddr>,
    imaps: Option<SocketAddr>,
    dir: PeerDir,
}

impl Dovecot {
    pub fn builder() -> DovecotBuilder {
        DovecotBuilder::default()
    }

    /// IMAP (plain, STARTTLS when TLS is on).
    pub fn imap_addr(&self) -> SocketAddr {
        self.imap
    }

    /// Implicit-TLS IMAP, when TLS is on.
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        self.imaps
    }

    /// POP3, when enabled.
    pub fn pop3_addr(&self) -> Option<SocketAddr> {
        self.pop3
    }

    /// LMTP, e.g. for Postfix's `local_transport`.
    pub fn lmtp_addr(&self) -> SocketAddr {
        self.lmtp
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.conf_path
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last `lines` lines of Dovecot's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The maildir holding `user`'s INBOX.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.mail.join(user)
    }

    /// Messages in `user`'s INBOX, counted in the maildir (new + cur) or asked of `doveadm`
    /// (mdbox); 0 before the first delivery created it.
    pub fn inbox_count(&self, user: &str) -> Result<usize> {
        if self.mdbox {
            return self.doveadm_inbox_count(user);
        }
        let mut n = 0;
        for sub in ["new", "cur"] {
            let path = self.maildir(user).join(sub);
            match std::fs::read_dir(&path) {
                Ok(entries) => n += entries.count(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(HarnessError::io(
                        PEER,
                        format!("list {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(n)
    }

    fn doveadm_inbox_count(&self, user: &str) -> Result<usize> {
        let step = format!("doveadm mailbox status of {user}");
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf_path)
            .args([
                "-f", "flow", "mailbox", "status", "-u", user, "messages", "INBOX",
            ])
            .output()
            .map_err(|e| HarnessError::io(PEER, step.clone(), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // No delivery yet: the INBOX does not exist.
            if stderr.contains("doesn't exist") {
                return Ok(0);
            }
            return Err(HarnessError::protocol(PEER, step, stderr.trim().to_owned()));
        }
        // `INBOX messages=N` (the flow formatter names the mailbox first).
        text.split_whitespace()
            .find_map(|field| field.strip_prefix("messages="))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| HarnessError::protocol(PEER, step, format!("answer {text:?}")))
    }

    /// Waits (polling the maildir, bounded by `timeout`) until `user`'s INBOX holds at least
    /// `count` messages; returns the count. Delivery through Postfix is asynchronous.
    pub fn wait_for_inbox_count(
        &self,
        user: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<usize> {
        let start = Instant::now();
        loop {
            let n = self.inbox_count(user)?;
            if n >= count {
                return Ok(n);
            }
            if start.elapsed() > timeout {
                return Err(HarnessError::not_ready(
                    PEER,
                    format!("INBOX of {user} to reach {count} messages"),
                    start.elapsed(),
                    &format!("{n} messages"),
                    self.log_path(),
                    &self.log_tail(40),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Delivers `message` (headers + body, `\n` or `\r\n` line ends) to `to` over LMTP.
    pub fn deliver(&self, from: &str, to: &str, message: &str) -> Result<()> {
        let step = format!("LMTP delivery to {to}");
        let io = |e| HarnessError::io(PEER, step.clone(), e);
        let mut c = LineClient::connect(self.lmtp).map_err(io)?;
        let expect = |reply: crate::lineclient::SmtpReply, what: &str| {
            if reply.code / 100 == 2 || reply.code == 354 {
                Ok(())
            } else {
                Err(HarnessError::protocol(
                    PEER,
                    step.clone(),
                    format!("{what}: {reply:?}"),
                ))
            }
        };
        expect(c.smtp_reply().map_err(io)?, "greeting")?;
        expect(c.smtp_command("LHLO harness.test").map_err(io)?, "LHLO")?;
        expect(
            c.smtp_command(&format!("MAIL FROM:<{from}>")).map_err(io)?,
            "MAIL",
        )?;
        expect(
            c.smtp_command(&format!("RCPT TO:<{to}>")).map_err(io)?,
            "RCPT",
        )?;
        expect(c.smtp_command("DATA").map_err(io)?, "DATA")?;
        c.smtp_data(message).map_err(io)?;
        expect(c.smtp_reply().map_err(io)?, "end of data")?;
        let _ = c.smtp_command("QUIT");
        Ok(())
    }
}
