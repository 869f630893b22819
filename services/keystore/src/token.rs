//! The token thread: the only place PKCS#11 functions are called.
//!
//! A `cryptoki::session::Session` is `Send` but not `Sync`, and every PKCS#11
//! call may block (a TPM takes hundreds of milliseconds to sign). One
//! dedicated OS thread owns the module and the logged-in session and runs
//! jobs sent to it over a channel; callers wait on a reply channel, either
//! asynchronously ([`Worker::call`]) or with a bounded blocking wait
//! ([`Worker::call_blocking`], for rustls and rcgen, whose signing callbacks
//! are synchronous).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use tokio::sync::oneshot;

use crate::der;
use crate::error::{KeystoreError, Result, ckr_name, function_name};
use crate::keys::{KeyAlgorithm, KeyId, KeyInfo, KeyRef};
use crate::pin::{auth_pin, read_pin_file};

type Job = Box<dyn FnOnce(&mut TokenState) + Send>;

/// The signature mechanisms the keystore uses. Built into cryptoki
/// `Mechanism`s on the token thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignMechanism {
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPssSha256,
    RsaPssSha384,
    /// Raw CKM_ECDSA over a digest the caller computed: SoftHSM 2.6.1 has no
    /// CKM_ECDSA_SHA256.
    EcdsaPrehashed,
}

impl SignMechanism {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            Self::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
            Self::RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
            Self::RsaPssSha256 => Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: 32.into(),
            }),
            Self::RsaPssSha384 => Mechanism::Sha384RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA384,
                mgf: PkcsMgfType::MGF1_SHA384,
                s_len: 48.into(),
            }),
            Self::EcdsaPrehashed => Mechanism::Ecdsa,
        }
    }
}

/// A cheap, cloneable handle to the token thread. The thread stops at
/// [`Worker::close`], which closes the session, or when the last handle (the
/// `Keystore` and every `TokenKey`) is dropped, which leaves the session open
/// until the process ends.
#[derive(Clone)]
pub(crate) struct Worker {
    tx: mpsc::Sender<Job>,
    token: Arc<str>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Loads the module, finds the token by label and logs in, all on a new
    /// thread; resolves once the session is ready or setup failed.
    pub(crate) async fn start(module: PathBuf, token: String, pin_file: PathBuf) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_token = token.clone();
        let thread_module = module.clone();
        std::thread::Builder::new()
            .name(format!("pkcs11-{token}"))
            .spawn(
                move || match TokenState::open(&thread_module, &thread_token, &pin_file) {
                    Ok(mut state) => {
                        let _ = ready_tx.send(Ok(()));
                        // Runs until `close` asks it to stop or every
                        // sender is gone.
                        while let Ok(job) = rx.recv() {
                            job(&mut state);
                            if state.closed_tx.is_some() {
                                break;
                            }
                        }
                        if let Some(closed_tx) = state.closed_tx.take() {
                            drop(state);
                            let _ = closed_tx.send(());
                        } else {
                            // Every handle is gone without `close`: the process may be
                            // exiting right now, and closing the session would race the
                            // module's destructors that `exit` runs. The session is left
                            // to the process's end (one per keystore opened).
                            std::mem::forget(state);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            )
            .map_err(|e| KeystoreError::ModuleLoad {
                module,
                reason: format!("cannot start the token thread: {e}"),
            })?;
        let token: Arc<str> = token.into();
        ready_rx.await.map_err(|_| KeystoreError::WorkerGone {
            token: token.to_string(),
        })??;
        Ok(Self { tx, token })
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    fn gone(&self) -> KeystoreError {
        KeystoreError::WorkerGone {
            token: self.token.to_string(),
        }
    }

    /// Stops the token thread after the jobs already sent and resolves once
    /// its session is closed. Later calls through any handle fail with
    /// `WorkerGone`.
    ///
    /// A process must not exit while the token thread is inside the module:
    /// `exit` runs the module's destructors, which may then deadlock or crash.
    pub(crate) async fn close(&self) {
        let (closed_tx, closed_rx) = oneshot::channel();
        let stop: Job = Box::new(move |state| state.closed_tx = Some(closed_tx));
        if self.tx.send(stop).is_ok() {
            // An error means the thread already ended, which is the aim.
            let _ = closed_rx.await;
        }
    }

    /// Runs `f` on the token thread and awaits its result without blocking
    /// the async runtime.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut TokenState) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |state| {
                let _ = reply_tx.send(f(state));
            }))
            .map_err(|_| self.gone())?;
        reply_rx.await.map_err(|_| self.gone())?
    }

    /// Runs `f` on the token thread and waits at most `timeout` for it, for
    /// synchronous callers (rustls `Signer::sign`, rcgen `SigningKey::sign`).
    ///
    /// On a multi-thread tokio worker the wait goes through
    /// `block_in_place`, so the worker's other tasks move to another thread
    /// while this one waits for the token.
    pub(crate) fn call_blocking<T, F>(&self, timeout: Duration, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut TokenState) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |state| {
                let _ = reply_tx.send(f(state));
            }))
            .map_err(|_| self.gone())?;
        let wait = || reply_rx.recv_timeout(timeout);
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let reply = if on_multi_thread_runtime {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        match reply {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(KeystoreError::Timeout {
                token: self.token.to_string(),
                millis: timeout.as_millis(),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.gone()),
        }
    }
}

/// Loads and initialises a module, once per process.
///
/// A module stays loaded and initialised until the process exits:
/// `C_Finalize` racing a later open (CLI `init` then `generate`, or a
/// keystore reopened while the previous token thread winds down) would close
/// the new sessions, and unloading it from a token thread while the main
/// thread exits deadlocks in glibc's loader lock (seen with SoftHSM 2.6.1:
/// `dlclose` on the token thread, `_dl_fini` on the main one). A second
/// initialisation by another user of the module is not an error either.
fn load_module(module: &Path) -> Result<Pkcs11> {
    static LOADED: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let load_err = |reason: String| KeystoreError::ModuleLoad {
        module: module.to_owned(),
        reason,
    };
    if !module.exists() {
        return Err(load_err("no such file".to_owned()));
    }
    // Loading runs on token threads only; a panic there poisons nothing
    // this list relies on.
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, pkcs11)) = loaded.iter().find(|(path, _)| path == module) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(module).map_err(|e| load_err(e.to_string()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            loaded.push((module.to_owned(), pkcs11.clone()));
            Ok(pkcs11)
        }
        Err(e) => Err(load_err(format!("C_Initialize: {}", ckr_name(&e)))),
    }
}

/// Slots holding an initialised token, with their labels.
fn token_slots(pkcs11: &Pkcs11, module: &Path) -> Result<Vec<(Slot, String)>> {
    let err = |e: CkError| KeystoreError::ModuleLoad {
        module: module.to_owned(),
        reason: format!("{}: {}", function_name(&e), ckr_name(&e)),
    };
    pkcs11
        .get_slots_with_initialized_token()
        .map_err(err)?
        .into_iter()
        .map(|slot| {
            Ok((
                slot,
                pkcs11.get_token_info(slot).map_err(err)?.label().to_owned(),
            ))
        })
        .collect()
}

fn find_token(pkcs11: &Pkcs11, module: &Path, token: &str) -> Result<Slot> {
    let slots = token_slots(pkcs11, module)?;
    slots
        .iter()
        .find(|(_, label)| label == token)
        .map(|(slot, _)| *slot)
        .ok_or_else(|| KeystoreError::TokenNotFound {
            module: module.to_owned(),
            token: token.to_owned(),
            present: if slots.is_empty() {
                "none".to_owned()
            } else {
                slots
                    .iter()
                    .map(|(_, l)| format!("{l:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// Creates a token in a free slot, sets its SO PIN and user PIN.
pub(crate) fn init_token(
    module: &Path,
    token: &str,
    so_pin_file: &Path,
    pin_file: &Path,
) -> Result<()> {
    let so_pin = read_pin_file(so_pin_file)?;
    let user_pin = read_pin_file(pin_file)?;
    let pkcs11 = load_module(module)?;
    if token_slots(&pkcs11, module)?
        .iter()
        .any(|(_, l)| l == token)
    {
        return Err(KeystoreError::TokenExists {
            token: token.to_owned(),
        });
    }
    let p11 = |e: CkError| KeystoreError::Pkcs11 {
        token: token.to_owned(),
        key: None,
        function: function_name(&e),
        rv: ckr_name(&e),
    };
    let free = pkcs11
        .get_slots_with_token()
        .map_err(p11)?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|i| !i.token_initialized())
        })
        .ok_or_else(|| KeystoreError::NoFreeSlot {
            module: module.to_owned(),
            token: token.to_owned(),
        })?;
    let so_pin = auth_pin(&so_pin);
    pkcs11.init_token(free, &so_pin, token).map_err(p11)?;
    // SoftHSM renumbers slots after C_InitToken: look the token up again.
    let slot = find_token(&pkcs11, module, token)?;
    let session = pkcs11.open_rw_session(slot).map_err(p11)?;
    session.login(UserType::So, Some(&so_pin)).map_err(p11)?;
    session.init_pin(&auth_pin(&user_pin)).map_err(p11)?;
    session.logout().map_err(p11)?;
    tracing::info!(token, "token initialised");
    Ok(())
}

/// The module, the logged-in session, and the operations run on them.
pub(crate) struct TokenState {
    session: Session,
    token: String,
    /// Set by [`Worker::close`]: the thread stops after this job and
    /// answers once the session is closed.
    closed_tx: Option<oneshot::Sender<()>>,
}

impl TokenState {
    fn open(module: &Path, token: &str, pin_file: &Path) -> Result<Self> {
        let pin = read_pin_file(pin_file)?;
        let pkcs11 = load_module(module)?;
        let slot = find_token(&pkcs11, module, token)?;
        let p11 = |e: CkError| KeystoreError::Pkcs11 {
            token: token.to_owned(),
            key: None,
            function: function_name(&e),
            rv: ckr_name(&e),
        };
        // A locked PIN is reported without a login attempt.
        let info = pkcs11.get_token_info(slot).map_err(p11)?;
        if info.user_pin_locked() {
            return Err(KeystoreError::Login {
                token: token.to_owned(),
                rv: "CKR_PIN_LOCKED".to_owned(),
            });
        }
        let session = pkcs11.open_rw_session(slot).map_err(p11)?;
        // Exactly one attempt: a wrong PIN is reported, never retried, so a
        // misconfigured appliance cannot lock its own token.
        match session.login(UserType::User, Some(&auth_pin(&pin))) {
            // Login state is per process: another open keystore did it.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                tracing::error!(token, rv = %ckr_name(&e), "token login refused");
                return Err(KeystoreError::Login {
                    token: token.to_owned(),
                    rv: ckr_name(&e),
                });
            }
        }
        tracing::info!(token, module = %module.display(), "token session open");
        Ok(Self {
            session,
            token: token.to_owned(),
            closed_tx: None,
        })
    }

    fn session(&self) -> &Session {
        &self.session
    }

    fn p11(&self, key: Option<&str>) -> impl Fn(CkError) -> KeystoreError + use<> {
        let token = self.token.clone();
        let key = key.map(str::to_owned);
        move |e| KeystoreError::Pkcs11 {
            token: token.clone(),
            key: key.clone(),
            function: function_name(&e),
            rv: ckr_name(&e),
        }
    }

    fn find(&self, class: ObjectClass, key: &KeyRef) -> Result<Vec<ObjectHandle>> {
        let selector = match key {
            KeyRef::Label(label) => Attribute::Label(label.as_bytes().to_vec()),
            KeyRef::Id(id) => Attribute::Id(id.as_bytes().to_vec()),
        };
        self.session()
            .find_objects(&[Attribute::Class(class), selector])
            .map_err(self.p11(Some(&key.to_string())))
    }

    /// The private key `key` names, with its id: exactly one must match.
    pub(crate) fn private_key(&self, key: &KeyRef) -> Result<(ObjectHandle, KeyId)> {
        let handles = self.find(ObjectClass::PRIVATE_KEY, key)?;
        let [handle] = handles.as_slice() else {
            return Err(if handles.is_empty() {
                KeystoreError::KeyNotFound {
                    token: self.token.clone(),
                    key: key.to_string(),
                }
            } else {
                KeystoreError::UnsupportedKey {
                    token: self.token.clone(),
                    key: key.to_string(),
                    reason: format!("{} private keys match; name it by id", handles.len()),
                }
            });
        };
        let id = self
            .attributes(*handle, key, &[AttributeType::Id])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Id(id) => Some(KeyId::new(id)),
                _ => None,
            });
        let id = id.ok_or_else(|| KeystoreError::UnsupportedKey {
            token: self.token.clone(),
            key: key.to_string(),
            reason: "no CKA_ID".to_owned(),
        })?;
        Ok((*handle, id))
    }

    fn attributes(
        &self,
        handle: ObjectHandle,
        key: &KeyRef,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>> {
        self.session()
            .get_attributes(handle, types)
            .map_err(self.p11(Some(&key.to_string())))
    }

    pub(crate) fn generate(&mut self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo> {
        let key = KeyRef::Label(label.to_owned());
        if !self.find(ObjectClass::PRIVATE_KEY, &key)?.is_empty() {
            return Err(KeystoreError::KeyExists {
                token: self.token.clone(),
                label: label.to_owned(),
            });
        }
        let p11 = self.p11(Some(label));
        let id = self.session().generate_random_vec(16).map_err(&p11)?;
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Id(id.clone()),
                Attribute::Label(label.as_bytes().to_vec()),
            ]
        };
        let mut public = common(false);
        public.push(Attribute::Verify(true));
        let mut private = common(true);
        private.extend([
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ]);
        let mechanism = match algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
                let bits: u64 = if algorithm == KeyAlgorithm::Rsa2048 {
                    2048
                } else {
                    3072
                };
                public.extend([
                    Attribute::Encrypt(true),
                    Attribute::ModulusBits(bits.into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ]);
                // SESAM-Vitale deciphers with the same key in OCT mode.
                private.push(Attribute::Decrypt(true));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeyAlgorithm::EcP256 => {
                public.push(Attribute::EcParams(der::EC_PARAMS_P256.to_vec()));
                Mechanism::EccKeyPairGen
            }
        };
        let (_, handle) = self
            .session()
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(&p11)?;
        let info = self.key_info(handle, &key)?;
        tracing::info!(token = %self.token, key.label = label, key.id = %info.id, key.algorithm = %algorithm, "key pair generated");
        Ok(info)
    }

    fn key_info(&self, handle: ObjectHandle, key: &KeyRef) -> Result<KeyInfo> {
        let attrs = self.attributes(
            handle,
            key,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::KeyType,
                AttributeType::ModulusBits,
                AttributeType::Modulus,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
            ],
        )?;
        let mut id = None;
        let mut label = String::new();
        let mut key_type = None;
        let mut modulus_len = 0;
        let mut flags = [false; 5];
        for attr in attrs {
            match attr {
                Attribute::Id(v) => id = Some(KeyId::new(v)),
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Modulus(m) => modulus_len = m.iter().skip_while(|b| **b == 0).count(),
                Attribute::Sensitive(b) => flags[0] = b,
                Attribute::Extractable(b) => flags[1] = b,
                Attribute::AlwaysSensitive(b) => flags[2] = b,
                Attribute::NeverExtractable(b) => flags[3] = b,
                Attribute::Local(b) => flags[4] = b,
                _ => {}
            }
        }
        let unsupported = |reason: String| KeystoreError::UnsupportedKey {
            token: self.token.clone(),
            key: key.to_string(),
            reason,
        };
        let algorithm = match key_type {
            Some(KeyType::RSA) if modulus_len == 256 => KeyAlgorithm::Rsa2048,
            Some(KeyType::RSA) if modulus_len == 384 => KeyAlgorithm::Rsa3072,
            Some(KeyType::RSA) => {
                return Err(unsupported(format!(
                    "RSA modulus of {} bits",
                    modulus_len * 8
                )));
            }
            Some(KeyType::EC) => KeyAlgorithm::EcP256,
            other => return Err(unsupported(format!("key type {other:?}"))),
        };
        let id = id.ok_or_else(|| unsupported("no CKA_ID".to_owned()))?;
        let certificate_subject = self
            .certificate(&id)?
            .and_then(|der| crate::cert::subject_of(&der));
        Ok(KeyInfo {
            id,
            label,
            algorithm,
            sensitive: flags[0],
            extractable: flags[1],
            always_sensitive: flags[2],
            never_extractable: flags[3],
            local: flags[4],
            certificate_subject,
        })
    }

    pub(crate) fn list(&mut self) -> Result<Vec<KeyInfo>> {
        let handles = self
            .session()
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map_err(self.p11(None))?;
        let mut keys = handles
            .into_iter()
            .map(|h| self.key_info(h, &KeyRef::Label(format!("handle {h}"))))
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    pub(crate) fn info(&mut self, key: &KeyRef) -> Result<KeyInfo> {
        let (handle, _) = self.private_key(key)?;
        self.key_info(handle, key)
    }

    /// Destroys the private key, its public key and its certificate.
    pub(crate) fn delete(&mut self, key: &KeyRef) -> Result<KeyInfo> {
        let (handle, id) = self.private_key(key)?;
        let info = self.key_info(handle, key)?;
        let by_id = KeyRef::Id(id);
        let p11 = self.p11(Some(&key.to_string()));
        for class in [ObjectClass::CERTIFICATE, ObjectClass::PUBLIC_KEY] {
            for h in self.find(class, &by_id)? {
                self.session().destroy_object(h).map_err(&p11)?;
            }
        }
        self.session().destroy_object(handle).map_err(&p11)?;
        tracing::info!(token = %self.token, key.label = %info.label, key.id = %info.id, "key deleted");
        Ok(info)
    }

    /// The public half as SubjectPublicKeyInfo's bit string content:
    /// `RSAPublicKey` DER for RSA, the uncompressed point for EC.
    pub(crate) fn public_key(&mut self, key: &KeyRef) -> Result<(ObjectHandle, KeyInfo, Vec<u8>)> {
        let (handle, id) = self.private_key(key)?;
        let info = self.key_info(handle, key)?;
        let publics = self.find(ObjectClass::PUBLIC_KEY, &KeyRef::Id(id))?;
        let malformed = || KeystoreError::MalformedTokenOutput {
            token: self.token.clone(),
            key: key.to_string(),
            what: "public key",
        };
        let public = if info.algorithm.is_rsa() {
            // An RSA private key object carries its public modulus and
            // exponent too, so a lost public object is no obstacle.
            let source = publics.first().copied().unwrap_or(handle);
            let attrs = self.attributes(
                source,
                key,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let mut modulus = None;
            let mut exponent = None;
            for attr in attrs {
                match attr {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (Some(m), Some(e)) = (modulus, exponent) else {
                return Err(malformed());
            };
            der::rsa_public_key(&m, &e)
        } else {
            let source = publics
                .first()
                .copied()
                .ok_or_else(|| KeystoreError::UnsupportedKey {
                    token: self.token.clone(),
                    key: key.to_string(),
                    reason: "EC key without its public key object".to_owned(),
                })?;
            let attrs = self.attributes(source, key, &[AttributeType::EcPoint])?;
            let point = attrs.into_iter().find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            });
            point
                .as_deref()
                .and_then(der::ec_point)
                .map(<[u8]>::to_vec)
                .ok_or_else(malformed)?
        };
        Ok((handle, info, public))
    }

    pub(crate) fn sign(
        &mut self,
        handle: ObjectHandle,
        key: &str,
        mechanism: SignMechanism,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.session()
            .sign(&mechanism.mechanism(), handle, data)
            .map_err(self.p11(Some(key)))
    }

    /// RSA PKCS#1 v1.5 decryption (`CKM_RSA_PKCS`): a CMS key-transport unwrap.
    pub(crate) fn decrypt_rsa_pkcs(
        &mut self,
        handle: ObjectHandle,
        key: &str,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.session()
            .decrypt(&Mechanism::RsaPkcs, handle, data)
            .map_err(self.p11(Some(key)))
    }

    /// The DER certificate stored with this `CKA_ID`, if any.
    pub(crate) fn certificate(&self, id: &KeyId) -> Result<Option<Vec<u8>>> {
        let key = KeyRef::Id(id.clone());
        let Some(handle) = self.find(ObjectClass::CERTIFICATE, &key)?.first().copied() else {
            return Ok(None);
        };
        Ok(self
            .attributes(handle, &key, &[AttributeType::Value])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            }))
    }

    /// Stores `cert` beside the key (same `CKA_ID` and label), replacing a
    /// previous certificate only once the new one is stored (renewal).
    pub(crate) fn store_certificate(
        &mut self,
        key: &KeyRef,
        cert: &crate::cert::CertificateObject,
    ) -> Result<KeyInfo> {
        let (handle, id) = self.private_key(key)?;
        let info = self.key_info(handle, key)?;
        let by_id = KeyRef::Id(id.clone());
        let previous = self.find(ObjectClass::CERTIFICATE, &by_id)?;
        let p11 = self.p11(Some(&key.to_string()));
        self.session()
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Id(id.as_bytes().to_vec()),
                Attribute::Label(info.label.as_bytes().to_vec()),
                Attribute::Subject(cert.subject.clone()),
                Attribute::Issuer(cert.issuer.clone()),
                Attribute::SerialNumber(cert.serial.clone()),
                Attribute::Value(cert.der.clone()),
            ])
            .map_err(&p11)?;
        for old in previous {
            self.session().destroy_object(old).map_err(&p11)?;
        }
        let info = self.key_info(handle, key)?;
        tracing::info!(token = %self.token, key.label = %info.label, key.id = %info.id, subject = ?info.certificate_subject, "certificate stored");
        Ok(info)
    }
}
