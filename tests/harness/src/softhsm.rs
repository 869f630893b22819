//! SoftHSM2 tokens in a per-test token directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{require_binary, run, PeerDir};
use crate::{HarnessError, Result};

const PEER: &str = "softhsm2";

/// The PKCS#11 module of Debian's softhsm2 package.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// An initialised token. Find its slot by label: SoftHSM renumbers slot ids after init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub label: String,
    pub so_pin: String,
    pub user_pin: String,
}

/// Builder for [`SoftHsm`].
#[derive(Debug, Clone, Default)]
pub struct SoftHsmBuilder {
    tokens: Vec<Token>,
}

impl SoftHsmBuilder {
    /// Adds a token to initialise. Without any, one token `passerelle-test` with SO PIN
    /// `12345678` and user PIN `1234` is made.
    #[must_use]
    pub fn token(
        mut self,
        label: impl Into<String>,
        so_pin: impl Into<String>,
        user_pin: impl Into<String>,
    ) -> Self {
        self.tokens.push(Token {
            label: label.into(),
            so_pin: so_pin.into(),
            user_pin: user_pin.into(),
        });
        self
    }

    pub fn build(mut self) -> Result<SoftHsm> {
        let util = require_binary(PEER, "softhsm2-util", "softhsm2")?;
        if !Path::new(SOFTHSM_MODULE).is_file() {
            return Err(HarnessError::MissingBinary {
                peer: PEER,
                binary: SOFTHSM_MODULE,
                package: "softhsm2",
            });
        }
        if self.tokens.is_empty() {
            self = self.token("passerelle-test", "12345678", "1234");
        }
        let dir = PeerDir::new(PEER)?;
        let tokens_dir = dir.mkdir("tokens")?;
        let conf = dir.write(
            "softhsm2.conf",
            &format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = INFO\n",
                tokens_dir.display()
            ),
        )?;
        for t in &self.tokens {
            run(
                PEER,
                &format!("init token {:?}", t.label),
                Command::new(&util)
                    .env("SOFTHSM2_CONF", &conf)
                    .args(["--init-token", "--free", "--label", &t.label])
                    .args(["--so-pin", &t.so_pin, "--pin", &t.user_pin]),
            )?;
        }
        tracing::info!(conf = %conf.display(), tokens = self.tokens.len(), "softhsm2 tokens ready");
        Ok(SoftHsm {
            conf,
            tokens: self.tokens,
            dir,
        })
    }
}

/// A SoftHSM2 token store; its temp dir (and tokens) are removed on drop.
#[derive(Debug)]
pub struct SoftHsm {
    conf: PathBuf,
    tokens: Vec<Token>,
    dir: PeerDir,
}

impl SoftHsm {
    pub fn builder() -> SoftHsmBuilder {
        SoftHsmBuilder::default()
    }

    /// [`SOFTHSM_MODULE`], as a path.
    pub fn module_path(&self) -> &Path {
        Path::new(SOFTHSM_MODULE)
    }

    /// This store's `softhsm2.conf`.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The first token (the default one unless the builder named others).
    pub fn token(&self) -> &Token {
        &self.tokens[0]
    }

    /// Environment for child processes using the module (`Command::envs(hsm.env())`).
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.clone().into_os_string())]
    }

    /// Sets `SOFTHSM2_CONF` in this test process, for in-process cryptoki. Call it before
    /// the module is initialised. Process-wide: relies on nextest's process per test.
    pub fn set_process_env(&self) {
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
    }
}
