//! The public handle, the shared snapshot, and the monitor thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::worker::{self, Job};
use crate::{CardError, CardKind, CardsConfig, CpsIdentity, Pin, PinState, Result};

/// How many events a slow subscriber may lag behind before it sees `Lagged`.
const EVENT_CAPACITY: usize = 64;

/// What happened in the readers, in order, per reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardEvent {
    ReaderAdded {
        reader: String,
    },
    ReaderRemoved {
        reader: String,
    },
    /// A card is in the reader; `generation` numbers insertions, service-wide.
    CardInserted {
        reader: String,
        kind: CardKind,
        generation: u64,
    },
    /// The identity read of a CPS card finished (`identity` is `None` when it failed; the
    /// reason is in [`CardInfo::error`]).
    CardReady {
        reader: String,
        generation: u64,
        identity: Option<CpsIdentity>,
    },
    CardRemoved {
        reader: String,
        generation: u64,
    },
}

/// A card in a reader, as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct CardInfo {
    pub generation: u64,
    pub kind: CardKind,
    /// The ATR, hex.
    pub atr: String,
    pub identity: Option<CpsIdentity>,
    /// The authentication certificate, DER.
    #[serde(skip)]
    pub auth_certificate: Option<Vec<u8>>,
    pub pin: PinState,
    /// Why the identity could not be read.
    pub error: Option<String>,
}

/// A reader and its card.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderStatus {
    pub name: String,
    pub card: Option<CardInfo>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub readers: BTreeMap<String, ReaderStatus>,
    pub next_generation: u64,
    pub last_sign_error: Option<CardError>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: CardsConfig,
    pub vitale_atrs: Vec<Vec<u8>>,
    pub events: broadcast::Sender<CardEvent>,
    state: Mutex<State>,
    stop: AtomicBool,
    signatures_requested: AtomicU64,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn emit(&self, event: CardEvent) {
        tracing::info!(?event, "card event");
        // No subscriber is fine: the snapshot has the same facts.
        let _ = self.events.send(event);
    }

    /// Whether the card of `generation` is still the one in `reader`.
    pub fn is_current(&self, reader: &str, generation: u64) -> bool {
        self.state()
            .readers
            .get(reader)
            .and_then(|r| r.card.as_ref())
            .is_some_and(|c| c.generation == generation)
    }

    /// The card of `reader` if it is still insertion `generation`.
    pub fn with_card(&self, reader: &str, generation: u64, f: impl FnOnce(&mut CardInfo)) {
        let mut state = self.state();
        if let Some(card) = state
            .readers
            .get_mut(reader)
            .and_then(|r| r.card.as_mut())
            .filter(|c| c.generation == generation)
        {
            f(card);
        }
    }
}

/// The card service; cheap to clone. The threads stop when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct CardService {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    monitor_ctx: pcsc::Context,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardService").finish_non_exhaustive()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.monitor_ctx.cancel();
        let _ = self.jobs.send(Job::Stop);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl CardService {
    /// Connects to pcscd and starts the monitor and card threads. Fails when pcscd is not
    /// running (`SCardEstablishContext`).
    pub fn start(config: CardsConfig) -> Result<Self> {
        let vitale_atrs = config.vitale_atr_bytes().map_err(CardError::Config)?;
        let establish = || {
            pcsc::Context::establish(pcsc::Scope::User).map_err(|source| CardError::Pcsc {
                op: "establish context",
                source,
            })
        };
        let monitor_ctx = establish()?;
        let worker_ctx = establish()?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            config,
            vitale_atrs,
            events,
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            signatures_requested: AtomicU64::new(0),
        });
        let (jobs, jobs_rx) = mpsc::channel();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(f)
                .map_err(|_| CardError::Stopped)
        };
        let worker = {
            let shared = Arc::clone(&shared);
            spawn(
                "cards-worker",
                Box::new(move || worker::run(&worker_ctx, &shared, &jobs_rx)),
            )?
        };
        let monitor = {
            let (shared, ctx, jobs) = (Arc::clone(&shared), monitor_ctx.clone(), jobs.clone());
            spawn(
                "cards-monitor",
                Box::new(move || monitor(&ctx, &shared, &jobs)),
            )?
        };
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                jobs,
                monitor_ctx,
                threads: Mutex::new(vec![monitor, worker]),
            }),
        })
    }

    /// Card and reader events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CardEvent> {
        self.handle.shared.events.subscribe()
    }

    /// Every reader and its card, as last seen.
    pub fn readers(&self) -> Vec<ReaderStatus> {
        self.handle
            .shared
            .state()
            .readers
            .values()
            .cloned()
            .collect()
    }

    /// The card used for PIN and signatures: the first reader (by name) holding a CPS card.
    pub fn active_card(&self) -> Option<(String, CardInfo)> {
        self.handle.shared.state().readers.values().find_map(|r| {
            r.card
                .as_ref()
                .filter(|c| c.kind.is_cps())
                .map(|c| (r.name.clone(), c.clone()))
        })
    }

    /// The active card's PIN state, asked from the card without spending a try.
    pub async fn pin_status(&self) -> Result<PinState> {
        self.call("PIN status", |deadline, reply| Job::PinStatus {
            deadline,
            reply,
        })
        .await
    }

    /// Verifies the PIN on the active card. With one try left, `confirm_last_try` must be
    /// true or the PIN is not sent. Never retried.
    pub async fn verify_pin(&self, pin: Pin, confirm_last_try: bool) -> Result<PinState> {
        self.call("VERIFY", move |deadline, reply| Job::VerifyPin {
            pin,
            confirm_last_try,
            deadline,
            reply,
        })
        .await
    }

    /// Signs a DigestInfo with the authentication key of card insertion `generation`,
    /// waiting at most [`CardsConfig::apdu_timeout`]. Synchronous, for rustls' `Signer`: on
    /// a multi-thread tokio worker the wait runs in `block_in_place`.
    pub fn sign_blocking(&self, generation: u64, digest_info: Vec<u8>) -> Result<Vec<u8>> {
        let shared = &self.handle.shared;
        shared.signatures_requested.fetch_add(1, Ordering::SeqCst);
        let timeout = shared.config.apdu_timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self.handle.jobs.send(Job::Sign {
            generation,
            digest_info,
            deadline: Instant::now() + timeout,
            reply: tx,
        });
        let result = if sent.is_err() {
            Err(CardError::Stopped)
        } else {
            let wait = || wait_reply(&rx, timeout, "INTERNAL AUTHENTICATE");
            let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if on_multi_thread_runtime {
                tokio::task::block_in_place(wait)
            } else {
                wait()
            }
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "card signature failed");
            shared.state().last_sign_error = Some(e.clone());
        }
        result
    }

    /// Signatures asked of the card so far (a TLS handshake with client authentication asks
    /// one; a resumed session or a reused connection none).
    pub fn signatures_requested(&self) -> u64 {
        self.handle
            .shared
            .signatures_requested
            .load(Ordering::SeqCst)
    }

    /// Why the last failed card signature failed (taken: asked once).
    pub fn take_last_sign_error(&self) -> Option<CardError> {
        self.handle.shared.state().last_sign_error.take()
    }

    async fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        job: impl FnOnce(Instant, mpsc::SyncSender<Result<T>>) -> Job,
    ) -> Result<T> {
        let timeout = self.handle.shared.config.apdu_timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle
            .jobs
            .send(job(Instant::now() + timeout, tx))
            .map_err(|_| CardError::Stopped)?;
        tokio::task::spawn_blocking(move || wait_reply(&rx, timeout, op))
            .await
            .map_err(|_| CardError::Stopped)?
    }
}

fn wait_reply<T>(rx: &mpsc::Receiver<Result<T>>, timeout: Duration, op: &'static str) -> Result<T> {
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(CardError::Timeout {
            op,
            millis: timeout.as_millis(),
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CardError::Stopped),
    }
}

/// The monitor loop: reader list (hot-plug through the PnP pseudo-reader) and card presence.
fn monitor(ctx: &pcsc::Context, shared: &Shared, jobs: &mpsc::Sender<Job>) {
    let mut states = vec![pcsc::ReaderState::new(
        pcsc::PNP_NOTIFICATION(),
        pcsc::State::UNAWARE,
    )];
    let mut relist = true;
    while !shared.stop.load(Ordering::SeqCst) {
        if relist {
            relist = false;
            sync_readers(ctx, &mut states, shared, jobs);
        }
        match ctx.get_status_change(shared.config.poll, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout | pcsc::Error::Cancelled) => continue,
            Err(pcsc::Error::UnknownReader) => {
                relist = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "SCardGetStatusChange failed; relisting readers");
                // Pause so a dead pcscd is not spun on; bounded by the poll interval.
                std::thread::sleep(shared.config.poll);
                relist = true;
                continue;
            }
        }
        for rs in &mut states {
            let event = rs.event_state();
            if rs.name() == pcsc::PNP_NOTIFICATION() {
                relist |= event.contains(pcsc::State::CHANGED);
            } else if event.intersects(pcsc::State::UNKNOWN | pcsc::State::UNAVAILABLE) {
                relist = true;
            } else {
                let reader = rs.name().to_string_lossy().into_owned();
                card_presence(shared, jobs, &reader, event, rs.atr());
            }
            rs.sync_current_state();
        }
    }
}

fn sync_readers(
    ctx: &pcsc::Context,
    states: &mut Vec<pcsc::ReaderState>,
    shared: &Shared,
    jobs: &mpsc::Sender<Job>,
) {
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
        // pcscd gone: no reader is usable, so every card is reported removed.
        Err(e) => {
            tracing::warn!(error = %e, "SCardListReaders failed: readers reported gone");
            Vec::new()
        }
    };
    states.retain(|rs| {
        let keep = rs.name() == pcsc::PNP_NOTIFICATION() || names.iter().any(|n| n == rs.name());
        if !keep {
            let reader = rs.name().to_string_lossy().into_owned();
            card_gone(shared, jobs, &reader);
            shared.state().readers.remove(&reader);
            shared.emit(CardEvent::ReaderRemoved { reader });
        }
        keep
    });
    for name in names {
        if states.iter().any(|rs| rs.name() == name.as_c_str()) {
            continue;
        }
        let reader = name.to_string_lossy().into_owned();
        shared.state().readers.insert(
            reader.clone(),
            ReaderStatus {
                name: reader.clone(),
                card: None,
            },
        );
        shared.emit(CardEvent::ReaderAdded { reader });
        states.push(pcsc::ReaderState::new(name, pcsc::State::UNAWARE));
    }
}

fn card_presence(
    shared: &Shared,
    jobs: &mpsc::Sender<Job>,
    reader: &str,
    event: pcsc::State,
    atr: &[u8],
) {
    let had_card = shared
        .state()
        .readers
        .get(reader)
        .is_some_and(|r| r.card.is_some());
    let present = event.contains(pcsc::State::PRESENT);
    if present && !had_card {
        let kind = if event.contains(pcsc::State::MUTE) {
            CardKind::Unknown
        } else {
            CardKind::classify(atr, &shared.vitale_atrs)
        };
        let generation = {
            let mut state = shared.state();
            state.next_generation += 1;
            let generation = state.next_generation;
            let card = CardInfo {
                generation,
                kind,
                atr: crate::hex(atr),
                identity: None,
                auth_certificate: None,
                pin: PinState::Unknown,
                error: None,
            };
            if let Some(r) = state.readers.get_mut(reader) {
                r.card = Some(card);
            }
            generation
        };
        // The job first: a caller reacting to the event queues behind the identity read.
        if kind.is_cps() {
            let _ = jobs.send(Job::Inserted {
                reader: reader.to_owned(),
                kind,
                generation,
            });
        }
        shared.emit(CardEvent::CardInserted {
            reader: reader.to_owned(),
            kind,
            generation,
        });
    } else if !present && had_card {
        card_gone(shared, jobs, reader);
    }
}

fn card_gone(shared: &Shared, jobs: &mpsc::Sender<Job>, reader: &str) {
    let gone = shared
        .state()
        .readers
        .get_mut(reader)
        .and_then(|r| r.card.take());
    if let Some(card) = gone {
        let _ = jobs.send(Job::Removed {
            reader: reader.to_owned(),
        });
        shared.emit(CardEvent::CardRemoved {
            reader: reader.to_owned(),
            generation: card.generation,
        });
    }
}
