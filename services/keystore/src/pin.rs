//! PINs read from root-only files, wiped from memory after use.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::{KeystoreError, Result};

/// Reads a PIN file, refusing one that group or others could read or write.
/// Both the file buffer and the returned PIN are zeroised on drop.
pub(crate) fn read_pin_file(path: &Path) -> Result<Zeroizing<String>> {
    let read_err = |source| KeystoreError::PinFileRead {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::PinFileMode {
            path: path.to_owned(),
            mode,
        });
    }
    let mut raw = Zeroizing::new(String::new());
    file.read_to_string(&mut raw).map_err(read_err)?;
    let pin = raw.lines().next().unwrap_or_default();
    if pin.is_empty() {
        return Err(KeystoreError::PinFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(Zeroizing::new(pin.to_owned()))
}

/// The PIN in the form cryptoki takes (a `SecretString`, zeroised on drop).
pub(crate) fn auth_pin(pin: &str) -> AuthPin {
    AuthPin::from(pin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn pin_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        fs::write(&path, "1234\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_pin_file(&path).expect_err("mode 644 must be refused");
        assert!(
            matches!(err, KeystoreError::PinFileMode { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn pin_file_first_line_is_the_pin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        fs::write(&path, "1234\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let pin = read_pin_file(&path).expect("read");
        assert_eq!(pin.as_str(), "1234");
    }

    #[test]
    fn missing_and_empty_pin_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent");
        let err = read_pin_file(&missing).expect_err("missing");
        assert!(err.to_string().contains("absent"), "{err}");

        let empty = dir.path().join("empty");
        fs::write(&empty, "\n").expect("write");
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o400)).expect("chmod");
        let err = read_pin_file(&empty).expect_err("empty");
        assert!(matches!(err, KeystoreError::PinFileEmpty { .. }), "{err}");
    }
}
