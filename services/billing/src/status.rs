//! [`BillingStatus`]: the billing service seen from outside (the web admin's Facturation
//! page, the CLI). A cheap clonable handle over the lot store and the daemon's in-memory
//! state (CRL downloads, last returns poll); every method is a short SQLite read or a copy of
//! that state, except [`BillingStatus::resend`], which is the one write.
//!
//! The daemon builds it with [`BillingStatus::open`], hands clones to the web admin, and
//! passes it to [`crate::serve_with`], whose loops fill the CRL and poll state. A handle
//! opened elsewhere (the CLI, on the same `state_dir`) sees the same lots; its CRL and poll
//! state stay empty, since only the running daemon knows them.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use passerelle_queue::{Queue, SqliteStore};
use passerelle_sesam::SesamConfig;

use crate::config::BillingConfig;
use crate::error::BillingError;
use crate::intake::Intake;
use crate::lot_file::LotId;
use crate::lots::{Lot, LotState, LotStore, Transition};

/// The states an operator may send a lot again from: a negative ARL or a non-delivery
/// (`rejected`), no ARL in time (`overdue`).
pub const RESENDABLE: [LotState; 2] = [LotState::Rejected, LotState::Overdue];

/// A lot and its recorded steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotDetail {
    pub lot: Lot,
    /// Oldest first.
    pub history: Vec<Transition>,
}

/// What [`BillingStatus::resend`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resent {
    pub lot: LotId,
    /// The state the lot left (`rejected` or `overdue`).
    pub from: LotState,
    /// The resend round (the lot's [`Lot::round`] now).
    pub round: u32,
}

/// Where the CRL of one SESAM-Vitale CA stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlStatus {
    /// The download location (LDAP or HTTP URL).
    pub source: String,
    /// The CA whose CRL it is (issuer name of the last CRL read), once known.
    pub ca: Option<String>,
    /// The installed CRL's nextUpdate, once a CRL was read.
    pub next_update: Option<SystemTime>,
    /// When the last download was attempted, and what it gave.
    pub last_attempt: Option<SystemTime>,
    pub last_outcome: Option<CrlOutcome>,
    /// When the next download is due (the weekly slot, or tomorrow's after a failure).
    pub next_download: Option<SystemTime>,
    /// Downloads fail and the CRL expires within two days, or has expired (A4 §6.3.3):
    /// the practice must call its vendor. An expired CRL does not block sending ([CP2]).
    pub alert: bool,
    /// No CRL is installed for this CA: sending is blocked ([CE2]).
    pub missing: bool,
}

/// What one CRL download gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlOutcome {
    /// A newer CRL was verified and installed.
    Installed,
    /// The same CRL as the one installed (counts as a failure: daily retry).
    Unchanged,
    /// The download or the verification failed, with the reason.
    Failed(String),
}

/// The last poll of the billing mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollReport {
    pub at: SystemTime,
    /// `pop3` or `imap`.
    pub route: &'static str,
    pub outcome: PollOutcome,
}

impl PollReport {
    pub(crate) fn of(
        route: &'static str,
        result: &Result<Vec<crate::returns::Handled>, BillingError>,
    ) -> Self {
        let outcome = match result {
            Ok(handled) => PollOutcome::Read {
                returns: handled.len(),
                changed: handled.iter().filter(|h| h.changed).count(),
                problems: handled
                    .iter()
                    .filter(|h| match h.kind {
                        crate::returns::ReturnKind::Problem(_) => true,
                        crate::returns::ReturnKind::Rsp => false,
                        _ => h.lot.is_none(),
                    })
                    .count(),
            },
            Err(e) => PollOutcome::Failed(e.to_string()),
        };
        Self {
            at: SystemTime::now(),
            route,
            outcome,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// The mailbox was read: returns handled, how many changed a lot's state, how many were
    /// unusable (corrupt ARL, unexpected layout, unmatched).
    Read {
        returns: usize,
        changed: usize,
        problems: usize,
    },
    /// The mailbox could not be read (connection, TLS, login…), with the reason.
    Failed(String),
}

#[derive(Debug)]
struct Shared {
    intake: Intake,
    arl_deadline: Duration,
    crl: RwLock<Vec<CrlStatus>>,
    last_poll: RwLock<Option<PollReport>>,
}

/// The billing service's status and its one operator action (see the module doc).
#[derive(Clone, Debug)]
pub struct BillingStatus {
    shared: Arc<Shared>,
}

impl BillingStatus {
    /// Open the lot store of `config.state_dir`; `queue` is the daemon's shared queue (a
    /// resend is queued there).
    pub async fn open(
        sesam: &SesamConfig,
        config: &BillingConfig,
        queue: Queue<SqliteStore>,
    ) -> Result<Self, BillingError> {
        let intake = Intake {
            store: LotStore::open(&config.state_dir.join("lots")).await?,
            queue,
            max_lot_bytes: sesam.max_lot_bytes,
        };
        Ok(Self::new(intake, config.arl_deadline))
    }

    /// Over an intake already open (tests, the daemon's own parts).
    pub fn new(intake: Intake, arl_deadline: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                intake,
                arl_deadline,
                crl: RwLock::new(Vec::new()),
                last_poll: RwLock::new(None),
            }),
        }
    }

    pub(crate) fn intake(&self) -> &Intake {
        &self.shared.intake
    }

    /// The lot store (for reads the methods here do not cover).
    pub fn store(&self) -> &LotStore {
        &self.shared.intake.store
    }

    /// Lots, oldest first; only those in `state` if given.
    pub async fn lots(&self, state: Option<LotState>) -> Result<Vec<Lot>, BillingError> {
        self.store().list(state).await
    }

    /// One lot with its history; `None` for an unknown id.
    pub async fn lot(&self, id: &LotId) -> Result<Option<LotDetail>, BillingError> {
        let Some(lot) = self.store().get(id).await? else {
            return Ok(None);
        };
        let history = self.store().history(id).await?;
        Ok(Some(LotDetail { lot, history }))
    }

    /// How many lots are in each state, in [`LotState::ALL`] order, zeros included.
    pub async fn counts(&self) -> Result<Vec<(LotState, u64)>, BillingError> {
        self.store().counts().await
    }

    /// Lots whose ARL did not come within the deadline, oldest first.
    pub async fn overdue(&self) -> Result<Vec<Lot>, BillingError> {
        self.store().list(Some(LotState::Overdue)).await
    }

    /// The configured ARL deadline (a sent lot without ARL after this is overdue).
    pub fn arl_deadline(&self) -> Duration {
        self.shared.arl_deadline
    }

    /// The CRL of each SESAM-Vitale CA the service downloads (empty until the daemon's CRL
    /// loop has run once, and in a handle not given to [`crate::serve_with`]).
    pub fn crl(&self) -> Vec<CrlStatus> {
        self.shared
            .crl
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// True when any CA's CRL is in alert (failing downloads near or past expiry).
    pub fn crl_alert(&self) -> bool {
        self.crl().iter().any(|c| c.alert || c.missing)
    }

    /// The last poll of the billing mailbox, if one ran.
    pub fn last_poll(&self) -> Option<PollReport> {
        self.shared.last_poll.read().ok().and_then(|p| p.clone())
    }

    /// Send a `rejected` or `overdue` lot again: the same pre-encryption content goes back
    /// to `received`, is queued (a new round, its own queue key), and the sender encrypts it
    /// for the current certificate. Refused ([`BillingError::ResendRefused`]) for any other
    /// state: `acknowledged` (done), `refused` (not a lot), `received`/`blocked`/`encrypted`
    /// (already waiting to be sent), `sent` (its ARL is still awaited).
    pub async fn resend(&self, id: &LotId) -> Result<Resent, BillingError> {
        resend(self.intake(), id).await
    }

    pub(crate) fn set_crl(&self, crl: Vec<CrlStatus>) {
        if let Ok(mut c) = self.shared.crl.write() {
            *c = crl;
        }
    }

    pub(crate) fn set_last_poll(&self, report: PollReport) {
        if let Ok(mut p) = self.shared.last_poll.write() {
            *p = Some(report);
        }
    }
}

/// Why a lot in `state` cannot be sent again by the operator.
fn not_resendable(state: LotState) -> &'static str {
    match state {
        LotState::Acknowledged => "it is acknowledged (positive ARL): nothing to resend",
        LotState::Refused => "it is not a lot the caisse would accept; hand over a corrected file",
        LotState::Received | LotState::Blocked | LotState::Encrypted => {
            "it is already waiting to be sent"
        }
        LotState::Sent => {
            "it was sent and its ARL is awaited; it can be resent once rejected or overdue"
        }
        LotState::Rejected | LotState::Overdue => "it can be resent",
    }
}

/// [`BillingStatus::resend`] without the queue: the lot is put back to `received` (a new
/// round) and the running daemon's sender queues it at its next pass (it re-queues every
/// `received` lot, idempotently). This is what `passerelle sesam resend` does from another
/// process: it must not open the daemon's queue (one `Queue` per directory), while the lot
/// store is SQLite in WAL mode with a busy timeout and the reopen is one conditional
/// `UPDATE`, so the CLI and the daemon can write it at the same time.
pub async fn mark_for_resend(store: &LotStore, id: &LotId) -> Result<Resent, BillingError> {
    let Some(lot) = store.get(id).await? else {
        return Err(BillingError::UnknownLot {
            lot: id.to_string(),
        });
    };
    if !RESENDABLE.contains(&lot.state) {
        return Err(BillingError::ResendRefused {
            lot: id.to_string(),
            state: lot.state.as_str(),
            why: not_resendable(lot.state),
        });
    }
    // The content is kept until the lot is acknowledged; check it before promising a resend.
    store.content(id).await?;
    let reason = format!(
        "resend asked by the operator (was {}): the same content, encrypted again",
        lot.state
    );
    match store.reopen(id, &RESENDABLE, &reason).await? {
        Ok(round) => Ok(Resent {
            lot: id.clone(),
            from: lot.state,
            round,
        }),
        // Changed under us (an ARL, the daemon): say what it is now.
        Err(state) => Err(BillingError::ResendRefused {
            lot: id.to_string(),
            state: state.as_str(),
            why: not_resendable(state),
        }),
    }
}

async fn resend(intake: &Intake, id: &LotId) -> Result<Resent, BillingError> {
    let resent = mark_for_resend(&intake.store, id).await?;
    intake.enqueue(id, resent.round).await?;
    Ok(resent)
}
