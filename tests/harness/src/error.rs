use std::path::Path;
use std::time::Duration;

/// Everything that can go wrong while starting or talking to a peer; always says which peer
/// and which step.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "{peer}: `{binary}` not found; install it with `apt-get install -y {package}` \
         (see /work/shared/design/test-infra.md)"
    )]
    MissingBinary {
        peer: &'static str,
        binary: &'static str,
        package: &'static str,
    },
    #[error("{peer}: {step}: {source}")]
    Io {
        peer: &'static str,
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer}: {step} failed ({status}):\n{output}")]
    Command {
        peer: &'static str,
        step: String,
        status: String,
        output: String,
    },
    /// `detail` holds the last probe error and the tail of the peer's log.
    #[error("{peer}: not ready after {waited:?} ({step}): {detail}")]
    NotReady {
        peer: &'static str,
        step: String,
        waited: Duration,
        detail: String,
    },
    #[error("{peer}: {step}: {detail}")]
    Protocol {
        peer: &'static str,
        step: String,
        detail: String,
    },
}

impl HarnessError {
    pub(crate) fn io(peer: &'static str, step: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            peer,
            step: step.into(),
            source,
        }
    }

    pub(crate) fn protocol(
        peer: &'static str,
        step: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::Protocol {
            peer,
            step: step.into(),
            detail: detail.into(),
        }
    }

    /// True when the peer most likely lost a race for its ephemeral port, so a new port is
    /// worth a try.
    pub(crate) fn is_port_race(&self) -> bool {
        matches!(self, Self::NotReady { detail, .. } if detail.contains("in use"))
    }

    pub(crate) fn not_ready(
        peer: &'static str,
        step: impl Into<String>,
        waited: Duration,
        last: &str,
        log: &Path,
        tail: &str,
    ) -> Self {
        Self::NotReady {
            peer,
            step: step.into(),
            waited,
            detail: format!("{last}\n--- tail of {} ---\n{tail}", log.display()),
        }
    }
}
