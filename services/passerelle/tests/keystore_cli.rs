//! `passerelle keystore …` against a real SoftHSM2 token: exit status and a
//! one-line reason, and a CSR that `openssl req -verify` accepts (#3).
//! The token store reaches the binary through `SOFTHSM2_CONF` in the child's
//! environment only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Token {
    /// One initialised token `appliance`, user PIN 1234, and a passerelle
    /// configuration whose `[keystore]` table points at it.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("tokens dir");
        let softhsm_conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &softhsm_conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let init = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &softhsm_conf)
            .args(["--init-token", "--free", "--label", "appliance"])
            .args(["--so-pin", "12345678", "--pin", "1234"])
            .output()
            .expect("run softhsm2-util (apt-get install -y softhsm2)");
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let token = Self {
            conf: dir.path().join("passerelle.toml"),
            dir,
        };
        token.write_config("1234");
        token
    }

    fn write_config(&self, pin: &str) {
        let pin_file = self.dir.path().join("user.pin");
        std::fs::write(&pin_file, format!("{pin}\n")).expect("pin file");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let demo = succeeded(
            "config demo",
            &passerelle(&self.conf_env(), &["config", "demo"]),
        );
        let config = format!(
            "{demo}\n[keystore]\nmodule = {MODULE:?}\ntoken_label = \"appliance\"\npin_file = {:?}\n",
            pin_file.display().to_string()
        );
        std::fs::write(&self.conf, config).expect("passerelle.toml");
    }

    fn conf_env(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn keystore(&self, args: &[&str]) -> Output {
        let mut full = vec![
            "keystore",
            "--config",
            self.conf.to_str().expect("utf-8 path"),
        ];
        full.extend_from_slice(args);
        passerelle(&self.conf_env(), &full)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn passerelle(softhsm_conf: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .env("SOFTHSM2_CONF", softhsm_conf)
        .current_dir(softhsm_conf.parent().expect("temp dir"))
        .args(args)
        .output()
        .expect("run passerelle")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of a command that must have succeeded; its stderr otherwise.
fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

/// The single stderr line of a failed command.
fn reason(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err:?}"
    );
    err.trim_end().to_owned()
}

#[test]
fn cli_generates_a_key_and_writes_a_csr_that_openssl_verifies() {
    let token = Token::new();
    let out = token.keystore(&["generate", "--label", "org-auth-cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("org-auth-cli")
            && stdout(&out).contains("sensitive=true extractable=false"),
        "{}",
        stdout(&out)
    );

    let csr = token.path("org-auth-cli.csr.pem");
    let out = token.keystore(&[
        "csr",
        "--label",
        "org-auth-cli",
        "--out",
        csr.to_str().expect("utf-8 path"),
        "org-auth-cli",
        "--id-nat",
        "318751275100020",
        "--organization",
        "CH DE TEST",
        "--department",
        "Paris",
        "--department-code",
        "75",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = Command::new("openssl")
        .args([
            "req", "-verify", "-noout", "-subject", "-nameopt", "RFC2253", "-in",
        ])
        .arg(&csr)
        .output()
        .expect("run openssl");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stderr).contains("verify OK"));
    assert_eq!(
        stdout(&verify).trim(),
        "subject=CN=Authentification MSS,OU=318751275100020,O=CH DE TEST,ST=Paris (75),C=FR"
    );

    let listed = succeeded("list", &token.keystore(&["list"]));
    assert_eq!(listed.lines().count(), 1, "{listed}");
}

#[test]
fn cli_failures_exit_non_zero_with_one_line_naming_what_was_wrong() {
    let token = Token::new();
    succeeded(
        "generate",
        &token.keystore(&["generate", "--label", "k", "--algorithm", "ec-p256"]),
    );

    let garbage = token.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let out = token.keystore(&[
        "import-cert",
        "--label",
        "k",
        garbage.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(reason(&out).contains("garbage.pem"), "{}", reason(&out));

    let out = token.keystore(&["delete", "--label", "absent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        reason(&out).contains("no key \"absent\""),
        "{}",
        reason(&out)
    );

    let out = token.keystore(&["delete", "--id", "xyz"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed id is a usage error"
    );
    assert!(reason(&out).contains("invalid key id"), "{}", reason(&out));

    token.write_config("9999");
    let out = token.keystore(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        reason(&out).contains("CKR_PIN_INCORRECT"),
        "{}",
        reason(&out)
    );
}
