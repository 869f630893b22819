//! ISO 7816-4 APDUs as CPS cards (CPS3 IAS-ECC, CPS4) speak them, without allocation.
//!
//! - [`Command`]: CLA INS P1 P2, data up to a const-generic capacity (255 = short APDU, more =
//!   extended length), Le; encoded into a caller buffer or a `heapless::Vec`; split into
//!   ≤255-byte chained commands (CLA bit `0x10`) by [`Command::chain`].
//! - [`Response`]: borrowed data + [`StatusWord`], parsed with explicit errors, never a panic.
//! - [`StatusWord`]: the status words the card service acts on (`63Cx` PIN tries left,
//!   `6983` PIN blocked, `61xx` more data …), everything else kept as [`StatusWord::Other`].
//! - [`Transport`] + [`transceive`]: follows `61xx` with `GET RESPONSE` and `6Cxx` with a
//!   resend, a bounded number of times so a hostile card cannot loop the caller.
//! - [`tlv`]: a BER-TLV iterator over a byte slice, with depth and length limits.
//! - [`cps`]: builders for the commands the CPS card service sends, and the card constants.
//!
//! `#![no_std]`, no `alloc`: it could run on a reader's microcontroller. The `std` feature
//! (default) only adds `std::error::Error` impls.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

mod command;
pub mod cps;
mod error;
mod response;
mod status;
pub mod tlv;
mod transport;

pub use command::{Chain, Command, MAX_EXTENDED_LE, MAX_SHORT_DATA, MAX_SHORT_LE, ShortCommand};
pub use error::ApduError;
pub use response::Response;
pub use status::StatusWord;
pub use transport::{
    MAX_GET_RESPONSE, MAX_RESPONSE, MAX_SHORT_COMMAND, TransceiveError, Transport, transceive,
    transceive_chained,
};
