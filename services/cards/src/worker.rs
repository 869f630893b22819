//! The card thread: owns the connections, runs every APDU exchange.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use passerelle_apdu::cps::{
    self, ALG_RSA_PKCS1, CPS3_CLA, CPS4_CLA, EF_CERT_AUTH, EF_IDENTITY, EF_SN_ICC, KEY_REF_AUTH,
    MseTemplate, PIN_REF,
};
use passerelle_apdu::{
    MAX_RESPONSE, Response, ShortCommand, StatusWord, TransceiveError, Transport, transceive,
};

use crate::service::{CardEvent, Shared};
use crate::{CardError, CardKind, CpsIdentity, Pin, PinState, Result};

/// Largest EF read: a certificate with a long chain of extensions stays well under this.
const MAX_EF: usize = 8 * 1024;
/// A card read right after insertion can be reset or lose power under the reader's own
/// power-up (PC/SC `SCARD_W_RESET_CARD` and friends): it is read again, this many times,
/// while it is still the card in the reader, rather than left unusable until re-inserted.
const READ_RETRIES: u32 = 3;
/// Largest RSA signature accepted from the card (RSA-4096).
const MAX_SIGNATURE: usize = 512;

type Reply<T> = mpsc::SyncSender<Result<T>>;

pub(crate) enum Job {
    Inserted {
        reader: String,
        kind: CardKind,
        generation: u64,
    },
    Removed {
        reader: String,
    },
    PinStatus {
        deadline: Instant,
        reply: Reply<PinState>,
    },
    VerifyPin {
        pin: Pin,
        confirm_last_try: bool,
        deadline: Instant,
        reply: Reply<PinState>,
    },
    Sign {
        generation: u64,
        digest_info: Vec<u8>,
        deadline: Instant,
        reply: Reply<Vec<u8>>,
    },
    Stop,
}

struct Conn {
    card: pcsc::Card,
    kind: CardKind,
    cla: u8,
    generation: u64,
}

/// `passerelle-apdu`'s transport over a PC/SC card handle.
struct Pcsc<'a>(&'a pcsc::Card);

impl Transport for Pcsc<'_> {
    type Error = pcsc::Error;

    fn transmit(&mut self, cmd: &[u8], resp: &mut [u8]) -> Result<usize, pcsc::Error> {
        self.0.transmit(cmd, resp).map(<[u8]>::len)
    }
}

pub(crate) fn run(ctx: &pcsc::Context, shared: &Shared, jobs: &mpsc::Receiver<Job>) {
    let mut conns: BTreeMap<String, Conn> = BTreeMap::new();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Stop => break,
            Job::Inserted {
                reader,
                kind,
                generation,
            } => inserted(ctx, shared, &mut conns, reader, kind, generation),
            Job::Removed { reader } => {
                // Dropping the handle disconnects (LEAVE_CARD).
                conns.remove(&reader);
            }
            Job::PinStatus { deadline, reply } => {
                let r = in_time(deadline, "PIN status")
                    .and_then(|()| with_active(&conns, |r, c| pin_status(shared, r, c)));
                let _ = reply.send(r);
            }
            Job::VerifyPin {
                pin,
                confirm_last_try,
                deadline,
                reply,
            } => {
                // A caller that gave up must not have its PIN sent later: it may retry.
                let r = in_time(deadline, "VERIFY").and_then(|()| {
                    with_active(&conns, |r, c| verify(shared, r, c, &pin, confirm_last_try))
                });
                drop(pin);
                let _ = reply.send(r);
            }
            Job::Sign {
                generation,
                digest_info,
                deadline,
                reply,
            } => {
                let r = in_time(deadline, "INTERNAL AUTHENTICATE").and_then(|()| {
                    with_active(&conns, |r, c| {
                        if c.generation == generation {
                            sign(shared, r, c, &digest_info)
                        } else {
                            Err(CardError::CardRemoved {
                                reader: r.to_owned(),
                            })
                        }
                    })
                });
                let _ = reply.send(r);
            }
        }
    }
}

fn in_time(deadline: Instant, op: &'static str) -> Result<()> {
    if Instant::now() > deadline {
        return Err(CardError::Timeout { op, millis: 0 });
    }
    Ok(())
}

fn with_active<T>(
    conns: &BTreeMap<String, Conn>,
    f: impl FnOnce(&str, &Conn) -> Result<T>,
) -> Result<T> {
    let (reader, conn) = conns.iter().next().ok_or(CardError::NoCard)?;
    f(reader, conn)
}

fn inserted(
    ctx: &pcsc::Context,
    shared: &Shared,
    conns: &mut BTreeMap<String, Conn>,
    reader: String,
    kind: CardKind,
    generation: u64,
) {
    let mut attempt = 0;
    let read = loop {
        match connect_and_read(ctx, &reader, kind, generation) {
            Err(e @ CardError::CardRemoved { .. })
                if attempt < READ_RETRIES && shared.is_current(&reader, generation) =>
            {
                attempt += 1;
                tracing::debug!(reader = %reader, error = %e, attempt, "CPS card read again after a reset");
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            read => break read,
        }
    };
    let identity = match read {
        Ok((conn, identity, cert)) => {
            let pin = pin_status(shared, &reader, &conn).unwrap_or(PinState::Unknown);
            let id = identity.clone();
            shared.with_card(&reader, generation, |c| {
                c.identity = Some(id);
                c.auth_certificate = Some(cert);
                c.pin = pin;
            });
            conns.insert(reader.clone(), conn);
            Some(identity)
        }
        Err(e) => {
            tracing::warn!(reader = %reader, error = %e, "CPS card identity read failed");
            let msg = e.to_string();
            shared.with_card(&reader, generation, |c| c.error = Some(msg));
            None
        }
    };
    shared.emit(CardEvent::CardReady {
        reader,
        generation,
        identity,
    });
}

fn connect_and_read(
    ctx: &pcsc::Context,
    reader: &str,
    kind: CardKind,
    generation: u64,
) -> Result<(Conn, CpsIdentity, Vec<u8>)> {
    let name = std::ffi::CString::new(reader).map_err(|_| CardError::Malformed {
        op: "connect",
        detail: "reader name with NUL".into(),
    })?;
    let card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .map_err(|e| CardError::pcsc("connect", reader, e))?;
    let cla = if kind == CardKind::Cps4 {
        CPS4_CLA
    } else {
        CPS3_CLA
    };
    let conn = Conn {
        card,
        kind,
        cla,
        generation,
    };
    open_application(reader, &conn)?;
    let sn = read_ef(reader, &conn, EF_SN_ICC)?;
    let id = read_ef(reader, &conn, EF_IDENTITY)?;
    let identity = CpsIdentity::parse(&sn, &id)?;
    let cert = read_ef(reader, &conn, EF_CERT_AUTH)?;
    Ok((conn, identity, cert))
}

fn open_application(reader: &str, conn: &Conn) -> Result<()> {
    let select = match conn.kind {
        CardKind::Cps4 => {
            // MANAGE CHANNEL open channel 1: the ChipDoc applet lives there.
            let open = ShortCommand::new(0x00, 0x70, 0x00, 0x01);
            expect_ok(reader, conn, &open, "MANAGE CHANNEL")?;
            cps::select_aid(CPS4_CLA, &cps::CPS4_APPLET_AID)
        }
        CardKind::Cps3Contactless => {
            let mut aid = cps::CPS3_IAS_AID;
            aid[12] = 0x20;
            cps::select_aid(CPS3_CLA, &aid)
        }
        _ => cps::select_aid(CPS3_CLA, &cps::CPS3_IAS_AID),
    }
    .map_err(|e| malformed("SELECT", &e))?;
    expect_ok(reader, conn, &select, "SELECT application")
}

fn read_ef(reader: &str, conn: &Conn, fid: u16) -> Result<Vec<u8>> {
    let select = cps::select_file(conn.cla, fid).map_err(|e| malformed("SELECT", &e))?;
    expect_ok(reader, conn, &select, "SELECT file")?;
    let mut file = Vec::new();
    loop {
        let offset = u16::try_from(file.len()).map_err(|_| CardError::Malformed {
            op: "READ BINARY",
            detail: "file past 32 KiB".into(),
        })?;
        let read = cps::read_binary(conn.cla, offset, 256).map_err(|e| malformed("READ", &e))?;
        let (chunk, sw) = exchange(reader, conn, &read, "READ BINARY")?;
        match sw {
            StatusWord::Ok => file.extend_from_slice(&chunk),
            // The previous chunk ended exactly at the end of the file.
            StatusWord::WrongP1P2 if !file.is_empty() => return Ok(file),
            sw => {
                return Err(CardError::Refused {
                    op: "READ BINARY",
                    sw,
                });
            }
        }
        if file.len() > MAX_EF {
            return Err(CardError::Malformed {
                op: "READ BINARY",
                detail: format!("EF {fid:04X} longer than {MAX_EF} bytes"),
            });
        }
        if chunk.len() < 256 {
            return Ok(file);
        }
    }
}

fn pin_status(shared: &Shared, reader: &str, conn: &Conn) -> Result<PinState> {
    let (_, sw) = exchange(
        reader,
        conn,
        &cps::verify_status(conn.cla, PIN_REF),
        "VERIFY (status)",
    )?;
    let state = match sw {
        StatusWord::Ok => PinState::Verified,
        StatusWord::PinTriesLeft(0) | StatusWord::PinBlocked => PinState::Blocked,
        StatusWord::PinTriesLeft(n) => PinState::NotVerified { tries_left: n },
        sw => {
            return Err(CardError::Refused {
                op: "VERIFY (status)",
                sw,
            });
        }
    };
    shared.with_card(reader, conn.generation, |c| c.pin = state);
    Ok(state)
}

fn verify(
    shared: &Shared,
    reader: &str,
    conn: &Conn,
    pin: &Pin,
    confirm_last_try: bool,
) -> Result<PinState> {
    match pin_status(shared, reader, conn)? {
        PinState::Verified => return Ok(PinState::Verified),
        PinState::Blocked => return Err(CardError::PinBlocked),
        PinState::NotVerified { tries_left: 1 } if !confirm_last_try => {
            return Err(CardError::LastTryNeedsConfirmation);
        }
        PinState::NotVerified { .. } | PinState::Unknown => {}
    }
    let apdu = pin.verify_apdu(conn.cla);
    let mut resp = [0u8; MAX_RESPONSE];
    // Sent raw, not through `transceive`, which would copy the PIN into its own buffer;
    // VERIFY has no answer data, so there is no 61xx to follow.
    let got = conn
        .card
        .transmit(&apdu[..], &mut resp)
        .map_err(|e| CardError::pcsc("VERIFY", reader, e))?;
    drop(apdu);
    let sw = Response::parse(got)
        .map_err(|e| malformed("VERIFY", &e))?
        .status();
    let (state, result) = match sw {
        StatusWord::Ok => (PinState::Verified, Ok(PinState::Verified)),
        StatusWord::PinTriesLeft(0) | StatusWord::PinBlocked => {
            (PinState::Blocked, Err(CardError::PinBlocked))
        }
        StatusWord::PinTriesLeft(n) => (
            PinState::NotVerified { tries_left: n },
            Err(CardError::WrongPin { tries_left: n }),
        ),
        sw => return Err(CardError::Refused { op: "VERIFY", sw }),
    };
    tracing::info!(reader = %reader, pin = ?state, "PIN verification");
    shared.with_card(reader, conn.generation, |c| c.pin = state);
    result
}

fn sign(shared: &Shared, reader: &str, conn: &Conn, digest_info: &[u8]) -> Result<Vec<u8>> {
    if !conn.kind.can_sign() {
        return Err(CardError::NotUsable {
            reader: reader.to_owned(),
            kind: conn.kind,
        });
    }
    let mse = cps::mse_set(
        conn.cla,
        MseTemplate::Authentication,
        ALG_RSA_PKCS1,
        KEY_REF_AUTH,
    )
    .map_err(|e| malformed("MSE SET", &e))?;
    expect_ok(reader, conn, &mse, "MSE SET")?;
    let auth = cps::internal_authenticate(conn.cla, digest_info)
        .map_err(|e| malformed("INTERNAL AUTHENTICATE", &e))?;
    let (sig, sw) = exchange(reader, conn, &auth, "INTERNAL AUTHENTICATE")?;
    match sw {
        StatusWord::Ok if !sig.is_empty() && sig.len() <= MAX_SIGNATURE => Ok(sig),
        StatusWord::Ok => Err(CardError::Malformed {
            op: "INTERNAL AUTHENTICATE",
            detail: format!("signature of {} bytes", sig.len()),
        }),
        StatusWord::SecurityStatusNotSatisfied => {
            let state = PinState::NotVerified { tries_left: 0 };
            // The card forgot the PIN (reset by another application): ask its state again.
            let state = pin_status(shared, reader, conn).unwrap_or(state);
            shared.with_card(reader, conn.generation, |c| c.pin = state);
            Err(CardError::PinNotVerified)
        }
        sw => Err(CardError::Refused {
            op: "INTERNAL AUTHENTICATE",
            sw,
        }),
    }
}

fn expect_ok(reader: &str, conn: &Conn, cmd: &ShortCommand, op: &'static str) -> Result<()> {
    match exchange(reader, conn, cmd, op)?.1 {
        StatusWord::Ok => Ok(()),
        sw => Err(CardError::Refused { op, sw }),
    }
}

fn exchange(
    reader: &str,
    conn: &Conn,
    cmd: &ShortCommand,
    op: &'static str,
) -> Result<(Vec<u8>, StatusWord)> {
    let mut out = vec![0u8; 4096];
    match transceive(&mut Pcsc(&conn.card), cmd, &mut out) {
        Ok((n, sw)) => {
            out.truncate(n);
            Ok((out, sw))
        }
        Err(TransceiveError::Transport(e)) => {
            Err(removed_or(conn, reader, CardError::pcsc(op, reader, e)))
        }
        Err(TransceiveError::Apdu(e)) => Err(removed_or(conn, reader, malformed(op, &e))),
        Err(TransceiveError::TooManyRounds) => Err(CardError::Malformed {
            op,
            detail: "endless 61xx/6Cxx".into(),
        }),
    }
}

/// `error`, unless the card is gone: pcscd reports a card pulled mid-exchange as an empty
/// answer or `SCARD_E_NOT_TRANSACTED`, and then fails the status query too.
fn removed_or(conn: &Conn, reader: &str, error: CardError) -> CardError {
    if matches!(error, CardError::CardRemoved { .. }) || conn.card.status2_owned().is_ok() {
        error
    } else {
        CardError::CardRemoved {
            reader: reader.to_owned(),
        }
    }
}

fn malformed(op: &'static str, e: &passerelle_apdu::ApduError) -> CardError {
    CardError::Malformed {
        op,
        detail: e.to_string(),
    }
}
