//! PKCS#10 requests in the subject forms IGC-Santé issues, signed in the token.

use std::cell::RefCell;
use std::fmt;

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, SanType, SignatureAlgorithm};

use crate::error::{KeystoreError, Result};
use crate::keys::KeyAlgorithm;
use crate::keystore::TokenKey;
use crate::token::SignMechanism;

/// A French département as IGC-Santé writes it in `ST`: `Paris (75)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Department {
    pub name: String,
    /// `01`…`95`, `2A`, `2B`, `971`…`976`.
    pub code: String,
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.code)
    }
}

/// The subjects the appliance requests certificates for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// ORG AUTH_CLI, the client certificate of applicative BALs (TM5.4P,
    /// EX_LPS_1100): `CN=Authentification MSS, OU=<IdNatStruc>, O=<NomStruc>,
    /// ST=<département> (XX), C=FR`. The CN is a fixed, uncontrolled label.
    OrgAuthCli {
        id_nat_struct: String,
        organization: String,
        department: Department,
    },
    /// The MSSanté connector's server certificate (Tableau 44): `CN=<FQDN>,
    /// OU=<prefix><IdNat>, O=<raison sociale>, ST=<département> (NN), C=FR`,
    /// with the FQDN also as a DNS subjectAltName.
    ConnectorServer {
        fqdn: String,
        id_nat_prefix: String,
        id_nat_struct: String,
        organization: String,
        department: Department,
    },
    /// The appliance's own device identity: `CN=<device name>, O=<NomStruc>, C=FR`.
    Device { name: String, organization: String },
}

/// CN of every ORG AUTH_CLI certificate (§6.8.5: "un libellé informatif").
pub const ORG_AUTH_CLI_CN: &str = "Authentification MSS";

impl Subject {
    /// The RDNs in encoding order (`C` first). RFC 2253 strings, as the spec
    /// and the liste blanche write them, list the same RDNs reversed.
    fn rdns(&self) -> Result<Vec<(DnType, String)>> {
        let rdns = match self {
            Self::OrgAuthCli {
                id_nat_struct,
                organization,
                department,
            } => vec![
                (DnType::StateOrProvinceName, checked_department(department)?),
                (DnType::OrganizationName, non_empty("O", organization)?),
                (
                    DnType::OrganizationalUnitName,
                    non_empty("OU", id_nat_struct)?,
                ),
                (DnType::CommonName, ORG_AUTH_CLI_CN.to_owned()),
            ],
            Self::ConnectorServer {
                fqdn,
                id_nat_prefix,
                id_nat_struct,
                organization,
                department,
            } => vec![
                (DnType::StateOrProvinceName, checked_department(department)?),
                (DnType::OrganizationName, non_empty("O", organization)?),
                (
                    DnType::OrganizationalUnitName,
                    format!("{id_nat_prefix}{}", non_empty("OU", id_nat_struct)?),
                ),
                (DnType::CommonName, checked_fqdn(fqdn)?),
            ],
            Self::Device { name, organization } => vec![
                (DnType::OrganizationName, non_empty("O", organization)?),
                (DnType::CommonName, non_empty("CN", name)?),
            ],
        };
        Ok(rdns)
    }

    /// The subject as RFC 2253 text, CN first, e.g.
    /// `CN=Authentification MSS, OU=…, O=…, ST=Paris (75), C=FR`.
    pub fn to_rfc2253(&self) -> Result<String> {
        let mut parts: Vec<String> = self
            .rdns()?
            .into_iter()
            .map(|(ty, value)| format!("{}={value}", short_name(&ty)))
            .collect();
        parts.reverse();
        parts.push("C=FR".to_owned());
        Ok(parts.join(", "))
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // RFC 5280 wants countryName as PrintableString.
        let fr = PrintableString::try_from("FR")
            .map_err(|e| KeystoreError::InvalidSubject(e.to_string()))?;
        dn.push(DnType::CountryName, DnValue::PrintableString(fr));
        for (ty, value) in self.rdns()? {
            dn.push(ty, DnValue::Utf8String(value));
        }
        params.distinguished_name = dn;
        if let Self::ConnectorServer { fqdn, .. } = self {
            let name = Ia5String::try_from(fqdn.as_str())
                .map_err(|e| KeystoreError::InvalidSubject(format!("FQDN {fqdn:?}: {e}")))?;
            params.subject_alt_names = vec![SanType::DnsName(name)];
        }
        Ok(params)
    }
}

fn short_name(ty: &DnType) -> &'static str {
    match ty {
        DnType::CommonName => "CN",
        DnType::OrganizationalUnitName => "OU",
        DnType::OrganizationName => "O",
        DnType::StateOrProvinceName => "ST",
        _ => "?",
    }
}

fn non_empty(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(KeystoreError::InvalidSubject(format!("{field} is empty")));
    }
    Ok(value.to_owned())
}

fn checked_department(department: &Department) -> Result<String> {
    non_empty("ST (département name)", &department.name)?;
    let code = department.code.as_str();
    let digits = code.chars().all(|c| c.is_ascii_digit());
    let valid = matches!(code, "2A" | "2B")
        || (digits && code.len() == 2)
        || (digits && code.len() == 3 && code.starts_with("97"));
    if !valid {
        return Err(KeystoreError::InvalidSubject(format!(
            "département code {code:?} (expected two digits, 2A, 2B or an overseas 97x)"
        )));
    }
    Ok(department.to_string())
}

fn checked_fqdn(fqdn: &str) -> Result<String> {
    let valid = !fqdn.is_empty()
        && fqdn.split('.').count() >= 2
        && fqdn.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(KeystoreError::InvalidSubject(format!(
            "{fqdn:?} is not a fully qualified domain name"
        )));
    }
    Ok(fqdn.to_ascii_lowercase())
}

/// rcgen's view of a token key. rcgen flattens signer errors into
/// `RemoteKeyError`; the token's own error is kept aside to report it.
struct CsrSigner<'a> {
    key: &'a TokenKey,
    error: RefCell<Option<KeystoreError>>,
}

impl rcgen::PublicKeyData for CsrSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key_bits()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.key.algorithm() {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl rcgen::SigningKey for CsrSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let mechanism = if self.key.algorithm().is_rsa() {
            SignMechanism::RsaPkcs1Sha256
        } else {
            SignMechanism::EcdsaPrehashed
        };
        self.key.sign(mechanism, msg).map_err(|e| {
            self.error.replace(Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Builds and signs the request (blocking: waits for the token).
pub(crate) fn build(key: &TokenKey, subject: &Subject) -> Result<String> {
    let params = subject.params()?;
    let signer = CsrSigner {
        key,
        error: RefCell::new(None),
    };
    let csr_err = |reason: String| KeystoreError::Csr {
        key: key.info().label.clone(),
        reason,
    };
    let csr = params.serialize_request(&signer).map_err(|e| {
        signer
            .error
            .take()
            .unwrap_or_else(|| csr_err(e.to_string()))
    })?;
    let pem = csr.pem().map_err(|e| csr_err(e.to_string()))?;
    tracing::info!(key.label = %key.info().label, key.id = %key.id(), subject = ?subject.to_rfc2253().ok(), "CSR built");
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> Department {
        Department {
            name: "Paris".to_owned(),
            code: "75".to_owned(),
        }
    }

    #[test]
    fn org_auth_cli_subject_is_the_tm5_4p_form() {
        let subject = Subject::OrgAuthCli {
            id_nat_struct: "10B0152395".to_owned(),
            organization: "CH DE TEST".to_owned(),
            department: paris(),
        };
        assert_eq!(
            subject.to_rfc2253().expect("valid"),
            "CN=Authentification MSS, OU=10B0152395, O=CH DE TEST, ST=Paris (75), C=FR"
        );
    }

    #[test]
    fn connector_subject_prefixes_the_id_nat() {
        let subject = Subject::ConnectorServer {
            fqdn: "MSS.Example.fr".to_owned(),
            id_nat_prefix: "3".to_owned(),
            id_nat_struct: "18751275100020".to_owned(),
            organization: "AGENCE DES SYSTEMES D'INFORMATION PARTAG".to_owned(),
            department: paris(),
        };
        assert_eq!(
            subject.to_rfc2253().expect("valid"),
            "CN=mss.example.fr, OU=318751275100020, O=AGENCE DES SYSTEMES D'INFORMATION PARTAG, ST=Paris (75), C=FR"
        );
    }

    #[test]
    fn bad_subject_fields_are_named() {
        let mut department = paris();
        department.code = "7".to_owned();
        let err = Subject::OrgAuthCli {
            id_nat_struct: "1".to_owned(),
            organization: "O".to_owned(),
            department,
        }
        .to_rfc2253()
        .expect_err("one-digit code");
        assert!(err.to_string().contains("département code \"7\""), "{err}");

        let err = Subject::ConnectorServer {
            fqdn: "localhost".to_owned(),
            id_nat_prefix: "3".to_owned(),
            id_nat_struct: "1".to_owned(),
            organization: "O".to_owned(),
            department: paris(),
        }
        .to_rfc2253()
        .expect_err("not an FQDN");
        assert!(err.to_string().contains("fully qualified"), "{err}");

        let err = Subject::Device {
            name: " ".to_owned(),
            organization: "O".to_owned(),
        }
        .to_rfc2253()
        .expect_err("empty CN");
        assert!(err.to_string().contains("CN is empty"), "{err}");
    }
}
