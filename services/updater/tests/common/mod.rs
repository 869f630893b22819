//! Test helpers: a vendor repository on disk, served over HTTP on loopback by a tiny server,
//! and a device configuration pointing at it.
#![allow(dead_code, clippy::unwrap_used)] // shared by several test binaries, each using a part

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle_updater::vendor::{self, Bundle, Expiries, RootKeys};
use passerelle_updater::{DeviceUpdateConfig, MetadataLimits, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tough::key_source::KeySource;

pub const BOARD: &str = "qemu-x86_64";
pub const SLOT_SIZE: usize = 3 << 20;

/// Serves `root` over HTTP/1.1; `cut` makes a path ending in the given suffix stop after N
/// body bytes while announcing the full length (a connection dropped mid-download).
pub struct Server {
    pub url: url::Url,
    pub cut: Arc<Mutex<Option<(String, usize)>>>,
}

pub async fn serve(root: PathBuf) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut: Arc<Mutex<Option<(String, usize)>>> = Arc::default();
    let cut2 = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            let cut = cut2.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || req.len() > 8192 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_owned();
                let Ok(body) = std::fs::read(root.join(&path)) else {
                    let _ = sock
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let limit = match &*cut.lock().unwrap() {
                    Some((suffix, n)) if path.ends_with(suffix.as_str()) => *n,
                    _ => body.len(),
                };
                let _ = sock.write_all(&body[..limit]).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server {
        url: format!("http://{addr}/").parse().unwrap(),
        cut,
    }
}

pub struct Vendor {
    pub dir: tempfile::TempDir,
    pub root_key: PathBuf,
    pub online_key: PathBuf,
}

impl Vendor {
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn meta(&self, file: &str) -> PathBuf {
        self.repo().join("metadata").join(file)
    }
    pub fn key(&self, name: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("{name}{}", vendor::DEV_KEY_SUFFIX));
        if !p.exists() {
            vendor::generate_dev_key(&p).unwrap();
        }
        p
    }
    pub fn online(&self) -> Vec<Box<dyn KeySource>> {
        vec![vendor::dev_key(&self.online_key).unwrap()]
    }

    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Self {
            dir,
            root_key: PathBuf::new(),
            online_key: PathBuf::new(),
        };
        v.root_key = v.key("root");
        v.online_key = v.key("online");
        let root = vec![vendor::dev_key(&v.root_key).unwrap()];
        let online = v.online();
        vendor::init_root(
            &v.repo(),
            &RootKeys {
                root: &root,
                online: &online,
                development: true,
            },
            in_days(365),
        )
        .await
        .unwrap();
        v
    }

    /// Publishes an image of `len` bytes (content derived from the version) with `keys`.
    pub async fn publish_with(
        &self,
        version: &str,
        len: usize,
        keys: &[Box<dyn KeySource>],
        timestamp_expires: jiff::Timestamp,
    ) -> Vec<u8> {
        let image = image_bytes(version, len);
        let path = self.dir.path().join(format!("{version}.img"));
        std::fs::write(&path, &image).unwrap();
        let bundle = Bundle {
            image: path,
            board: BOARD.into(),
            version: version.parse().unwrap(),
        };
        let exp = Expiries {
            targets: in_days(30),
            snapshot: in_days(30),
            timestamp: timestamp_expires,
        };
        vendor::publish(&self.repo(), &bundle, keys, exp)
            .await
            .unwrap();
        image
    }

    pub async fn publish(&self, version: &str, len: usize) -> Vec<u8> {
        self.publish_with(version, len, &self.online(), in_days(1))
            .await
    }

    pub fn target_file(&self, version: &str) -> PathBuf {
        self.repo()
            .join("targets")
            .join(format!("passerelle-{BOARD}-{version}.img"))
    }
}

pub fn in_days(days: i64) -> jiff::Timestamp {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
}

pub fn image_bytes(version: &str, len: usize) -> Vec<u8> {
    let seed = version
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..len)
        .map(|i| (i.to_le_bytes()[0]).wrapping_mul(13) ^ seed)
        .collect()
}

/// The device: a trusted root copied from the vendor's first root, a datastore, a slot file.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub cfg: DeviceUpdateConfig,
    pub slot: PathBuf,
}

impl Device {
    pub fn new(vendor: &Vendor, url: &url::Url, current: &str) -> Self {
        Self::new_with_root(&vendor.meta("1.root.json"), url, current)
    }

    pub fn new_with_root(root: &std::path::Path, url: &url::Url, current: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trusted_root = dir.path().join("root.json");
        std::fs::copy(root, &trusted_root).unwrap();
        let slot = dir.path().join("slot-b");
        std::fs::write(&slot, vec![0xAA; SLOT_SIZE]).unwrap();
        let cfg = DeviceUpdateConfig {
            vendor_url: url.clone(),
            board: BOARD.into(),
            current_version: current.parse::<Version>().unwrap(),
            trusted_root,
            datastore: dir.path().join("tuf"),
            staging: dir.path().join("update/staging.img"),
            refused: Vec::new(),
            limits: MetadataLimits::default(),
            fetch_timeout: Duration::from_secs(10),
        };
        Self { dir, cfg, slot }
    }

    pub fn slot_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.slot).unwrap()
    }

    pub fn slot_untouched(&self) -> bool {
        self.slot_bytes().iter().all(|b| *b == 0xAA)
    }

    pub fn staging_gone(&self) -> bool {
        !self.cfg.staging.exists()
    }
}
