use core::fmt;

use crate::{ApduError, Command, Response, ShortCommand, StatusWord};

/// Largest encoded short command: header, Lc, 255 data bytes, Le.
pub const MAX_SHORT_COMMAND: usize = 4 + 1 + 255 + 1;
/// Largest short response: 256 data bytes and SW1 SW2.
pub const MAX_RESPONSE: usize = 256 + 2;
/// Most `GET RESPONSE` rounds [`transceive`] follows (64 KiB of data at 256 bytes each);
/// a card still answering `61xx` after that is treated as hostile.
pub const MAX_GET_RESPONSE: usize = 256;

/// Something that carries APDUs to a card: a PC/SC connection, a reader UART, a test double.
pub trait Transport {
    type Error;

    /// Sends `cmd` and writes the R-APDU (data + SW1 SW2) into `resp`, returning its length.
    fn transmit(&mut self, cmd: &[u8], resp: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Why [`transceive`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransceiveError<E> {
    /// The transport failed.
    Transport(E),
    /// The exchange was malformed (bad response, output buffer too small …).
    Apdu(ApduError),
    /// The card kept asking for `GET RESPONSE` or for another Le past the limits.
    TooManyRounds,
}

impl<E> From<ApduError> for TransceiveError<E> {
    fn from(e: ApduError) -> Self {
        Self::Apdu(e)
    }
}

impl<E: fmt::Display> fmt::Display for TransceiveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport: {e}"),
            Self::Apdu(e) => write!(f, "{e}"),
            Self::TooManyRounds => write!(
                f,
                "card kept answering 61xx/6Cxx past {MAX_GET_RESPONSE} rounds"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for TransceiveError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(e) => Some(e),
            Self::Apdu(e) => Some(e),
            Self::TooManyRounds => None,
        }
    }
}

/// Sends a short command and collects the whole answer into `out`: `61xx` is followed with
/// `GET RESPONSE` (`00 C0 00 00 xx`, same CLA), `6Cxx` by resending with Le = `xx` (once).
/// Returns the number of data bytes in `out` and the final status word (which may be an
/// error status: the caller decides what a `63Cx` means).
pub fn transceive<T: Transport>(
    transport: &mut T,
    cmd: &ShortCommand,
    out: &mut [u8],
) -> Result<(usize, StatusWord), TransceiveError<T::Error>> {
    let mut cmd_buf = [0u8; MAX_SHORT_COMMAND];
    let mut resp_buf = [0u8; MAX_RESPONSE];
    let mut filled = 0;
    let mut current = cmd.clone();
    let mut resent = false;
    for _ in 0..=MAX_GET_RESPONSE {
        let n = current.encode(&mut cmd_buf)?;
        let got = transport
            .transmit(&cmd_buf[..n], &mut resp_buf)
            .map_err(TransceiveError::Transport)?;
        let raw = resp_buf.get(..got).ok_or(ApduError::BufferTooSmall {
            needed: got,
            available: MAX_RESPONSE,
        })?;
        let resp = Response::parse(raw)?;
        let data = resp.data();
        let available = out.len();
        let dst = out
            .get_mut(filled..filled + data.len())
            .ok_or(ApduError::BufferTooSmall {
                needed: filled + data.len(),
                available,
            })?;
        dst.copy_from_slice(data);
        filled += data.len();
        match resp.status() {
            StatusWord::MoreData(xx) => {
                current = get_response(cmd.cla, xx);
            }
            StatusWord::WrongLe(xx) if !resent => {
                resent = true;
                current = current.with_le(le_of(xx));
            }
            StatusWord::WrongLe(_) => return Err(TransceiveError::TooManyRounds),
            sw => return Ok((filled, sw)),
        }
    }
    Err(TransceiveError::TooManyRounds)
}

/// Sends a command of any length as a chain of short commands (see [`Command::chain`]),
/// stopping at the first link the card refuses, then collects the answer like [`transceive`].
pub fn transceive_chained<T: Transport, const N: usize>(
    transport: &mut T,
    cmd: &Command<N>,
    out: &mut [u8],
) -> Result<(usize, StatusWord), TransceiveError<T::Error>> {
    let mut links = cmd.chain(crate::MAX_SHORT_DATA)?.peekable();
    while let Some(link) = links.next() {
        if links.peek().is_none() {
            return transceive(transport, &link, out);
        }
        let (_, sw) = transceive(transport, &link, &mut [])?;
        if sw != StatusWord::Ok {
            return Ok((0, sw));
        }
    }
    // `chain` always yields at least one command.
    Err(TransceiveError::Apdu(ApduError::InvalidArgument {
        what: "empty chain",
    }))
}

fn get_response(cla: u8, xx: u8) -> ShortCommand {
    // Logical channel bits of CLA are kept; chaining bit cleared.
    ShortCommand::new(cla & !0x10, 0xC0, 0, 0).with_le(le_of(xx))
}

fn le_of(xx: u8) -> u32 {
    if xx == 0 { 256 } else { u32::from(xx) }
}

#[cfg(test)]
mod tests {
    use heapless::Vec;

    use super::{MAX_GET_RESPONSE, TransceiveError, Transport, transceive, transceive_chained};
    use crate::{ApduError, Command, ShortCommand, StatusWord};

    /// Answers from a script; records the commands it saw.
    struct Scripted<'a> {
        answers: &'a [&'a [u8]],
        next: usize,
        seen: Vec<Vec<u8, 16>, 8>,
        /// Once the script is exhausted, answer this forever (a hostile card).
        forever: Option<&'a [u8]>,
    }

    impl<'a> Scripted<'a> {
        fn new(answers: &'a [&'a [u8]]) -> Self {
            Self {
                answers,
                next: 0,
                seen: Vec::new(),
                forever: None,
            }
        }
    }

    impl Transport for Scripted<'_> {
        type Error = &'static str;

        fn transmit(&mut self, cmd: &[u8], resp: &mut [u8]) -> Result<usize, &'static str> {
            let mut c = Vec::new();
            let _ = c.extend_from_slice(&cmd[..cmd.len().min(16)]);
            let _ = self.seen.push(c);
            let answer = match self.answers.get(self.next) {
                Some(a) => *a,
                None => self.forever.ok_or("script exhausted")?,
            };
            self.next += 1;
            resp[..answer.len()].copy_from_slice(answer);
            Ok(answer.len())
        }
    }

    fn read() -> ShortCommand {
        ShortCommand::new(0, 0xB0, 0, 0).with_le(256)
    }

    #[test]
    fn transceive_follows_61xx_with_get_response_and_concatenates_data() {
        let mut t = Scripted::new(&[&[1, 2, 0x61, 0x03], &[3, 4, 5, 0x90, 0x00]]);
        let mut out = [0u8; 8];
        let (n, sw) = transceive(&mut t, &read(), &mut out).expect("ok");
        assert_eq!((&out[..n], sw), (&[1, 2, 3, 4, 5][..], StatusWord::Ok));
        assert_eq!(&t.seen[1][..], [0x00, 0xC0, 0x00, 0x00, 0x03]);
    }

    #[test]
    fn transceive_get_response_keeps_the_logical_channel_of_cla() {
        let mut t = Scripted::new(&[&[0x61, 0x00], &[0x90, 0x00]]);
        let cmd = ShortCommand::new(0x11, 0x88, 0, 0).with_le(256);
        transceive(&mut t, &cmd, &mut [0u8; 4]).expect("ok");
        assert_eq!(&t.seen[1][..], [0x01, 0xC0, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn transceive_resends_with_le_from_6cxx() {
        let mut twelve_and_ok = [9u8; 14];
        twelve_and_ok[12..].copy_from_slice(&[0x90, 0x00]);
        let answers: [&[u8]; 2] = [&[0x6C, 0x0C], &twelve_and_ok];
        let mut t = Scripted::new(&answers);
        let (n, sw) = transceive(&mut t, &read(), &mut [0u8; 16]).expect("ok");
        assert_eq!((n, sw), (12, StatusWord::Ok));
        assert_eq!(&t.seen[1][..], [0x00, 0xB0, 0x00, 0x00, 0x0C]);
    }

    #[test]
    fn transceive_gives_up_on_a_second_6cxx() {
        let mut t = Scripted::new(&[&[0x6C, 0x0C], &[0x6C, 0x0D]]);
        assert_eq!(
            transceive(&mut t, &read(), &mut [0u8; 16]),
            Err(TransceiveError::TooManyRounds)
        );
    }

    #[test]
    fn transceive_caps_an_endless_61xx_loop() {
        let mut t = Scripted::new(&[]);
        t.forever = Some(&[0x61, 0x00]);
        assert_eq!(
            transceive(&mut t, &read(), &mut [0u8; 4]),
            Err(TransceiveError::TooManyRounds)
        );
        assert_eq!(t.next, MAX_GET_RESPONSE + 1);
    }

    #[test]
    fn transceive_reports_output_overflow_instead_of_panicking() {
        let mut t = Scripted::new(&[&[1, 2, 3, 0x90, 0x00]]);
        assert_eq!(
            transceive(&mut t, &read(), &mut [0u8; 2]),
            Err(TransceiveError::Apdu(ApduError::BufferTooSmall {
                needed: 3,
                available: 2
            }))
        );
    }

    #[test]
    fn transceive_rejects_a_one_byte_answer() {
        let mut t = Scripted::new(&[&[0x90]]);
        assert_eq!(
            transceive(&mut t, &read(), &mut [0u8; 2]),
            Err(TransceiveError::Apdu(ApduError::ResponseTooShort {
                len: 1
            }))
        );
    }

    #[test]
    fn transceive_returns_error_status_words_to_the_caller() {
        let mut t = Scripted::new(&[&[0x63, 0xC2]]);
        let cmd = ShortCommand::new(0, 0x20, 0, 0x81);
        assert_eq!(
            transceive(&mut t, &cmd, &mut []),
            Ok((0, StatusWord::PinTriesLeft(2)))
        );
    }

    #[test]
    fn transceive_passes_transport_errors_through() {
        let mut t = Scripted::new(&[]);
        assert_eq!(
            transceive(&mut t, &read(), &mut []),
            Err(TransceiveError::Transport("script exhausted"))
        );
    }

    #[test]
    fn transceive_chained_stops_at_the_first_refused_link() {
        let mut t = Scripted::new(&[&[0x90, 0x00], &[0x6A, 0x86]]);
        let cmd = Command::<800>::new(0, 0x2A, 0x80, 0x86)
            .with_data(&[1; 700])
            .expect("fits");
        assert_eq!(
            transceive_chained(&mut t, &cmd, &mut []),
            Ok((0, StatusWord::IncorrectP1P2))
        );
        assert_eq!(t.seen.len(), 2);
        assert_eq!(t.seen[0][0], 0x10);
    }
}
