//! The P7 bench as a test: 100 rights requests through the proxy cost the card one signature,
//! where a client opening a connection per request costs it one each.

#[path = "../../../bench/src/p7.rs"]
mod p7;

#[test]
fn p7_one_card_signature_serves_100_rights_requests() -> anyhow::Result<()> {
    p7::run()
}
