//! Shared setup: the fake PSC, a token with the store key, a `PscConfig` pointing at both.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use passerelle_fake_psc::env::{TestEnv, secret_file};
use passerelle_fake_psc::{CLIENT_ID, CLIENT_SECRET, FakePsc};
use passerelle_keystore::{KeyAlgorithm, Keystore};
use passerelle_psc::{Psc, PscConfig};

pub const BAL: &str = "jean.dupond@medecin.mssante.fr";
pub const IDNAT: &str = "899700218896";

pub struct Setup {
    pub env: TestEnv,
    pub fake: FakePsc,
    pub keystore: Keystore,
    pub config: PscConfig,
}

pub async fn setup() -> anyhow::Result<Setup> {
    let env = TestEnv::new()?;
    let fake = FakePsc::start(&env.pki).await?;
    let keystore = Keystore::open(&env.keystore).await?;
    keystore
        .generate("psc-store", KeyAlgorithm::Rsa2048)
        .await?;
    let config = PscConfig {
        token_url: fake.token_url(),
        client_id: CLIENT_ID.to_owned(),
        client_secret_file: secret_file(env.dir.path(), "psc.secret", CLIENT_SECRET)?,
        https_profile: "mssante-server".to_owned(),
        store_file: env.dir.path().join("psc-sessions.json"),
        store_key_label: "psc-store".to_owned(),
        refresh_margin: Duration::from_secs(15),
        timeout: Duration::from_secs(10),
    };
    Ok(Setup {
        env,
        fake,
        keystore,
        config,
    })
}

impl Setup {
    pub async fn psc(&self) -> anyhow::Result<Psc> {
        Ok(Psc::open(
            &self.config,
            std::sync::Arc::clone(&self.env.trust),
            &self.keystore,
        )
        .await?)
    }
}
