//! The few DER shapes PKCS#11 hands back in raw form: RSA public keys come as
//! (modulus, exponent), EC points wrapped in an OCTET STRING, and ECDSA
//! signatures as raw `r‖s` where X.509 and TLS want `Ecdsa-Sig-Value`.

/// DER OID of prime256v1, the `CKA_EC_PARAMS` of a P-256 key.
pub(crate) const EC_PARAMS_P256: &[u8] =
    &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Lengths below 128 fit the short form by definition.
        out.push(u8::try_from(len).unwrap_or_default());
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let n = bytes.len() - skip;
        out.push(0x80 | u8::try_from(n).unwrap_or_default());
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A non-negative big-endian integer as a minimal DER INTEGER.
fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().take_while(|b| **b == 0).count();
    let trimmed = &bytes[start..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`,
/// the bit string inside an RSA SubjectPublicKeyInfo.
pub(crate) fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut content = unsigned_integer(modulus);
    content.extend_from_slice(&unsigned_integer(exponent));
    tlv(0x30, &content)
}

/// `CKA_EC_POINT` as the bare uncompressed point. PKCS#11 says the attribute is
/// a DER OCTET STRING (SoftHSM does this); some modules return the raw point.
pub(crate) fn ec_point(attr: &[u8]) -> Option<&[u8]> {
    // Only P-256 is generated here: the bare point is 65 bytes, wrapped 67.
    match attr {
        [0x04, ..] if attr.len() == 65 => Some(attr),
        [0x04, 65, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Some(rest),
        _ => None,
    }
}

/// Raw `r‖s` (CKM_ECDSA output) to `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub(crate) fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut content = unsigned_integer(r);
    content.extend_from_slice(&unsigned_integer(s));
    Some(tlv(0x30, &content))
}

/// The DER INTEGER encoding of a certificate serial (what `CKA_SERIAL_NUMBER` holds).
pub(crate) fn serial_number(raw_serial: &[u8]) -> Vec<u8> {
    // x509-parser hands back the INTEGER's content octets, sign byte included.
    tlv(0x02, raw_serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signature_adds_sign_bytes_and_strips_leading_zeros() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading 0x00
        raw[32] = 0x00;
        raw[33] = 0x01; // s has a leading zero to strip
        let der = ecdsa_signature(&raw).expect("even length");
        assert_eq!(&der[..5], &[0x30, 0x44, 0x02, 0x21, 0x00]);
        assert_eq!(der[5], 0x80);
        // s: 31 content bytes once the leading zero is gone.
        assert_eq!(&der[37..39], &[0x02, 0x1f]);
        assert_eq!(der[39], 0x01);
        assert_eq!(der.len(), 2 + 35 + 33);
    }

    #[test]
    fn odd_length_signature_is_malformed() {
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
        assert!(ecdsa_signature(&[]).is_none());
    }

    #[test]
    fn ec_point_unwraps_the_octet_string_or_accepts_raw() {
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&raw);
        assert_eq!(ec_point(&wrapped), Some(raw.as_slice()));
        assert_eq!(ec_point(&raw), Some(raw.as_slice()));
        assert_eq!(ec_point(&[0x03, 0x00]), None);
    }

    #[test]
    fn rsa_public_key_uses_long_form_lengths() {
        let modulus = vec![0xc0; 256];
        let der = rsa_public_key(&modulus, &[0x01, 0x00, 0x01]);
        // SEQUENCE, long length of 2 bytes; INTEGER of 257 bytes (sign byte added).
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(&der[4..9], &[0x02, 0x82, 0x01, 0x01, 0x00]);
        assert_eq!(&der[der.len() - 5..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    }
}
