use crate::{ApduError, StatusWord};

/// An R-APDU: the data (borrowed from the caller's buffer) and the status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    data: &'a [u8],
    status: StatusWord,
}

impl<'a> Response<'a> {
    /// Splits `raw` into data and SW1 SW2. Fails on fewer than two bytes and on an SW1 that no
    /// card sends (outside `61..6F`, `90..9F`): those are transport garbage, not answers.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ApduError> {
        let Some((data, [sw1, sw2])) = raw.split_last_chunk::<2>() else {
            return Err(ApduError::ResponseTooShort { len: raw.len() });
        };
        if !matches!(sw1, 0x61..=0x6F | 0x90..=0x9F) {
            return Err(ApduError::InvalidStatusWord {
                sw: u16::from_be_bytes([*sw1, *sw2]),
            });
        }
        Ok(Self {
            data,
            status: StatusWord::from_bytes(*sw1, *sw2),
        })
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    pub fn status(&self) -> StatusWord {
        self.status
    }

    /// The data if the status is `90 00`, else the status word as the error.
    pub fn ok(self) -> Result<&'a [u8], StatusWord> {
        match self.status {
            StatusWord::Ok => Ok(self.data),
            sw => Err(sw),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{ApduError, Response, StatusWord};

    #[test]
    fn parse_empty_response_is_too_short() {
        assert_eq!(
            Response::parse(&[]),
            Err(ApduError::ResponseTooShort { len: 0 })
        );
    }

    #[test]
    fn parse_one_byte_response_is_too_short() {
        assert_eq!(
            Response::parse(&[0x90]),
            Err(ApduError::ResponseTooShort { len: 1 })
        );
    }

    #[test]
    fn parse_status_only_response_has_empty_data() {
        let r = Response::parse(&[0x90, 0x00]).expect("parses");
        assert_eq!(r.data(), &[] as &[u8]);
        assert_eq!(r.status(), StatusWord::Ok);
    }

    #[test]
    fn parse_splits_data_from_the_last_two_bytes() {
        let r = Response::parse(&[1, 2, 3, 0x63, 0xC1]).expect("parses");
        assert_eq!(r.data(), &[1, 2, 3]);
        assert_eq!(r.status(), StatusWord::PinTriesLeft(1));
        assert_eq!(r.ok(), Err(StatusWord::PinTriesLeft(1)));
    }

    #[test]
    fn parse_rejects_sw1_that_no_card_sends() {
        assert_eq!(
            Response::parse(&[0x00, 0x00]),
            Err(ApduError::InvalidStatusWord { sw: 0 })
        );
        assert_eq!(
            Response::parse(&[0x60, 0x00]),
            Err(ApduError::InvalidStatusWord { sw: 0x6000 })
        );
        assert_eq!(
            Response::parse(&[1, 0xA0, 0x00]),
            Err(ApduError::InvalidStatusWord { sw: 0xA000 })
        );
    }
}
