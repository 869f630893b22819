use std::time::Duration;

use serde::Deserialize;

/// `[cards]`: the CPS card service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardsConfig {
    /// Longest wait in `SCardGetStatusChange`; also bounds how late a shutdown is seen.
    /// At most 500 ms so insertions and removals are reported within a second.
    #[serde(with = "humantime_serde", default = "default_poll")]
    pub poll: Duration,
    /// How long a caller waits for one card operation (identity read, PIN, signature). A card
    /// that takes longer fails the operation; the PIN is never resent.
    #[serde(with = "humantime_serde", default = "default_apdu_timeout")]
    pub apdu_timeout: Duration,
    /// ATRs (hex, spaces allowed) reported as Vitale cards. The digest gives no Vitale ATR,
    /// so the operator lists those of the cards in use; others show as unknown.
    #[serde(default)]
    pub vitale_atrs: Vec<String>,
}

fn default_poll() -> Duration {
    Duration::from_millis(250)
}

fn default_apdu_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for CardsConfig {
    fn default() -> Self {
        Self {
            poll: default_poll(),
            apdu_timeout: default_apdu_timeout(),
            vitale_atrs: Vec::new(),
        }
    }
}

impl CardsConfig {
    pub(crate) fn vitale_atr_bytes(&self) -> Result<Vec<Vec<u8>>, String> {
        self.vitale_atrs
            .iter()
            .map(|s| {
                let hex: String = s
                    .chars()
                    .filter(|c| !c.is_whitespace() && *c != ':')
                    .collect();
                if !hex.len().is_multiple_of(2) || hex.len() > 66 {
                    return Err(format!("vitale_atrs: {s:?} is not an ATR in hex"));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(&hex[i..i + 2], 16)
                            .map_err(|_| format!("vitale_atrs: {s:?} is not an ATR in hex"))
                    })
                    .collect()
            })
            .collect()
    }
}
