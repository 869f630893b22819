//! passerelle-connector: the Connecteur MSSanté of the operator / OCT profile (Référentiel #1
//! §6.7, §4.8.1.3).
//!
//! ```text
//!  other operator ──TM3.1P (STARTTLS, mutual TLS)──▶ inbound listener ──▶ queue
//!                                                    connector.inbound ──▶ internal server (SMTP/LMTP)
//!  internal server ──LAN relay listener──▶ queue connector.outbound ──▶ MX of the recipient
//!                                          domain (TM3.2P, mutual TLS, DN ↔ domain)
//! ```
//!
//! - [`inbound`](crate::Connector): EX_3.1_5030 steps 2–6 and the 2015 erratum (no PTR).
//! - relay listener and outbound worker: EX_3.2_5040/5050/5060.
//! - every decision in the §6.9.2 traces ([`Traces`]).
//! - no MSSanté exchange before a first verified liste blanche (EX_2.2_5010/5035).
//!
//! No throttling is applied to anyone, so `@dgs.mssante.fr` (EX_3.1_5015) is never throttled;
//! the only bound is the engine's `max_sessions`, the same for every peer.

mod config;
mod core;
mod delivery;
mod error;
mod inbound;
mod item;
mod relay;
mod traces;

use std::sync::Arc;

use passerelle_keystore::{KeyRef, Keystore};
use passerelle_liste_blanche::ListeBlancheHandle;
use passerelle_queue::{Queue, SqliteStore};
use passerelle_trust::TrustStore;

pub use crate::config::{
    ConnectorConfig, InboundConfig, InternalConfig, IpNet, OutboundConfig, RelayConfig,
    TracesConfig, WorkersConfig,
};
pub use crate::core::Connector;
pub use crate::error::ConnectorError;
pub use crate::item::{INBOUND_KIND, OUTBOUND_KIND};
pub use crate::traces::{Trace, Traces};

/// The daemon entry point: the connector certificate from the token (`key_label`), both
/// listeners, both workers, until `shutdown`.
pub async fn serve(
    config: ConnectorConfig,
    queue: Queue<SqliteStore>,
    keystore: &Keystore,
    trust: Arc<TrustStore>,
    liste_blanche: ListeBlancheHandle,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ConnectorError> {
    let identity = keystore
        .certified_key(&KeyRef::Label(config.key_label.clone()))
        .await?;
    Connector::bind(config, queue, identity, trust, liste_blanche)
        .await?
        .run(shutdown)
        .await
}
