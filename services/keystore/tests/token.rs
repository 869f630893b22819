//! The keystore against a real SoftHSM2 token: key protection flags, CSRs
//! that openssl verifies, certificate import, and the bad-input errors.

mod common;

use std::process::Command;

use anyhow::Context as _;
use passerelle_keystore::{KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, KeystoreError, Subject};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_ssi_5100_generated_private_keys_are_sensitive_and_not_extractable() -> anyhow::Result<()>
{
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    for (label, alg) in [
        ("rsa2048", KeyAlgorithm::Rsa2048),
        ("rsa3072", KeyAlgorithm::Rsa3072),
        ("p256", KeyAlgorithm::EcP256),
    ] {
        let info = ks.generate(label, alg).await?;
        assert_eq!(info.algorithm, alg);
        assert!(info.sensitive, "{label}: CKA_SENSITIVE must be true");
        assert!(!info.extractable, "{label}: CKA_EXTRACTABLE must be false");
        assert!(
            info.always_sensitive && info.never_extractable && info.local,
            "{info:?}"
        );
        assert_eq!(info.id.as_bytes().len(), 16);
    }
    let listed = ks.list().await?;
    let labels: Vec<&str> = listed.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["p256", "rsa2048", "rsa3072"]);
    drop(ks);

    // A second witness that does not go through this crate: OpenSC's view of
    // the private key objects.
    let out = Command::new("pkcs11-tool")
        .envs(env.hsm.env())
        .args(["--module", &env.config.module.to_string_lossy()])
        .args(["--token-label", &env.config.token_label])
        .args(["--login", "--pin", &env.hsm.token().user_pin])
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .context("run pkcs11-tool (apt-get install -y opensc)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listing}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let access: Vec<&str> = listing
        .lines()
        .filter(|l| l.trim_start().starts_with("Access:"))
        .collect();
    assert_eq!(access.len(), 3, "{listing}");
    for line in access {
        let flags: Vec<&str> = line
            .trim_start()
            .trim_start_matches("Access:")
            .split(',')
            .map(str::trim)
            .collect();
        assert!(
            flags.contains(&"sensitive")
                && flags.contains(&"never extractable")
                && !flags.contains(&"extractable"),
            "{line}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_label_is_refused() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    ks.generate("org-auth-cli", KeyAlgorithm::EcP256).await?;
    let err = ks
        .generate("org-auth-cli", KeyAlgorithm::Rsa2048)
        .await
        .expect_err("duplicate");
    assert!(matches!(err, KeystoreError::KeyExists { .. }), "{err}");
    Ok(())
}

/// `close` returns once the session is closed: every handle (a `TokenKey`
/// too) then fails with `WorkerGone` instead of reaching the module, and the
/// token opens again in the same process (the module stays loaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_session_for_every_handle_and_the_token_reopens() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    ks.generate("oct", KeyAlgorithm::Rsa2048).await?;
    let key = ks.key(&KeyRef::from("oct")).await?;
    ks.close().await;
    let err = ks.list().await.expect_err("closed");
    assert!(matches!(err, KeystoreError::WorkerGone { .. }), "{err}");
    let err = key.decrypt_rsa_pkcs1(&[0; 256]).await.expect_err("closed");
    assert!(matches!(err, KeystoreError::WorkerGone { .. }), "{err}");
    // Closing twice is harmless.
    ks.close().await;

    let again = Keystore::open(&env.config).await?;
    assert_eq!(again.list().await?.len(), 1);
    again.close().await;
    Ok(())
}

/// The CSR path the CLI takes (`Keystore::csr`), for RSA and EC keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_signed_in_the_token_verifies_with_openssl_req() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    let subjects = [
        (
            KeyAlgorithm::Rsa2048,
            common::org_auth_cli_subject(),
            "CN=Authentification MSS,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR",
        ),
        (
            KeyAlgorithm::EcP256,
            Subject::ConnectorServer {
                fqdn: "mss.clinique.example.fr".to_owned(),
                id_nat_prefix: "3".to_owned(),
                id_nat_struct: "18751275100020".to_owned(),
                organization: "CLINIQUE DU PARC, SAS".to_owned(),
                department: passerelle_keystore::Department {
                    name: "Hauts-de-Seine".to_owned(),
                    code: "92".to_owned(),
                },
            },
            "CN=mss.clinique.example.fr,OU=318751275100020,O=CLINIQUE DU PARC\\, SAS,ST=Hauts-de-Seine (92),C=FR",
        ),
    ];
    for (alg, subject, expected) in subjects {
        let label = alg.as_str();
        ks.generate(label, alg).await?;
        let pem = ks.csr(&KeyRef::from(label), &subject).await?;
        let path = env.dir.path().join(format!("{label}.csr.pem"));
        std::fs::write(&path, &pem)?;
        let verify =
            common::openssl(&["req", "-verify", "-noout", "-in", common::path_str(&path)?])?;
        assert!(verify.contains("verify OK"), "{verify}");
        let printed = common::openssl(&[
            "req",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            common::path_str(&path)?,
        ])?;
        assert_eq!(printed.trim(), format!("subject={expected}"));
        // The request carries the token's public key, not some other one.
        let token_key = ks.key(&KeyRef::from(label)).await?;
        let pubkey =
            common::openssl(&["req", "-noout", "-pubkey", "-in", common::path_str(&path)?])?;
        let spki_der = pem_body(&pubkey)?;
        assert!(
            spki_der
                .windows(token_key.public_key_bits().len())
                .any(|w| w == token_key.public_key_bits()),
            "CSR public key is not the token key"
        );
    }
    Ok(())
}

fn pem_body(pem: &str) -> anyhow::Result<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .map(|mut s| s.write_all(b64.as_bytes()))
                .transpose()?;
            child.wait_with_output()
        })?;
    Ok(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_certificate_is_imported_beside_its_key() -> anyhow::Result<()> {
    let env = common::token()?;
    let pki = common::PkiFiles::generate()?;
    let ks = Keystore::open(&env.config).await?;
    let key = KeyRef::from("org-auth-cli");
    let generated = ks.generate("org-auth-cli", KeyAlgorithm::Rsa2048).await?;
    let csr = ks.csr(&key, &common::org_auth_cli_subject()).await?;
    let cert = pki.issue_org_auth_cli(&csr)?;

    let info = ks.import_certificate(&key, &cert).await?;
    assert_eq!(info.id, generated.id);
    assert_eq!(
        info.certificate_subject.as_deref(),
        Some(
            "CN=Authentification MSS, OU=318751275100020, O=AGENCE DES SYSTEMES D'INFORMATION PARTAG, ST=Paris (75), C=FR"
        )
    );
    // Stored as a token object with the key's CKA_ID, so rustls gets it back.
    let certified = ks.certified_key(&key).await?;
    assert_eq!(certified.cert.len(), 1);
    assert_eq!(
        ks.list().await?[0].certificate_subject,
        info.certificate_subject
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_key_is_refused() -> anyhow::Result<()> {
    let env = common::token()?;
    let pki = common::PkiFiles::generate()?;
    let ks = Keystore::open(&env.config).await?;
    let key = KeyRef::from("org-auth-cli");
    ks.generate("org-auth-cli", KeyAlgorithm::Rsa2048).await?;
    // Same subject, same CA, but the test PKI's own (software) key.
    let foreign = pki.path("org-auth-cli.crt.pem");
    let err = ks
        .import_certificate(&key, &foreign)
        .await
        .expect_err("foreign key");
    assert!(
        matches!(err, KeystoreError::CertificateKeyMismatch { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("org-auth-cli.crt.pem") && msg.contains("does not match key"),
        "{msg}"
    );
    assert_eq!(
        ks.info(&key).await?.certificate_subject,
        None,
        "nothing stored"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_certificate_file_is_named() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    let key = KeyRef::from("k");
    ks.generate("k", KeyAlgorithm::EcP256).await?;

    let garbage = env.dir.path().join("garbage.der");
    std::fs::write(&garbage, b"\x30\x82\x01\x00not a certificate")?;
    let err = ks
        .import_certificate(&key, &garbage)
        .await
        .expect_err("garbage");
    assert!(
        matches!(err, KeystoreError::CertificateCorrupt { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("garbage.der"), "{err}");

    let bad_pem = env.dir.path().join("truncated.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )?;
    let err = ks
        .import_certificate(&key, &bad_pem)
        .await
        .expect_err("truncated");
    assert!(
        matches!(err, KeystoreError::CertificateCorrupt { .. }),
        "{err}"
    );

    let missing = env.dir.path().join("absent.pem");
    let err = ks
        .import_certificate(&key, &missing)
        .await
        .expect_err("missing");
    assert!(
        matches!(err, KeystoreError::CertificateRead { .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_key_pair_and_its_certificate() -> anyhow::Result<()> {
    let env = common::token()?;
    let pki = common::PkiFiles::generate()?;
    let ks = Keystore::open(&env.config).await?;
    let key = KeyRef::from("org-auth-cli");
    let info = ks.generate("org-auth-cli", KeyAlgorithm::Rsa2048).await?;
    let cert = pki.issue_org_auth_cli(&ks.csr(&key, &common::org_auth_cli_subject()).await?)?;
    ks.import_certificate(&key, &cert).await?;
    ks.generate("other", KeyAlgorithm::EcP256).await?;

    let deleted = ks.delete(&KeyRef::Id(info.id.clone())).await?;
    assert_eq!(deleted.label, "org-auth-cli");
    let left: Vec<String> = ks.list().await?.into_iter().map(|k| k.label).collect();
    assert_eq!(left, ["other"]);
    let err = ks.delete(&key).await.expect_err("already gone");
    assert!(matches!(err, KeystoreError::KeyNotFound { .. }), "{err}");
    Ok(())
}

/// A TLS endpoint configured for a token key cannot start without it, and
/// there is no software fallback to start with instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_key_missing_or_uncertified_is_refused() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    let err = ks
        .certified_key(&KeyRef::from("connector"))
        .await
        .expect_err("no key");
    assert!(matches!(err, KeystoreError::KeyNotFound { .. }), "{err}");
    assert!(err.to_string().contains("\"connector\""), "{err}");

    ks.generate("connector", KeyAlgorithm::Rsa2048).await?;
    let err = ks
        .certified_key(&KeyRef::from("connector"))
        .await
        .expect_err("no certificate");
    assert!(
        matches!(err, KeystoreError::CertificateMissing { .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_is_reported_once_as_ckr_pin_incorrect() -> anyhow::Result<()> {
    let env = common::token()?;
    let wrong = common::secret_file(env.dir.path(), "wrong.pin", "9999")?;
    let config = KeystoreConfig {
        pin_file: wrong,
        ..env.config.clone()
    };
    let err = Keystore::open(&config).await.expect_err("wrong PIN");
    match &err {
        KeystoreError::Login { token, rv } => {
            assert_eq!(token, "passerelle-test");
            assert_eq!(rv, "CKR_PIN_INCORRECT");
        }
        other => panic!("expected a login error, got {other}"),
    }
    assert!(err.to_string().contains("CKR_PIN_INCORRECT"), "{err}");
    // One attempt, not a loop: the right PIN still works afterwards.
    Keystore::open(&env.config).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_module_absent_token_and_loose_pin_file_are_named() -> anyhow::Result<()> {
    let env = common::token()?;

    let config = KeystoreConfig {
        module: "/usr/lib/nowhere/libnothing.so".into(),
        ..env.config.clone()
    };
    let err = Keystore::open(&config).await.expect_err("no module");
    assert!(matches!(err, KeystoreError::ModuleLoad { .. }), "{err}");
    assert!(
        err.to_string().contains("/usr/lib/nowhere/libnothing.so"),
        "{err}"
    );

    let config = KeystoreConfig {
        token_label: "no-such-token".to_owned(),
        ..env.config.clone()
    };
    let err = Keystore::open(&config).await.expect_err("no token");
    assert!(matches!(err, KeystoreError::TokenNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"no-such-token\"") && msg.contains("\"passerelle-test\""),
        "{msg}"
    );

    std::fs::set_permissions(
        &env.config.pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )?;
    let err = Keystore::open(&env.config)
        .await
        .expect_err("loose PIN file");
    assert!(
        matches!(err, KeystoreError::PinFileMode { mode: 0o640, .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_a_token_and_refuses_an_existing_label() -> anyhow::Result<()> {
    let env = common::token()?;
    let so_pin = common::secret_file(env.dir.path(), "so.pin", "87654321")?;
    let config = KeystoreConfig {
        token_label: "appliance".to_owned(),
        ..env.config.clone()
    };
    Keystore::init_token(&config, &so_pin).await?;
    // The new token takes the user PIN from pin_file and holds keys.
    let ks = Keystore::open(&config).await?;
    ks.generate("org-auth-cli", KeyAlgorithm::EcP256).await?;
    drop(ks);

    let err = Keystore::init_token(&config, &so_pin)
        .await
        .expect_err("exists");
    assert!(matches!(err, KeystoreError::TokenExists { .. }), "{err}");
    Ok(())
}
