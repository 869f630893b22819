//! The one error type of the crate.

use std::net::SocketAddr;

use crate::Reply;

/// How the caller should treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retry later: `4xx`, connection, TLS or timeout trouble.
    Temporary,
    /// Do not retry as is: `5xx`; a DSN is due.
    Permanent,
    /// The server refused our credentials (`535 5.7.8`): refresh them, then retry.
    Authentication,
    /// The caller asked for something the policy forbids (mail or AUTH in clear, …).
    Policy,
}

/// Errors of the SMTP engine, each naming the peer and the command concerned.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("smtp {peer}: {command}: {source}")]
    Io {
        peer: SocketAddr,
        command: &'static str,
        source: std::io::Error,
    },
    #[error("smtp {peer}: {command}: no answer within {seconds}s")]
    Timeout {
        peer: SocketAddr,
        command: &'static str,
        seconds: u64,
    },
    #[error("smtp {peer}: {command}: connection closed by the peer")]
    Closed {
        peer: SocketAddr,
        command: &'static str,
    },
    #[error("smtp {peer}: {command}: refused: {reply}")]
    Refused {
        peer: SocketAddr,
        command: &'static str,
        reply: Reply,
    },
    #[error("smtp {peer}: {command}: malformed reply: {detail}")]
    Protocol {
        peer: SocketAddr,
        command: &'static str,
        detail: String,
    },
    #[error("smtp {peer}: STARTTLS required by policy but not offered (TLS-05)")]
    StartTlsNotOffered { peer: SocketAddr },
    #[error("smtp {peer}: TLS handshake failed: {source}")]
    Tls {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("smtp {peer}: {what} refused in clear: STARTTLS first (TLS-05)")]
    Plaintext {
        peer: SocketAddr,
        what: &'static str,
    },
    #[error("smtp {peer}: AUTH {mechanism} failed: {reply}{}", .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    AuthFailed {
        peer: SocketAddr,
        mechanism: &'static str,
        reply: Reply,
        /// The decoded `334` challenge (XOAUTH2: the server's JSON error).
        detail: Option<String>,
    },
    #[error("smtp {peer}: {what}")]
    Usage { peer: SocketAddr, what: String },
    #[error("smtp server: cannot accept on {addr}: {source}")]
    Accept {
        addr: String,
        source: std::io::Error,
    },
}

impl SmtpError {
    /// Temporary vs permanent, from the reply class or the nature of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Refused { reply, .. } if reply.is_permanent() => ErrorKind::Permanent,
            Self::AuthFailed { reply, .. } if reply.is_transient() => ErrorKind::Temporary,
            Self::AuthFailed { .. } => ErrorKind::Authentication,
            Self::Plaintext { .. } | Self::Usage { .. } => ErrorKind::Policy,
            Self::Io { .. }
            | Self::Timeout { .. }
            | Self::Closed { .. }
            | Self::Refused { .. }
            | Self::Protocol { .. }
            | Self::StartTlsNotOffered { .. }
            | Self::Tls { .. }
            | Self::Accept { .. } => ErrorKind::Temporary,
        }
    }

    /// The peer's reply, when the failure is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Self::Refused { reply, .. } | Self::AuthFailed { reply, .. } => Some(reply),
            _ => None,
        }
    }
}
