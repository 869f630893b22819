//! `passerelle`: one binary, one verb per job. `passerelle run` is the daemon; the other verbs
//! are what an operator or the web admin runs by hand. Later issues add `keystore`, `trust`,
//! `liste-blanche`, `sesam`, `annuaire` and `vendor` here.

mod cmd_annuaire;
mod cmd_cards;
mod cmd_keystore;
mod cmd_liste_blanche;
mod cmd_sesam;
mod cmd_trust;
mod cmd_update;
mod cmd_vendor;
mod daemon;
mod sd_notify;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use passerelle_config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "passerelle",
    version,
    about = "MSSanté / SESAM-Vitale edge appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the daemon.
    Run(ConfigSource),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Keys in the PKCS#11 token: generate, list, CSR, import the issued certificate.
    Keystore(KeystoreArgs),
    /// Pinned anchors and certificate validation (RE_OPE_5040, EX_OPE_5020–5050).
    #[command(subcommand)]
    Trust(cmd_trust::TrustCommand),
    /// The local Annuaire Santé cache: refresh it, search it.
    Annuaire(AnnuaireArgs),
    /// The MSSanté liste blanche: verify a signed file, fetch and install the current list.
    #[command(subcommand)]
    ListeBlanche(cmd_liste_blanche::ListeBlancheCommand),
    /// CPS card readers: the readers, the cards in them, who they belong to, PIN state.
    #[command(subcommand)]
    Cards(cmd_cards::CardsCommand),
    /// Signed A/B updates on the box: check, install into the inactive slot, commit.
    #[command(subcommand)]
    Update(cmd_update::UpdateCommand),
    /// Vendor side of updates: keys, TUF root, publishing a release.
    #[command(subcommand)]
    Vendor(cmd_vendor::VendorCommand),
    /// SESAM-Vitale billing lots: encrypt a lot into the message the caisse expects.
    #[command(subcommand)]
    Sesam(cmd_sesam::SesamCommand),
}

#[derive(Debug, Args)]
struct AnnuaireArgs {
    /// Configuration file whose `[annuaire]` table configures the sources and the cache.
    #[arg(long, value_name = "FILE", default_value = passerelle_config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: cmd_annuaire::AnnuaireCommand,
}

#[derive(Debug, Args)]
struct KeystoreArgs {
    /// Configuration file whose `[keystore]` table names the module, token and PIN file.
    #[arg(long, value_name = "FILE", default_value = passerelle_config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: cmd_keystore::KeystoreCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate a configuration; exit 0 when it is valid, else print why.
    Check(ConfigSource),
    /// Print the embedded demonstration configuration.
    Demo,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ConfigSource {
    /// Configuration file (the appliance uses /etc/passerelle/passerelle.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Use the embedded demonstration configuration: data under ./var, loopback only.
    #[arg(long)]
    demo: bool,
}

impl ConfigSource {
    fn load(&self) -> Result<Config, passerelle_config::ConfigError> {
        match &self.config {
            Some(path) => Config::load(path),
            None => Config::demo(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Demo) => {
            print!("{}", passerelle_config::DEMO_TOML);
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check(source)) => match source.load() {
            Ok(_) => {
                println!("configuration valid");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("passerelle: {err}");
                ExitCode::from(2)
            }
        },
        Command::Trust(cmd) => cmd_trust::run(cmd),
        Command::Sesam(cmd) => cmd_sesam::run(cmd),
        Command::Cards(cmd) => cmd_cards::run(&cmd),
        Command::Update(cmd) => cmd_update::run(cmd),
        Command::Vendor(cmd) => cmd_vendor::run(cmd),
        Command::ListeBlanche(cmd) => cmd_liste_blanche::run(cmd),
        Command::Keystore(args) => match Config::load(&args.config) {
            Ok(Config {
                keystore: Some(keystore),
                ..
            }) => cmd_keystore::run(args.command, &keystore),
            Ok(_) => {
                eprintln!(
                    "passerelle: {}: no [keystore] table (module, token_label, pin_file)",
                    args.config.display()
                );
                ExitCode::from(2)
            }
            Err(err) => {
                eprintln!("passerelle: {err}");
                ExitCode::from(2)
            }
        },
        Command::Annuaire(args) => match Config::load(&args.config) {
            Ok(Config {
                annuaire: Some(annuaire),
                ..
            }) => cmd_annuaire::run(args.command, &annuaire),
            Ok(_) => {
                eprintln!("passerelle: {}: no [annuaire] table", args.config.display());
                ExitCode::from(2)
            }
            Err(err) => {
                eprintln!("passerelle: {err}");
                ExitCode::from(2)
            }
        },
        Command::Run(source) => {
            let config = match source.load() {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("passerelle: {err}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(&config);
            match daemon::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "passerelle stopped on an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, overrides the configured level (debugging on a box by hand).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.logging.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
