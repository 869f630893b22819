//! Opening envelopes addressed to us (OCT profile): what `openssl cms -encrypt -binary
//! -aes-128-cbc -outform der` made for our certificate opens to the same bytes, as does our
//! own encryption; an envelope for another certificate, a failed unwrap or a tampered
//! content are refused, the last two with one indistinguishable error.

use std::process::Command;
use std::sync::OnceLock;

use passerelle_sesam::{Envelope, Recipient, SesamError, encrypt};
use passerelle_testpki::{PkiOptions, TestPki, names as n};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate(&PkiOptions::new(61)).expect("test PKI"))
}

/// The unwrap the OCT's token does, here with the software key of the test PKI.
fn unwrap(name: &str, wrapped: &[u8]) -> Result<Vec<u8>, rsa::Error> {
    let key = RsaPrivateKey::from_pkcs8_pem(&pki().cert(name).expect("cert").key().pkcs8_pem())
        .expect("key");
    key.decrypt(Pkcs1v15Encrypt, wrapped)
}

fn openssl_encrypt(plain: &[u8], name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("dir");
    let (input, cert, out) = (
        dir.path().join("lot"),
        dir.path().join("c.pem"),
        dir.path().join("lot.pkcs7"),
    );
    std::fs::write(&input, plain).expect("write");
    std::fs::write(&cert, pki().cert(name).expect("cert").pem()).expect("write");
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
        .arg(&input)
        .arg("-out")
        .arg(&out)
        .arg(&cert)
        .status()
        .expect("openssl");
    assert!(status.success());
    std::fs::read(out).expect("read")
}

#[test]
fn an_openssl_envelope_for_our_certificate_opens_to_the_same_bytes() {
    let der_cert = pki().cert(n::SV_AMO_TEST).expect("cert").der().to_vec();
    for plain in [
        b"x".to_vec(),
        vec![0u8; 16],
        b"000 B2 lot\r\n\0binary".repeat(1000),
    ] {
        let env = Envelope::parse(&openssl_encrypt(&plain, n::SV_AMO_TEST)).expect("parse");
        let wrapped = env.encrypted_key_for(&der_cert).expect("ours");
        assert_eq!(
            env.open(unwrap(n::SV_AMO_TEST, wrapped)).expect("open"),
            plain
        );
    }
    // Our own encryption opens too.
    let recipient = Recipient::from_der(&der_cert).expect("recipient");
    let plain = b"000 lot encrypted by passerelle".to_vec();
    let mut der = Vec::new();
    encrypt(&recipient, plain.as_slice(), plain.len() as u64, &mut der).expect("encrypt");
    let env = Envelope::parse(&der).expect("parse");
    let wrapped = env.encrypted_key_for(&der_cert).expect("ours");
    assert_eq!(
        env.open(unwrap(n::SV_AMO_TEST, wrapped)).expect("open"),
        plain
    );
}

#[test]
fn envelopes_for_others_failed_unwraps_and_tampering_are_refused() {
    let ours = pki().cert(n::SV_AMO_TEST).expect("cert").der().to_vec();
    let env = Envelope::parse(&openssl_encrypt(b"lot", n::SV_AMC_TEST)).expect("parse");
    assert!(matches!(
        env.encrypted_key_for(&ours),
        Err(SesamError::Envelope { why }) if why.contains("not addressed to our certificate")
    ));
    // The unwrap fails (token error, wrong-size key): a random key is used instead, so the
    // outcome looks like a bad content (an error, or with the odds of valid padding,
    // garbage that the lot check refuses): never the lot.
    let plain = [7u8; 100];
    let mut der = openssl_encrypt(&plain, n::SV_AMO_TEST);
    let env = Envelope::parse(&der).expect("parse");
    let wrapped = env.encrypted_key_for(&ours).expect("ours").to_vec();
    for failed in [Err(()), Ok(vec![1u8; 5])] {
        assert!(env.open(failed).map_or(true, |p| p != plain));
    }
    // Tampered: the last byte of the next-to-last block flips the padding byte.
    let at = der.len() - 17;
    der[at] ^= 0x55;
    let env = Envelope::parse(&der).expect("parse");
    assert!(matches!(
        env.open(unwrap(n::SV_AMO_TEST, &wrapped)),
        Err(SesamError::Unopenable)
    ));
    for junk in [&b""[..], b"\x30\x03\x02\x01\x00", b"not der at all"] {
        assert!(matches!(
            Envelope::parse(junk),
            Err(SesamError::Envelope { .. })
        ));
    }
}
