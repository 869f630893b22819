//! rustls with token keys: every signature scheme verifies, and a mutual TLS
//! handshake where both sides' keys are in the token.

mod common;

use std::sync::Arc;

use passerelle_keystore::{
    Department, KeyAlgorithm, KeyRef, Keystore, Subject, TokenCertResolver, TokenSigningKey,
};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::SignatureScheme;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SigningKey as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MESSAGE: &[u8] = b"TLS 1.3, server CertificateVerify\0transcript hash";

async fn check_schemes(
    ks: &Keystore,
    label: &str,
    schemes: &[(SignatureScheme, &'static dyn VerificationAlgorithm)],
) -> anyhow::Result<()> {
    let key = ks.key(&KeyRef::from(label)).await?;
    let public = key.public_key_bits().to_vec();
    let signing = TokenSigningKey::new(key);
    for (scheme, alg) in schemes {
        let signer = signing
            .choose_scheme(&[*scheme])
            .ok_or_else(|| anyhow::anyhow!("{label}: {scheme:?} not offered"))?;
        assert_eq!(signer.scheme(), *scheme);
        let sig = signer.sign(MESSAGE)?;
        UnparsedPublicKey::new(*alg, &public)
            .verify(MESSAGE, &sig)
            .map_err(|_| anyhow::anyhow!("{label}: {scheme:?} signature does not verify"))?;
    }
    assert!(
        signing.choose_scheme(&[SignatureScheme::ED25519]).is_none(),
        "no scheme the key cannot do"
    );
    Ok(())
}

/// RSA PKCS#1 v1.5 and PSS with SHA-256/384, and ECDSA P-256 (hashed here,
/// signed with CKM_ECDSA, r‖s converted to DER), verified by ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offered_signature_scheme_verifies() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    ks.generate("rsa", KeyAlgorithm::Rsa2048).await?;
    ks.generate("ec", KeyAlgorithm::EcP256).await?;
    check_schemes(
        &ks,
        "rsa",
        &[
            (
                SignatureScheme::RSA_PSS_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            (
                SignatureScheme::RSA_PSS_SHA384,
                &signature::RSA_PSS_2048_8192_SHA384,
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA384,
                &signature::RSA_PKCS1_2048_8192_SHA384,
            ),
        ],
    )
    .await?;
    check_schemes(
        &ks,
        "ec",
        &[(
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &signature::ECDSA_P256_SHA256_ASN1,
        )],
    )
    .await
}

/// The CLI drives the keystore from a current-thread runtime, where tokio
/// forbids `block_in_place`: the signer must wait plainly there.
#[tokio::test(flavor = "current_thread")]
async fn signing_works_from_a_current_thread_runtime() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    ks.generate("ec", KeyAlgorithm::EcP256).await?;
    check_schemes(
        &ks,
        "ec",
        &[(
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &signature::ECDSA_P256_SHA256_ASN1,
        )],
    )
    .await
}

/// A rustls server whose P-256 key is in the token, requiring a client
/// certificate, and a rustls client whose RSA key is in the same token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_token_keys_on_both_sides() -> anyhow::Result<()> {
    let env = common::token()?;
    let pki = common::PkiFiles::generate()?;
    let ks = Keystore::open(&env.config).await?;
    let fqdn = "mss.passerelle.example.fr";

    let server_key = KeyRef::from("connector");
    ks.generate("connector", KeyAlgorithm::EcP256).await?;
    let server_subject = Subject::ConnectorServer {
        fqdn: fqdn.to_owned(),
        id_nat_prefix: "3".to_owned(),
        id_nat_struct: "18751275100020".to_owned(),
        organization: "CLINIQUE DU PARC".to_owned(),
        department: Department {
            name: "Paris".to_owned(),
            code: "75".to_owned(),
        },
    };
    let cert = pki.issue_server(&ks.csr(&server_key, &server_subject).await?, fqdn)?;
    ks.import_certificate(&server_key, &cert).await?;

    let client_key = KeyRef::from("org-auth-cli");
    ks.generate("org-auth-cli", KeyAlgorithm::Rsa2048).await?;
    let cert =
        pki.issue_org_auth_cli(&ks.csr(&client_key, &common::org_auth_cli_subject()).await?)?;
    ks.import_certificate(&client_key, &cert).await?;

    let roots = Arc::new(pki.root_store()?);
    // The test PKI's leaves are issued by an intermediate the server does
    // not receive from the client: give the verifier the intermediate too.
    let mut client_roots = (*roots).clone();
    let intermediate = pki.pki.cert(passerelle_testpki::names::ACI_EL_ORG)?;
    client_roots.add(rustls::pki_types::CertificateDer::from(
        intermediate.der().to_vec(),
    ))?;
    // An explicit provider: the workspace links both ring and aws-lc-rs (tough needs it).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), Arc::clone(&provider))
            .build()?;
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(TokenCertResolver::new(
            ks.certified_key(&server_key).await?,
        )));
    let mut server_roots = (*roots).clone();
    server_roots.add(rustls::pki_types::CertificateDer::from(
        intermediate.der().to_vec(),
    ))?;
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(server_roots)
        .with_client_cert_resolver(Arc::new(TokenCertResolver::new(
            ks.certified_key(&client_key).await?,
        )));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
        tls.write_all(b"ok").await?;
        tls.shutdown().await?;
        anyhow::Ok(peer)
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from(fqdn)?, tcp).await?;
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await?;
    assert_eq!(reply, b"ok");
    let client_cert = server.await??;
    let stored = ks.certified_key(&client_key).await?;
    assert_eq!(
        client_cert, stored.cert[0],
        "the server saw the token key's certificate"
    );
    Ok(())
}
