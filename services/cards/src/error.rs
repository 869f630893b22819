use passerelle_apdu::StatusWord;

use crate::CardKind;

pub type Result<T, E = CardError> = std::result::Result<T, E>;

/// Why a card operation failed. `Clone` so that the reason a TLS signature failed can be
/// handed to whoever asked for the connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CardError {
    #[error("PC/SC: {op}: {source}")]
    Pcsc {
        op: &'static str,
        #[source]
        source: pcsc::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("no CPS card in any reader")]
    NoCard,
    #[error("the card was removed from {reader}")]
    CardRemoved { reader: String },
    #[error("the card in {reader} is a {} card, not a CPS card that can sign", .kind.as_str())]
    NotUsable { reader: String, kind: CardKind },
    #[error("PIN not verified: enter the PIN in the web admin first")]
    PinNotVerified,
    #[error("wrong PIN, {tries_left} tries left")]
    WrongPin { tries_left: u8 },
    #[error("PIN blocked: the card must be unblocked by its issuer")]
    PinBlocked,
    #[error("one PIN try left: confirm explicitly before trying again")]
    LastTryNeedsConfirmation,
    #[error("a PIN is 4 to 8 digits")]
    InvalidPinFormat,
    #[error("card refused {op}: {sw}")]
    Refused { op: &'static str, sw: StatusWord },
    #[error("malformed card answer to {op}: {detail}")]
    Malformed { op: &'static str, detail: String },
    #[error("the card did not answer {op} within {millis} ms")]
    Timeout { op: &'static str, millis: u128 },
    #[error("card PKCS#11 module: {0}")]
    Pkcs11(String),
    #[error("card service stopped")]
    Stopped,
}

impl CardError {
    /// Maps a pcsc error: those meaning the card (or reader) went away become
    /// [`CardError::CardRemoved`].
    pub(crate) fn pcsc(op: &'static str, reader: &str, e: pcsc::Error) -> Self {
        match e {
            pcsc::Error::RemovedCard
            | pcsc::Error::NoSmartcard
            | pcsc::Error::ResetCard
            | pcsc::Error::ReaderUnavailable
            | pcsc::Error::UnknownReader
            | pcsc::Error::CommDataLost
            | pcsc::Error::UnpoweredCard => Self::CardRemoved {
                reader: reader.to_owned(),
            },
            source => Self::Pcsc { op, source },
        }
    }
}
