//! The bundle manifest: the signed custom fields of a TUF target (board, version) plus its
//! signed length and SHA-256.

use std::collections::HashMap;
use std::fmt;

use crate::error::UpdateError;

/// A release version `major.minor.patch`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.split('.').map(str::parse::<u64>);
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok(Self(a, b, c)),
            _ => Err(format!("version {s:?} is not major.minor.patch")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One signed image, as listed in targets.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub target: String,
    pub board: String,
    pub version: Version,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl ImageInfo {
    /// Target file name for a board and version.
    pub fn target_name(board: &str, version: Version) -> String {
        format!("passerelle-{board}-{version}.img")
    }

    pub(crate) fn custom(board: &str, version: Version) -> HashMap<String, serde_json::Value> {
        HashMap::from([
            ("board".to_owned(), board.into()),
            ("version".to_owned(), version.to_string().into()),
        ])
    }

    pub(crate) fn from_target(name: &str, t: &tough::schema::Target) -> Result<Self, UpdateError> {
        let bad = |reason: String| UpdateError::Target {
            target: name.to_owned(),
            reason,
        };
        let field = |k: &str| {
            t.custom
                .get(k)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad(format!("signed custom field {k:?} missing")))
        };
        let board = field("board")?.to_owned();
        let version = field("version")?.parse().map_err(bad)?;
        let sha256: [u8; 32] = t
            .hashes
            .sha256
            .as_ref()
            .try_into()
            .map_err(|_| bad("sha256 is not 32 bytes".into()))?;
        Ok(Self {
            target: name.to_owned(),
            board,
            version,
            size: t.length,
            sha256,
        })
    }
}
