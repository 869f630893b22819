//! The interactive login that gives a BAL its first refresh token: OpenID Connect
//! authorization-code flow (RFC 6749 §4.1) with PKCE S256 (RFC 7636), `state` and `nonce`.
//! The web admin sends the browser to [`AuthorizationRequest::url`], PSC sends it back to the
//! redirect URI with a code, and [`crate::Psc::complete_login`] exchanges the code at the
//! token endpoint and stores the refresh token (clearing "re-auth required", OA-07).
//!
//! The ID token comes straight from the token endpoint over TLS with a server checked by the
//! trust profile, so its signature is not re-verified (OIDC Core §3.1.3.7 item 6); its
//! `nonce`, `aud` and `exp` are.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroizing;

use crate::PscError;

/// Largest ID token read (a signed JWT is a few KB).
const MAX_ID_TOKEN: usize = 16 * 1024;

/// One pending login: the URL to send the browser to, and what the callback must match.
/// `Debug` hides the verifier.
pub struct AuthorizationRequest {
    /// The authorize endpoint with every parameter.
    pub url: String,
    /// Opaque value PSC hands back; the callback must present the same.
    pub state: String,
    /// Bound into the ID token; checked at the exchange.
    pub nonce: String,
    /// PKCE verifier (43 characters), sent only to the token endpoint.
    pub code_verifier: Zeroizing<String>,
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("url", &self.url)
            .field("state", &self.state)
            .field("code_verifier", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// 256 random bits, base64url (43 characters: a valid PKCE verifier, RFC 7636 §4.1).
pub(crate) fn random_b64() -> Result<String, PscError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PscError::Config("system RNG failed".into()))?;
    Ok(B64URL.encode(bytes))
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2, S256).
pub fn pkce_challenge(verifier: &str) -> String {
    B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// Builds the authorize URL for `client_id`.
pub(crate) fn authorization_request(
    authorize_url: &str,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
) -> Result<AuthorizationRequest, PscError> {
    if !authorize_url.starts_with("https://") || authorize_url.contains('#') {
        return Err(PscError::Config(format!(
            "authorize URL {authorize_url}: must be https:// without a fragment"
        )));
    }
    if !redirect_uri.starts_with("https://") {
        return Err(PscError::Config(format!(
            "redirect URI {redirect_uri}: must be https://"
        )));
    }
    let state = random_b64()?;
    let nonce = random_b64()?;
    let code_verifier = Zeroizing::new(random_b64()?);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&code_verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if authorize_url.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok(AuthorizationRequest {
        url: format!("{authorize_url}{sep}{query}"),
        state,
        nonce,
        code_verifier,
    })
}

/// Checks the ID token's `nonce`, `aud` and `exp` (see the module docs for the signature).
pub(crate) fn check_id_token(
    id_token: &str,
    client_id: &str,
    nonce: &str,
    now: u64,
) -> Result<(), String> {
    if id_token.len() > MAX_ID_TOKEN {
        return Err("ID token too large".into());
    }
    let payload = id_token
        .split('.')
        .nth(1)
        .ok_or_else(|| "ID token is not a JWT".to_owned())?;
    let bytes = B64URL
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("ID token payload: {e}"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("ID token claims: {e}"))?;
    if claims.get("nonce").and_then(|v| v.as_str()) != Some(nonce) {
        return Err("ID token nonce does not match the login's".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == client_id,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("ID token audience is not this client".into());
    }
    match claims.get("exp").and_then(serde_json::Value::as_u64) {
        Some(exp) if exp > now => Ok(()),
        _ => Err("ID token expired".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorize_url_carries_state_nonce_and_the_s256_challenge() {
        let r = authorization_request(
            "https://psc.example/auth",
            "client",
            "https://box.local/cb",
            "openid scope_all",
        )
        .expect("request");
        assert_eq!(r.code_verifier.len(), 43);
        let query: std::collections::HashMap<String, String> =
            form_urlencoded::parse(r.url.split_once('?').expect("query").1.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["state"], r.state);
        assert_eq!(query["nonce"], r.nonce);
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"], pkce_challenge(&r.code_verifier));
        assert_eq!(query["redirect_uri"], "https://box.local/cb");
        assert!(authorization_request("http://psc/auth", "c", "https://b/cb", "openid").is_err());
    }

    #[test]
    fn id_token_nonce_audience_and_expiry_are_checked() {
        let token =
            |claims: serde_json::Value| format!("e30.{}.sig", B64URL.encode(claims.to_string()));
        let good = token(serde_json::json!({"nonce": "n", "aud": "c", "exp": 200}));
        assert_eq!(check_id_token(&good, "c", "n", 100), Ok(()));
        assert!(check_id_token(&good, "c", "other", 100).is_err());
        assert!(check_id_token(&good, "d", "n", 100).is_err());
        assert!(check_id_token(&good, "c", "n", 300).is_err());
        let list = token(serde_json::json!({"nonce": "n", "aud": ["x", "c"], "exp": 200}));
        assert_eq!(check_id_token(&list, "c", "n", 100), Ok(()));
        assert!(check_id_token("garbage", "c", "n", 100).is_err());
    }
}
