//! Distinguished names, parsed from certificates (DER) or from RFC 4514/2253 strings (the
//! liste blanche stores `DNCertificatOperateur` as a string), compared structurally:
//! attribute types by OID, values after RFC 4518 string preparation, multi-valued RDNs as sets.
//! EX_OPE_5020 and EX_LBL_5010 need this: the same certificate DN is written with different case,
//! spacing and escaping by different tools.

use std::fmt;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::error::TrustError;

/// Longest DN string accepted; real DNs are well under 1 KiB.
pub const MAX_DN_STRING_LEN: usize = 4096;
/// Most RDNs (and most attributes in one RDN) accepted in one DN.
pub const MAX_RDNS: usize = 64;

/// Short names understood in DN strings, with their OIDs. The output of [`Dn`]'s `Display`
/// uses the same names, so a DN printed here parses back to an equal DN.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("E", "1.2.840.113549.1.9.1"),
    ("ORGANIZATIONIDENTIFIER", "2.5.4.97"),
];

/// One attribute of an RDN.
#[derive(Clone, Debug)]
pub struct Attribute {
    /// Dotted OID of the attribute type.
    pub oid: String,
    /// The value as written, when it is a character string.
    pub value: AttributeValue,
}

/// An attribute value: a character string, or an encoding we do not interpret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    /// Decoded from one of the ASN.1 string types, or written as a string in a DN string.
    Text(String),
    /// The full DER TLV of a value that is not a character string.
    Der(Vec<u8>),
}

impl Attribute {
    /// The comparison key: (OID, prepared value). Strings go through RFC 4518 preparation.
    fn key(&self) -> (String, Key) {
        let key = match &self.value {
            AttributeValue::Text(s) => Key::Text(prepare(s)),
            AttributeValue::Der(d) => Key::Der(d.clone()),
        };
        (self.oid.clone(), key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Text(String),
    Der(Vec<u8>),
}

/// A distinguished name: RDNs in **encoding order** (`C` first for IGC-Santé names), each RDN a
/// set of attributes.
#[derive(Clone, Debug, Default)]
pub struct Dn {
    rdns: Vec<Vec<Attribute>>,
    /// The prepared comparison key, made at the first comparison or hash: RFC 4518
    /// preparation (NFKC, case folding) is most of the cost of a liste blanche lookup (P4).
    match_key: OnceLock<Vec<Vec<(String, Key)>>>,
}

impl Dn {
    fn new(rdns: Vec<Vec<Attribute>>) -> Self {
        Self {
            rdns,
            match_key: OnceLock::new(),
        }
    }

    /// Parse the DER `Name` of a certificate or CRL.
    pub fn from_der(der: &[u8]) -> Result<Self, TrustError> {
        let (_, name) = X509Name::from_der(der).map_err(|e| TrustError::Dn {
            input: format!("{} DER bytes", der.len()),
            why: format!("not a DER Name: {e}"),
        })?;
        Self::from_x509(&name)
    }

    /// Convert a name already parsed by x509-parser.
    pub fn from_x509(name: &X509Name<'_>) -> Result<Self, TrustError> {
        let mut rdns = Vec::new();
        for rdn in name.iter() {
            let mut attrs = Vec::new();
            for atv in rdn.iter() {
                let value = atv.attr_value();
                let der_tlv = encode_tlv(value.header.tag().0, value.data);
                attrs.push(Attribute {
                    oid: atv.attr_type().to_id_string(),
                    value: decode_string_tlv(&der_tlv)
                        .map_or(AttributeValue::Der(der_tlv), AttributeValue::Text),
                });
            }
            rdns.push(attrs);
        }
        if rdns.len() > MAX_RDNS {
            return Err(TrustError::Dn {
                input: name.to_string(),
                why: format!("more than {MAX_RDNS} RDNs"),
            });
        }
        Ok(Self::new(rdns))
    }

    /// Parse an RFC 4514 (or RFC 2253) string such as
    /// `CN=mail.example.mssante.fr,OU=318751275100020,O=AGENCE\, TEST,ST=Paris (75),C=FR`.
    /// Accepted beyond the strict grammar, because the strings come from hand-edited lists:
    /// spaces around `,`, `+` and `=`; `;` as an RDN separator; quoted values (RFC 1779).
    pub fn parse(input: &str) -> Result<Self, TrustError> {
        Parser::new(input)?.parse()
    }

    /// RDNs in encoding order.
    pub fn rdns(&self) -> &[Vec<Attribute>] {
        &self.rdns
    }

    /// The first value of an attribute, by OID (e.g. `2.5.4.3` for CN), searching from the most
    /// specific RDN (the last in encoding order).
    pub fn get(&self, oid: &str) -> Option<&str> {
        self.rdns
            .iter()
            .rev()
            .flatten()
            .find_map(|a| match (&a.value, a.oid == oid) {
                (AttributeValue::Text(s), true) => Some(s.as_str()),
                _ => None,
            })
    }

    fn keys(&self) -> &[Vec<(String, Key)>] {
        self.match_key.get_or_init(|| {
            self.rdns
                .iter()
                .map(|rdn| {
                    let mut set: Vec<_> = rdn.iter().map(Attribute::key).collect();
                    set.sort();
                    set
                })
                .collect()
        })
    }
}

impl PartialEq for Dn {
    /// RFC 4517 distinguishedNameMatch with RFC 4518 preparation of string values.
    fn eq(&self, other: &Self) -> bool {
        self.keys() == other.keys()
    }
}

impl Eq for Dn {}

impl std::hash::Hash for Dn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.keys().hash(state);
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Key::Text(s) => s.hash(state),
            Key::Der(d) => d.hash(state),
        }
    }
}

impl fmt::Display for Dn {
    /// RFC 4514 form: most specific RDN first, special characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, attr) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let name = SHORT_NAMES
                    .iter()
                    .find(|(_, oid)| *oid == attr.oid)
                    .map(|(n, _)| *n);
                f.write_str(name.unwrap_or(&attr.oid))?;
                f.write_str("=")?;
                match &attr.value {
                    AttributeValue::Text(s) => write_escaped(f, s)?,
                    AttributeValue::Der(d) => {
                        f.write_str("#")?;
                        for b in d {
                            write!(f, "{b:02X}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            write!(f, "\\{c}")?;
        } else if c == '\0' {
            f.write_str("\\00")?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

/// RFC 4518 string preparation for caseIgnoreMatch, as far as equality needs it:
/// map (drop the "mapped to nothing" characters, turn controls and separators into SPACE),
/// case-fold, NFKC, then insignificant space handling (trim, collapse runs to one space).
/// The prohibit and bidi steps only reject strings; we compare them instead of refusing.
pub fn prepare(value: &str) -> String {
    let mapped = value.chars().filter_map(|c| match c {
        '\u{00AD}'
        | '\u{1806}'
        | '\u{034F}'
        | '\u{180B}'..='\u{180D}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FFFC}'
        | '\u{200B}' => None,
        '\u{0009}'..='\u{000D}' | '\u{0085}' => Some(' '),
        c if c.is_control() => None,
        c if c.is_whitespace() => Some(' '),
        c => Some(c),
    });
    let folded: String = mapped.flat_map(char::to_lowercase).collect();
    let normalised: String = folded.nfkc().collect();
    normalised
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// DER TLV with a short or long definite length.
fn encode_tlv(tag: u32, content: &[u8]) -> Vec<u8> {
    // Universal string tags are all < 31, so a one-byte tag is enough for the types we decode;
    // larger tags only appear in raw values, which we then compare by content.
    let mut out = vec![u8::try_from(tag).unwrap_or(0xFF)];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Decode a DER TLV holding one of the X.520 string types; `None` for anything else.
fn decode_string_tlv(tlv: &[u8]) -> Option<String> {
    let (&tag, rest) = tlv.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let content = if first < 0x80 {
        rest.get(..usize::from(first))?
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest.get(n..n + len)?
    };
    match tag {
        // UTF8String, NumericString, PrintableString, IA5String, VisibleString
        12 | 18 | 19 | 22 | 26 => String::from_utf8(content.to_vec()).ok(),
        // TeletexString: in practice Latin-1 in old French CA names.
        20 => Some(content.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UTF-16BE.
        30 => {
            let units: Vec<u16> = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE.
        28 => content
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Result<Self, TrustError> {
        if input.len() > MAX_DN_STRING_LEN {
            return Err(TrustError::Dn {
                input: input.chars().take(64).collect::<String>() + "…",
                why: format!("longer than {MAX_DN_STRING_LEN} bytes"),
            });
        }
        Ok(Self {
            input,
            chars: input.chars().collect(),
            pos: 0,
        })
    }

    fn err(&self, why: impl Into<String>) -> TrustError {
        TrustError::Dn {
            input: self.input.to_owned(),
            why: format!("{} (at character {})", why.into(), self.pos),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn parse(mut self) -> Result<Dn, TrustError> {
        let mut rdns = Vec::new();
        self.skip_spaces();
        if self.peek().is_none() {
            return Ok(Dn::default());
        }
        loop {
            let mut rdn = vec![self.attribute()?];
            loop {
                match self.peek() {
                    Some('+') => {
                        self.pos += 1;
                        rdn.push(self.attribute()?);
                    }
                    Some(',' | ';') => {
                        self.pos += 1;
                        break;
                    }
                    None => break,
                    Some(c) => return Err(self.err(format!("unexpected '{c}'"))),
                }
                if rdn.len() > MAX_RDNS {
                    return Err(self.err(format!("more than {MAX_RDNS} attributes in one RDN")));
                }
            }
            rdns.push(rdn);
            if rdns.len() > MAX_RDNS {
                return Err(self.err(format!("more than {MAX_RDNS} RDNs")));
            }
            if self.peek().is_none() {
                break;
            }
        }
        // Strings list the most specific RDN first; we keep encoding order.
        rdns.reverse();
        Ok(Dn::new(rdns))
    }

    fn attribute(&mut self) -> Result<Attribute, TrustError> {
        self.skip_spaces();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        self.skip_spaces();
        if self.peek() != Some('=') {
            return Err(self.err(format!("expected '=' after attribute type '{name}'")));
        }
        self.pos += 1;
        let oid = attribute_oid(&name)
            .ok_or_else(|| self.err(format!("unknown attribute type '{name}'")))?;
        self.skip_spaces();
        let value = match self.peek() {
            Some('#') => {
                self.pos += 1;
                self.hex_value()?
            }
            Some('"') => {
                self.pos += 1;
                AttributeValue::Text(self.string_value(true)?)
            }
            _ => AttributeValue::Text(self.string_value(false)?),
        };
        Ok(Attribute { oid, value })
    }

    fn hex_value(&mut self) -> Result<AttributeValue, TrustError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let hex: String = self.chars[start..self.pos].iter().collect();
        self.skip_spaces();
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err(
                self.err("'#' must be followed by an even number of hex digits (a BER value)")
            );
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| self.err("bad hex digit"))?;
        // A string type written as BER compares equal to the same string written plainly.
        Ok(decode_string_tlv(&bytes).map_or(AttributeValue::Der(bytes), AttributeValue::Text))
    }

    /// Unescaped value up to the next unescaped `,`, `;` or `+` (or the closing quote).
    /// Escapes may be `\<special>` or `\HH`; hex escapes are UTF-8 bytes.
    fn string_value(&mut self, quoted: bool) -> Result<String, TrustError> {
        let mut bytes: Vec<u8> = Vec::new();
        // Length of `bytes` up to the last escaped or non-space character: unescaped trailing
        // spaces are not part of the value.
        let mut significant = 0;
        loop {
            let Some(c) = self.peek() else {
                if quoted {
                    return Err(self.err("unterminated quoted value"));
                }
                break;
            };
            match c {
                '"' if quoted => {
                    self.pos += 1;
                    self.skip_spaces();
                    significant = bytes.len();
                    break;
                }
                ',' | ';' | '+' if !quoted => break,
                '"' => return Err(self.err("unescaped '\"' in value")),
                '\\' => {
                    self.pos += 1;
                    let Some(next) = self.peek() else {
                        return Err(self.err("'\\' at end of input"));
                    };
                    if next.is_ascii_hexdigit() {
                        let hi = next;
                        let lo = self
                            .chars
                            .get(self.pos + 1)
                            .copied()
                            .filter(char::is_ascii_hexdigit);
                        let Some(lo) = lo else {
                            return Err(self.err(
                                "'\\' must be followed by a special character or two hex digits",
                            ));
                        };
                        let pair: String = [hi, lo].iter().collect();
                        bytes.push(
                            u8::from_str_radix(&pair, 16)
                                .map_err(|_| self.err("bad hex escape"))?,
                        );
                        self.pos += 2;
                    } else if matches!(
                        next,
                        ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | '#' | ' '
                    ) {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                        self.pos += 1;
                    } else {
                        return Err(self.err(format!("'\\{next}' is not a valid escape")));
                    }
                    significant = bytes.len();
                }
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c != ' ' {
                        significant = bytes.len();
                    }
                    self.pos += 1;
                }
            }
        }
        bytes.truncate(significant);
        String::from_utf8(bytes).map_err(|_| self.err("hex escapes do not form UTF-8"))
    }
}

fn attribute_oid(name: &str) -> Option<String> {
    let bare = name
        .strip_prefix("OID.")
        .or_else(|| name.strip_prefix("oid."))
        .unwrap_or(name);
    if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let well_formed =
            bare.split('.').count() >= 2 && bare.split('.').all(|arc| !arc.is_empty());
        return well_formed.then(|| bare.to_owned());
    }
    SHORT_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, oid)| (*oid).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ex_lbl_5010_case_and_spacing_differences_are_equal() {
        let a = dn(
            "CN=mail.hopital.mssante.fr,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR",
        );
        let b = dn(
            "cn=MAIL.Hopital.MSSANTE.fr, ou = 318751275100020 ,o=Agence  des systemes d'information   partag,st=PARIS (75),c=fr",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn ex_lbl_5010_escaped_comma_in_o_is_one_value() {
        let a = dn(r"CN=x.mssante.fr,OU=1,O=CLINIQUE\, SAINT JEAN,ST=Paris (75),C=FR");
        assert_eq!(a.rdns().len(), 5);
        assert_eq!(a.get("2.5.4.10"), Some("CLINIQUE, SAINT JEAN"));
        // The same comma as a hex escape, and inside RFC 1779 quotes.
        assert_eq!(
            a,
            dn(r"CN=x.mssante.fr,OU=1,O=CLINIQUE\2C SAINT JEAN,ST=Paris (75),C=FR")
        );
        assert_eq!(
            a,
            dn(r#"CN=x.mssante.fr,OU=1,O="clinique, saint jean",ST=Paris (75),C=FR"#)
        );
    }

    #[test]
    fn ex_lbl_5010_different_ou_is_not_equal() {
        let a = dn("CN=x.mssante.fr,OU=318751275100020,O=A,ST=Paris (75),C=FR");
        let b = dn("CN=x.mssante.fr,OU=318751275100021,O=A,ST=Paris (75),C=FR");
        assert_ne!(a, b);
    }

    #[test]
    fn ex_lbl_5010_order_of_rdns_matters_but_not_inside_a_multi_valued_rdn() {
        let a = dn("CN=810000000000+SN=DUPONT+GN=JEAN,TITLE=Médecin,C=FR");
        let b = dn("GN=jean+CN=810000000000+SN=Dupont,title=MÉDECIN,C=FR");
        assert_eq!(a, b);
        assert_ne!(dn("CN=a,O=b"), dn("O=b,CN=a"));
    }

    #[test]
    fn ex_lbl_5010_hex_ber_value_and_numeric_oid_equal_plain_string() {
        // #0C0550415249 is UTF8String "PARIS"; 2.5.4.8 is ST.
        assert_eq!(dn("ST=#0C055041524953,C=FR"), dn("2.5.4.8=Paris,C=FR"));
        assert_eq!(dn("OID.2.5.4.3=a"), dn("CN=A"));
    }

    #[test]
    fn ex_lbl_5010_nfkc_and_insignificant_spaces() {
        // U+FB01 (ﬁ ligature) is NFKC-equal to "fi"; no-break space is a separator.
        assert_eq!(dn("O=Coﬁdis\u{00A0}Santé"), dn("O=cofidis santé"));
        // An escaped trailing space is still insignificant for matching.
        assert_eq!(dn(r"O=abc\ "), dn("O=abc"));
    }

    #[test]
    fn display_round_trips() {
        let a = dn(r"CN=x,O=A\, B+OU=#0C0131,ST=Paris (75),C=FR");
        let printed = a.to_string();
        assert_eq!(dn(&printed), a);
        assert!(printed.contains(r"O=A\, B"), "{printed}");
    }

    #[test]
    fn der_name_from_a_certificate_matches_its_string() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "FR");
        params
            .distinguished_name
            .push(rcgen::DnType::StateOrProvinceName, "Paris (75)");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "A, B");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "x.mssante.fr");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).expect("parse");
        let from_der = Dn::from_x509(parsed.subject()).expect("dn");
        assert_eq!(
            from_der,
            dn(r"cn=X.mssante.fr, o=A\, B, st=paris (75), c=FR")
        );
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        for (s, why) in [
            ("CN", "expected '='"),
            ("FOO=bar", "unknown attribute type"),
            (r"CN=a\", "end of input"),
            (r"CN=a\q", "not a valid escape"),
            ("CN=#ABC", "even number"),
            (r"CN=\C3", "UTF-8"),
            ("CN=\"abc", "unterminated"),
        ] {
            let err = Dn::parse(s).expect_err(s).to_string();
            assert!(err.contains(why), "{s}: {err}");
        }
        let long = "CN=".to_owned() + &"a".repeat(MAX_DN_STRING_LEN);
        assert!(
            Dn::parse(&long)
                .expect_err("too long")
                .to_string()
                .contains("longer than")
        );
    }
}
