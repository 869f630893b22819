//! The SESAM-Vitale billing service: what happens to a lot between the LPS and the caisse.
//!
//! - [`lot_file`]: the sanity check of a lot handed over by the LPS (B2 `000` header) and its
//!   identity (the lot id, the idempotency key of every step).
//! - [`lots`]: the lot store — the state machine `received → encrypted → sent →
//!   acknowledged | rejected | overdue` (plus `blocked` while [CE1]/[CE2] forbid sending and
//!   `refused` for input that is not a lot), its history with reasons, and the pre-encryption
//!   content kept until the lot is acknowledged (a 4005/4025 resends the same content).
//! - [`intake`]: the lots come in through a spool folder (atomic rename protocol) and a local
//!   HTTP API; each is durable (content, row, queue item) before the LPS is answered.
//! - [`relay`]: lot mails from the LPS through the LAN SMTP relay (intake path (a)).
//! - [`returns`]: the billing mailbox read over POP3 with STLS ([`pop3`]): ARL, RSP and
//!   service messages 4005/4015/4025 matched to lots and acted on; every return kept raw.
//! - [`sender`]: the queue worker that encrypts at send time and mails the lot over the
//!   caisse route (STARTTLS required).
//!
//! `passerelle-sesam` stays the format crate (certificates, CMS, MIME); this crate is the
//! service around it (SQLite, queue, sockets), so the format crate knows nothing of the daemon.

mod config;
mod error;
pub mod intake;
pub mod lot_file;
pub mod lots;
pub mod pop3;
pub mod relay;
pub mod returns;
pub mod sender;
mod serve;

pub use config::{BillingConfig, ReturnsConfig, RouteConfig};
pub use error::BillingError;
pub use intake::{Intake, LotMeta, RecipientKind, api_router, scan_spool};
pub use lot_file::{LotId, check_lot};
pub use lots::{Lot, LotState, LotStore, Transition};
pub use pop3::{Pop3Client, Pop3Error};
pub use relay::LotRelay;
pub use returns::{Classified, Handled, Pop3Route, ReturnKind, Returns, classify};
pub use sender::{Route, Sender};
pub use serve::serve;

/// The queue kind of lots waiting to be encrypted and sent; the idempotency key is the lot id.
pub const QUEUE_KIND: &str = "sesam-lot";
