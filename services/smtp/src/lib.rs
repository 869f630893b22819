//! SMTP protocol engine shared by the practice profile (LAN submission, API LPS client),
//! the operator connector (TM3.1P inbound, TM3.2P outbound) and SESAM-Vitale lots.
//!
//! - [`server`]: [`serve`] runs bounded ESMTP sessions (STARTTLS, AUTH, PIPELINING, SIZE,
//!   8BITMIME, ENHANCEDSTATUSCODES) and asks a [`Handler`] for every decision; the
//!   handler answers `250` to DATA only once the message is durable.
//! - [`client`]: [`SmtpClient`] with mandatory STARTTLS before AUTH or mail (TLS-05),
//!   AUTH PLAIN / XOAUTH2 with SASL-IR (EX_LPS_0700/0900), per-recipient results, LMTP.
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`notice`]: mailbox-full DSNs and automatic replies received by an applicative BAL
//!   (EX_GBM_4430).
//!
//! The crate knows nothing of queues or the daemon.

pub mod client;
pub mod dsn;
mod error;
mod io;
pub mod notice;
mod reply;
pub mod server;

pub use client::{
    Capabilities, ClientConfig, Delivery, RecipientResult, SmtpClient, xoauth2_initial_response,
};
pub use dsn::{Dsn, DsnAction, DsnRecipient, build_dsn};
pub use error::{ErrorKind, SmtpError};
pub use notice::{Notice, classify as classify_notice};
pub use reply::Reply;
pub use server::{
    AuthDecision, AuthMechanism, Envelope, Handler, MailFrom, ServerConfig, SessionInfo, TlsInfo,
    serve,
};
