//! The connector against real peers: another connector instance, SoftHSM2, Dovecot (LMTP),
//! Postfix, openssl s_client, and a loopback DNS server.

mod common;
mod dns;
mod inbound;
mod outbound;
mod resilience;
