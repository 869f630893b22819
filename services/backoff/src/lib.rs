//! passerelle-backoff
