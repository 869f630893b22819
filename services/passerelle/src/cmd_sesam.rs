//! `passerelle sesam …`: SESAM-Vitale billing commands. `encrypt` builds the complete message
//! for one lot (PDT-CDC-063: CMS EnvelopedData AES-128-CBC for the recipient certificate,
//! `Application/EDI-consent` base64 entity, Content-Description per flow and environment,
//! Subject from the Formater_Lot reference). One line of output; exit status 0 (written),
//! 1 (refused: bad lot, Subject or certificate), 2 (unreadable input or output).
//!
//! The certificate given here is used as is: the chain/CRL/SAN/KeyUsage checks need the trust
//! store and belong to the sending path (`passerelle_sesam::RecipientCertificates`). The SAN
//! label and KeyUsage are still checked, so a certificate of the wrong flow or environment is
//! refused here too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use passerelle_sesam::{
    DEFAULT_MAX_LOT_BYTES, Env, Flow, LotMessage, Recipient, SesamError, certs, write_message,
};

#[derive(Debug, Subcommand)]
pub enum SesamCommand {
    /// Encrypt a lot for the AMO/AMC certificate and write the complete message (.eml).
    Encrypt {
        /// Recipient certificate (PEM), e.g. amo_pj.test@test.rss.fr.
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// fse (B2 to the AMO) or dre (DR to the AMC).
        #[arg(long)]
        flow: FlowArg,
        /// real, test or demo (test and demo use the test certificates, [CP1]).
        #[arg(long)]
        env: EnvArg,
        /// Gzip the lot before encrypting it (Content-Description `…/ZK`).
        #[arg(long)]
        compress: bool,
        /// The Subject, starting with the Formater_Lot reference (group 13 field 7 for FSE,
        /// group 93 field 7 for DRE), e.g. `SV140610/…`.
        #[arg(long, value_name = "REF")]
        subject_ref: String,
        /// The lot file.
        #[arg(long = "in", value_name = "LOT")]
        input: PathBuf,
        /// Where to write the message.
        #[arg(long, value_name = "EML")]
        out: PathBuf,
        /// Write only the DER `.pkcs7` object (the reference command's output) instead of the
        /// message.
        #[arg(long)]
        der: bool,
        /// From header.
        #[arg(long, default_value = "passerelle@localhost")]
        from: String,
        /// To header (the caisse's address comes from the routing configuration when sending).
        #[arg(long, default_value = "undisclosed-recipients:;")]
        to: String,
        /// Largest lot accepted, in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_LOT_BYTES)]
        max_lot_bytes: u64,
    },
    /// List the billing lots and their states (received, blocked, encrypted, sent,
    /// acknowledged, rejected, overdue, refused), with the reason of each.
    Lots {
        /// The billing state directory (`state_dir` of the billing configuration).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/passerelle/billing"
        )]
        state_dir: PathBuf,
        /// Only lots in this state.
        #[arg(long)]
        state: Option<String>,
        /// Also print each lot's history.
        #[arg(long)]
        history: bool,
    },
    /// Send a rejected (negative ARL, non-delivery) or overdue lot again: the same content,
    /// encrypted again for the current certificate. The running daemon sends it at its next
    /// pass; refused for lots in other states.
    Resend {
        /// The lot id (32 hex characters, as `passerelle sesam lots` prints it).
        lot_id: String,
        /// The billing state directory (`state_dir` of the billing configuration).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/passerelle/billing"
        )]
        state_dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FlowArg {
    Fse,
    Dre,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EnvArg {
    Real,
    Test,
    Demo,
}

pub fn run(cmd: SesamCommand) -> ExitCode {
    match cmd {
        SesamCommand::Lots {
            state_dir,
            state,
            history,
        } => lots(&state_dir, state.as_deref(), history),
        SesamCommand::Resend { lot_id, state_dir } => resend(&state_dir, &lot_id),
        SesamCommand::Encrypt {
            cert,
            flow,
            env,
            compress,
            subject_ref,
            input,
            out,
            der,
            from,
            to,
            max_lot_bytes,
        } => {
            let flow = match flow {
                FlowArg::Fse => Flow::Fse,
                FlowArg::Dre => Flow::Dre,
            };
            let env = match env {
                EnvArg::Real => Env::Real,
                EnvArg::Test => Env::Test,
                EnvArg::Demo => Env::Demo,
            };
            let msg = LotMessage {
                flow,
                env,
                compress,
                subject: subject_ref,
                from,
                to,
                max_lot_bytes,
            };
            match encrypt(&cert, &input, &out, &msg, der) {
                Ok(line) => {
                    println!("ok: {line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("refused: {e}");
                    match e {
                        SesamError::Io { .. } => ExitCode::from(2),
                        _ => ExitCode::from(1),
                    }
                }
            }
        }
    }
}

fn encrypt(
    cert: &std::path::Path,
    input: &std::path::Path,
    out: &std::path::Path,
    msg: &LotMessage,
    der: bool,
) -> Result<String, SesamError> {
    let pem = std::fs::read(cert).map_err(|source| SesamError::Io {
        path: cert.to_owned(),
        source,
    })?;
    let recipient = Recipient::from_pem(&pem)?;
    let cert_der = passerelle_sesam::certificate_der_from_pem(&pem)?;
    certs::check_extensions(&cert_der, msg.flow, msg.env)?;
    // Written under a temporary name and renamed when complete: a refused lot never leaves a
    // partial (or unencrypted) output behind, nor clobbers an existing file.
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".part");
    let tmp = PathBuf::from(tmp_name);
    let result = write_output(&recipient, input, &tmp, msg, der);
    let result = result.and_then(|summary| {
        std::fs::rename(&tmp, out).map_err(|source| SesamError::Io {
            path: out.to_owned(),
            source,
        })?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let summary = result?;
    Ok(format!("{} ({summary})", out.display()))
}

fn write_output(
    recipient: &Recipient,
    input: &std::path::Path,
    out: &std::path::Path,
    msg: &LotMessage,
    der: bool,
) -> Result<String, SesamError> {
    if der {
        let size = passerelle_sesam::encrypt_lot_to_pkcs7(
            recipient,
            input,
            msg.compress,
            msg.max_lot_bytes,
            out,
        )?;
        return Ok(format!("{size} bytes DER"));
    }
    let file = std::fs::File::create(out).map_err(|source| SesamError::Io {
        path: out.to_owned(),
        source,
    })?;
    let written = write_message(recipient, input, msg, &file)?;
    file.sync_all().map_err(|source| SesamError::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(format!(
        "{}, {}, {} bytes CMS",
        written.file_name,
        passerelle_sesam::content_description(msg.flow, msg.env, msg.compress),
        written.cms_bytes
    ))
}

/// `passerelle sesam resend`: exit 0 when the lot was put back, 1 when refused (unknown id,
/// a state where a resend makes no sense), 2 when the store cannot be used.
fn resend(state_dir: &std::path::Path, lot_id: &str) -> ExitCode {
    use passerelle_billing::{BillingError, LotId, LotStore, mark_for_resend};
    let Some(id) = LotId::parse(lot_id) else {
        println!("refused: {lot_id:?} is not a lot id (32 lowercase hex characters)");
        return ExitCode::from(1);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let store = LotStore::open(&state_dir.join("lots")).await?;
        mark_for_resend(&store, &id).await
    });
    match result {
        Ok(r) => {
            println!(
                "ok: lot {} put back to be sent again (was {}, round {}); the daemon sends it at its next pass",
                r.lot, r.from, r.round
            );
            ExitCode::SUCCESS
        }
        Err(e @ (BillingError::ResendRefused { .. } | BillingError::UnknownLot { .. })) => {
            println!("refused: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `passerelle sesam lots`: one line per lot, oldest first; exit 2 when the store cannot be
/// read, 1 for an unknown state name.
fn lots(state_dir: &std::path::Path, state: Option<&str>, history: bool) -> ExitCode {
    use passerelle_billing::{LotState, LotStore};
    let state = match state.map(str::parse::<LotState>).transpose() {
        Ok(s) => s,
        Err(e) => {
            println!("refused: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let store = LotStore::open(&state_dir.join("lots")).await?;
        let mut out = Vec::new();
        for lot in store.list(state).await? {
            out.push(format!(
                "{}  {:<12}  {} {} {}  {}  sends={}  {}",
                lot.id,
                lot.state.as_str(),
                lot.meta.flow.as_str(),
                lot.meta.env.as_str(),
                lot.meta.recipient.as_str(),
                lot.meta.file_name,
                lot.sends,
                lot.reason
            ));
            if history {
                for t in store.history(&lot.id).await? {
                    let at =
                        t.at.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                    out.push(format!(
                        "    @{at}  {} -> {}  {}",
                        t.from.map_or("-", LotState::as_str),
                        t.to.as_str(),
                        t.reason
                    ));
                }
            }
        }
        Ok::<_, passerelle_billing::BillingError>(out)
    });
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(2)
        }
    }
}
