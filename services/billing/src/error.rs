//! The crate's one error type: which lot, which file, which rule.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The input is not a lot the caisse would accept (empty, no B2/DR `000` header, too big).
    #[error("lot refused: {why}")]
    NotALot { why: String },

    /// A transition the state machine does not allow (a bug or a stale event; logged).
    #[error("lot {lot}: no transition from {from} to {to}")]
    Transition {
        lot: String,
        from: &'static str,
        to: &'static str,
    },

    /// The operator asked to send a lot again in a state where that makes no sense.
    #[error("lot {lot} is {state}: not resent, {why}")]
    ResendRefused {
        lot: String,
        state: &'static str,
        why: &'static str,
    },

    #[error("lot {lot}: unknown")]
    UnknownLot { lot: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("lot store: {0}")]
    Db(#[from] sqlx::Error),

    #[error("queue: {0}")]
    Queue(#[from] passerelle_queue::QueueError),

    /// Reading or keeping returns (POP3, the raw store).
    #[error("returns: {0}")]
    Returns(String),

    #[error("lot store: corrupt row for lot {lot}: {why}")]
    Corrupt { lot: String, why: String },
}

impl BillingError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
