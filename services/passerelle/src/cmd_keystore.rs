//! `passerelle keystore …`: keys in the PKCS#11 token, by hand (issue #3).
//!
//! Every command prints one line on success and, on failure, exits non-zero
//! with one line saying what was wrong: 1 when the token or a file refused,
//! 2 when the command line itself was unusable (bad subject field, bad key id).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use passerelle_keystore::{
    Department, KeyAlgorithm, KeyId, KeyInfo, KeyRef, Keystore, KeystoreConfig, KeystoreError,
    Subject,
};

#[derive(Debug, Subcommand)]
pub enum KeystoreCommand {
    /// Create the configured token in a free slot, with the SO PIN from
    /// --so-pin-file and the user PIN from the configured pin_file.
    Init {
        /// File holding the security officer PIN (mode 0600).
        #[arg(long, value_name = "FILE")]
        so_pin_file: PathBuf,
    },
    #[command(flatten)]
    OnToken(TokenCommand),
}

/// The commands that work in an open, logged-in session.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Generate a key pair in the token (private key sensitive, not extractable).
    Generate {
        /// Name of the key, e.g. org-auth-cli.
        #[arg(long)]
        label: String,
        /// rsa2048, rsa3072 or ec-p256.
        #[arg(long, default_value = "rsa2048")]
        algorithm: KeyAlgorithm,
    },
    /// List the token's keys: label, id, algorithm, protection, certificate.
    List,
    /// Write a PKCS#10 request signed in the token.
    Csr {
        #[command(flatten)]
        key: KeySelector,
        /// Where to write the PEM request (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(subcommand)]
        subject: SubjectArgs,
    },
    /// Store the issued certificate beside its key, after checking it certifies that key.
    ImportCert {
        #[command(flatten)]
        key: KeySelector,
        /// PEM (certificate alone or with its chain) or DER file.
        #[arg(value_name = "FILE")]
        certificate: PathBuf,
    },
    /// Destroy a key pair and its certificate.
    Delete {
        #[command(flatten)]
        key: KeySelector,
    },
}

/// A key named by label or by hex CKA_ID.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct KeySelector {
    /// The key's label.
    #[arg(long)]
    label: Option<String>,
    /// The key's CKA_ID, in hex.
    #[arg(long, value_name = "HEX")]
    id: Option<String>,
}

impl KeySelector {
    fn key_ref(&self) -> Result<KeyRef, KeystoreError> {
        match (&self.label, &self.id) {
            (_, Some(id)) => Ok(KeyRef::Id(id.parse::<KeyId>()?)),
            (Some(label), None) => Ok(KeyRef::Label(label.clone())),
            // clap's required group rules this out.
            (None, None) => Err(KeystoreError::InvalidKeyId(String::new())),
        }
    }
}

/// The subject forms IGC-Santé issues.
#[derive(Debug, Subcommand)]
pub enum SubjectArgs {
    /// ORG AUTH_CLI for applicative BALs:
    /// CN=Authentification MSS, OU=<IdNatStruc>, O=<NomStruc>, ST=<département> (XX), C=FR.
    OrgAuthCli {
        /// National structure identifier (OU).
        #[arg(long)]
        id_nat: String,
        /// Structure name (O).
        #[arg(long)]
        organization: String,
        #[command(flatten)]
        department: DepartmentArgs,
    },
    /// MSSanté connector server: CN=<FQDN>, OU=<prefix><IdNat>, O=…, ST=<département> (NN), C=FR.
    Server {
        /// Connector FQDN (CN and DNS subjectAltName).
        #[arg(long)]
        fqdn: String,
        /// Identifier type prefix placed before the IdNat in OU.
        #[arg(long, default_value = "")]
        id_nat_prefix: String,
        #[arg(long)]
        id_nat: String,
        #[arg(long)]
        organization: String,
        #[command(flatten)]
        department: DepartmentArgs,
    },
    /// The appliance's device identity: CN=<name>, O=<organization>, C=FR.
    Device {
        #[arg(long)]
        name: String,
        #[arg(long)]
        organization: String,
    },
}

#[derive(Debug, Args)]
pub struct DepartmentArgs {
    /// Département name, e.g. Paris.
    #[arg(long)]
    department: String,
    /// Département code, e.g. 75, 2A, 971.
    #[arg(long)]
    department_code: String,
}

impl DepartmentArgs {
    fn department(&self) -> Department {
        Department {
            name: self.department.clone(),
            code: self.department_code.clone(),
        }
    }
}

impl SubjectArgs {
    fn subject(&self) -> Subject {
        match self {
            Self::OrgAuthCli {
                id_nat,
                organization,
                department,
            } => Subject::OrgAuthCli {
                id_nat_struct: id_nat.clone(),
                organization: organization.clone(),
                department: department.department(),
            },
            Self::Server {
                fqdn,
                id_nat_prefix,
                id_nat,
                organization,
                department,
            } => Subject::ConnectorServer {
                fqdn: fqdn.clone(),
                id_nat_prefix: id_nat_prefix.clone(),
                id_nat_struct: id_nat.clone(),
                organization: organization.clone(),
                department: department.department(),
            },
            Self::Device { name, organization } => Subject::Device {
                name: name.clone(),
                organization: organization.clone(),
            },
        }
    }
}

/// Runs one keystore command against the configured token.
pub fn run(cmd: KeystoreCommand, config: &KeystoreConfig) -> ExitCode {
    // One short-lived command: a current-thread runtime is enough, and the
    // token work itself runs on the keystore's own thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("passerelle keystore: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cmd, config)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("passerelle keystore: {e:#}");
            match e.downcast_ref::<KeystoreError>() {
                Some(KeystoreError::InvalidSubject(_) | KeystoreError::InvalidKeyId(_)) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn execute(cmd: KeystoreCommand, config: &KeystoreConfig) -> anyhow::Result<String> {
    let cmd = match cmd {
        KeystoreCommand::Init { so_pin_file } => {
            Keystore::init_token(config, &so_pin_file).await?;
            return Ok(format!("token {:?} initialised", config.token_label));
        }
        KeystoreCommand::OnToken(cmd) => cmd,
    };
    let ks = Keystore::open(config).await?;
    let outcome = on_token(cmd, &ks).await;
    // The session is closed before `main` returns: the process exiting while the token
    // thread tears it down deadlocks inside the module.
    ks.close().await;
    outcome
}

async fn on_token(cmd: TokenCommand, ks: &Keystore) -> anyhow::Result<String> {
    match cmd {
        TokenCommand::Generate { label, algorithm } => {
            let info = ks.generate(&label, algorithm).await?;
            Ok(format!("generated {}", describe(&info)))
        }
        TokenCommand::List => {
            let keys = ks.list().await?;
            if keys.is_empty() {
                return Ok(format!("no keys on token {:?}", ks.token_label()));
            }
            Ok(keys.iter().map(describe).collect::<Vec<_>>().join("\n"))
        }
        TokenCommand::Csr { key, out, subject } => {
            let key = key.key_ref()?;
            let subject = subject.subject();
            let pem = ks.csr(&key, &subject).await?;
            match out {
                Some(path) => {
                    tokio::fs::write(&path, &pem)
                        .await
                        .with_context(|| format!("cannot write the CSR to {}", path.display()))?;
                    Ok(format!("CSR for {key} written to {}", path.display()))
                }
                None => Ok(pem.trim_end().to_owned()),
            }
        }
        TokenCommand::ImportCert { key, certificate } => {
            let key = key.key_ref()?;
            let info = ks.import_certificate(&key, &certificate).await?;
            Ok(format!("imported {}", describe(&info)))
        }
        TokenCommand::Delete { key } => {
            let key = key.key_ref()?;
            let info = ks.delete(&key).await?;
            Ok(format!("deleted {} id={}", info.label, info.id))
        }
    }
}

/// One line per key: what an operator checks before trusting it.
fn describe(info: &KeyInfo) -> String {
    format!(
        "{} id={} {} sensitive={} extractable={} certificate={}",
        info.label,
        info.id,
        info.algorithm,
        info.sensitive,
        info.extractable,
        info.certificate_subject.as_deref().unwrap_or("none")
    )
}
