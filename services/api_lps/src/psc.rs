//! The Pro Santé Connect token manager as the PER/ORG BALs' token source.

use passerelle_psc::Psc;

use crate::upstream::{AccessTokens, EvictFuture, TokenError, TokenFuture};

impl AccessTokens for Psc {
    fn token<'a>(&'a self, bal: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            match self.access_token(bal).await {
                Ok(t) => Ok(t.secret().to_owned()),
                Err(e) if e.is_temporary() => Err(TokenError::Unavailable(e.to_string())),
                // No session, session over, or configuration/store trouble: a person acts.
                Err(e) => Err(TokenError::ReauthRequired(e.to_string())),
            }
        })
    }

    fn evict<'a>(&'a self, bal: &'a str) -> EvictFuture<'a> {
        Psc::evict(self, bal);
        Box::pin(async {})
    }

    fn reauth_required<'a>(&'a self, bal: &'a str, reason: &'a str) -> EvictFuture<'a> {
        Box::pin(async move {
            if let Err(e) = self.mark_reauth_required(bal, reason).await {
                tracing::error!(bal, error = %e, "api lps: cannot record the re-authentication need");
            }
        })
    }
}
