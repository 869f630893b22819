//! The extraction downloaded over HTTPS from a loopback server with a test CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use passerelle_annuaire::{AnnuaireConfig, AnnuaireError, Cache, refresh};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/extraction_correspondance_mssante.txt"
);

/// A test CA (PEM) and an HTTPS server for `localhost` that answers every request with the
/// fixture extraction.
async fn server() -> (String, SocketAddr) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).expect("key"),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = std::fs::read(FIXTURE).expect("fixture");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (ca_pem, addr)
}

fn config(dir: &Path, addr: SocketAddr, ca_bundle: &Path) -> AnnuaireConfig {
    toml::from_str(&format!(
        "cache_dir = {:?}\nca_bundle = {:?}\n[extraction]\nurl = \"https://localhost:{}/extraction_correspondance_mssante.txt\"\ntimeout = \"10s\"\n",
        dir.join("cache").display().to_string(),
        ca_bundle.display().to_string(),
        addr.port()
    ))
    .expect("config")
}

#[tokio::test]
async fn ex_2_1_3_5020_extraction_is_downloaded_over_verified_https() {
    let (ca_pem, addr) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("ca file");

    // A server the bundle does not vouch for is refused, and nothing is loaded.
    let other_ca = dir.path().join("other.pem");
    let other = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(
        &other_ca,
        params.self_signed(&other).expect("other ca").pem(),
    )
    .expect("write");
    let untrusted = config(dir.path(), addr, &other_ca);
    let cache = Cache::open(&untrusted.cache_dir).await.expect("cache");
    let err = refresh(&untrusted, &cache)
        .await
        .expect_err("untrusted server");
    assert!(
        matches!(&err, AnnuaireError::Source { reason, .. } if reason.starts_with("TLS")),
        "{err}"
    );
    assert!(cache.status().is_none());

    let report = refresh(&config(dir.path(), addr, &ca), &cache)
        .await
        .expect("refresh over https");
    assert_eq!(report.status.entries, 30);
}
