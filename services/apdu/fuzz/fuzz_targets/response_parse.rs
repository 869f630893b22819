//! `Response::parse` must never panic, whatever the card sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_apdu::Response;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = Response::parse(data) {
        assert_eq!(resp.data().len() + 2, data.len());
        let _ = resp.status().to_u16();
    }
});
