//! OpenLDAP slapd with a temp mdb database, loaded with the caller's LDIF via slapadd.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{
    free_ports, loopback, require_binary, run, PeerDir, PeerProcess, PORT_ATTEMPTS,
};
use crate::{HarnessError, Result};

const PEER: &str = "slapd";

/// Builder for [`Slapd`].
#[derive(Debug, Clone)]
pub struct SlapdBuilder {
    suffix: String,
    root_password: String,
    ldif: Vec<String>,
    create_suffix_entry: bool,
}

impl Default for SlapdBuilder {
    fn default() -> Self {
        Self {
            suffix: "dc=passerelle,dc=test".to_owned(),
            root_password: "harness-root".to_owned(),
            ldif: Vec::new(),
            create_suffix_entry: true,
        }
    }
}

impl SlapdBuilder {
    /// The database suffix, e.g. `o=sesam-vitale,c=fr` (default `dc=passerelle,dc=test`).
    #[must_use]
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// Password of the root DN `cn=admin,<suffix>`.
    #[must_use]
    pub fn root_password(mut self, password: impl Into<String>) -> Self {
        self.root_password = password.into();
        self
    }

    /// LDIF entries loaded with slapadd before start (core, cosine and inetorgperson
    /// schemas are available).
    #[must_use]
    pub fn ldif(mut self, ldif: impl Into<String>) -> Self {
        self.ldif.push(ldif.into());
        self
    }

    /// Whether the harness adds the suffix entry itself (default true; supported first
    /// RDN attributes: `dc`, `o`, `ou`, `c`). Turn off when the LDIF contains it.
    #[must_use]
    pub fn create_suffix_entry(mut self, on: bool) -> Self {
        self.create_suffix_entry = on;
        self
    }

    pub fn start(self) -> Result<Slapd> {
        let slapd = require_binary(PEER, "slapd", "slapd")?;
        let slapadd = require_binary(PEER, "slapadd", "slapd")?;
        let ldapsearch = require_binary(PEER, "ldapsearch", "ldap-utils")?;
        let mut attempt = 1;
        loop {
            match self.try_start(&slapd, &slapadd, &ldapsearch) {
                Err(e) if e.is_port_race() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!("{e}; retrying with another port");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(&self, slapd: &Path, slapadd: &Path, ldapsearch: &Path) -> Result<Slapd> {
        let dir = PeerDir::new(PEER)?;
        dir.mkdir("db")?;
        let base = dir.path().display();
        let root_dn = format!("cn=admin,{}", self.suffix);
        let conf = dir.write(
            "slapd.conf",
            &format!(
                "# Written by passerelle-harness; nothing here is read from /etc/ldap/slapd.d.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {base}/slapd.pid
argsfile {base}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 67108864
suffix \"{suffix}\"
rootdn \"{root_dn}\"
rootpw {password}
directory {base}/db
",
                suffix = self.suffix,
                password = self.root_password,
            ),
        )?;
        let mut ldif = String::new();
        if self.create_suffix_entry {
            ldif.push_str(&suffix_entry(&self.suffix)?);
            ldif.push('\n');
        }
        for chunk in &self.ldif {
            ldif.push_str(chunk.trim());
            ldif.push_str("\n\n");
        }
        if !ldif.trim().is_empty() {
            let path = dir.write("data.ldif", &ldif)?;
            run(
                PEER,
                "slapadd",
                Command::new(slapadd)
                    .arg("-f")
                    .arg(&conf)
                    .arg("-l")
                    .arg(&path),
            )?;
        }

        let [port] = free_ports(PEER)?;
        let url = format!("ldap://127.0.0.1:{port}/");
        // -d 256 (stats) keeps slapd in the foreground and logs each operation.
        let mut process = PeerProcess::spawn(
            PEER,
            Command::new(slapd)
                .args(["-d", "256", "-h", &url, "-f"])
                .arg(&conf),
            dir.join("slapd.log"),
        )?;
        let addr = loopback(port);
        process.wait_ready("LDAP connect + anonymous search", || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            ldapsearch_raw(
                ldapsearch,
                &url,
                "",
                "base",
                "(objectClass=*)",
                &["namingContexts"],
            )
            .map_err(|e| e.to_string())
        })?;
        tracing::info!(%url, dir = %dir.path().display(), "slapd ready");
        Ok(Slapd {
            process,
            addr,
            url,
            suffix: self.suffix.clone(),
            root_dn,
            root_password: self.root_password.clone(),
            ldapsearch: ldapsearch.to_owned(),
            dir,
        })
    }
}

/// The entry for the suffix itself, from its first RDN.
fn suffix_entry(suffix: &str) -> Result<String> {
    let first = suffix.split(',').next().unwrap_or_default();
    let (attr, value) = first.split_once('=').ok_or_else(|| {
        HarnessError::protocol(PEER, "suffix entry", format!("bad suffix {suffix:?}"))
    })?;
    let classes = match attr.trim().to_ascii_lowercase().as_str() {
        "dc" => format!("objectClass: dcObject\nobjectClass: organization\no: {value}\n"),
        "o" => "objectClass: organization\n".to_owned(),
        "ou" => "objectClass: organizationalUnit\n".to_owned(),
        "c" => "objectClass: country\n".to_owned(),
        other => {
            return Err(HarnessError::protocol(
                PEER,
                "suffix entry",
                format!("cannot make an entry for RDN attribute {other:?}; put it in the LDIF"),
            ))
        }
    };
    Ok(format!("dn: {suffix}\n{classes}{attr}: {value}\n"))
}

fn ldapsearch_raw(
    ldapsearch: &Path,
    url: &str,
    base: &str,
    scope: &str,
    filter: &str,
    attrs: &[&str],
) -> Result<String> {
    run(
        PEER,
        &format!("ldapsearch {filter} under {base:?}"),
        Command::new(ldapsearch)
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-H",
                url,
                "-s",
                scope,
                "-b",
                base,
                filter,
            ])
            .args(attrs),
    )
}

/// A running slapd; killed and its temp dir removed on drop.
#[derive(Debug)]
pub struct Slapd {
    // Field order matters: the process must die before its dir goes.
    process: PeerProcess,
    addr: SocketAddr,
    url: String,
    suffix: String,
    root_dn: String,
    root_password: String,
    ldapsearch: PathBuf,
    dir: PeerDir,
}

impl Slapd {
    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// `ldap://127.0.0.1:<port>/`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// `cn=admin,<suffix>`
    pub fn root_dn(&self) -> &str {
        &self.root_dn
    }

    pub fn root_password(&self) -> &str {
        &self.root_password
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

    /// Anonymous subtree search under the suffix with the `ldapsearch` CLI; returns the LDIF
    /// it prints (unwrapped lines).
    pub fn search(&self, filter: &str, attrs: &[&str]) -> Result<String> {
        ldapsearch_raw(
            &self.ldapsearch,
            &self.url,
            &self.suffix,
            "sub",
            filter,
            attrs,
        )
    }
}
