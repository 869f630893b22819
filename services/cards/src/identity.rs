use passerelle_apdu::cps::{ANS_ISSUER, EF_SN_ICC_LEN, id_tags};
use passerelle_apdu::tlv::TlvIter;
use serde::Serialize;

use crate::{CardError, Result};

/// Who the card belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpsIdentity {
    /// Card serial number (EF.SN.ICC without the ANS issuer), hex.
    pub serial: String,
    /// National health professional id (`8` + RPPS).
    pub national_id: String,
    pub family_name: String,
    pub given_name: String,
    pub profession: String,
}

impl CpsIdentity {
    /// From EF.SN.ICC and the identity EF (BER-TLV `80`..`83`).
    pub(crate) fn parse(sn_icc: &[u8], identity: &[u8]) -> Result<Self> {
        let malformed = |detail: String| CardError::Malformed {
            op: "identity read",
            detail,
        };
        if sn_icc.len() != EF_SN_ICC_LEN || sn_icc[2..7] != ANS_ISSUER {
            return Err(malformed(format!(
                "EF.SN.ICC of {} bytes without the ANS issuer",
                sn_icc.len()
            )));
        }
        let serial = crate::hex(&sn_icc[7..]);
        let field = |tag: u32| -> Result<String> {
            let tlv = TlvIter::new(identity)
                .find(tag)
                .map_err(|e| malformed(e.to_string()))?
                .ok_or_else(|| malformed(format!("identity tag {tag:02X} missing")))?;
            String::from_utf8(tlv.value().to_vec())
                .map_err(|_| malformed(format!("identity tag {tag:02X} not UTF-8")))
        };
        Ok(Self {
            serial,
            national_id: field(id_tags::NATIONAL_ID)?,
            family_name: field(id_tags::FAMILY_NAME)?,
            given_name: field(id_tags::GIVEN_NAME)?,
            profession: field(id_tags::PROFESSION)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CpsIdentity;

    #[test]
    fn identity_parse_refuses_a_serial_without_the_ans_issuer_and_missing_tags() {
        let mut sn = vec![0x5A, 0x0A, 0x80, 0x25, 0x00, 0x00, 0x01, 1, 2, 3, 4, 5];
        let id = [0x80, 1, b'8', 0x81, 1, b'D', 0x82, 1, b'J', 0x83, 1, b'M'];
        let ok = CpsIdentity::parse(&sn, &id).expect("valid");
        assert_eq!(ok.serial, "0102030405");
        assert!(CpsIdentity::parse(&sn, &id[..9]).is_err());
        sn[3] = 0;
        assert!(CpsIdentity::parse(&sn, &id).is_err());
    }
}
