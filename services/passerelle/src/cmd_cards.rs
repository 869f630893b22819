//! `passerelle cards list`: the PC/SC readers, the card in each, and for a CPS card who it
//! belongs to and its PIN state (asked without spending a try). One line per reader; exit
//! status 0, or 1 when pcscd cannot be reached.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use passerelle_cards::{CardService, CardsConfig, PinState, ReaderStatus};

#[derive(Debug, Subcommand)]
pub enum CardsCommand {
    /// List readers, card types and CPS identities.
    List {
        /// Seconds to wait at most for the identity of inserted cards to be read.
        #[arg(long, default_value_t = 5)]
        wait_secs: u64,
    },
}

pub fn run(cmd: &CardsCommand) -> ExitCode {
    match *cmd {
        CardsCommand::List { wait_secs } => list(Duration::from_secs(wait_secs)),
    }
}

fn list(wait: Duration) -> ExitCode {
    let config = CardsConfig::default();
    // The first status poll lists the readers and the cards already inserted.
    let settle = config.poll * 2;
    let service = match CardService::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("passerelle cards: {e}");
            return ExitCode::from(1);
        }
    };
    let start = Instant::now();
    let readers = loop {
        let readers = service.readers();
        let identities_read = readers.iter().all(|r| {
            r.card
                .as_ref()
                .is_none_or(|c| !c.kind.is_cps() || c.identity.is_some() || c.error.is_some())
        });
        if (start.elapsed() >= settle && identities_read) || start.elapsed() >= wait {
            break readers;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if readers.is_empty() {
        println!("no reader");
    }
    for r in &readers {
        println!("{}", line(r));
    }
    ExitCode::SUCCESS
}

fn line(r: &ReaderStatus) -> String {
    let Some(card) = &r.card else {
        return format!("{}\tno card", r.name);
    };
    let mut out = format!("{}\t{}", r.name, card.kind.as_str());
    if let Some(id) = &card.identity {
        let _ = write!(
            out,
            "\t{} {} {} ({}) serial {}",
            id.national_id, id.given_name, id.family_name, id.profession, id.serial
        );
        let pin = match card.pin {
            PinState::Unknown => "PIN unknown".to_owned(),
            PinState::NotVerified { tries_left } => {
                format!("PIN not verified, {tries_left} tries left")
            }
            PinState::Verified => "PIN verified".to_owned(),
            PinState::Blocked => "PIN BLOCKED".to_owned(),
        };
        out.push('\t');
        out.push_str(&pin);
    } else if let Some(e) = &card.error {
        let _ = write!(out, "\tunreadable: {e}");
    } else if card.kind.is_cps() {
        out.push_str("\tidentity not read yet");
    }
    out
}
