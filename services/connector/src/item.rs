//! Queue items: one JSON header line (the envelope), then the message bytes untouched.

use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;

/// Queue kind of mail for the internal server (from other operators, and DSNs to internal
/// senders).
pub const INBOUND_KIND: &str = "connector.inbound";
/// Queue kind of mail for another operator; one item per recipient domain.
pub const OUTBOUND_KIND: &str = "connector.outbound";

/// Longest header line accepted back from the queue.
const MAX_HEADER_LINE: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// Internal unique id (EX_GDT_5050), also the queue idempotency key.
    pub id: String,
    /// Reverse path; empty for the null sender.
    pub from: String,
    pub to: Vec<String>,
    /// Outbound: the recipient domain all of `to` share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

pub fn encode(envelope: &Envelope, message: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(envelope).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(message);
    out
}

pub fn decode<'p>(key: &str, payload: &'p [u8]) -> Result<(Envelope, &'p [u8]), ConnectorError> {
    let bad = |detail: String| ConnectorError::BadItem {
        id: key.to_owned(),
        detail,
    };
    let end = payload
        .iter()
        .take(MAX_HEADER_LINE)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no envelope line".to_owned()))?;
    let envelope: Envelope =
        serde_json::from_slice(&payload[..end]).map_err(|e| bad(format!("envelope: {e}")))?;
    Ok((envelope, &payload[end + 1..]))
}

/// A new internal id: time-ordered, unique enough across restarts (ms + 64 random bits).
pub fn new_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms:x}.{:016x}", fastrand::u64(..))
}

/// Domain of an address, lowercase; `None` when there is no `@` or nothing after it.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_garbage_is_an_error() {
        let e = Envelope {
            id: new_id(),
            from: String::new(),
            to: vec!["a@b.mssante.fr".to_owned()],
            domain: Some("b.mssante.fr".to_owned()),
        };
        let bytes = encode(&e, b"Subject: x\r\n\r\nbody\n");
        let (back, message) = decode("k", &bytes).expect("decode");
        assert_eq!(back, e);
        assert_eq!(message, b"Subject: x\r\n\r\nbody\n");
        assert!(decode("k", b"no newline").is_err());
        assert!(decode("k", b"{bad}\nx").is_err());
        assert_eq!(
            domain_of("A@Hopital.MSSante.fr.").as_deref(),
            Some("hopital.mssante.fr")
        );
        assert_eq!(domain_of("nobody"), None);
    }
}
