//! Key identities and descriptions.

use std::fmt;
use std::str::FromStr;

use crate::error::KeystoreError;

/// The key types the appliance uses: RSA for MSSanté (every allowed TLS 1.2
/// suite is `*_RSA_*`) and SESAM-Vitale, P-256 for device identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    Rsa2048,
    Rsa3072,
    EcP256,
}

impl KeyAlgorithm {
    /// Every algorithm, in the spelling the CLI accepts.
    pub const ALL: [KeyAlgorithm; 3] = [Self::Rsa2048, Self::Rsa3072, Self::EcP256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
            Self::EcP256 => "ec-p256",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown key algorithm {s:?} (expected rsa2048, rsa3072 or ec-p256)")
            })
    }
}

/// `CKA_ID`: 16 random bytes shared by a key pair and its certificate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeystoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || KeystoreError::InvalidKeyId(s.to_owned());
        if s.is_empty() || !s.len().is_multiple_of(2) {
            return Err(invalid());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(invalid)
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Self)
    }
}

/// How a caller names a key: by the label given at generation (`org-auth-cli`)
/// or by its hex `CKA_ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    Label(String),
    Id(KeyId),
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "{label:?}"),
            Self::Id(id) => write!(f, "id {id}"),
        }
    }
}

impl From<&str> for KeyRef {
    fn from(label: &str) -> Self {
        Self::Label(label.to_owned())
    }
}

/// What the token says about a private key. The protection flags are read
/// back from the token, not assumed from the generation template.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "each flag is one PKCS#11 boolean attribute"
)]
pub struct KeyInfo {
    pub id: KeyId,
    pub label: String,
    pub algorithm: KeyAlgorithm,
    /// `CKA_SENSITIVE`: the private value cannot be read in clear.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it has been sensitive since generation.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it has never been extractable.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated inside the token, not imported.
    pub local: bool,
    /// Subject of the certificate stored with the same `CKA_ID`, if any.
    pub certificate_subject: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_round_trips_through_hex() {
        let id = KeyId::new(vec![0x00, 0xab, 0x10, 0xff]);
        assert_eq!(id.to_string(), "00ab10ff");
        assert_eq!("00AB10ff".parse::<KeyId>().expect("hex"), id);
    }

    #[test]
    fn key_id_rejects_non_hex() {
        for bad in ["", "abc", "zz", "0g"] {
            let err = bad.parse::<KeyId>().expect_err(bad);
            assert!(
                matches!(err, KeystoreError::InvalidKeyId(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!("RSA2048".parse::<KeyAlgorithm>(), Ok(KeyAlgorithm::Rsa2048));
        assert_eq!("ec-p256".parse::<KeyAlgorithm>(), Ok(KeyAlgorithm::EcP256));
        assert!("dsa".parse::<KeyAlgorithm>().is_err());
    }
}
