/// Everything the mirror can fail with; names the BAL and the step. Never a token or a
/// message body.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirror configuration: {0}")]
    Config(String),
    #[error("BAL {bal}: {step}: {why}")]
    Upstream {
        bal: String,
        step: &'static str,
        why: String,
    },
    /// The operator refused the credentials (EX_LPS_0710 `NO Authentication failed`).
    #[error("BAL {bal}: the operator refused the authentication: {reply}")]
    AuthRefused { bal: String, reply: String },
    #[error("BAL {bal}: {source}")]
    Psc {
        bal: String,
        #[source]
        source: passerelle_psc::PscError,
    },
    #[error("mirror state database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("inbox queue: {0}")]
    Queue(#[from] passerelle_queue::QueueError),
}
