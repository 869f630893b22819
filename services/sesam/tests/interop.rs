//! Interop with the reference command: every message this crate writes, for each flow and
//! environment, decrypts with `openssl cms -decrypt` to the original bytes, and its CMS object
//! has the shape and OIDs of `openssl cms -encrypt -binary -aes-128-cbc -outform der`.

use std::io::Read as _;

use mail_parser::MimeHeaders as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use der::{Decode, Encode};
use passerelle_sesam::envelope::{
    OID_AES128_CBC, OID_DATA, OID_ENVELOPED_DATA, OID_RSA_ENCRYPTION,
};
use passerelle_sesam::{
    DEFAULT_MAX_LOT_BYTES, Env, Flow, LotMessage, Recipient, SesamError, content_description,
    encrypt_lot_to_pkcs7, write_message,
};
use passerelle_testpki::{PkiOptions, TestPki, names as n};

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate(&PkiOptions::new(6)).expect("test PKI"))
}

/// Certificate and key of `name` written as PEM files into `dir`.
fn cert_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let c = pki().cert(name).expect("cert");
    let cert = dir.join(format!("{name}.crt.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    std::fs::write(&cert, c.pem()).expect("write cert");
    std::fs::write(&key, c.key().pkcs8_pem()).expect("write key");
    (cert, key)
}

fn openssl_decrypt(dir: &Path, der: &[u8], cert: &Path, key: &Path) -> Result<Vec<u8>, String> {
    let input = dir.join("in.pkcs7");
    let output = dir.join("out.bin");
    std::fs::write(&input, der).expect("write cms");
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-binary", "-inform", "DER", "-in"])
        .arg(&input)
        .arg("-recip")
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .arg("-out")
        .arg(&output)
        .output()
        .expect("run openssl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(std::fs::read(&output).expect("read plaintext"))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn message(flow: Flow, env: Env, compress: bool) -> LotMessage {
    let subject = match flow {
        Flow::Fse => "SV140610/2026/20261123161500/00001",
        Flow::Dre => "DR140610/2026/20261123161500/00001",
    };
    LotMessage {
        flow,
        env,
        compress,
        subject: subject.to_owned(),
        from: "cabinet@example.invalid".to_owned(),
        to: "01422@422.01.rss.fr".to_owned(),
        max_lot_bytes: DEFAULT_MAX_LOT_BYTES,
    }
}

/// A lot with CR, LF, NUL and no trailing newline: binary-safe or not at all.
fn lot_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| match i % 7 {
            0 => b'\r',
            1 => b'\n',
            2 => 0,
            _ => u8::try_from(i % 251).expect("byte"),
        })
        .collect()
}

/// The entity of a written message: (headers of the message, decoded body).
fn parse_message(raw: &[u8]) -> (mail_parser::Message<'_>, Vec<u8>) {
    let parsed = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("parsable message");
    let body = parsed
        .attachment(0)
        .map(|a| a.contents().to_vec())
        .or_else(|| parsed.body_text(0).map(|t| t.as_bytes().to_vec()))
        .expect("one entity");
    (parsed, body)
}

#[test]
fn every_flow_and_env_decrypts_with_openssl_to_the_original_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flow, env, cert_name) in [
        (Flow::Fse, Env::Real, n::SV_AMO_REEL),
        (Flow::Fse, Env::Test, n::SV_AMO_TEST),
        (Flow::Fse, Env::Demo, n::SV_AMO_TEST),
        (Flow::Dre, Env::Real, n::SV_AMC_TEST),
        (Flow::Dre, Env::Test, n::SV_AMC_TEST),
        (Flow::Dre, Env::Demo, n::SV_AMC_TEST),
    ] {
        let (cert, key) = cert_files(dir.path(), cert_name);
        let recipient =
            Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
        for compress in [false, true] {
            let lot = dir.path().join("B2LOT001");
            let plain = lot_bytes(3000);
            std::fs::write(&lot, &plain).expect("write lot");
            let msg = message(flow, env, compress);
            let mut raw = Vec::new();
            let written = write_message(&recipient, &lot, &msg, &mut raw).expect("message");
            assert_eq!(written.file_name, "B2LOT001.pkcs7");
            let (parsed, der) = parse_message(&raw);
            assert_eq!(
                parsed.header_raw("Content-Description").map(str::trim),
                Some(content_description(flow, env, compress))
            );
            let ct = parsed
                .attachment(0)
                .and_then(|a| a.content_type())
                .expect("content type");
            assert!(ct.ctype().eq_ignore_ascii_case("application"));
            assert_eq!(
                ct.subtype().map(str::to_ascii_lowercase).as_deref(),
                Some("edi-consent")
            );
            assert!(
                parsed
                    .subject()
                    .expect("subject")
                    .starts_with(&msg.subject[..8])
            );
            for h in [
                "Date",
                "From",
                "To",
                "Message-ID",
                "Subject",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding",
            ] {
                assert!(parsed.header_raw(h).is_some(), "{h} missing");
            }
            // Base64 exactly once: the decoded entity is the DER object itself.
            assert_eq!(der.first(), Some(&0x30));
            let out = openssl_decrypt(dir.path(), &der, &cert, &key).expect("openssl decrypts");
            let out = if compress { gunzip(&out) } else { out };
            assert_eq!(out, plain, "{flow:?} {env:?} compress={compress}");
        }
    }
}

#[test]
fn content_description_table_matches_the_digest() {
    let expected = [
        (Flow::Fse, Env::Real, "FSE/B2/K", "FSE/B2/ZK"),
        (Flow::Fse, Env::Test, "FSETEST/B2/K", "FSETEST/B2/ZK"),
        (Flow::Fse, Env::Demo, "FSEDEMO/B2/K", "FSEDEMO/B2/ZK"),
        (Flow::Dre, Env::Real, "DRE/DR/K", "DRE/DR/ZK"),
        (Flow::Dre, Env::Test, "DRETEST/DR/K", "DRETEST/DR/ZK"),
        (Flow::Dre, Env::Demo, "DREDEMO/DR/K", "DREDEMO/DR/ZK"),
    ];
    for (flow, env, k, zk) in expected {
        assert_eq!(content_description(flow, env, false), k);
        assert_eq!(content_description(flow, env, true), zk);
    }
}

#[test]
fn padding_edge_lengths_and_a_10_mb_lot_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_files(dir.path(), n::SV_AMO_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    for len in [1usize, 15, 16, 17, 65_535, 65_536, 65_537, 10 * 1024 * 1024] {
        let lot = dir.path().join("lot");
        let plain = lot_bytes(len);
        std::fs::write(&lot, &plain).expect("write lot");
        let out = dir.path().join("lot.pkcs7");
        let size = encrypt_lot_to_pkcs7(&recipient, &lot, false, DEFAULT_MAX_LOT_BYTES, &out)
            .expect("encrypt");
        let der = std::fs::read(&out).expect("read");
        assert_eq!(size, der.len() as u64);
        let back = openssl_decrypt(dir.path(), &der, &cert, &key).expect("openssl decrypts");
        assert!(back == plain, "length {len} did not round-trip");
    }
}

#[test]
fn cms_structure_has_the_reference_shape_and_oids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = cert_files(dir.path(), n::SV_AMO_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    let lot = dir.path().join("lot");
    std::fs::write(&lot, b"0123456789").expect("write lot");

    let ours_path = dir.path().join("ours.pkcs7");
    encrypt_lot_to_pkcs7(&recipient, &lot, false, DEFAULT_MAX_LOT_BYTES, &ours_path)
        .expect("encrypt");
    let ours = std::fs::read(&ours_path).expect("read");
    let reference_path = dir.path().join("ref.pkcs7");
    let status = Command::new("openssl")
        .args([
            "cms",
            "-encrypt",
            "-binary",
            "-aes-128-cbc",
            "-outform",
            "der",
            "-in",
        ])
        .arg(&lot)
        .arg("-out")
        .arg(&reference_path)
        .arg(&cert)
        .status()
        .expect("openssl");
    assert!(status.success());
    let reference = std::fs::read(&reference_path).expect("read");

    let issuer_serial = {
        let c = x509_cert::Certificate::from_der(pki().cert(n::SV_AMO_TEST).expect("c").der())
            .expect("cert");
        (c.tbs_certificate.issuer, c.tbs_certificate.serial_number)
    };
    for (who, der) in [("ours", &ours), ("openssl", &reference)] {
        let ci = ContentInfo::from_der(der).unwrap_or_else(|e| panic!("{who}: {e}"));
        // DER: re-encoding is byte-identical.
        assert_eq!(&ci.to_der().expect("encode"), der, "{who} is not DER");
        assert_eq!(ci.content_type, OID_ENVELOPED_DATA, "{who}");
        let ed: EnvelopedData = ci.content.decode_as().expect("enveloped data");
        assert_eq!(ed.version, cms::content_info::CmsVersion::V0, "{who}");
        assert!(
            ed.originator_info.is_none() && ed.unprotected_attrs.is_none(),
            "{who}"
        );
        assert_eq!(ed.recip_infos.0.len(), 1, "{who}");
        let Some(RecipientInfo::Ktri(ktri)) = ed.recip_infos.0.get(0) else {
            panic!("{who}: not a KeyTransRecipientInfo");
        };
        assert_eq!(ktri.version, cms::content_info::CmsVersion::V0, "{who}");
        let RecipientIdentifier::IssuerAndSerialNumber(ias) = &ktri.rid else {
            panic!("{who}: not IssuerAndSerialNumber");
        };
        assert_eq!(
            (&ias.issuer, &ias.serial_number),
            (&issuer_serial.0, &issuer_serial.1),
            "{who}"
        );
        assert_eq!(ktri.key_enc_alg.oid, OID_RSA_ENCRYPTION, "{who}");
        assert_eq!(
            ktri.key_enc_alg.parameters,
            Some(der::asn1::Any::null()),
            "{who}"
        );
        assert_eq!(ktri.enc_key.as_bytes().len(), 256, "{who}");
        let eci = &ed.encrypted_content;
        assert_eq!(eci.content_type, OID_DATA, "{who}");
        assert_eq!(eci.content_enc_alg.oid, OID_AES128_CBC, "{who}");
        let iv: der::asn1::OctetString = eci
            .content_enc_alg
            .parameters
            .as_ref()
            .expect("iv")
            .decode_as()
            .expect("octets");
        assert_eq!(iv.as_bytes().len(), 16, "{who}");
        assert_eq!(
            eci.encrypted_content.as_ref().map(|c| c.as_bytes().len()),
            Some(16),
            "{who}"
        );
    }
    // Same shape, byte for byte, apart from the random key, IV and ciphertext.
    assert_eq!(ours.len(), reference.len());
}

#[test]
fn every_document_gets_a_fresh_key_and_iv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = cert_files(dir.path(), n::SV_AMO_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    let lot = dir.path().join("lot");
    std::fs::write(&lot, lot_bytes(100)).expect("write lot");
    let a = dir.path().join("a.pkcs7");
    let b = dir.path().join("b.pkcs7");
    encrypt_lot_to_pkcs7(&recipient, &lot, false, DEFAULT_MAX_LOT_BYTES, &a).expect("a");
    encrypt_lot_to_pkcs7(&recipient, &lot, false, DEFAULT_MAX_LOT_BYTES, &b).expect("b");
    let (a, b) = (std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
    let iv = |d: &[u8]| {
        let ci = ContentInfo::from_der(d).expect("ci");
        let ed: EnvelopedData = ci.content.decode_as().expect("ed");
        ed.encrypted_content
            .content_enc_alg
            .parameters
            .expect("iv")
            .to_der()
            .expect("der")
    };
    assert_ne!(iv(&a), iv(&b));
    assert_ne!(a[a.len() - 32..], b[b.len() - 32..]);
}

#[test]
fn decrypting_with_another_key_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = cert_files(dir.path(), n::SV_AMO_TEST);
    let (other_cert, other_key) = cert_files(dir.path(), n::SV_AMC_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    let lot = dir.path().join("lot");
    std::fs::write(&lot, lot_bytes(100)).expect("write lot");
    let out = dir.path().join("lot.pkcs7");
    encrypt_lot_to_pkcs7(&recipient, &lot, false, DEFAULT_MAX_LOT_BYTES, &out).expect("encrypt");
    let der = std::fs::read(&out).expect("read");
    assert!(openssl_decrypt(dir.path(), &der, &other_cert, &other_key).is_err());
}

#[test]
fn empty_lot_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = cert_files(dir.path(), n::SV_AMO_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    let lot = dir.path().join("empty");
    std::fs::write(&lot, b"").expect("write lot");
    let mut raw = Vec::new();
    let err = write_message(
        &recipient,
        &lot,
        &message(Flow::Fse, Env::Test, false),
        &mut raw,
    )
    .expect_err("empty lot refused");
    assert!(matches!(err, SesamError::EmptyLot { .. }), "{err}");
    assert!(raw.is_empty(), "nothing written for a refused lot");
}

#[test]
fn lot_above_the_maximum_is_refused_200_mb_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = cert_files(dir.path(), n::SV_AMO_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    let lot = dir.path().join("huge");
    // Sparse: the size check happens before any byte is read.
    std::fs::File::create(&lot)
        .and_then(|f| f.set_len(200 * 1024 * 1024))
        .expect("sparse lot");
    let mut raw = Vec::new();
    let err = write_message(
        &recipient,
        &lot,
        &message(Flow::Fse, Env::Test, false),
        &mut raw,
    )
    .expect_err("200 MB refused");
    assert!(
        matches!(err, SesamError::LotTooLarge { size, .. } if size == 200 * 1024 * 1024),
        "{err}"
    );
    assert!(raw.is_empty());
    // The maximum is configurable.
    std::fs::write(&lot, lot_bytes(1001)).expect("write lot");
    let mut small = message(Flow::Fse, Env::Test, false);
    small.max_lot_bytes = 1000;
    let err = write_message(&recipient, &lot, &small, &mut raw).expect_err("above 1000");
    assert!(
        err.to_string().contains("above the maximum of 1000 bytes"),
        "{err}"
    );
}

#[test]
fn subject_must_start_with_the_flow_s_formater_lot_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = cert_files(dir.path(), n::SV_AMO_TEST);
    let recipient = Recipient::from_pem(&std::fs::read(&cert).expect("cert")).expect("recipient");
    let lot = dir.path().join("lot");
    std::fs::write(&lot, b"x").expect("write lot");
    let mut msg = message(Flow::Dre, Env::Test, false);
    msg.subject = "SV140610/2026/x/00001".to_owned();
    let mut raw = Vec::new();
    let err = write_message(&recipient, &lot, &msg, &mut raw).expect_err("FSE ref on a DRE flow");
    assert!(matches!(err, SesamError::SubjectRef { .. }), "{err}");
    msg.subject = "DR140610/2026\r\nBcc: x@y".to_owned();
    assert!(write_message(&recipient, &lot, &msg, &mut raw).is_err());
    assert!(raw.is_empty());
}
