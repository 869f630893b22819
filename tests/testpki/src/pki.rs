//! The fixed hierarchy and the [`TestPki`] container.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyPair};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime, Time, UtcOffset};

use crate::cert::{self, CertInput, KeyUsageBit as Ku, Role};
use crate::crl::{self, Crl, CrlInput, CrlKind, Revocation, RevocationReason};
use crate::dn::{Attr, Dn};
use crate::keys::{self, KeyAlg};
use crate::{IssuedCert, LeafSpec, PkiOptions, TestPkiError, Validity, email_san};

/// CRL number of every full CRL of [`TestPki::generate`].
pub const FULL_CRL_NUMBER: u64 = 100;
/// CRL number of every delta CRL of [`TestPki::generate`] (base: [`FULL_CRL_NUMBER`]).
pub const DELTA_CRL_NUMBER: u64 = 101;

/// Names of the generated certificates (see the crate documentation).
pub mod names {
    pub const ACR_EL: &str = "acr-el";
    pub const ACI_EL_ORG: &str = "aci-el-org";
    pub const ACI_EL_PP: &str = "aci-el-pp";
    pub const ACR_FO: &str = "acr-fo";
    pub const ACI_FO_PP: &str = "aci-fo-pp";
    pub const TEST_ACR_EL: &str = "test-acr-el";
    pub const TEST_ACI_EL_ORG: &str = "test-aci-el-org";
    pub const ROGUE_ACI_EL_ORG: &str = "rogue-aci-el-org";
    pub const PUBLIC_ROOT: &str = "public-root";
    pub const SV_TEST_ROOT: &str = "sv-test-root";
    pub const SV_TEST_FACTURATION: &str = "sv-test-facturation";
    pub const SV_ROOT: &str = "sv-root";
    pub const SV_FACTURATION: &str = "sv-facturation";
    pub const DEVICE_CA: &str = "device-ca";

    pub const SERVER_A: &str = "server-a";
    pub const SERVER_COMMA: &str = "server-comma";
    pub const ORG_AUTH_CLI: &str = "org-auth-cli";
    pub const LISTE_BLANCHE: &str = "liste-blanche";
    pub const CPS_AUTH: &str = "cps-auth";
    pub const CPS_SIGN: &str = "cps-sign";
    pub const SV_AMO_TEST: &str = "sv-amo-test";
    pub const SV_AMC_TEST: &str = "sv-amc-test";
    pub const SV_AMO_REEL: &str = "sv-amo-reel";
    pub const DEVICE_WEBADMIN: &str = "device-webadmin";

    pub const SERVER_A_EXPIRED: &str = "server-a-expired";
    pub const SERVER_A_NOT_YET_VALID: &str = "server-a-not-yet-valid";
    pub const SERVER_A_REVOKED: &str = "server-a-revoked";
    pub const SERVER_A_REVOKED_DELTA: &str = "server-a-revoked-delta";
    pub const SERVER_A_BY_EL_PP: &str = "server-a-by-el-pp";
    pub const SERVER_A_BY_FO_PP: &str = "server-a-by-fo-pp";
    pub const SERVER_A_TEST_BRANCH: &str = "server-a-test-branch";
    pub const SERVER_A_ROGUE: &str = "server-a-rogue";
    pub const SERVER_A_PUBLIC_CA: &str = "server-a-public-ca";
    pub const SV_AMO_TEST_WRONG_SAN: &str = "sv-amo-test-wrong-san";
    pub const SV_AMO_TEST_KU_NO_KEYENC: &str = "sv-amo-test-ku-no-keyenc";
    pub const SV_AMO_TEST_KU_NOT_CRITICAL: &str = "sv-amo-test-ku-not-critical";
    pub const SV_AMO_TEST_EXPIRED: &str = "sv-amo-test-expired";
    pub const SV_AMO_TEST_REVOKED: &str = "sv-amo-test-revoked";
}
use names as n;

const ASIP_OU: &str = "318751275100020";
const ASIP_O: &str = "AGENCE DES SYSTEMES D'INFORMATION PARTAG";
const PARIS: &str = "Paris (75)";
const SERVER_A_FQDN: &str = "mail.operateur-a.mssante.fr";

/// A generated PKI. See the crate documentation for its contents.
#[derive(Debug)]
pub struct TestPki {
    options: PkiOptions,
    day: OffsetDateTime,
    certs: BTreeMap<String, IssuedCert>,
    /// Signing keys of the CAs, parsed once.
    signers: BTreeMap<String, KeyPair>,
    crls: BTreeMap<String, (Crl, Crl)>,
    anchors: Vec<String>,
}

struct SvBranch {
    root: &'static str,
    root_cn: &'static str,
    ca: &'static str,
    ca_cn: &'static str,
}

impl TestPki {
    /// Generates the whole hierarchy, its variants and its CRLs.
    pub fn generate(options: &PkiOptions) -> Result<Self, TestPkiError> {
        let day = options
            .now
            .to_offset(UtcOffset::UTC)
            .replace_time(Time::MIDNIGHT);
        let mut pki = TestPki {
            options: options.clone(),
            day,
            certs: BTreeMap::new(),
            signers: BTreeMap::new(),
            crls: BTreeMap::new(),
            anchors: Vec::new(),
        };
        pki.add_cas()?;
        pki.add_leaves()?;
        pki.add_variants()?;
        pki.add_crls()?;
        Ok(pki)
    }

    fn add_cas(&mut self) -> Result<(), TestPkiError> {
        let igc = Dn::igc_sante_ca;
        self.add_ca(
            n::ACR_EL,
            igc("AC RACINE IGC-SANTE ELEMENTAIRE"),
            None,
            true,
        )?;
        self.add_ca(
            n::ACI_EL_ORG,
            igc("AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"),
            Some(n::ACR_EL),
            false,
        )?;
        self.add_ca(
            n::ACI_EL_PP,
            igc("AC IGC-SANTE ELEMENTAIRE PERSONNES"),
            Some(n::ACR_EL),
            false,
        )?;
        self.add_ca(n::ACR_FO, igc("AC RACINE IGC-SANTE FORT"), None, true)?;
        self.add_ca(
            n::ACI_FO_PP,
            igc("AC IGC-SANTE FORT PERSONNES"),
            Some(n::ACR_FO),
            false,
        )?;
        self.add_ca(
            n::TEST_ACR_EL,
            igc("TEST AC RACINE IGC-SANTE ELEMENTAIRE"),
            None,
            true,
        )?;
        self.add_ca(
            n::TEST_ACI_EL_ORG,
            igc("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"),
            Some(n::TEST_ACR_EL),
            false,
        )?;
        // Same DN as the real intermediate, own key, trusted by nobody.
        self.add_ca(
            n::ROGUE_ACI_EL_ORG,
            igc("AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"),
            None,
            false,
        )?;
        self.add_ca(
            n::PUBLIC_ROOT,
            Dn::new()
                .push(Attr::C, "US")
                .push(Attr::O, "Example Trust Services")
                .push(Attr::Cn, "Example Public Root CA"),
            None,
            false,
        )?;
        for b in SV_BRANCHES {
            let root_dn = Dn::new()
                .push(Attr::C, "FR")
                .push(Attr::O, "sesam-vitale")
                .push(Attr::Ou, b.root_cn)
                .push(Attr::Cn, b.root_cn);
            self.add_ca(b.root, root_dn, None, true)?;
            let ca_dn = Dn::new()
                .push(Attr::C, "FR")
                .push(Attr::O, "sesam-vitale")
                .push(Attr::Ou, b.root_cn)
                .push(Attr::Ou, b.ca_cn)
                .push(Attr::Cn, b.ca_cn);
            self.add_ca(b.ca, ca_dn, Some(b.root), false)?;
        }
        self.add_ca(
            n::DEVICE_CA,
            Dn::new()
                .push(Attr::C, "FR")
                .push(Attr::O, "Passerelle")
                .push(Attr::Cn, "Passerelle Device CA"),
            None,
            true,
        )
    }

    fn add_leaves(&mut self) -> Result<(), TestPkiError> {
        self.issue_leaf(n::ACI_EL_ORG, server_a(n::SERVER_A)?)?;
        self.issue_leaf(
            n::ACI_EL_ORG,
            LeafSpec::mssante_server(
                n::SERVER_COMMA,
                "mail.clinique-du-parc.mssante.fr",
                "312345678900012",
                // The comma exercises DN escaping (`\,` in RFC 2253).
                "CLINIQUE DU PARC, SAS",
                "Hauts-de-Seine (92)",
            )?,
        )?;
        self.issue_leaf(
            n::ACI_EL_ORG,
            LeafSpec::new(
                n::ORG_AUTH_CLI,
                Dn::mssante_server("Authentification MSS", ASIP_OU, ASIP_O, PARIS),
            )
            .with_key_usage(&[Ku::DigitalSignature, Ku::KeyEncipherment], true)
            .with_eku(&[Eku::ClientAuth]),
        )?;
        self.issue_leaf(
            n::ACI_EL_ORG,
            LeafSpec::new(
                n::LISTE_BLANCHE,
                Dn::mssante_server(
                    "Liste Blanche MSSante",
                    ASIP_OU,
                    "AGENCE DU NUMERIQUE EN SANTE",
                    PARIS,
                ),
            )
            .with_key_usage(&[Ku::DigitalSignature, Ku::NonRepudiation], true)
            .with_eku(&[Eku::EmailProtection]),
        )?;
        let cps_dn = Dn::new()
            .push(Attr::C, "FR")
            .push(Attr::Title, "Médecin")
            .push_multi(&[
                (Attr::Cn, "899700218896"),
                (Attr::Sn, "DUPONT"),
                (Attr::Gn, "JEAN"),
            ]);
        self.issue_leaf(
            n::ACI_FO_PP,
            LeafSpec::new(n::CPS_AUTH, cps_dn.clone()).with_eku(&[Eku::ClientAuth]),
        )?;
        self.issue_leaf(
            n::ACI_FO_PP,
            LeafSpec::new(n::CPS_SIGN, cps_dn).with_key_usage(&[Ku::NonRepudiation], true),
        )?;
        for (name, ca, addr) in [
            (
                n::SV_AMO_TEST,
                n::SV_TEST_FACTURATION,
                "amo_pj.test@test.rss.fr",
            ),
            (
                n::SV_AMC_TEST,
                n::SV_TEST_FACTURATION,
                "amc_pj.test@test.rss.fr",
            ),
            (n::SV_AMO_REEL, n::SV_FACTURATION, "amo_pj.reel@reel.rss.fr"),
        ] {
            let spec = Self::sv_leaf(name, ca, addr)?;
            self.issue_leaf(ca, spec)?;
        }
        self.issue_leaf(
            n::DEVICE_CA,
            LeafSpec::new(
                n::DEVICE_WEBADMIN,
                Dn::new()
                    .push(Attr::C, "FR")
                    .push(Attr::O, "Passerelle")
                    .push(Attr::Cn, "passerelle.local"),
            )
            .with_key(n::DEVICE_WEBADMIN, KeyAlg::P256)
            .with_eku(&[Eku::ServerAuth])
            .with_sans(vec![crate::dns_san("passerelle.local")?]),
        )?;
        Ok(())
    }

    fn add_variants(&mut self) -> Result<(), TestPkiError> {
        for (name, ca, validity) in [
            (n::SERVER_A_EXPIRED, n::ACI_EL_ORG, Validity::Expired),
            (
                n::SERVER_A_NOT_YET_VALID,
                n::ACI_EL_ORG,
                Validity::NotYetValid,
            ),
            (n::SERVER_A_REVOKED, n::ACI_EL_ORG, Validity::Current),
            (n::SERVER_A_REVOKED_DELTA, n::ACI_EL_ORG, Validity::Current),
            (n::SERVER_A_BY_EL_PP, n::ACI_EL_PP, Validity::Current),
            (n::SERVER_A_BY_FO_PP, n::ACI_FO_PP, Validity::Current),
            (
                n::SERVER_A_TEST_BRANCH,
                n::TEST_ACI_EL_ORG,
                Validity::Current,
            ),
            (n::SERVER_A_ROGUE, n::ROGUE_ACI_EL_ORG, Validity::Current),
            (n::SERVER_A_PUBLIC_CA, n::PUBLIC_ROOT, Validity::Current),
        ] {
            self.issue_leaf(ca, server_a(name)?.with_validity(validity))?;
        }

        let amo =
            |name: &str| Self::sv_leaf(name, n::SV_TEST_FACTURATION, "amo_pj.test@test.rss.fr");
        let wrong_san = Self::sv_leaf(
            n::SV_AMO_TEST_WRONG_SAN,
            n::SV_TEST_FACTURATION,
            "amo_pj.test@test.rss.fr",
        )?
        .with_sans(vec![email_san("pj.test@autre-domaine.fr")?]);
        let no_keyenc = amo(n::SV_AMO_TEST_KU_NO_KEYENC)?
            .with_key_usage(&[Ku::DigitalSignature, Ku::NonRepudiation], true);
        let not_critical = amo(n::SV_AMO_TEST_KU_NOT_CRITICAL)?.with_key_usage(
            &[
                Ku::DigitalSignature,
                Ku::NonRepudiation,
                Ku::KeyEncipherment,
            ],
            false,
        );
        let expired = amo(n::SV_AMO_TEST_EXPIRED)?.with_validity(Validity::Expired);
        let revoked = amo(n::SV_AMO_TEST_REVOKED)?;
        for spec in [wrong_san, no_keyenc, not_critical, expired, revoked] {
            self.issue_leaf(n::SV_TEST_FACTURATION, spec)?;
        }
        Ok(())
    }

    fn add_crls(&mut self) -> Result<(), TestPkiError> {
        let revoked = |pki: &Self, name: &str, at: OffsetDateTime| -> Result<_, TestPkiError> {
            Ok(Revocation {
                serial: pki.cert(name)?.serial().to_vec(),
                revoked_at: at,
                reason: Some(RevocationReason::KeyCompromise),
            })
        };
        let day = self.day;
        let mut full: BTreeMap<&str, Vec<Revocation>> = BTreeMap::new();
        let mut delta: BTreeMap<&str, Vec<Revocation>> = BTreeMap::new();
        full.entry(n::ACI_EL_ORG).or_default().push(revoked(
            self,
            n::SERVER_A_REVOKED,
            day - Duration::days(2),
        )?);
        // Revoked after the base CRL was issued (day − 1 day), so only the delta knows.
        delta.entry(n::ACI_EL_ORG).or_default().push(revoked(
            self,
            n::SERVER_A_REVOKED_DELTA,
            day - Duration::hours(12),
        )?);
        full.entry(n::SV_TEST_FACTURATION)
            .or_default()
            .push(revoked(
                self,
                n::SV_AMO_TEST_REVOKED,
                day - Duration::days(2),
            )?);

        let cas: Vec<String> = self.signers.keys().cloned().collect();
        for ca in cas {
            let f = self.crl(
                &ca,
                full.get(ca.as_str()).map_or(&[][..], Vec::as_slice),
                CrlKind::Full {
                    number: FULL_CRL_NUMBER,
                },
            )?;
            let d = self.crl(
                &ca,
                delta.get(ca.as_str()).map_or(&[][..], Vec::as_slice),
                CrlKind::Delta {
                    number: DELTA_CRL_NUMBER,
                    base: FULL_CRL_NUMBER,
                },
            )?;
            self.crls.insert(ca, (f, d));
        }
        Ok(())
    }

    fn sv_leaf(name: &str, ca: &str, addr: &str) -> Result<LeafSpec, TestPkiError> {
        let b = SV_BRANCHES
            .iter()
            .find(|b| b.ca == ca)
            .ok_or_else(|| TestPkiError::NotACa(ca.to_owned()))?;
        let dn = Dn::new()
            .push(Attr::C, "FR")
            .push(Attr::O, "sesam-vitale")
            .push(Attr::Ou, b.root_cn)
            .push(Attr::Ou, b.ca_cn)
            .push(Attr::Cn, addr);
        let mut spec = LeafSpec::new(name, dn)
            .with_key(format!("{ca}-pj"), KeyAlg::Rsa(2048))
            .with_key_usage(
                &[
                    Ku::DigitalSignature,
                    Ku::NonRepudiation,
                    Ku::KeyEncipherment,
                ],
                true,
            )
            .with_sans(vec![email_san(addr)?]);
        // The directory's (non-standard) URL shape, then one a test can serve.
        spec.extra_crl_uris = vec![format!(
            "ldap://annuaire.sesam-vitale.fr/cn={c},ou={c},ou={r},o=sesam-vitale,c=fr/certificateRevocationList",
            c = b.ca_cn,
            r = b.root_cn
        )];
        Ok(spec)
    }

    fn serial(&self, name: &str) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"passerelle-testpki serial ");
        h.update(self.options.seed.to_be_bytes());
        h.update(name.as_bytes());
        let mut s = h.finalize()[..16].to_vec();
        // Positive and exactly 16 bytes.
        s[0] = (s[0] & 0x3f) | 0x40;
        s
    }

    fn key(&self, label: &str, alg: KeyAlg) -> Result<crate::TestKey, TestPkiError> {
        keys::key_for(&self.options.key_cache, self.options.seed, label, alg)
    }

    fn add_ca(
        &mut self,
        name: &str,
        subject: Dn,
        issuer: Option<&str>,
        anchor: bool,
    ) -> Result<(), TestPkiError> {
        self.ensure_new(name)?;
        let key = self.key(&format!("ca/{name}"), KeyAlg::Rsa(2048))?;
        let key_pair = key.key_pair()?;
        let subject_der = subject.to_der();
        let crl_uris: Vec<String> = issuer.map(|i| self.crl_url(i)).into_iter().collect();
        let issuer_parts = match issuer {
            Some(i) => Some((self.issuer_name_der(i)?, self.signer(i)?)),
            None => None,
        };
        let der = cert::build(&CertInput {
            serial: &self.serial(name),
            not_before: self.day - Duration::days(3 * 365),
            not_after: self.day + Duration::days(10 * 365),
            subject_der: &subject_der,
            subject_key: &key_pair,
            issuer: issuer_parts.as_ref().map(|(n, k)| (n.as_slice(), *k)),
            // Roots unconstrained, intermediates issue leaves only.
            role: Role::Ca {
                path_len: issuer.map(|_| 0),
            },
            key_usage: &[Ku::KeyCertSign, Ku::CrlSign],
            key_usage_critical: true,
            extended_key_usage: &[],
            subject_alt_names: &[],
            crl_uris: &crl_uris,
            freshest_crl_uri: None,
        })?;
        self.certs.insert(
            name.to_owned(),
            IssuedCert {
                name: name.to_owned(),
                der,
                key,
                issuer: issuer.map(str::to_owned),
                serial: self.serial(name),
                subject,
                is_ca: true,
            },
        );
        self.signers.insert(name.to_owned(), key_pair);
        if anchor {
            self.anchors.push(name.to_owned());
        }
        Ok(())
    }

    fn ensure_new(&self, name: &str) -> Result<(), TestPkiError> {
        if self.certs.contains_key(name) {
            return Err(TestPkiError::DuplicateName(name.to_owned()));
        }
        Ok(())
    }

    fn signer(&self, ca: &str) -> Result<&KeyPair, TestPkiError> {
        self.signers
            .get(ca)
            .ok_or_else(|| TestPkiError::NotACa(ca.to_owned()))
    }

    fn issuer_name_der(&self, ca: &str) -> Result<Vec<u8>, TestPkiError> {
        Ok(self.cert(ca)?.subject().to_der())
    }

    /// Issues a leaf under CA `issuer` and adds it to the PKI (so that
    /// [`TestPki::write_to`] writes it too).
    pub fn issue_leaf(
        &mut self,
        issuer: &str,
        spec: LeafSpec,
    ) -> Result<&IssuedCert, TestPkiError> {
        self.ensure_new(&spec.name)?;
        let key = self.key(&spec.key_label, spec.key_alg)?;
        let key_pair = key.key_pair()?;
        let (not_before, not_after) = match spec.validity {
            Validity::Current => (self.day - Duration::days(1), self.day + Duration::days(365)),
            Validity::Expired => (
                self.day - Duration::days(400),
                self.day - Duration::days(30),
            ),
            Validity::NotYetValid => (
                self.day + Duration::days(30),
                self.day + Duration::days(400),
            ),
            Validity::Explicit {
                not_before,
                not_after,
            } => (not_before, not_after),
        };
        let mut crl_uris = spec.extra_crl_uris.clone();
        crl_uris.push(self.crl_url(issuer));
        let freshest = self
            .options
            .freshest_crl
            .then(|| self.delta_crl_url(issuer));
        let serial = self.serial(&spec.name);
        let subject_der = spec.subject.to_der();
        let der = cert::build(&CertInput {
            serial: &serial,
            not_before,
            not_after,
            subject_der: &subject_der,
            subject_key: &key_pair,
            issuer: Some((&self.issuer_name_der(issuer)?, self.signer(issuer)?)),
            role: Role::Leaf,
            key_usage: &spec.key_usage,
            key_usage_critical: spec.key_usage_critical,
            extended_key_usage: &spec.extended_key_usage,
            subject_alt_names: &spec.subject_alt_names,
            crl_uris: &crl_uris,
            freshest_crl_uri: freshest.as_deref(),
        })?;
        let name = spec.name.clone();
        let leaf = IssuedCert {
            name: spec.name,
            der,
            key,
            issuer: Some(issuer.to_owned()),
            serial,
            subject: spec.subject,
            is_ca: false,
        };
        Ok(self.certs.entry(name).or_insert(leaf))
    }

    /// Signs a fresh CRL of CA `issuer` with the dates of the crate
    /// documentation (full: `day − 1 day` … `day + 7 days`, pointing at the
    /// delta when FreshestCRL is on; delta: `day` … `day + 1 day`).
    pub fn crl(
        &self,
        issuer: &str,
        revoked: &[Revocation],
        kind: CrlKind,
    ) -> Result<Crl, TestPkiError> {
        let (this_update, next_update, freshest) = match kind {
            CrlKind::Full { .. } => (
                self.day - Duration::days(1),
                self.day + Duration::days(7),
                self.options
                    .freshest_crl
                    .then(|| self.delta_crl_url(issuer)),
            ),
            CrlKind::Delta { .. } => (self.day, self.day + Duration::days(1), None),
        };
        crl::build(&CrlInput {
            issuer,
            issuer_cert_der: self.cert(issuer)?.der(),
            signer: self.signer(issuer)?,
            this_update,
            next_update,
            revoked,
            kind,
            freshest_crl_uri: freshest.as_deref(),
        })
    }

    pub fn options(&self) -> &PkiOptions {
        &self.options
    }

    /// `now` truncated to 00:00 UTC; all dates derive from it.
    pub fn day(&self) -> OffsetDateTime {
        self.day
    }

    pub fn cert(&self, name: &str) -> Result<&IssuedCert, TestPkiError> {
        self.certs
            .get(name)
            .ok_or_else(|| TestPkiError::UnknownName(name.to_owned()))
    }

    /// All certificates, by name.
    pub fn certs(&self) -> impl Iterator<Item = &IssuedCert> {
        self.certs.values()
    }

    /// `name`, then its issuers up to and including the self-signed root.
    pub fn chain(&self, name: &str) -> Result<Vec<&IssuedCert>, TestPkiError> {
        let mut chain = vec![self.cert(name)?];
        while let Some(issuer) = chain.last().and_then(|c| c.issuer()) {
            chain.push(self.cert(issuer)?);
        }
        Ok(chain)
    }

    /// The full CRL of `ca` from [`TestPki::generate`].
    pub fn full_crl(&self, ca: &str) -> Result<&Crl, TestPkiError> {
        self.crls
            .get(ca)
            .map(|(f, _)| f)
            .ok_or_else(|| TestPkiError::NotACa(ca.to_owned()))
    }

    /// The delta CRL of `ca` from [`TestPki::generate`].
    pub fn delta_crl(&self, ca: &str) -> Result<&Crl, TestPkiError> {
        self.crls
            .get(ca)
            .map(|(_, d)| d)
            .ok_or_else(|| TestPkiError::NotACa(ca.to_owned()))
    }

    /// `<crl_base_url>/crl/<ca>.crl`
    pub fn crl_url(&self, ca: &str) -> String {
        format!("{}/crl/{ca}.crl", self.options.crl_base_url)
    }

    /// `<crl_base_url>/crl/<ca>-delta.crl`
    pub fn delta_crl_url(&self, ca: &str) -> String {
        format!("{}/crl/{ca}-delta.crl", self.options.crl_base_url)
    }

    /// The trust anchors (legitimate roots; not the rogue nor the public root).
    pub fn anchors(&self) -> Vec<&IssuedCert> {
        self.anchors
            .iter()
            .filter_map(|a| self.certs.get(a))
            .collect()
    }

    /// SHA-256 of each anchor's DER, by name, for pinning tests.
    pub fn anchor_fingerprints(&self) -> BTreeMap<String, [u8; 32]> {
        self.anchors()
            .into_iter()
            .map(|c| (c.name().to_owned(), c.sha256()))
            .collect()
    }

    /// Writes every certificate, key, chain, CRL and anchor under `dir`
    /// (layout in the crate documentation).
    pub fn write_to(&self, dir: &Path) -> Result<(), TestPkiError> {
        let write = |rel: String, bytes: &[u8]| {
            let path = dir.join(rel);
            fs::write(&path, bytes).map_err(|e| TestPkiError::io(&path, e))
        };
        for sub in ["", "crl", "anchors"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| TestPkiError::io(&d, e))?;
        }
        for c in self.certs.values() {
            let name = c.name();
            write(format!("{name}.crt.pem"), c.pem().as_bytes())?;
            write(format!("{name}.crt.der"), c.der())?;
            write(format!("{name}.key.pem"), c.key().pkcs8_pem().as_bytes())?;
            write(format!("{name}.key.der"), c.key().pkcs8_der())?;
            if c.issuer().is_some() {
                let chain: String = self
                    .chain(name)?
                    .iter()
                    .filter(|x| x.issuer().is_some())
                    .map(|x| x.pem())
                    .collect();
                write(format!("chain-{name}.pem"), chain.as_bytes())?;
            }
        }
        for (ca, (full, delta)) in &self.crls {
            write(format!("crl/{ca}.crl"), full.der())?;
            write(format!("crl/{ca}-delta.crl"), delta.der())?;
            write(format!("crl/{ca}.crl.pem"), full.pem().as_bytes())?;
            write(format!("crl/{ca}-delta.crl.pem"), delta.pem().as_bytes())?;
        }
        let mut fingerprints = String::new();
        for a in self.anchors() {
            let name = a.name();
            write(format!("anchors/{name}.pem"), a.pem().as_bytes())?;
            let mut bundle = a.pem();
            for c in self
                .certs
                .values()
                .filter(|c| c.is_ca() && c.name() != name)
            {
                if self.chain(c.name())?.last().map(|r| r.name()) == Some(name) {
                    bundle.push_str(&c.pem());
                }
            }
            write(format!("anchors/{name}-bundle.pem"), bundle.as_bytes())?;
            let _ = writeln!(fingerprints, "{name} {}", a.sha256_fingerprint());
        }
        write(
            "anchors/fingerprints.txt".to_owned(),
            fingerprints.as_bytes(),
        )
    }
}

const SV_BRANCHES: [SvBranch; 2] = [
    SvBranch {
        root: n::SV_TEST_ROOT,
        root_cn: "AC-SESAM-VITALE-TEST-2034",
        ca: n::SV_TEST_FACTURATION,
        ca_cn: "AC-FACTURATION-TEST",
    },
    SvBranch {
        root: n::SV_ROOT,
        root_cn: "AC-SESAM-VITALE-2034",
        ca: n::SV_FACTURATION,
        ca_cn: "AC-FACTURATION",
    },
];

fn server_a(name: &str) -> Result<LeafSpec, TestPkiError> {
    Ok(
        LeafSpec::mssante_server(name, SERVER_A_FQDN, ASIP_OU, ASIP_O, PARIS)?
            .with_key(n::SERVER_A, KeyAlg::Rsa(2048)),
    )
}
