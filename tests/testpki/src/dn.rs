//! Distinguished names with repeated attributes and multi-valued RDNs.
//!
//! rcgen's `DistinguishedName` keeps one value per attribute type and one
//! attribute per RDN, which cannot express `OU=0002 187512751/OU=IGC-SANTE`
//! (IGC-Santé CAs) nor `CN=…+SN=…+GN=…` (CPS). Names are therefore encoded
//! here and spliced into the certificates.

use crate::der::{self, TAG_PRINTABLE_STRING, TAG_SET, TAG_UTF8_STRING};

/// Attribute types used by the health PKIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attr {
    /// countryName (2.5.4.6), encoded as PrintableString as RFC 5280 requires.
    C,
    /// stateOrProvinceName (2.5.4.8): `Paris (75)` in MSSanté DNs.
    St,
    /// localityName (2.5.4.7).
    L,
    /// organizationName (2.5.4.10).
    O,
    /// organizationalUnitName (2.5.4.11).
    Ou,
    /// commonName (2.5.4.3).
    Cn,
    /// surname (2.5.4.4).
    Sn,
    /// givenName (2.5.4.42).
    Gn,
    /// title (2.5.4.12): the profession on CPS certificates.
    Title,
}

impl Attr {
    fn arcs(self) -> &'static [u64] {
        match self {
            Attr::C => &[2, 5, 4, 6],
            Attr::St => &[2, 5, 4, 8],
            Attr::L => &[2, 5, 4, 7],
            Attr::O => &[2, 5, 4, 10],
            Attr::Ou => &[2, 5, 4, 11],
            Attr::Cn => &[2, 5, 4, 3],
            Attr::Sn => &[2, 5, 4, 4],
            Attr::Gn => &[2, 5, 4, 42],
            Attr::Title => &[2, 5, 4, 12],
        }
    }
}

/// A distinguished name, RDNs in **encoding order** (the order of
/// `openssl x509 -subject` one-line output, `C` first). RFC 2253 strings such
/// as Tableau 44's `CN=…,OU=…,O=…,ST=…,C=FR` print the same RDNs reversed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dn {
    rdns: Vec<Vec<(Attr, String)>>,
}

impl Dn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a single-valued RDN.
    #[must_use]
    pub fn push(mut self, attr: Attr, value: impl Into<String>) -> Self {
        self.rdns.push(vec![(attr, value.into())]);
        self
    }

    /// Appends a multi-valued RDN (`CN=…+SN=…+GN=…`).
    #[must_use]
    pub fn push_multi(mut self, values: &[(Attr, &str)]) -> Self {
        self.rdns
            .push(values.iter().map(|(a, v)| (*a, (*v).to_owned())).collect());
        self
    }

    /// The RDNs in encoding order.
    pub fn rdns(&self) -> &[Vec<(Attr, String)>] {
        &self.rdns
    }

    /// First value of `attr`, if any.
    pub fn get(&self, attr: Attr) -> Option<&str> {
        self.rdns
            .iter()
            .flatten()
            .find(|(a, _)| *a == attr)
            .map(|(_, v)| v.as_str())
    }

    /// The MSSanté connector server DN of Tableau 44, given in its printed
    /// order (`CN, OU, O, ST, C=FR`).
    pub fn mssante_server(fqdn: &str, ou: &str, o: &str, st: &str) -> Self {
        Dn::new()
            .push(Attr::C, "FR")
            .push(Attr::St, st)
            .push(Attr::O, o)
            .push(Attr::Ou, ou)
            .push(Attr::Cn, fqdn)
    }

    /// `/C=FR/O=ASIP-SANTE/OU=0002 187512751/OU=IGC-SANTE/CN=<cn>`.
    pub fn igc_sante_ca(cn: &str) -> Self {
        Dn::new()
            .push(Attr::C, "FR")
            .push(Attr::O, "ASIP-SANTE")
            .push(Attr::Ou, "0002 187512751")
            .push(Attr::Ou, "IGC-SANTE")
            .push(Attr::Cn, cn)
    }

    /// DER `Name`.
    pub fn to_der(&self) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = self
            .rdns
            .iter()
            .map(|rdn| {
                let mut atvs: Vec<Vec<u8>> = rdn
                    .iter()
                    .map(|(attr, value)| {
                        let tag = if *attr == Attr::C {
                            TAG_PRINTABLE_STRING
                        } else {
                            TAG_UTF8_STRING
                        };
                        der::seq(&[&der::oid(attr.arcs()), &der::tlv(tag, value.as_bytes())])
                    })
                    .collect();
                // DER orders SET OF by encoding.
                atvs.sort();
                der::tlv(TAG_SET, &atvs.concat())
            })
            .collect();
        let refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
        der::seq(&refs)
    }
}
