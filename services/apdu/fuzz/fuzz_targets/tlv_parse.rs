//! The BER-TLV parser must never panic nor loop, and must stay inside its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_apdu::tlv::{Tlv, TlvIter};

fn walk(tlv: &Tlv<'_>, input_len: usize) {
    assert!(tlv.value().len() <= input_len);
    if let Ok(children) = tlv.children() {
        for child in children.flatten() {
            walk(&child, input_len);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for tlv in TlvIter::new(data).flatten() {
        walk(&tlv, data.len());
    }
});
