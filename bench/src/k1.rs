//! K1: full TLS handshakes per second with the server's RSA-2048 key in a
//! PKCS#11 token (SoftHSM2), against the same handshake with an RSA-2048 key
//! in memory (the anchor). Same CA, same subject, same TLS settings; only
//! where the signature is made differs. The token cost is expected: the
//! figure tracks it.
//!
//! Loopback only: a rustls server and `CONCURRENCY` rustls clients, each
//! client doing sequential full handshakes (no resumption) and reading one
//! byte, bounded by `HANDSHAKES`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use passerelle_harness::SoftHsm;
use passerelle_keystore::{
    KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Subject, TokenCertResolver,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HANDSHAKES: usize = 400;
const WARMUP: usize = 20;
const CONCURRENCY: usize = 4;
const SERVER_NAME: &str = "bench.passerelle.test";

/// Runs K1 on its own thread and runtime (callable from inside or outside
/// tokio) and prints its `BENCH K1 …` line.
pub fn run() -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("bench-k1".to_owned())
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(measure())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("K1 thread panicked"))?
}

async fn measure() -> anyhow::Result<()> {
    let hsm = SoftHsm::builder().build()?;
    hsm.set_process_env();
    let dir = tempfile::tempdir()?;
    let pin_file = dir.path().join("user.pin");
    std::fs::write(&pin_file, &hsm.token().user_pin)?;
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let config = KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    };

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "K1 bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = || -> anyhow::Result<CertificateParams> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        p.subject_alt_names = vec![SanType::DnsName(SERVER_NAME.try_into()?)];
        Ok(p)
    };

    // Ours: RSA-2048 generated in the token, certified from its CSR.
    let ks = Keystore::open(&config).await?;
    let key = KeyRef::from("k1-server");
    ks.generate("k1-server", KeyAlgorithm::Rsa2048).await?;
    let csr = ks
        .csr(
            &key,
            &Subject::Device {
                name: SERVER_NAME.to_owned(),
                organization: "K1".to_owned(),
            },
        )
        .await?;
    let mut csr = CertificateSigningRequestParams::from_pem(&csr)?;
    csr.params = leaf_params()?;
    let cert_path = dir.path().join("token.crt.pem");
    std::fs::write(&cert_path, csr.signed_by(&issuer)?.pem())?;
    ks.import_certificate(&key, &cert_path).await?;
    let token_resolver: Arc<dyn ResolvesServerCert> =
        Arc::new(TokenCertResolver::new(ks.certified_key(&key).await?));

    // Anchor: an RSA-2048 key in memory (ring, as rustls uses it).
    let memory_key = rsa_2048_pkcs8(dir.path())?;
    let memory_cert = leaf_params()?.signed_by(&KeyPair::from_pem(&memory_key)?, &issuer)?;
    let memory_key = PrivateKeyDer::from_pem_slice(memory_key.as_bytes())?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&memory_key)?;
    let memory_resolver: Arc<dyn ResolvesServerCert> =
        Arc::new(rustls::sign::SingleCertAndKey::from(
            rustls::sign::CertifiedKey::new(vec![memory_cert.der().clone()], signing),
        ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    // An explicit provider: the workspace links both ring and aws-lc-rs (tough needs it).
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);

    let ours = handshakes_per_second(token_resolver, &client).await?;
    let anchor = handshakes_per_second(memory_resolver, &client).await?;
    ks.close().await;
    println!(
        "BENCH K1 tls-handshake-token-rsa2048 ours={ours:.0} anchor={anchor:.0} unit=handshakes/s ratio={:.2}",
        ours / anchor
    );
    Ok(())
}

/// A PKCS#8 RSA-2048 key from the openssl CLI (ring cannot generate RSA).
fn rsa_2048_pkcs8(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("memory.key.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .context("run openssl (apt-get install -y openssl)")?;
    ensure!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(std::fs::read_to_string(path)?)
}

async fn handshakes_per_second(
    resolver: Arc<dyn ResolvesServerCert>,
    client: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<f64> {
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    // Every handshake a full one: no tickets, no session cache.
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"k").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });

    let connector = tokio_rustls::TlsConnector::from(Arc::clone(client));
    for _ in 0..WARMUP {
        handshake(&connector, addr).await?;
    }
    let start = Instant::now();
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let connector = connector.clone();
            tokio::spawn(async move {
                for _ in 0..HANDSHAKES / CONCURRENCY {
                    handshake(&connector, addr).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .context("K1 clients took over 120 s")???;
    }
    let elapsed = start.elapsed();
    server.abort();
    #[allow(clippy::cast_precision_loss, reason = "a few hundred handshakes")]
    let rate = (HANDSHAKES / CONCURRENCY * CONCURRENCY) as f64 / elapsed.as_secs_f64();
    Ok(rate)
}

/// One full handshake, then one byte from the server.
async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await?;
    Ok(())
}
