use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[rights]`: the Visiodroits/AMC rights proxy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RightsConfig {
    /// Local HTTPS endpoint the LPS posts to.
    pub listen: SocketAddr,
    /// The AMC/OCT rights service, `https://host[:port]/path`.
    pub upstream_url: String,
    /// PEM bundle of the public CAs allowed to issue the upstream server certificate.
    pub ca_bundle: PathBuf,
    /// Largest SOAP request accepted from the LPS; larger ones get 413 and a fault.
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Largest upstream answer relayed.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// Time limit of each upstream step (connect, handshake, answer).
    #[serde(with = "humantime_serde", default = "default_upstream_timeout")]
    pub upstream_timeout: Duration,
    /// Idle upstream connections kept open.
    #[serde(default = "default_pool_idle")]
    pub pool_max_idle: usize,
}

fn default_max_request() -> usize {
    256 * 1024
}

fn default_max_response() -> usize {
    4 * 1024 * 1024
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_pool_idle() -> usize {
    4
}

impl RightsConfig {
    /// A configuration with the defaults for everything but the three required fields.
    pub fn new(listen: SocketAddr, upstream_url: String, ca_bundle: PathBuf) -> Self {
        Self {
            listen,
            upstream_url,
            ca_bundle,
            max_request_bytes: default_max_request(),
            max_response_bytes: default_max_response(),
            upstream_timeout: default_upstream_timeout(),
            pool_max_idle: default_pool_idle(),
        }
    }
}
