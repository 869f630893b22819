//! The outbox item: a small versioned envelope header, then the message as accepted.
//!
//! ```text
//! passerelle-lps/1\n
//! {"bal":"…","from":"…","recipients":[…],"sender_mailbox":"…","message_id":"…","eight_bit":false}\n
//! <message bytes>
//! ```
//!
//! One queue kind per BAL ([`kind_for`]) so each BAL drains on its own: a BAL waiting for
//! re-authentication never holds back another.

use serde::{Deserialize, Serialize};

use crate::ApiLpsError;

const MAGIC: &[u8] = b"passerelle-lps/1\n";
/// Longest envelope line (40 recipients of 254 bytes fit easily).
const MAX_ENVELOPE_LINE: usize = 64 * 1024;

/// The delivery instructions stored with a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEnvelope {
    /// Name of the BAL that sends.
    pub bal: String,
    /// The BAL address, used as the upstream reverse path.
    pub from: String,
    pub recipients: Vec<String>,
    /// Local mailbox of the LAN sender, where DSNs go.
    pub sender_mailbox: String,
    pub message_id: String,
    pub eight_bit: bool,
}

/// The queue kind of a BAL's outbox.
pub fn kind_for(bal: &str) -> String {
    format!("lps-out/{bal}")
}

pub fn encode(envelope: &OutboxEnvelope, message: &[u8]) -> Vec<u8> {
    let line = serde_json::to_vec(envelope).unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + line.len() + 1 + message.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&line);
    out.push(b'\n');
    out.extend_from_slice(message);
    out
}

/// Splits a stored item; a payload from another version or damaged is an error naming why.
pub fn decode(payload: &[u8]) -> Result<(OutboxEnvelope, &[u8]), ApiLpsError> {
    let rest = payload
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiLpsError::Payload("not a passerelle-lps/1 item".into()))?;
    let end = rest
        .iter()
        .take(MAX_ENVELOPE_LINE)
        .position(|&b| b == b'\n')
        .ok_or_else(|| ApiLpsError::Payload("envelope line missing or too long".into()))?;
    let envelope: OutboxEnvelope = serde_json::from_slice(&rest[..end])
        .map_err(|e| ApiLpsError::Payload(format!("envelope: {e}")))?;
    Ok((envelope, &rest[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let env = OutboxEnvelope {
            bal: "app".into(),
            from: "app@c.mssante.fr".into(),
            recipients: vec!["x@d.mssante.fr".into()],
            sender_mailbox: "alice@local".into(),
            message_id: "<1@x>".into(),
            eight_bit: false,
        };
        let bytes = encode(&env, b"Subject: s\r\n\r\nb\n\r\n");
        let (back, msg) = decode(&bytes).expect("must succeed");
        assert_eq!(back, env);
        assert_eq!(msg, b"Subject: s\r\n\r\nb\n\r\n");
        assert!(decode(b"passerelle-lps/2\n{}\n").is_err());
        assert!(decode(b"passerelle-lps/1\n{\"bal\":1}\n").is_err());
        assert!(decode(b"passerelle-lps/1\n{").is_err());
    }
}
