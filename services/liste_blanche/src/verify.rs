//! Strict verification of a liste blanche (EX_2.2_5040, EX_2.2_5050, RE_2.2_5010).
//!
//! Accepted, and nothing else (Tableau 45 plus our "safe approach" of the digest §6.3):
//! - UTF-8 XML without DTD, at most [`MAX_LIST_BYTES`], [`MAX_NODES`] nodes, [`MAX_DEPTH`] deep;
//! - a root element in the namespace [`LISTE_BLANCHE_NS`] holding `versionFormat`?,
//!   `DateDeGeneration`?, exactly one `ListeDomaines` of `Domaine` entries, and exactly one
//!   `ds:Signature` — the only one in the document;
//! - the signature: `SignedInfo` (exc-c14n, rsa-sha256, one `Reference URI=""` with the
//!   transforms enveloped then exc-c14n and a sha256 digest), `SignatureValue`, `KeyInfo` with
//!   one `X509Data` of `X509Certificate`s; no `Id` attributes, no `Object`, no `Manifest`, no
//!   `InclusiveNamespaces`;
//! - the signer certificate validated by the trust store (anchors, branch, revocation) and
//!   carrying the configured ANS identity.
//!
//! Signature wrapping cannot work: the reference covers the whole document, and the domains are
//! read from that same parsed tree, whose every element is checked against the structure above.
//!
//! Where our sources are silent (no XSD at hand): the root element's local name is not checked
//! (the files we know of only show its namespace); `ResponsableContact` and `SupportContact`
//! ("champs non utilisés") must be text-only like the other fields; `xsi:` attributes are
//! accepted on the root element only.

use passerelle_trust::{Dn, TrustStore};
use roxmltree::{Document, Node, NodeType, ParsingOptions};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::c14n;
use crate::error::ListeBlancheError;
use crate::list::{Domaine, ListeBlanche};

/// Largest list accepted. The production list holds a few thousand domains (well under 10 MiB).
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// Most XML nodes accepted (elements, text, attributes count towards roxmltree's limit).
pub const MAX_NODES: u32 = 4_000_000;
/// Deepest element nesting accepted: the liste blanche structure is 5 deep, the signature 5.
pub const MAX_DEPTH: usize = 16;
/// Most `X509Certificate`s accepted in `X509Data` (the signer and its chain).
pub const MAX_CERTIFICATES: usize = 4;
/// Longest field (Tableau 43: 255 characters).
pub const MAX_FIELD_CHARS: usize = 255;

/// The liste blanche namespace (as used by the published file).
pub const LISTE_BLANCHE_NS: &str = "https://listeblanche.mssante.fr/schema";
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_OU: &str = "2.5.4.11";

/// Who must have signed the list (EX_2.2_5050: "émis par l'ANS et attribué à l'ANS"). The spec
/// gives no DN; the configuration does.
#[derive(Clone, Debug)]
pub enum SignerIdentity {
    /// The whole subject DN, compared after RFC 4518 normalisation.
    Subject(Dn),
    /// Only the `OU` (the ANS national structure id, e.g. `318751275100020`).
    Ou(String),
}

impl SignerIdentity {
    fn matches(&self, subject: &Dn) -> bool {
        match self {
            SignerIdentity::Subject(dn) => dn == subject,
            SignerIdentity::Ou(ou) => subject.get(OID_OU) == Some(ou.as_str()),
        }
    }
}

impl std::fmt::Display for SignerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerIdentity::Subject(dn) => write!(f, "subject {dn}"),
            SignerIdentity::Ou(ou) => write!(f, "OU={ou}"),
        }
    }
}

/// What verification checks the signer against.
#[derive(Debug)]
pub struct SignerPolicy<'a> {
    pub trust: &'a TrustStore,
    /// Trust profile for the signer certificate (role `any`; IGC-Santé Élémentaire
    /// Organisations, with revocation).
    pub profile: &'a str,
    pub identity: &'a SignerIdentity,
}

/// A list whose signature, signer and structure were verified.
#[derive(Clone, Debug)]
pub struct VerifiedList {
    pub liste: ListeBlanche,
    /// Subject of the signer certificate.
    pub signer: Dn,
    /// SHA-256 of the file bytes.
    pub sha256: [u8; 32],
}

/// Verify `bytes` as a signed liste blanche at time `now`.
pub fn verify(
    bytes: &[u8],
    policy: &SignerPolicy<'_>,
    now: UnixTime,
) -> Result<VerifiedList, ListeBlancheError> {
    let text = parse_limits(bytes)?;
    let doc = Document::parse_with_options(
        text,
        ParsingOptions {
            allow_dtd: false,
            nodes_limit: MAX_NODES,
        },
    )
    .map_err(|e| ListeBlancheError::Xml(e.to_string()))?;
    check_depth(&doc)?;
    let (fields, signature) = structure(&doc)?;
    // The DN index (RFC 4518 preparation of every DN) is built on a second core while the
    // signature is checked; it is dropped unless the signature verifies.
    let (signer, liste) = std::thread::scope(|scope| {
        let index = std::thread::Builder::new()
            .name("liste-blanche-index".to_owned())
            .spawn_scoped(scope, move || fields.into_list());
        let signer = check_signature(&doc, signature, policy, now);
        let liste = match index {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(ListeBlancheError::Schema(
                    "the DN index could not be built".to_owned(),
                ))
            }),
            Err(e) => Err(ListeBlancheError::Schema(format!("index thread: {e}"))),
        };
        (signer, liste)
    });
    Ok(VerifiedList {
        signer: signer?,
        liste: liste?,
        sha256: sha256(bytes),
    })
}

/// Digest, signature value and signer certificate; the signer's subject when all hold.
fn check_signature(
    doc: &Document<'_>,
    signature: Node<'_, '_>,
    policy: &SignerPolicy<'_>,
    now: UnixTime,
) -> Result<Dn, ListeBlancheError> {
    let sig = signature_parts(signature)?;

    let canonical = c14n::document(doc, Some(signature.id()));
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    if digest.as_ref() != sig.digest_value.as_slice() {
        return Err(ListeBlancheError::DigestMismatch);
    }
    let signer_der = signer_certificate(&sig.certificates)?;
    let (_, cert) = X509Certificate::from_der(&signer_der)
        .map_err(|e| ListeBlancheError::Signer(format!("X509Certificate: {e}")))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != OID_RSA_ENCRYPTION {
        return Err(ListeBlancheError::SignatureProfile(
            "the X509Data certificate key is not RSA (rsa-sha256 required)".to_owned(),
        ));
    }
    let signed_info = c14n::subtree(sig.signed_info);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        spki.subject_public_key.data.as_ref(),
    )
    .verify(signed_info.as_bytes(), &sig.signature_value)
    .map_err(|_| ListeBlancheError::BadSignature)?;

    if let Ok(Some(ku)) = cert.key_usage()
        && !(ku.value.digital_signature() || ku.value.non_repudiation())
    {
        return Err(ListeBlancheError::Signer(format!(
            "KeyUsage {} allows no signature",
            ku.value
        )));
    }
    let validated = policy
        .trust
        .validate(
            policy.profile,
            &CertificateDer::from(signer_der.as_slice()),
            &[],
            now,
        )
        .map_err(|e| ListeBlancheError::Signer(e.to_string()))?;
    if !policy.identity.matches(&validated.subject) {
        return Err(ListeBlancheError::NotAns {
            subject: validated.subject.to_string(),
            expected: policy.identity.to_string(),
        });
    }
    Ok(validated.subject)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn parse_limits(bytes: &[u8]) -> Result<&str, ListeBlancheError> {
    if bytes.len() > MAX_LIST_BYTES {
        return Err(ListeBlancheError::Xml(format!(
            "{} bytes, more than the {MAX_LIST_BYTES} accepted",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ListeBlancheError::Xml(format!("not UTF-8: {e}")))?;
    prescan_depth(text.as_bytes())?;
    Ok(text)
}

/// Element nesting measured on the raw text before parsing: roxmltree's parser recurses per
/// level, so a deeply nested document must be refused before it reaches it.
fn prescan_depth(text: &[u8]) -> Result<(), ListeBlancheError> {
    let too_deep = || ListeBlancheError::Xml(format!("nested deeper than {MAX_DEPTH} elements"));
    let skip_to = |from: usize, end: &[u8]| {
        text[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(text.len(), |p| from + p + end.len())
    };
    let (mut pos, mut depth) = (0usize, 0usize);
    while pos < text.len() {
        if text[pos] != b'<' {
            pos += 1;
            continue;
        }
        let rest = &text[pos..];
        if rest.starts_with(b"<!--") {
            pos = skip_to(pos + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            pos = skip_to(pos + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            pos = skip_to(pos + 2, b"?>");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            pos = skip_to(pos + 2, b">");
        } else {
            // A start tag: find its end outside quoted attribute values.
            let (mut end, mut quote) = (pos + 1, None);
            while end < text.len() {
                match (quote, text[end]) {
                    (None, q @ (b'"' | b'\'')) => quote = Some(q),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                end += 1;
            }
            if end >= text.len() || text[end - 1] != b'/' {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            pos = end + 1;
        }
    }
    Ok(())
}

/// Node ids follow document order and a parent comes before its children, so one pass gives
/// every depth.
fn check_depth(doc: &Document<'_>) -> Result<(), ListeBlancheError> {
    let mut depth = vec![0usize; doc.descendants().count()];
    for node in doc.descendants() {
        let d = node.parent().map_or(0, |p| depth[p.id().get_usize()] + 1);
        if d > MAX_DEPTH {
            return Err(ListeBlancheError::Xml(format!(
                "nested deeper than {MAX_DEPTH} elements"
            )));
        }
        depth[node.id().get_usize()] = d;
    }
    Ok(())
}

/// The list fields, read from the verified tree.
struct Fields {
    version_format: Option<String>,
    date_de_generation: Option<String>,
    domaines: Vec<Domaine>,
}

impl Fields {
    fn into_list(self) -> Result<ListeBlanche, ListeBlancheError> {
        ListeBlanche::build(self.version_format, self.date_de_generation, &self.domaines)
    }
}

fn schema(why: impl Into<String>) -> ListeBlancheError {
    ListeBlancheError::Schema(why.into())
}

fn profile(why: impl Into<String>) -> ListeBlancheError {
    ListeBlancheError::SignatureProfile(why.into())
}

/// Element children, refusing non-whitespace text between them.
fn elements<'a, 'i>(node: Node<'a, 'i>) -> Result<Vec<Node<'a, 'i>>, ListeBlancheError> {
    let mut out = Vec::new();
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => out.push(child),
            NodeType::Text if child.text().is_some_and(|t| t.trim().is_empty()) => {}
            NodeType::Text => {
                return Err(schema(format!("text inside <{}>", node.tag_name().name())));
            }
            NodeType::PI => {
                return Err(schema(format!(
                    "processing instruction inside <{}>",
                    node.tag_name().name()
                )));
            }
            NodeType::Comment | NodeType::Root => {}
        }
    }
    Ok(out)
}

/// A text-only field of at most `max` characters, without attributes.
fn field(node: Node<'_, '_>, max: usize) -> Result<String, ListeBlancheError> {
    let name = node.tag_name().name();
    if node.attributes().len() > 0 {
        return Err(schema(format!("attribute on <{name}>")));
    }
    let mut text = String::new();
    for child in node.children() {
        match child.node_type() {
            NodeType::Text => text.push_str(child.text().unwrap_or("")),
            NodeType::Comment => {}
            _ => return Err(schema(format!("<{name}> holds more than b"))),
        }
    }
    let text = text.trim();
    if text.chars().count() > max {
        return Err(schema(format!("<{name}> longer than {max} characters")));
    }
    Ok(text.to_owned())
}

fn is(node: Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

fn structure<'a, 'i>(doc: &'a Document<'i>) -> Result<(Fields, Node<'a, 'i>), ListeBlancheError> {
    let signatures = doc
        .descendants()
        .filter(|n| is(*n, DS, "Signature"))
        .count();
    if signatures != 1 {
        return Err(profile(format!(
            "{signatures} ds:Signature elements, exactly one required"
        )));
    }
    let root = doc.root_element();
    if root.tag_name().namespace() != Some(LISTE_BLANCHE_NS) {
        return Err(schema(format!(
            "root element not in the namespace {LISTE_BLANCHE_NS}"
        )));
    }
    if let Some(a) = root.attributes().find(|a| a.namespace() != Some(XSI)) {
        return Err(schema(format!(
            "attribute {} on the root element",
            a.name()
        )));
    }
    let mut fields = Fields {
        version_format: None,
        date_de_generation: None,
        domaines: Vec::new(),
    };
    let (mut signature, mut liste_domaines) = (None, 0);
    for child in elements(root)? {
        let once = |slot: &Option<String>| {
            if slot.is_some() {
                Err(schema(format!("two <{}>", child.tag_name().name())))
            } else {
                Ok(())
            }
        };
        if is(child, LISTE_BLANCHE_NS, "versionFormat") {
            once(&fields.version_format)?;
            fields.version_format = Some(field(child, 50)?);
        } else if is(child, LISTE_BLANCHE_NS, "DateDeGeneration") {
            once(&fields.date_de_generation)?;
            fields.date_de_generation = Some(field(child, MAX_FIELD_CHARS)?);
        } else if is(child, LISTE_BLANCHE_NS, "ListeDomaines") {
            liste_domaines += 1;
            if liste_domaines > 1 {
                return Err(schema("a second <ListeDomaines>"));
            }
            fields.domaines = liste(child)?;
        } else if is(child, DS, "Signature") {
            signature = Some(child);
        } else {
            return Err(schema(format!(
                "unexpected element <{}> in the list",
                child.tag_name().name()
            )));
        }
    }
    if liste_domaines == 0 {
        return Err(schema("no <ListeDomaines>"));
    }
    let signature =
        signature.ok_or_else(|| profile("the ds:Signature is not a child of the root element"))?;
    Ok((fields, signature))
}

fn liste(node: Node<'_, '_>) -> Result<Vec<Domaine>, ListeBlancheError> {
    if node.attributes().len() > 0 {
        return Err(schema("attribute on <ListeDomaines>"));
    }
    let mut out = Vec::new();
    for d in elements(node)? {
        if !is(d, LISTE_BLANCHE_NS, "Domaine") {
            return Err(schema(format!(
                "unexpected element <{}> in <ListeDomaines>",
                d.tag_name().name()
            )));
        }
        out.push(domaine(d)?);
    }
    Ok(out)
}

fn domaine(node: Node<'_, '_>) -> Result<Domaine, ListeBlancheError> {
    if node.attributes().len() > 0 {
        return Err(schema("attribute on <Domaine>"));
    }
    let mut d = Domaine::default();
    let (mut nom, mut description, mut date_maj) = (None, false, false);
    for f in elements(node)? {
        if f.tag_name().namespace() != Some(LISTE_BLANCHE_NS) {
            return Err(schema("element of another namespace in <Domaine>"));
        }
        let value = field(f, MAX_FIELD_CHARS)?;
        match f.tag_name().name() {
            "Nom" if nom.is_none() => nom = Some(value),
            "Description" if !description => description = true,
            "DateMAJ" if !date_maj => date_maj = true,
            "DNCertificatOperateur" => {
                if !value.is_empty() {
                    d.dns.push(value);
                }
            }
            "ResponsableContact" | "SupportContact" => {}
            other => {
                return Err(schema(format!(
                    "unexpected or repeated <{other}> in <Domaine>"
                )));
            }
        }
    }
    d.nom = nom
        .filter(|n| !n.is_empty())
        .ok_or_else(|| schema("<Domaine> without <Nom>"))?;
    Ok(d)
}

struct SignatureParts<'a, 'i> {
    signed_info: Node<'a, 'i>,
    digest_value: Vec<u8>,
    signature_value: Vec<u8>,
    certificates: Vec<Vec<u8>>,
}

/// Check a ds element: name, and only the allowed attributes.
fn ds<'a, 'i>(
    node: Node<'a, 'i>,
    name: &str,
    attributes: &[&str],
) -> Result<Node<'a, 'i>, ListeBlancheError> {
    if !is(node, DS, name) {
        return Err(profile(format!(
            "<{}> where ds:{name} is required",
            node.tag_name().name()
        )));
    }
    if let Some(a) = node
        .attributes()
        .find(|a| a.namespace().is_some() || !attributes.contains(&a.name()))
    {
        return Err(profile(format!("attribute {} on ds:{name}", a.name())));
    }
    Ok(node)
}

/// A ds element with exactly the listed children, in order.
fn ds_children<'a, 'i>(
    node: Node<'a, 'i>,
    names: &[&str],
) -> Result<Vec<Node<'a, 'i>>, ListeBlancheError> {
    let children = elements(node)?;
    if children.len() != names.len() {
        return Err(profile(format!(
            "ds:{} must hold exactly {}",
            node.tag_name().name(),
            names.join(", ")
        )));
    }
    children
        .into_iter()
        .zip(names)
        .map(|(c, n)| {
            let attributes: &[&str] = match *n {
                "Reference" => &["URI"],
                "CanonicalizationMethod" | "SignatureMethod" | "Transform" | "DigestMethod" => {
                    &["Algorithm"]
                }
                _ => &[],
            };
            ds(c, n, attributes)
        })
        .collect()
}

/// An `…Method`/`Transform` element: only `Algorithm`, equal to `expected`, and no content.
fn method(node: Node<'_, '_>, name: &str, expected: &str) -> Result<(), ListeBlancheError> {
    ds(node, name, &["Algorithm"])?;
    let algorithm = node.attribute("Algorithm").unwrap_or("");
    if algorithm != expected {
        return Err(profile(format!(
            "ds:{name} Algorithm {algorithm:?}, only {expected} accepted"
        )));
    }
    if !elements(node)?.is_empty() {
        return Err(profile(format!(
            "ds:{name} has child elements (e.g. InclusiveNamespaces)"
        )));
    }
    Ok(())
}

fn base64(node: Node<'_, '_>) -> Result<Vec<u8>, ListeBlancheError> {
    use base64::Engine as _;
    let text = field(node, MAX_LIST_BYTES).map_err(|e| profile(e.to_string()))?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| profile(format!("ds:{} is not base64: {e}", node.tag_name().name())))
}

fn signature_parts<'a, 'i>(
    signature: Node<'a, 'i>,
) -> Result<SignatureParts<'a, 'i>, ListeBlancheError> {
    ds(signature, "Signature", &[])?;
    let parts = ds_children(signature, &["SignedInfo", "SignatureValue", "KeyInfo"])?;
    let (signed_info, value, key_info) = (parts[0], parts[1], parts[2]);
    let si = ds_children(
        signed_info,
        &["CanonicalizationMethod", "SignatureMethod", "Reference"],
    )?;
    method(si[0], "CanonicalizationMethod", EXC_C14N)?;
    method(si[1], "SignatureMethod", RSA_SHA256)?;
    let reference = si[2];
    if reference.attribute("URI") != Some("") {
        return Err(profile(
            "the Reference must have URI=\"\" (the whole document)",
        ));
    }
    let r = ds_children(reference, &["Transforms", "DigestMethod", "DigestValue"])?;
    let transforms = ds_children(r[0], &["Transform", "Transform"])
        .map_err(|_| profile("exactly two transforms required: enveloped, exc-c14n"))?;
    method(transforms[0], "Transform", ENVELOPED)?;
    method(transforms[1], "Transform", EXC_C14N)?;
    method(r[1], "DigestMethod", SHA256)?;
    let digest_value = base64(r[2])?;
    if digest_value.len() != 32 {
        return Err(profile("DigestValue is not a SHA-256 digest"));
    }
    let signature_value = base64(value)?;
    let x509 = ds_children(key_info, &["X509Data"])?;
    let certs = elements(x509[0])?;
    if certs.is_empty() || certs.len() > MAX_CERTIFICATES {
        return Err(profile(format!(
            "X509Data must hold 1 to {MAX_CERTIFICATES} X509Certificate"
        )));
    }
    let certificates = certs
        .into_iter()
        .map(|c| ds(c, "X509Certificate", &[]).and_then(base64))
        .collect::<Result<_, _>>()?;
    Ok(SignatureParts {
        signed_info,
        digest_value,
        signature_value,
        certificates,
    })
}

/// The signer among the `X509Certificate`s: the one that issued none of the others. The others
/// are ignored: the path is built from the pinned store only.
fn signer_certificate(certs: &[Vec<u8>]) -> Result<Vec<u8>, ListeBlancheError> {
    let parsed = certs
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| ListeBlancheError::Signer(format!("X509Certificate: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaves: Vec<usize> = (0..parsed.len())
        .filter(|&i| {
            !parsed
                .iter()
                .enumerate()
                .any(|(j, other)| j != i && other.issuer().as_raw() == parsed[i].subject().as_raw())
        })
        .collect();
    match leaves.as_slice() {
        [one] => Ok(certs[*one].clone()),
        _ => Err(ListeBlancheError::Signer(
            "X509Data does not designate one signer certificate".to_owned(),
        )),
    }
}
