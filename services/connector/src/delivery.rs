//! The two delivery workers.
//!
//! - internal: `connector.inbound` items to the internal mail server (SMTP or LMTP, plain on
//!   the LAN), per-recipient results, retries through the queue, DSN when given up.
//! - outbound (TM3.2P, §6.7.2.1): `connector.outbound` items, one recipient domain each:
//!   EX_3.2_5060 checked again, MX lookup (step 1), STARTTLS presenting our certificate
//!   (steps 2–3), the peer's chain validated and its DN listed and mapped to the recipient
//!   domain in the handshake (steps 4–6, [`DomainVerifier`]). Only that domain's MX hosts are
//!   ever contacted: there is no relay host setting (EX_3.2_5040).
//!
//! A recipient refused for good gets a DSN to the sender: into the internal queue when the
//! sender is ours, to the sender's operator otherwise; never for the null sender.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use passerelle_queue::{Leased, NewItem, RetryHint, RetryOutcome};
use passerelle_smtp::{
    ClientConfig, Dsn, DsnAction, DsnRecipient, MailFrom, RecipientResult, Reply, SmtpClient,
    build_dsn,
};
use passerelle_trust::{Dn, ProfileServerVerifier, TrustStore, mssante_client_config};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::watch;

use crate::core::Core;
use crate::item::{self, Envelope, INBOUND_KIND, OUTBOUND_KIND};
use crate::traces::Trace;

/// Items leased per round.
const BATCH: u32 = 8;
/// MX hosts tried per delivery, and addresses per host.
const MAX_MX_HOSTS: usize = 10;
const MAX_ADDRS_PER_HOST: usize = 4;

pub(crate) async fn internal_worker(core: Arc<Core>, stop: watch::Receiver<bool>) {
    run_worker(core, stop, INBOUND_KIND, |core, leased| async move {
        deliver_internal(&core, &leased).await;
    })
    .await;
}

pub(crate) async fn outbound_worker(core: Arc<Core>, stop: watch::Receiver<bool>) {
    run_worker(core, stop, OUTBOUND_KIND, |core, leased| async move {
        deliver_outbound(&core, &leased).await;
    })
    .await;
}

async fn run_worker<F, Fut>(
    core: Arc<Core>,
    mut stop: watch::Receiver<bool>,
    kind: &'static str,
    deliver: F,
) where
    F: Fn(Arc<Core>, Leased) -> Fut,
    Fut: Future<Output = ()>,
{
    let ready = if kind == INBOUND_KIND {
        &core.inbound_ready
    } else {
        &core.outbound_ready
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let notified = ready.notified();
        let leased = match core
            .queue
            .lease(kind, BATCH, core.config.workers.lease)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(kind, error = %e, "lease failed");
                Vec::new()
            }
        };
        if !leased.is_empty() {
            for item in leased {
                deliver(Arc::clone(&core), item).await;
            }
            continue;
        }
        let idle = core.config.workers.idle_poll;
        let wait = match core.queue.next_due(kind).await {
            Ok(Some(due)) => due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(idle),
            _ => idle,
        };
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn envelope_of(env: &Envelope) -> passerelle_smtp::Envelope {
    passerelle_smtp::Envelope {
        mail_from: MailFrom {
            address: env.from.clone(),
            size: None,
            eight_bit: false,
        },
        recipients: env.to.clone(),
    }
}

async fn deliver_internal(core: &Arc<Core>, leased: &Leased) {
    let (env, message) = match item::decode(leased.idempotency_key(), leased.payload()) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "undecodable inbound item");
            let _ = core.queue.fail_permanent(leased, &e.to_string()).await;
            return;
        }
    };
    let target = core.config.internal.target;
    let mut config = ClientConfig::new(core.config.hostname.clone());
    config.lmtp = core.config.internal.lmtp;
    // The internal server is on the LAN behind the appliance; §6.7 TLS is between operators.
    config.require_tls = false;
    let result = async {
        let mut client = SmtpClient::connect(target, config).await?;
        client.ehlo().await?;
        let delivery = client.send(&envelope_of(&env), message).await?;
        let _ = client.quit().await;
        Ok::<_, passerelle_smtp::SmtpError>(delivery.recipients)
    }
    .await;
    let trace = Trace {
        direction: "internal",
        event: "delivery",
        id: Some(env.id.clone()),
        peer: Some(target.to_string()),
        from: Some(env.from.clone()),
        size: Some(message.len()),
        ..Trace::default()
    };
    match result {
        Ok(results) => {
            settle(
                core,
                leased,
                &env,
                message,
                results,
                trace,
                &target.to_string(),
            )
            .await;
        }
        Err(e) => {
            let reply = e.reply().cloned();
            let permanent = matches!(e.kind(), passerelle_smtp::ErrorKind::Permanent);
            let results = env
                .to
                .iter()
                .map(|to| RecipientResult {
                    address: to.clone(),
                    reply: reply.clone().unwrap_or_else(|| {
                        Reply::new(
                            if permanent { 554 } else { 451 },
                            (if permanent { 5 } else { 4 }, 4, 1),
                            e.to_string(),
                        )
                    }),
                })
                .collect();
            settle(
                core,
                leased,
                &env,
                message,
                results,
                trace,
                &target.to_string(),
            )
            .await;
        }
    }
}

/// Per-recipient outcome: delivered ones are traced, permanent refusals bounced, temporary ones
/// retried (the same item when none was delivered, a new item for the rest otherwise).
async fn settle(
    core: &Arc<Core>,
    leased: &Leased,
    env: &Envelope,
    message: &[u8],
    results: Vec<RecipientResult>,
    trace: Trace,
    remote: &str,
) {
    let (mut delivered, mut failed, mut deferred) = (Vec::new(), Vec::new(), Vec::new());
    for r in results {
        if r.reply.is_positive() {
            delivered.push(r.address);
        } else if r.reply.is_permanent() {
            failed.push(r);
        } else {
            deferred.push(r);
        }
    }
    if !delivered.is_empty() {
        core.traces
            .record(Trace {
                decision: "delivered",
                to: delivered.clone(),
                ..trace.clone()
            })
            .await;
    }
    if !failed.is_empty() {
        core.traces
            .record(Trace {
                decision: "failed",
                to: failed.iter().map(|r| r.address.clone()).collect(),
                reason: failed.first().map(|r| r.reply.to_string()),
                ..trace.clone()
            })
            .await;
        bounce(core, env, message, &failed, Some(remote)).await;
    }
    if deferred.is_empty() {
        let _ = core.queue.ack(leased).await;
        return;
    }
    let reason = deferred
        .first()
        .map(|r| r.reply.to_string())
        .unwrap_or_default();
    core.traces
        .record(Trace {
            decision: "deferred",
            to: deferred.iter().map(|r| r.address.clone()).collect(),
            reason: Some(reason.clone()),
            ..trace
        })
        .await;
    if delivered.is_empty() && failed.is_empty() {
        match core
            .queue
            .retry(
                leased,
                RetryHint {
                    retry_after: None,
                    reason,
                },
            )
            .await
        {
            Ok(RetryOutcome::Dead) => bounce(core, env, message, &deferred, Some(remote)).await,
            Ok(RetryOutcome::Scheduled { .. }) => {}
            Err(e) => tracing::error!(error = %e, id = %env.id, "retry not recorded"),
        }
        return;
    }
    // Some recipients are done: the rest continue as a new item, so none gets it twice.
    let rest = Envelope {
        id: format!("{}.r{}", env.id, leased.attempt()),
        to: deferred.iter().map(|r| r.address.clone()).collect(),
        ..env.clone()
    };
    let mut next = NewItem::new(leased.kind(), rest.id.clone(), item::encode(&rest, message));
    next.not_before = Some(SystemTime::now() + core.queue.config().first_retry);
    match core.queue.enqueue(next).await {
        Ok(_) => {
            let _ = core.queue.ack(leased).await;
        }
        Err(e) => {
            tracing::error!(error = %e, id = %env.id, "remaining recipients not stored; whole item retried");
            let _ = core
                .queue
                .retry(
                    leased,
                    RetryHint {
                        retry_after: None,
                        reason: e.to_string(),
                    },
                )
                .await;
        }
    }
}

/// A DSN for `failed` to the sender of `env`, queued toward wherever the sender lives.
async fn bounce(
    core: &Arc<Core>,
    env: &Envelope,
    message: &[u8],
    failed: &[RecipientResult],
    remote: Option<&str>,
) {
    let from = format!("MAILER-DAEMON@{}", core.config.hostname);
    let id = item::new_id();
    let message_id = format!("{id}@{}", core.config.hostname);
    let dsn = Dsn {
        reporting_mta: &core.config.hostname,
        from: &from,
        to: &env.from,
        message_id: &message_id,
        date: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
        original: message,
        recipients: failed
            .iter()
            .map(|r| DsnRecipient {
                address: r.address.clone(),
                action: DsnAction::Failed,
                reply: (r.reply.code != 0).then(|| r.reply.clone()),
                status: r.reply.enhanced,
                remote_mta: remote.map(str::to_owned),
                reason: Some(r.reply.text.clone()),
            })
            .collect(),
    };
    // Null sender: never bounce a bounce (RFC 5321 §4.5.5).
    let Some(bytes) = build_dsn(&dsn) else {
        return;
    };
    let Some(domain) = item::domain_of(&env.from) else {
        return;
    };
    let (kind, target_domain) = if core.serves(&domain) {
        (INBOUND_KIND, None)
    } else {
        (OUTBOUND_KIND, Some(domain))
    };
    let dsn_env = Envelope {
        id: id.clone(),
        from: String::new(),
        to: vec![env.from.clone()],
        domain: target_domain,
    };
    match core
        .queue
        .enqueue(NewItem::new(
            kind,
            id.clone(),
            item::encode(&dsn_env, &bytes),
        ))
        .await
    {
        Ok(_) => {
            if kind == INBOUND_KIND {
                core.inbound_ready.notify_one();
            } else {
                core.outbound_ready.notify_one();
            }
            core.traces
                .record(Trace {
                    direction: if kind == INBOUND_KIND {
                        "internal"
                    } else {
                        "outbound"
                    },
                    event: "dsn",
                    decision: "accepted",
                    id: Some(id),
                    from: Some(String::new()),
                    to: vec![env.from.clone()],
                    reason: Some(format!("DSN for message {}", env.id)),
                    ..Trace::default()
                })
                .await;
        }
        Err(e) => tracing::error!(error = %e, id = %env.id, "DSN not stored"),
    }
}

/// Why an outbound attempt toward one host did not deliver.
enum HostFailure {
    /// The peer's certificate DN is not listed or not mapped to the domain (EX_3.2_5050).
    Policy(String),
    Temporary(String),
}

async fn deliver_outbound(core: &Arc<Core>, leased: &Leased) {
    let (env, message) = match item::decode(leased.idempotency_key(), leased.payload()) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "undecodable outbound item");
            let _ = core.queue.fail_permanent(leased, &e.to_string()).await;
            return;
        }
    };
    let domain = env.domain.clone().unwrap_or_default();
    let trace = Trace {
        direction: "outbound",
        event: "delivery",
        id: Some(env.id.clone()),
        from: Some(env.from.clone()),
        to: env.to.clone(),
        size: Some(message.len()),
        ..Trace::default()
    };
    let list = match core.list() {
        Ok(l) => l,
        Err(reply) => {
            defer(
                core,
                leased,
                &env,
                message,
                trace,
                reply.to_string(),
                "EX_2.2_5010",
            )
            .await;
            return;
        }
    };
    // EX_3.2_5060: both domains listed, checked again right before sending.
    let sender_domain = item::domain_of(&env.from);
    let sender_ok = env.from.is_empty()
        || sender_domain
            .as_deref()
            .is_some_and(|d| list.is_domain_listed(d));
    if !sender_ok || !list.is_domain_listed(&domain) {
        let what = if sender_ok { "recipient" } else { "sender" };
        let reply = Reply::new(
            550,
            (5, 7, 1),
            format!("{what} domain not in the MSSante liste blanche: not sent (EX_3.2_5060)"),
        );
        give_up(
            core,
            leased,
            &env,
            message,
            trace,
            &reply,
            "EX_3.2_5060",
            None,
        )
        .await;
        return;
    }
    let hosts = match mx_hosts(core, &domain).await {
        Ok(h) => h,
        Err(reason) => {
            defer(core, leased, &env, message, trace, reason, "EX_3.2_5050").await;
            return;
        }
    };
    let mut failures = Vec::new();
    for host in hosts.iter().take(MAX_MX_HOSTS) {
        let addrs = match core.resolver.lookup_ip(host.as_str()).await {
            Ok(l) => l.iter().take(MAX_ADDRS_PER_HOST).collect::<Vec<_>>(),
            Err(e) => {
                failures.push(HostFailure::Temporary(format!("{host}: {e}")));
                continue;
            }
        };
        for ip in addrs {
            let peer = SocketAddr::new(ip, core.config.outbound.smtp_port);
            match attempt(core, &list, &domain, host, peer, &env, message).await {
                Ok((results, dn)) => {
                    let trace = Trace {
                        peer: Some(peer.to_string()),
                        peer_dn: Some(dn),
                        requirement: Some("EX_3.2_5050"),
                        ..trace
                    };
                    settle(core, leased, &env, message, results, trace, host).await;
                    return;
                }
                Err(f) => failures.push(f),
            }
        }
    }
    all_hosts_failed(core, leased, &env, message, trace, &domain, &failures).await;
}

/// No MX host took the message: a DSN when every host failed the DN checks, a retry otherwise.
async fn all_hosts_failed(
    core: &Arc<Core>,
    leased: &Leased,
    env: &Envelope,
    message: &[u8],
    trace: Trace,
    domain: &str,
    failures: &[HostFailure],
) {
    let policy: Vec<&str> = failures
        .iter()
        .filter_map(|f| match f {
            HostFailure::Policy(r) => Some(r.as_str()),
            HostFailure::Temporary(_) => None,
        })
        .collect();
    let temporary: Vec<&str> = failures
        .iter()
        .filter_map(|f| match f {
            HostFailure::Temporary(r) => Some(r.as_str()),
            HostFailure::Policy(_) => None,
        })
        .collect();
    if !policy.is_empty() && temporary.is_empty() {
        // Every MX host of the domain is a server the liste blanche does not tie to it: never
        // hand the message to it (EX_3.2_5040/5050).
        let reply = Reply::new(550, (5, 7, 1), policy.join("; "));
        give_up(
            core,
            leased,
            env,
            message,
            trace,
            &reply,
            "EX_3.2_5050",
            None,
        )
        .await;
        return;
    }
    let reason = if failures.is_empty() {
        format!("no MX host for {domain}")
    } else {
        policy
            .into_iter()
            .chain(temporary)
            .collect::<Vec<_>>()
            .join("; ")
    };
    defer(core, leased, env, message, trace, reason, "EX_3.2_5050").await;
}

/// The MX hosts of `domain` by preference; the domain itself when it has no MX (RFC 5321 §5.1).
async fn mx_hosts(core: &Core, domain: &str) -> Result<Vec<String>, String> {
    match core.resolver.mx_lookup(domain).await {
        Ok(mx) => {
            let mut records: Vec<_> = mx
                .iter()
                .map(|r| {
                    (
                        r.preference(),
                        r.exchange().to_ascii().trim_end_matches('.').to_owned(),
                    )
                })
                .collect();
            records.sort();
            Ok(records.into_iter().map(|(_, h)| h).collect())
        }
        Err(e) if e.is_no_records_found() => Ok(vec![domain.to_owned()]),
        Err(e) => Err(format!("MX lookup for {domain}: {e}")),
    }
}

async fn attempt(
    core: &Arc<Core>,
    list: &Arc<passerelle_liste_blanche::ListeBlanche>,
    domain: &str,
    host: &str,
    peer: SocketAddr,
    env: &Envelope,
    message: &[u8],
) -> Result<(Vec<RecipientResult>, String), HostFailure> {
    let temporary =
        |e: &dyn std::fmt::Display| HostFailure::Temporary(format!("{host} ({peer}): {e}"));
    let verifier = Arc::new(DomainVerifier {
        inner: ProfileServerVerifier::new(Arc::clone(&core.trust), &core.config.outbound_profile)
            .map_err(|e| temporary(&e))?
            .without_server_name_check(),
        list: Arc::clone(list),
        domain: domain.to_owned(),
        outcome: Mutex::new(None),
    });
    let resolver = Arc::new(passerelle_keystore::TokenCertResolver::new(Arc::clone(
        &core.identity,
    )));
    let tls = mssante_client_config(resolver, verifier.clone(), core.trust.tls_options())
        .map_err(|e| temporary(&e))?;
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| temporary(&e))?;
    let mut config = ClientConfig::new(core.config.hostname.clone());
    config.require_tls = true;
    config.connect_timeout = core.config.outbound.connect_timeout;
    let result = async {
        let mut client = SmtpClient::connect(peer, config).await?;
        client.ehlo().await?;
        client.starttls(Arc::new(tls), server_name).await?;
        let delivery = client.send(&envelope_of(env), message).await?;
        let _ = client.quit().await;
        Ok::<_, passerelle_smtp::SmtpError>(delivery.recipients)
    }
    .await;
    let outcome = verifier
        .outcome
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match (result, outcome) {
        (Ok(results), Some(Ok(dn))) => Ok((results, dn)),
        (_, Some(Err(policy))) => {
            tracing::warn!(%host, %peer, %domain, reason = %policy, requirement = "EX_3.2_5050", "MX host refused");
            Err(HostFailure::Policy(format!("{host}: {policy}")))
        }
        (Ok(_), None) => Err(temporary(&"no certificate checked")),
        (Err(e), _) if e.kind() == passerelle_smtp::ErrorKind::Permanent => {
            // A permanent refusal of MAIL or the message for every recipient.
            let reply = e
                .reply()
                .cloned()
                .unwrap_or_else(|| Reply::new(554, (5, 0, 0), e.to_string()));
            let dn = verifier
                .outcome
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .and_then(Result::ok)
                .unwrap_or_default();
            Ok((
                env.to
                    .iter()
                    .map(|to| RecipientResult {
                        address: to.clone(),
                        reply: reply.clone(),
                    })
                    .collect(),
                dn,
            ))
        }
        (Err(e), _) => Err(temporary(&e)),
    }
}

async fn defer(
    core: &Arc<Core>,
    leased: &Leased,
    env: &Envelope,
    message: &[u8],
    trace: Trace,
    reason: String,
    requirement: &'static str,
) {
    tracing::warn!(id = %env.id, %reason, requirement, "outbound delivery deferred");
    core.traces
        .record(Trace {
            decision: "deferred",
            reason: Some(reason.clone()),
            requirement: Some(requirement),
            ..trace
        })
        .await;
    match core
        .queue
        .retry(
            leased,
            RetryHint {
                retry_after: None,
                reason: reason.clone(),
            },
        )
        .await
    {
        Ok(RetryOutcome::Dead) => {
            let failed: Vec<_> = env
                .to
                .iter()
                .map(|to| RecipientResult {
                    address: to.clone(),
                    reply: Reply::new(554, (5, 4, 7), format!("Delivery time expired: {reason}")),
                })
                .collect();
            bounce(core, env, message, &failed, None).await;
        }
        Ok(RetryOutcome::Scheduled { .. }) => {}
        Err(e) => tracing::error!(error = %e, id = %env.id, "retry not recorded"),
    }
}

#[allow(clippy::too_many_arguments)] // one private helper; a struct would only rename them
async fn give_up(
    core: &Arc<Core>,
    leased: &Leased,
    env: &Envelope,
    message: &[u8],
    trace: Trace,
    reply: &Reply,
    requirement: &'static str,
    remote: Option<&str>,
) {
    tracing::warn!(id = %env.id, reply = %reply, requirement, "outbound message not sent");
    core.traces
        .record(Trace {
            decision: "failed",
            reason: Some(reply.to_string()),
            requirement: Some(requirement),
            ..trace
        })
        .await;
    let failed: Vec<_> = env
        .to
        .iter()
        .map(|to| RecipientResult {
            address: to.clone(),
            reply: reply.clone(),
        })
        .collect();
    bounce(core, env, message, &failed, remote).await;
    let _ = core.queue.fail_permanent(leased, &reply.to_string()).await;
}

/// EX_3.2_5050 steps 4–6 inside the handshake: the chain by the trust profile, then the DN
/// listed and recorded for the recipient domain. No host name check: the identity of an
/// MSSanté server is its liste blanche DN. The outcome is kept for the trace and to tell a
/// policy refusal from a network failure.
#[derive(Debug)]
struct DomainVerifier {
    inner: ProfileServerVerifier,
    list: Arc<passerelle_liste_blanche::ListeBlanche>,
    domain: String,
    outcome: Mutex<Option<Result<String, String>>>,
}

impl DomainVerifier {
    fn decide(&self, end_entity: &CertificateDer<'_>) -> Result<String, String> {
        let dn: Dn = TrustStore::subject_of(end_entity).map_err(|e| e.to_string())?;
        if !self.list.is_dn_listed(&dn) {
            return Err(format!(
                "server certificate DN {dn} is not in the MSSante liste blanche (EX_3.2_5050 step 5)"
            ));
        }
        if !self.list.dn_allowed_for_domain(&dn, &self.domain) {
            return Err(format!(
                "server certificate DN {dn} is not recorded for {} in the liste blanche (EX_3.2_5050 step 6)",
                self.domain
            ));
        }
        Ok(dn.to_string())
    }
}

impl ServerCertVerifier for DomainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Step 4: a chain refused (revoked, unknown issuer, CRL out of date…) abandons this
        // connection; the message is retried, as the refusal may be temporary.
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            tracing::warn!(domain = %self.domain, error = %e, requirement = "EX_OPE_5040", "MX host certificate chain refused");
            return Err(e);
        }
        // Steps 5–6: a listed server not tied to the domain is a policy refusal.
        let decision = self.decide(end_entity);
        let refused = decision.is_err();
        *self
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(decision);
        if refused {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
