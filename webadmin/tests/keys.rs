//! Clés et certificats against a real SoftHSM2 token: generate a key, download its CSR (checked
//! by openssl), upload checks; and the device certificate generated in the token at first start.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::sync::Arc;

use common::logged_in;
use hyper::StatusCode;
use passerelle_harness::SoftHsm;
use passerelle_keystore::{KeyRef, Keystore, KeystoreConfig};
use passerelle_webadmin::{
    AdminServices, MAX_CERT_UPLOAD_BYTES, Webadmin, WebadminConfig, device_certificate,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Token {
    _hsm: SoftHsm,
    _dir: tempfile::TempDir,
    keystore: Keystore,
}

async fn token() -> anyhow::Result<Token> {
    let hsm = SoftHsm::builder().build()?;
    hsm.set_process_env();
    let dir = tempfile::tempdir()?;
    let pin_file = dir.path().join("user.pin");
    std::fs::write(&pin_file, format!("{}\n", hsm.token().user_pin))?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))?;
    let config = KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    };
    let keystore = Keystore::open(&config).await?;
    Ok(Token {
        _hsm: hsm,
        _dir: dir,
        keystore,
    })
}

fn multipart(label: &str, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\n");
    body.extend_from_slice(label.as_bytes());
    body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.pem\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    body
}

async fn generate(
    c: &mut common::Client,
    csrf: &str,
    label: &str,
) -> anyhow::Result<common::Reply> {
    c.post_form(
        "/cles/generer",
        &[("csrf", csrf), ("label", label), ("algorithm", "ec-p256")],
    )
    .await
}

/// `openssl x509 -req` with the test PKI's device CA.
fn sign_with_device_ca(csr: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let pki = passerelle_testpki::TestPki::generate(&passerelle_testpki::PkiOptions::new(8))?;
    let dir = tempfile::tempdir()?;
    pki.write_to(dir.path())?;
    // X.509 v3 (extensions), as rustls requires of the certificate the token key serves.
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let status = Command::new("openssl")
        .args(["x509", "-req", "-days", "20", "-extfile"])
        .arg(&ext)
        .arg("-in")
        .arg(csr)
        .arg("-CA")
        .arg(dir.path().join("device-ca.crt.pem"))
        .arg("-CAkey")
        .arg(dir.path().join("device-ca.key.pem"))
        .arg("-out")
        .arg(out)
        .output()?;
    anyhow::ensure!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_ssi_5100_generate_a_key_in_the_token_and_download_its_csr() -> anyhow::Result<()> {
    let token = token().await?;
    let services = AdminServices {
        keystore: Some(token.keystore.clone()),
        ..AdminServices::default()
    };
    let (server, mut c) = logged_in(services).await?;
    let csrf = c.session_csrf().await?;

    // Bad label: message next to the field, nothing generated.
    let r = generate(&mut c, &csrf, "<b>x</b>").await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"err-label\"") && r.body.contains("&lt;b&gt;x&lt;/b&gt;"));

    let r = generate(&mut c, &csrf, "web-test").await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Clé générée : web-test"));
    assert!(r.body.contains("sensitive, non-extractable, local"));
    let info = token.keystore.info(&KeyRef::from("web-test")).await?;
    assert!(info.sensitive && !info.extractable);

    let r = c
        .post_form(
            "/cles/csr",
            &[
                ("csrf", &csrf),
                ("label", "web-test"),
                ("cn", "passerelle.cabinet.local"),
                ("o", "Cabinet Test"),
            ],
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/pkcs10")
    );
    assert!(
        r.headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|d| d.contains("web-test.csr"))
    );
    assert!(r.body.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let csr = server.dir.path().join("web-test.csr");
    std::fs::write(&csr, &r.body)?;
    let out = Command::new("openssl")
        .args(["req", "-in"])
        .arg(&csr)
        .args(["-noout", "-verify", "-subject"])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("verify OK") || text.contains("Certificate request self-signature verify OK"),
        "{text}"
    );
    assert!(text.contains("passerelle.cabinet.local"), "{text}");

    // The CA signs the CSR; the certificate is imported beside the key.
    let issued = server.dir.path().join("web-test.crt.pem");
    sign_with_device_ca(&csr, &issued)?;
    let r = c
        .send(
            "POST",
            &format!("/cles/certificat?csrf={csrf}"),
            Some("multipart/form-data; boundary=XyZ"),
            multipart("web-test", &std::fs::read(&issued)?),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("Certificat importé : web-test"),
        "{}",
        r.body
    );
    let info = token.keystore.info(&KeyRef::from("web-test")).await?;
    assert!(
        info.certificate_subject
            .is_some_and(|s| s.contains("passerelle.cabinet.local"))
    );
    // Issued for 20 days: the dashboard warns it expires soon.
    let dash = c.get("/").await?.body;
    assert!(
        dash.contains("bientôt expiré (moins de 30 jours) pour la clé web-test"),
        "{dash}"
    );

    let j = c.get("/journal").await?;
    for action in ["key_generate", "key_csr", "certificate_import"] {
        assert!(j.body.contains(action), "audit lacks {action}");
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_upload_is_type_checked_bounded_and_must_certify_the_key() -> anyhow::Result<()>
{
    let token = token().await?;
    token
        .keystore
        .generate("web-test", passerelle_keystore::KeyAlgorithm::EcP256)
        .await?;
    let services = AdminServices {
        keystore: Some(token.keystore.clone()),
        ..AdminServices::default()
    };
    let (server, mut c) = logged_in(services).await?;
    let csrf = c.session_csrf().await?;
    let path = format!("/cles/certificat?csrf={csrf}");
    let r = c
        .send(
            "POST",
            &path,
            Some("multipart/form-data; boundary=XyZ"),
            multipart("web-test", b"not a certificate"),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"err-file\""), "{}", r.body);
    let key_pem = b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
    let r = c
        .send(
            "POST",
            &path,
            Some("multipart/form-data; boundary=XyZ"),
            multipart("web-test", key_pem),
        )
        .await?;
    assert!(r.body.contains("is not a certificate"), "{}", r.body);
    let big = vec![b'A'; MAX_CERT_UPLOAD_BYTES + 8192];
    let r = c
        .send(
            "POST",
            &path,
            Some("multipart/form-data; boundary=XyZ"),
            multipart("web-test", &big),
        )
        .await?;
    assert!(
        r.status == StatusCode::PAYLOAD_TOO_LARGE || r.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        r.status
    );

    // A certificate for another key is refused by the keystore, and said so.
    let pki = passerelle_testpki::TestPki::generate(&passerelle_testpki::PkiOptions::new(8))?;
    let other = pki.cert(passerelle_testpki::names::DEVICE_WEBADMIN)?.pem();
    let r = c
        .send(
            "POST",
            &path,
            Some("multipart/form-data; boundary=XyZ"),
            multipart("web-test", other.as_bytes()),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"failure\""), "{}", r.body);

    let j = c.get("/journal").await?;
    assert!(
        j.body.contains("certificate_import"),
        "audit lacks the import"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_generates_the_device_key_in_the_token_and_serves_https_with_it()
-> anyhow::Result<()> {
    let token = token().await?;
    let dir = tempfile::tempdir()?;
    let first = device_certificate(
        &token.keystore,
        "webadmin-device",
        "passerelle.local",
        "Cabinet",
        dir.path(),
    )
    .await?;
    let info = token
        .keystore
        .info(&KeyRef::from("webadmin-device"))
        .await?;
    assert!(info.sensitive && !info.extractable && info.local);
    assert!(
        info.certificate_subject
            .as_deref()
            .is_some_and(|s| s.contains("passerelle.local"))
    );
    // Second start: same key and certificate, nothing regenerated.
    let second = device_certificate(
        &token.keystore,
        "webadmin-device",
        "passerelle.local",
        "Cabinet",
        dir.path(),
    )
    .await?;
    let keys = token.keystore.list().await?;
    assert_eq!(
        keys.iter().filter(|k| k.label == "webadmin-device").count(),
        1
    );
    drop(first);

    let certified = token
        .keystore
        .certified_key(&KeyRef::from("webadmin-device"))
        .await?;
    let cert_der = certified.cert[0].to_vec();
    let config = WebadminConfig::new("127.0.0.1:0".parse()?, dir.path().join("data"));
    let admin = Webadmin::bind(config, AdminServices::default(), second).await?;
    let addr = admin.https_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(admin.run(async move {
        let _ = stopped.await;
    }));
    // A client that trusts exactly the self-signed device certificate completes a handshake.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.into())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(
            rustls::pki_types::ServerName::try_from("passerelle.local")?,
            tcp,
        )
        .await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: passerelle.local\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 302") && out.contains("location: /setup"),
        "{out}"
    );
    let _ = stop.send(());
    task.await??;
    Ok(())
}
