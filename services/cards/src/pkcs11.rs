//! The card's authentication key through its PKCS#11 module.

use passerelle_keystore::{KeyRef, Keystore, TokenCertResolver};

use crate::{CardError, Result};

/// Label of the CPS authentication private key in the Cryptolib CPS PKCS#11 module.
pub const CPS_PRIV_AUT: &str = "CPS_PRIV_AUT";

/// A rustls client certificate resolver for the key [`CPS_PRIV_AUT`] of an opened keystore
/// on the card's module, and the certificate stored with it.
pub async fn pkcs11_cert_resolver(keystore: &Keystore) -> Result<TokenCertResolver> {
    let certified = keystore
        .certified_key(&KeyRef::Label(CPS_PRIV_AUT.to_owned()))
        .await
        .map_err(|e| CardError::Pkcs11(e.to_string()))?;
    Ok(TokenCertResolver::new(certified))
}
