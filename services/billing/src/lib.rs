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
//! - [`oct`]: the OCT profile: practices' lots encrypted for the OCT certificate opened with
//!   the token key, sent on as ordinary lots, their returns forwarded to the practice.
//! - [`crl`]: the AC-FACTURATION CRL downloads on the weekly/daily schedule, with the alert.
//! - [`status`]: [`BillingStatus`], the handle the web admin reads (see below).
//!
//! # The status handle (for the web admin)
//!
//! ```text
//! let status = BillingStatus::open(&sesam, &billing, queue).await?;   // daemon, once
//! serve_with(&sesam, &billing, trust, status.clone(), keystore, shutdown) // fills CRL/poll state
//! // web admin, any number of clones:
//! status.lots(None | Some(LotState::Rejected)).await? -> Vec<Lot>     // oldest first
//! status.lot(&LotId::parse(s)?).await? -> Option<LotDetail { lot, history }>
//! status.counts().await? -> Vec<(LotState, u64)>                      // LotState::ALL order
//! status.overdue().await? -> Vec<Lot>
//! status.arl_deadline() -> Duration
//! status.crl() -> Vec<CrlStatus>     // per CRL source: ca, next_update, last_attempt,
//!                                    // last_outcome, next_download, alert, missing ([CE2])
//! status.crl_alert() -> bool
//! status.last_poll() -> Option<PollReport { at, route: "pop3"|"imap", outcome }>
//! status.resend(&id).await? -> Resent { lot, from, round }   // rejected|overdue only;
//!                                    // BillingError::ResendRefused { state, why } otherwise
//! ```
//!
//! A [`Lot`] carries its state, reason, sends, Message-ID, resend round and the last
//! [`ArlReceipt`] (when, positive or not, the raw return kept). Every read is a short SQLite
//! query on the lot store (WAL): the web admin, the CLI and the daemon may read and write it
//! at once.
//!
//! `passerelle-sesam` stays the format crate (certificates, CMS, MIME); this crate is the
//! service around it (SQLite, queue, sockets), so the format crate knows nothing of the daemon.

mod config;
pub mod crl;
mod error;
pub mod imap;
pub mod intake;
pub mod lot_file;
pub mod lots;
pub mod oct;
pub mod pop3;
pub mod relay;
pub mod returns;
pub mod sender;
mod serve;
pub mod status;

pub use config::{
    AfterConfig, BillingConfig, OctConfig, ReturnsConfig, ReturnsProtocol, RouteConfig,
};
pub use crl::CrlWatch;
pub use error::BillingError;
pub use imap::{AfterHandling, ImapRoute};
pub use intake::{Intake, LotMeta, RecipientKind, api_router, scan_spool};
pub use lot_file::{LotId, check_lot};
pub use lots::{ArlReceipt, Lot, LotOrigin, LotState, LotStore, Transition};
pub use oct::{OCT_RETURN_KIND, OctIntake, Practice};
pub use pop3::{Pop3Client, Pop3Error};
pub use relay::LotRelay;
pub use returns::{Classified, Handled, Pop3Route, ReturnKind, Returns, classify};
pub use sender::{Route, Sender};
pub use serve::{serve, serve_with};
pub use status::{
    BillingStatus, CrlOutcome, CrlStatus, LotDetail, PollOutcome, PollReport, RESENDABLE, Resent,
    mark_for_resend,
};

/// The queue kind of lots waiting to be encrypted and sent; the idempotency key is the lot id.
pub const QUEUE_KIND: &str = "sesam-lot";
