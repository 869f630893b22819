//! The daemon as a user meets it: started from a configuration file or the embedded demo,
//! answering on its loopback status port, stopping cleanly on SIGTERM, and refusing a bad
//! configuration with the key and the reason.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_passerelle");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("an ephemeral loopback port")
}

/// Connects until the daemon accepts, within a deadline; returns the HTTP response.
fn get_when_ready(port: u16, path: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("passerelle exited before answering: {status}");
        }
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return http_get(stream, path),
            Err(err) if Instant::now() < deadline => {
                // Not listening yet: back off briefly and connect again.
                let _ = err;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("status port {port} never answered: {err}"),
        }
    }
}

fn http_get(mut stream: TcpStream, path: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    child.wait().expect("wait for passerelle")
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("passerelle.toml");
    let text = format!(
        "[general]\nprofile = \"practice\"\ndata_dir = \"{}\"\n\n[status]\nlisten = \"127.0.0.1:{port}\"\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn run_answers_healthz_and_metrics_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start passerelle");

    let health = get_when_ready(port, "/healthz", &mut child);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert!(health.contains("\"profile\":\"practice\""), "{health}");

    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let metrics = http_get(stream, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("# TYPE passerelle_queue_depth gauge"),
        "{metrics}"
    );

    let status = terminate(&mut child);
    assert!(
        status.success(),
        "passerelle exit status after SIGTERM: {status}"
    );
    assert!(
        dir.path().join("data/queue").is_dir(),
        "the queue lives under data_dir"
    );
}

#[test]
fn run_demo_keeps_its_data_under_var_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["run", "--demo"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start passerelle --demo");
    let health = get_when_ready(8079, "/healthz", &mut child);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
    assert!(
        dir.path().join("var/queue").is_dir(),
        "demo data under ./var"
    );
}

#[test]
fn malformed_config_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[general]\nprofile = \"practice\"\ndata_dir = \"/tmp/x\"\n[queue]\nfirst_retry = \"soon\"\n",
    )
    .expect("write");
    for verb in [&["run"][..], &["config", "check"][..]] {
        let output = Command::new(BIN)
            .args(verb)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run passerelle");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{verb:?}: {stderr}");
        assert!(stderr.contains("queue.first_retry"), "{verb:?}: {stderr}");
        assert!(stderr.contains("line 5"), "{verb:?}: {stderr}");
    }
}

#[test]
fn status_listener_on_a_lan_address_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("public.toml");
    std::fs::write(
        &path,
        "[general]\nprofile = \"operator\"\ndata_dir = \"/tmp/x\"\n[status]\nlisten = \"0.0.0.0:8079\"\n",
    )
    .expect("write");
    let output = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .expect("run passerelle");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("status.listen"), "{stderr}");
}

fn run_expecting_refusal(dir: &Path, extra: &str) -> String {
    let path = dir.join("passerelle.toml");
    let text = format!(
        "[general]\nprofile = \"operator\"\ndata_dir = \"{}\"\n[status]\nlisten = \"127.0.0.1:{}\"\n{extra}",
        dir.join("data").display(),
        free_port()
    );
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run passerelle");
    assert!(!output.status.success(), "passerelle must refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn ex_ssi_5100_daemon_refuses_to_start_without_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = dir.path().join("token.pin");
    std::fs::write(&pin, "1234\n").expect("pin");
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let stderr = run_expecting_refusal(
        dir.path(),
        &format!(
            "[keystore]\nmodule = \"{}\"\ntoken_label = \"absent\"\npin_file = \"{}\"\n",
            dir.path().join("no-such-module.so").display(),
            pin.display()
        ),
    );
    assert!(stderr.contains("keystore"), "{stderr}");
    assert!(stderr.contains("no-such-module.so"), "{stderr}");
}

#[test]
fn re_ope_5040_daemon_refuses_to_start_with_an_unpinned_anchor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let anchors = dir.path().join("anchors");
    std::fs::create_dir_all(&anchors).expect("anchors dir");
    // A CA certificate nobody pinned: the check must name it, not trust it.
    let ca = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=Unpinned CA"])
        .arg("-keyout")
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(anchors.join("unpinned.pem"))
        .output()
        .expect("openssl is installed");
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    let pins = dir.path().join("pins.sha256");
    std::fs::write(&pins, "").expect("pins");
    let stderr = run_expecting_refusal(
        dir.path(),
        &format!(
            "[trust]\nanchors_dir = \"{}\"\npins_file = \"{}\"\ncrl_cache_dir = \"{}\"\n[trust.profiles]\n",
            anchors.display(),
            pins.display(),
            dir.path().join("crl").display()
        ),
    );
    assert!(stderr.contains("anchors"), "{stderr}");
    assert!(stderr.contains("unpinned.pem"), "{stderr}");
}

#[test]
fn ex_ssi_5100_web_admin_serves_https_with_the_device_key_generated_in_the_token() {
    let softhsm = passerelle_harness::SoftHsm::builder()
        .build()
        .expect("a SoftHSM2 token");
    let token = softhsm.token();
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = dir.path().join("token.pin");
    std::fs::write(&pin, format!("{}\n", token.user_pin)).expect("pin");
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let admin_port = free_port();
    let path = dir.path().join("passerelle.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\nprofile = \"practice\"\ndata_dir = \"{data}\"\n\
             [status]\nlisten = \"127.0.0.1:{status}\"\n\
             [keystore]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{pin}\"\n\
             [device]\nname = \"boitier.cabinet.test\"\norganization = \"Cabinet de test\"\n\
             [webadmin]\nlisten = \"127.0.0.1:{admin_port}\"\ndata_dir = \"{data}/webadmin\"\n",
            data = dir.path().join("data").display(),
            status = free_port(),
            module = softhsm.module_path().display(),
            label = token.label,
            pin = pin.display(),
        ),
    )
    .expect("write config");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .envs(softhsm.env())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start passerelle");

    // Ready when the HTTPS port accepts; then look at the certificate it presents.
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "passerelle exited"
        );
        assert!(Instant::now() < deadline, "web admin never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{admin_port}")])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let shown = String::from_utf8_lossy(&s_client.stdout);
    assert!(shown.contains("boitier.cabinet.test"), "{shown}");

    // The key behind it lives in the token, sensitive and not extractable.
    let listed = Command::new("pkcs11-tool")
        .args(["--module"])
        .arg(softhsm.module_path())
        .args([
            "--token-label",
            &token.label,
            "--login",
            "--pin",
            &token.user_pin,
        ])
        .args(["--list-objects", "--type", "privkey"])
        .envs(softhsm.env())
        .output()
        .expect("pkcs11-tool (opensc)");
    let objects = String::from_utf8_lossy(&listed.stdout);
    assert!(objects.contains("label:      device"), "{objects}");
    assert!(objects.contains("never extractable"), "{objects}");

    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
}
