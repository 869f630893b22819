//! RSA PKCS#1 v1.5 decryption in the token (`CKM_RSA_PKCS`, SESAM-Vitale OCT profile): what
//! `openssl pkeyutl -encrypt` wraps for the token key's public half comes back out; an EC
//! key is refused; a tampered ciphertext fails.

mod common;

use passerelle_keystore::{KeyAlgorithm, KeyRef, Keystore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_pkcs1_decrypt_in_the_token_opens_what_openssl_encrypted() -> anyhow::Result<()> {
    let env = common::token()?;
    let ks = Keystore::open(&env.config).await?;
    ks.generate("oct", KeyAlgorithm::Rsa2048).await?;
    ks.generate("ec", KeyAlgorithm::EcP256).await?;
    let key = ks.key(&KeyRef::from("oct")).await?;

    let dir = env.dir.path();
    let pkcs1 = dir.join("pub.pkcs1.der");
    std::fs::write(&pkcs1, key.public_key_bits())?;
    let spki = dir.join("pub.pem");
    common::openssl(&[
        "rsa",
        "-RSAPublicKey_in",
        "-inform",
        "DER",
        "-in",
        pkcs1.to_str().unwrap_or_default(),
        "-pubout",
        "-out",
        spki.to_str().unwrap_or_default(),
    ])?;
    let cek: Vec<u8> = (0u8..16)
        .map(|i| i.wrapping_mul(37).wrapping_add(5))
        .collect();
    let plain = dir.join("cek.bin");
    std::fs::write(&plain, &cek)?;
    let wrapped = dir.join("cek.enc");
    common::openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        spki.to_str().unwrap_or_default(),
        "-pkeyopt",
        "rsa_padding_mode:pkcs1",
        "-in",
        plain.to_str().unwrap_or_default(),
        "-out",
        wrapped.to_str().unwrap_or_default(),
    ])?;
    let mut ciphertext = std::fs::read(&wrapped)?;
    assert_eq!(key.decrypt_rsa_pkcs1(&ciphertext).await?, cek);

    ciphertext[0] ^= 0xff;
    assert!(key.decrypt_rsa_pkcs1(&ciphertext).await.is_err());
    let ec = ks.key(&KeyRef::from("ec")).await?;
    let err = ec.decrypt_rsa_pkcs1(&ciphertext).await.expect_err("EC");
    assert!(err.to_string().contains("RSA"), "{err}");
    Ok(())
}
