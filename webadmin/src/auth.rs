//! Passwords (argon2id), session and CSRF tokens, and the request guards.

use std::net::SocketAddr;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Session cookie: `__Host-` so the browser only accepts it over HTTPS, for this host, path `/`.
pub const SESSION_COOKIE: &str = "__Host-session";
/// Pre-session CSRF cookie for the setup and login forms (double submit).
pub const PRE_COOKIE: &str = "__Host-pre";
/// Name of the CSRF form field (and of the query parameter of multipart forms).
pub const CSRF_FIELD: &str = "csrf";

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The system RNG failing is not recoverable; no token is better than a weak one.
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| std::process::abort());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database stores instead of a session id.
pub fn hash_token(token: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

pub fn tokens_equal(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// argon2id (the crate's default: v19, m=19 MiB, t=2, p=1) PHC string. CPU-heavy: call from
/// `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "system RNG failed".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks `password` against a PHC string. CPU-heavy: call from `spawn_blocking`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A PHC hash checked when the account does not exist, so an unknown name costs the same time
/// as a wrong password.
pub fn dummy_phc() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// The client's address, inserted by the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The authenticated session of a request.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    pub id_hash: String,
}

pub fn session_cookie(token: &str, max_age_secs: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}"
    )
}

pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

pub fn pre_cookie(token: &str) -> String {
    format!("{PRE_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let phc = hash_password("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("wrong", &phc));
    }

    #[test]
    fn tokens_are_256_bit_and_compared_exactly() {
        let t = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).expect("b64").len(), 32);
        assert!(tokens_equal(&t, &t.clone()));
        assert!(!tokens_equal(&t, &random_token()));
        assert!(!tokens_equal("", ""));
    }
}
