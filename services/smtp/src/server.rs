//! ESMTP server engine: an accept loop with bounded sessions and a per-connection state
//! machine that asks a [`Handler`] for every decision.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::io::{Line, LineIo};
use crate::{Reply, SmtpError};

/// SASL mechanisms the server can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Login,
    /// Bearer token (`user=<bal>^Aauth=Bearer <token>^A^A`, EX_LPS_0700).
    XOAuth2,
}

impl AuthMechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
            Self::XOAuth2 => "XOAUTH2",
        }
    }
}

/// Server settings. Limits default to RFC 5321 minimums and the MSSanté needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name in the banner and the EHLO reply.
    pub hostname: String,
    /// Offers STARTTLS with this configuration (the trust crate builds MSSanté ones).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse MAIL (and AUTH) before STARTTLS with `530 5.7.0` (TM3.1P, API LPS).
    pub require_tls_before_mail: bool,
    /// Refuse MAIL before a successful AUTH with `530 5.7.0`.
    pub require_auth: bool,
    /// Mechanisms offered; empty = no AUTH.
    pub auth_mechanisms: Vec<AuthMechanism>,
    /// Offer AUTH on a plaintext connection (tests, loopback only).
    pub allow_auth_without_tls: bool,
    /// Largest message accepted (`SIZE`, DATA → `552 5.3.4`).
    pub max_message_size: usize,
    /// Recipients per transaction (more → `452 4.5.3`).
    pub max_recipients: usize,
    /// Command line limit including CRLF (RFC 5321 §4.5.3.1.4: 512; we allow 1000).
    pub max_command_line: usize,
    /// Text line limit in DATA including CRLF (RFC 5321 §4.5.3.1.6: 1000).
    pub max_text_line: usize,
    /// Idle time allowed between commands (→ `421 4.4.2`).
    pub command_timeout: Duration,
    /// Idle time allowed inside DATA (→ `421 4.4.2`).
    pub data_timeout: Duration,
    /// Failed commands before the session is dropped with `421 4.7.0`.
    pub max_errors: u32,
    /// Concurrent sessions; further connections get `421 4.3.2` and are closed.
    pub max_sessions: usize,
}

impl ServerConfig {
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            tls: None,
            require_tls_before_mail: false,
            require_auth: false,
            auth_mechanisms: Vec::new(),
            allow_auth_without_tls: false,
            max_message_size: 10 * 1024 * 1024 + 64 * 1024,
            max_recipients: 100,
            max_command_line: 1000,
            max_text_line: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_errors: 10,
            max_sessions: 100,
        }
    }
}

/// The TLS session as negotiated, for the handler's checks (TM3.1P: the client DN).
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// Client chain, leaf first; empty when the client sent none.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    pub protocol: Option<rustls::ProtocolVersion>,
    pub cipher: Option<rustls::CipherSuite>,
}

/// What the handler knows of the session when it decides.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub peer: SocketAddr,
    /// Argument of the last EHLO/HELO.
    pub helo: Option<String>,
    pub tls: Option<TlsInfo>,
    /// The authenticated identity (authcid), after AUTH.
    pub authenticated: Option<String>,
}

/// MAIL FROM as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// Reverse path without brackets; empty for the null sender `<>`.
    pub address: String,
    /// `SIZE=` when given.
    pub size: Option<usize>,
    /// `BODY=8BITMIME`.
    pub eight_bit: bool,
}

/// A transaction ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub mail_from: MailFrom,
    /// Accepted recipients only.
    pub recipients: Vec<String>,
}

/// A handler's answer to AUTH.
#[derive(Debug, Clone)]
pub enum AuthDecision {
    Accept,
    Refuse(Reply),
    /// Send `334 base64(challenge)` first (XOAUTH2's JSON error), wait for the client's
    /// empty line, then the reply.
    RefuseWithChallenge {
        challenge: Vec<u8>,
        reply: Reply,
    },
}

/// The service behind the protocol engine. Every `Err(Reply)` is sent as is.
pub trait Handler: Send + Sync + 'static {
    /// A connection arrived; `Err` sends the reply instead of the banner and closes.
    fn on_connect(&self, peer: SocketAddr) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = peer;
        async { Ok(()) }
    }

    /// STARTTLS completed. `Err` answers the next command with the reply and closes.
    fn on_tls(
        &self,
        session: &SessionInfo,
        tls: &TlsInfo,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = (session, tls);
        async { Ok(()) }
    }

    /// AUTH credentials, decoded. Refuses by default.
    fn on_auth(
        &self,
        session: &SessionInfo,
        mechanism: AuthMechanism,
        authzid: &str,
        authcid: &str,
        secret: &str,
    ) -> impl Future<Output = AuthDecision> + Send {
        let _ = (session, mechanism, authzid, authcid, secret);
        async {
            AuthDecision::Refuse(Reply::new(
                535,
                (5, 7, 8),
                "Authentication credentials invalid",
            ))
        }
    }

    fn on_mail_from(
        &self,
        session: &SessionInfo,
        from: &MailFrom,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = (session, from);
        async { Ok(()) }
    }

    /// One recipient; refusing it leaves the others of the transaction untouched.
    fn on_rcpt(
        &self,
        session: &SessionInfo,
        from: &MailFrom,
        to: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = (session, from, to);
        async { Ok(()) }
    }

    /// The complete message (dot-unstuffed, CRLF line ends). Answer `250` only once it
    /// is durable.
    fn on_data(
        &self,
        session: &SessionInfo,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = Reply> + Send;
}

/// Accepts connections until `shutdown` resolves, then tells live sessions to end
/// (`421 4.3.2` at their next command) and waits for them; a message being stored is
/// finished first.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SmtpError> {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_sessions));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) if is_per_connection(&e) => {
                        tracing::debug!(error = %e, "smtp accept: connection lost before accept");
                        continue;
                    }
                    Err(source) => return Err(SmtpError::Accept { addr: local, source }),
                };
                let _ = tcp.set_nodelay(true);
                let permit = Arc::clone(&slots).try_acquire_owned();
                let handler = Arc::clone(&handler);
                let config = Arc::clone(&config);
                let stop = stop_rx.clone();
                sessions.spawn(async move {
                    let mut io = LineIo::new(Box::new(tcp));
                    let Ok(_permit) = permit else {
                        tracing::warn!(%peer, "smtp: too many sessions");
                        io.queue(Reply::new(421, (4, 3, 2), "Too many connections, try later").to_wire().as_bytes());
                        let _ = io.flush().await;
                        return;
                    };
                    Session::new(peer, handler, config, stop).run(io).await;
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    while sessions.join_next().await.is_some() {}
    Ok(())
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    )
}

/// Why a session ended early.
enum End {
    Quit,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    from: MailFrom,
    recipients: Vec<String>,
}

/// One SMTP session: the state machine of RFC 5321 §4.1.4 plus STARTTLS and AUTH.
#[derive(Debug)]
struct Session<H> {
    info: SessionInfo,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    stop: watch::Receiver<bool>,
    ehlo_done: bool,
    transaction: Option<Transaction>,
    errors: u32,
    /// A refusal from `on_tls`, answered to the next command before closing.
    tls_refusal: Option<Reply>,
}

impl<H: Handler> Session<H> {
    fn new(
        peer: SocketAddr,
        handler: Arc<H>,
        config: Arc<ServerConfig>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            info: SessionInfo {
                peer,
                helo: None,
                tls: None,
                authenticated: None,
            },
            handler,
            config,
            stop,
            ehlo_done: false,
            transaction: None,
            errors: 0,
            tls_refusal: None,
        }
    }

    async fn run(mut self, mut io: LineIo) {
        let peer = self.info.peer;
        if let Err(reply) = self.handler.on_connect(peer).await {
            tracing::info!(%peer, code = reply.code, "smtp: connection refused by policy");
            io.queue(reply.to_wire().as_bytes());
            let _ = io.flush().await;
            return;
        }
        io.queue(format!("220 {} ESMTP passerelle\r\n", self.config.hostname).as_bytes());
        match self.commands(io).await {
            Ok(End::Quit | End::Closed) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "smtp session ended"),
        }
    }

    fn send(&mut self, io: &mut LineIo, reply: &Reply) {
        if reply.code >= 400 {
            self.errors += 1;
        }
        io.queue(reply.to_wire().as_bytes());
    }

    async fn commands(&mut self, mut io: LineIo) -> std::io::Result<End> {
        loop {
            if self.errors >= self.config.max_errors {
                tracing::info!(peer = %self.info.peer, "smtp: too many errors");
                io.queue(
                    Reply::new(421, (4, 7, 0), "Too many errors, closing connection")
                        .to_wire()
                        .as_bytes(),
                );
                io.flush().await?;
                return Ok(End::Closed);
            }
            let line = match self.read_command(&mut io).await? {
                Ok(l) => l,
                Err(end) => return Ok(end),
            };
            if line.is_empty() {
                let r = Reply::new(500, (5, 5, 2), "Line too long");
                self.send(&mut io, &r);
                continue;
            }
            if let Some(reply) = self.tls_refusal.take() {
                io.queue(reply.to_wire().as_bytes());
                io.flush().await?;
                return Ok(End::Closed);
            }
            let Ok(text) = std::str::from_utf8(trim_eol(&line)) else {
                let r = Reply::new(500, (5, 5, 2), "Command is not valid text");
                self.send(&mut io, &r);
                continue;
            };
            let text = text.to_owned();
            let (verb, arg) = match text.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.to_owned()),
                None => (text.to_ascii_uppercase(), String::new()),
            };
            match verb.as_str() {
                "EHLO" | "HELO" => self.ehlo(&mut io, &verb, &arg),
                "STARTTLS" => match self.starttls(io, &arg).await? {
                    Ok(next) => io = next,
                    Err(end) => return Ok(end),
                },
                "AUTH" => {
                    if !self.auth(&mut io, &arg).await? {
                        return Ok(End::Closed);
                    }
                }
                "MAIL" => self.mail(&mut io, &arg).await,
                "RCPT" => self.rcpt(&mut io, &arg).await,
                "DATA" => {
                    if !self.data(&mut io, &arg).await? {
                        return Ok(End::Closed);
                    }
                }
                "RSET" => {
                    self.transaction = None;
                    io.queue(Reply::new(250, (2, 0, 0), "Reset").to_wire().as_bytes());
                }
                "NOOP" => io.queue(Reply::new(250, (2, 0, 0), "OK").to_wire().as_bytes()),
                "VRFY" => io.queue(
                    Reply::new(252, (2, 5, 0), "Cannot VRFY user, but will accept message")
                        .to_wire()
                        .as_bytes(),
                ),
                "HELP" => io.queue(
                    Reply::new(214, (2, 0, 0), "See RFC 5321")
                        .to_wire()
                        .as_bytes(),
                ),
                "QUIT" => {
                    io.queue(Reply::new(221, (2, 0, 0), "Bye").to_wire().as_bytes());
                    io.flush().await?;
                    return Ok(End::Quit);
                }
                "EXPN" | "TURN" | "ETRN" | "BDAT" => {
                    let r = Reply::new(502, (5, 5, 1), "Command not implemented");
                    self.send(&mut io, &r);
                }
                _ => {
                    let r = Reply::new(500, (5, 5, 1), "Command unrecognized");
                    self.send(&mut io, &r);
                }
            }
        }
    }

    /// The next command line; an empty line stands for an overlong one.
    async fn read_command(&mut self, io: &mut LineIo) -> std::io::Result<Result<Vec<u8>, End>> {
        let max = self.config.max_command_line;
        let timeout = self.config.command_timeout;
        let mut stop = self.stop.clone();
        let line = tokio::select! {
            r = tokio::time::timeout(timeout, io.read_line(max)) => r,
            () = async { drop(stop.wait_for(|s| *s).await); } => {
                io.queue(Reply::new(421, (4, 3, 2), "Service shutting down").to_wire().as_bytes());
                io.flush().await?;
                return Ok(Err(End::Closed));
            }
        };
        let line = match line {
            Err(_) => {
                tracing::info!(peer = %self.info.peer, "smtp: command timeout");
                io.queue(
                    Reply::new(421, (4, 4, 2), "Timeout, closing connection")
                        .to_wire()
                        .as_bytes(),
                );
                io.flush().await?;
                return Ok(Err(End::Closed));
            }
            Ok(r) => r?,
        };
        let line = match line {
            None => return Ok(Err(End::Closed)),
            Some(Line::TooLong) => Vec::new(),
            Some(Line::Complete(l)) => l,
        };
        Ok(Ok(line))
    }

    fn ehlo(&mut self, io: &mut LineIo, verb: &str, arg: &str) {
        let name = arg.trim();
        if name.is_empty() || name.contains(char::is_whitespace) || name.len() > 255 {
            let r = Reply::new(501, (5, 5, 4), "Syntax: EHLO hostname");
            return self.send(io, &r);
        }
        self.info.helo = Some(name.to_owned());
        self.ehlo_done = true;
        self.transaction = None;
        if verb == "HELO" {
            io.queue(format!("250 {}\r\n", self.config.hostname).as_bytes());
            return;
        }
        let mut lines = vec![
            self.config.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.config.tls.is_some() && self.info.tls.is_none() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            let mechs: Vec<&str> = self
                .config
                .auth_mechanisms
                .iter()
                .map(|m| m.name())
                .collect();
            lines.push(format!("AUTH {}", mechs.join(" ")));
        }
        io.queue(Reply::plain(250, lines.join("\n")).to_wire().as_bytes());
    }

    fn auth_offered(&self) -> bool {
        !self.config.auth_mechanisms.is_empty()
            && self.info.authenticated.is_none()
            && (self.info.tls.is_some() || self.config.allow_auth_without_tls)
    }

    /// `Ok(Ok(io))` continues with the (maybe upgraded) stream.
    async fn starttls(
        &mut self,
        mut io: LineIo,
        arg: &str,
    ) -> std::io::Result<Result<LineIo, End>> {
        let Some(tls) = self.config.tls.clone() else {
            let r = Reply::new(502, (5, 5, 1), "STARTTLS not available");
            self.send(&mut io, &r);
            return Ok(Ok(io));
        };
        if !arg.trim().is_empty() {
            let r = Reply::new(501, (5, 5, 4), "Syntax: STARTTLS");
            self.send(&mut io, &r);
            return Ok(Ok(io));
        }
        if self.info.tls.is_some() || !self.ehlo_done {
            let r = Reply::new(503, (5, 5, 1), "Bad sequence of commands");
            self.send(&mut io, &r);
            return Ok(Ok(io));
        }
        io.queue(
            Reply::new(220, (2, 0, 0), "Ready to start TLS")
                .to_wire()
                .as_bytes(),
        );
        io.flush().await?;
        if io.has_buffered_input() {
            tracing::warn!(peer = %self.info.peer, "smtp: plaintext sent after STARTTLS discarded (command injection attempt)");
        }
        let raw = io.into_inner();
        let handshake = tokio::time::timeout(
            self.config.command_timeout,
            TlsAcceptor::from(tls).accept(raw),
        )
        .await;
        let stream = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(peer = %self.info.peer, error = %e, "smtp: TLS handshake failed");
                return Ok(Err(End::Closed));
            }
            Err(_) => {
                tracing::info!(peer = %self.info.peer, "smtp: TLS handshake timeout");
                return Ok(Err(End::Closed));
            }
        };
        let conn = stream.get_ref().1;
        let info = TlsInfo {
            peer_certificates: conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
            protocol: conn.protocol_version(),
            cipher: conn.negotiated_cipher_suite().map(|s| s.suite()),
        };
        // RFC 3207 §4.2: the session starts over.
        self.ehlo_done = false;
        self.info.helo = None;
        self.transaction = None;
        if let Err(reply) = self.handler.on_tls(&self.info, &info).await {
            tracing::info!(peer = %self.info.peer, code = reply.code, "smtp: TLS peer refused by policy");
            self.tls_refusal = Some(reply);
        }
        self.info.tls = Some(info);
        Ok(Ok(LineIo::new(Box::new(stream))))
    }

    /// `Ok(false)` ends the session (the client vanished mid-exchange).
    async fn auth(&mut self, io: &mut LineIo, arg: &str) -> std::io::Result<bool> {
        if !self.ehlo_done || self.info.authenticated.is_some() || self.transaction.is_some() {
            let r = Reply::new(503, (5, 5, 1), "Bad sequence of commands");
            self.send(io, &r);
            return Ok(true);
        }
        if self.info.tls.is_none() && !self.config.allow_auth_without_tls {
            let r = Reply::new(530, (5, 7, 0), "Must issue a STARTTLS command first");
            self.send(io, &r);
            return Ok(true);
        }
        let mut words = arg.split_whitespace();
        let mech_name = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let Some(mech) = self
            .config
            .auth_mechanisms
            .iter()
            .copied()
            .find(|m| m.name() == mech_name)
        else {
            let r = Reply::new(504, (5, 5, 4), "Unrecognized authentication type");
            self.send(io, &r);
            return Ok(true);
        };
        let creds = match mech {
            AuthMechanism::Plain | AuthMechanism::XOAuth2 => {
                let Some(ir) = self.sasl_step(io, initial, "").await? else {
                    return Ok(false);
                };
                ir.and_then(|raw| decode_credentials(mech, &raw))
            }
            AuthMechanism::Login => {
                let Some(user) = self.sasl_step(io, initial, "VXNlcm5hbWU6").await? else {
                    return Ok(false);
                };
                match user {
                    Ok(user) => {
                        let Some(pass) = self.sasl_step(io, None, "UGFzc3dvcmQ6").await? else {
                            return Ok(false);
                        };
                        pass.and_then(|p| Ok((String::new(), utf8(user)?, utf8(p)?)))
                    }
                    Err(r) => Err(r),
                }
            }
        };
        let (authz, user, secret) = match creds {
            Ok(c) => c,
            Err(r) => {
                self.send(io, &r);
                return Ok(true);
            }
        };
        match self
            .handler
            .on_auth(&self.info, mech, &authz, &user, &secret)
            .await
        {
            AuthDecision::Accept => {
                tracing::info!(peer = %self.info.peer, mechanism = mech.name(), "smtp: authenticated");
                self.info.authenticated = Some(user);
                io.queue(
                    Reply::new(235, (2, 7, 0), "Authentication successful")
                        .to_wire()
                        .as_bytes(),
                );
            }
            AuthDecision::Refuse(r) => {
                tracing::info!(peer = %self.info.peer, mechanism = mech.name(), code = r.code, "smtp: authentication refused");
                self.send(io, &r);
            }
            AuthDecision::RefuseWithChallenge { challenge, reply } => {
                tracing::info!(peer = %self.info.peer, mechanism = mech.name(), code = reply.code, "smtp: authentication refused");
                io.queue(format!("334 {}\r\n", B64.encode(challenge)).as_bytes());
                match self.read_sasl_line(io).await? {
                    None => return Ok(false),
                    // Any answer, empty or not, ends the exchange (RFC 4954 §4).
                    Some(_) => self.send(io, &reply),
                }
            }
        }
        Ok(true)
    }

    /// One SASL step: the initial response if given, else a `334` prompt and the client's
    /// line. `Ok(None)` when the client vanished; the inner `Err` is the reply to send.
    async fn sasl_step(
        &mut self,
        io: &mut LineIo,
        initial: Option<String>,
        prompt: &str,
    ) -> std::io::Result<Option<Result<Vec<u8>, Reply>>> {
        let encoded = if let Some(i) = initial {
            i
        } else {
            io.queue(format!("334 {prompt}\r\n").as_bytes());
            match self.read_sasl_line(io).await? {
                None => return Ok(None),
                Some(l) => l,
            }
        };
        if encoded == "*" {
            return Ok(Some(Err(Reply::new(
                501,
                (5, 0, 0),
                "Authentication cancelled",
            ))));
        }
        if encoded == "=" {
            return Ok(Some(Ok(Vec::new())));
        }
        Ok(Some(B64.decode(encoded.trim()).map_err(|_| {
            Reply::new(501, (5, 5, 2), "Invalid base64 in SASL response")
        })))
    }

    async fn read_sasl_line(&mut self, io: &mut LineIo) -> std::io::Result<Option<String>> {
        // SASL lines carry tokens (JWTs) longer than a command line.
        let max = 16 * 1024;
        match tokio::time::timeout(self.config.command_timeout, io.read_line(max)).await {
            Err(_) | Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Some(Line::TooLong))) => Ok(Some("!".to_owned())),
            Ok(Ok(Some(Line::Complete(l)))) => {
                Ok(Some(String::from_utf8_lossy(trim_eol(&l)).into_owned()))
            }
        }
    }

    fn mail_allowed(&self) -> Result<(), Reply> {
        if !self.ehlo_done || self.transaction.is_some() {
            return Err(Reply::new(503, (5, 5, 1), "Bad sequence of commands"));
        }
        if self.config.require_tls_before_mail && self.info.tls.is_none() {
            return Err(Reply::new(
                530,
                (5, 7, 0),
                "Must issue a STARTTLS command first",
            ));
        }
        if self.config.require_auth && self.info.authenticated.is_none() {
            return Err(Reply::new(530, (5, 7, 0), "Authentication required"));
        }
        Ok(())
    }

    async fn mail(&mut self, io: &mut LineIo, arg: &str) {
        if let Err(r) = self.mail_allowed() {
            return self.send(io, &r);
        }
        let from = match parse_mail_from(arg, self.config.max_message_size) {
            Ok(f) => f,
            Err(r) => return self.send(io, &r),
        };
        match self.handler.on_mail_from(&self.info, &from).await {
            Ok(()) => {
                self.transaction = Some(Transaction {
                    from,
                    recipients: Vec::new(),
                });
                io.queue(Reply::new(250, (2, 1, 0), "Sender OK").to_wire().as_bytes());
            }
            Err(r) => self.send(io, &r),
        }
    }

    async fn rcpt(&mut self, io: &mut LineIo, arg: &str) {
        let Some(tx) = &self.transaction else {
            let r = Reply::new(503, (5, 5, 1), "Bad sequence of commands: MAIL first");
            return self.send(io, &r);
        };
        let to = match parse_path(arg, "TO:") {
            Ok((to, params)) if params.trim().is_empty() && !to.is_empty() => to,
            Ok((_, params)) if !params.trim().is_empty() => {
                let r = Reply::new(555, (5, 5, 4), "RCPT parameters not supported");
                return self.send(io, &r);
            }
            Ok(_) | Err(()) => {
                let r = Reply::new(501, (5, 5, 4), "Syntax: RCPT TO:<address>");
                return self.send(io, &r);
            }
        };
        if tx.recipients.len() >= self.config.max_recipients {
            let r = Reply::new(452, (4, 5, 3), "Too many recipients");
            return self.send(io, &r);
        }
        let from = tx.from.clone();
        match self.handler.on_rcpt(&self.info, &from, &to).await {
            Ok(()) => {
                if let Some(tx) = &mut self.transaction {
                    tx.recipients.push(to);
                }
                io.queue(
                    Reply::new(250, (2, 1, 5), "Recipient OK")
                        .to_wire()
                        .as_bytes(),
                );
            }
            Err(r) => self.send(io, &r),
        }
    }

    /// `Ok(false)` ends the session (timeout or client gone inside DATA).
    async fn data(&mut self, io: &mut LineIo, arg: &str) -> std::io::Result<bool> {
        if !arg.trim().is_empty() {
            let r = Reply::new(501, (5, 5, 4), "Syntax: DATA");
            self.send(io, &r);
            return Ok(true);
        }
        let ready = self
            .transaction
            .as_ref()
            .is_some_and(|t| !t.recipients.is_empty());
        if !ready {
            let r = if self.transaction.is_some() {
                Reply::new(554, (5, 5, 1), "No valid recipients")
            } else {
                Reply::new(503, (5, 5, 1), "Bad sequence of commands")
            };
            self.send(io, &r);
            return Ok(true);
        }
        io.queue(
            Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
                .to_wire()
                .as_bytes(),
        );
        let limit = self.config.max_message_size;
        let mut message = Vec::new();
        let mut too_big = false;
        let mut long_line = false;
        loop {
            let read = tokio::time::timeout(
                self.config.data_timeout,
                io.read_line(self.config.max_text_line),
            )
            .await;
            let line = match read {
                Err(_) => {
                    tracing::info!(peer = %self.info.peer, "smtp: DATA timeout");
                    io.queue(
                        Reply::new(421, (4, 4, 2), "Timeout, closing connection")
                            .to_wire()
                            .as_bytes(),
                    );
                    io.flush().await?;
                    return Ok(false);
                }
                Ok(r) => r?,
            };
            let line = match line {
                None => {
                    tracing::info!(peer = %self.info.peer, "smtp: client gone inside DATA");
                    return Ok(false);
                }
                Some(Line::TooLong) => {
                    long_line = true;
                    continue;
                }
                Some(Line::Complete(l)) => l,
            };
            // Only `.` + CRLF ends DATA: a bare-LF dot does not (SMTP smuggling).
            if line == b".\r\n" {
                break;
            }
            let body = trim_eol(&line);
            let body = body.strip_prefix(b".").unwrap_or(body);
            if too_big || message.len() + body.len() + 2 > limit {
                too_big = true;
                message = Vec::new();
                continue;
            }
            message.extend_from_slice(body);
            message.extend_from_slice(b"\r\n");
        }
        let Some(tx) = self.transaction.take() else {
            return Ok(true);
        };
        let reply = if too_big {
            Reply::new(552, (5, 3, 4), "Message size exceeds fixed limit")
        } else if long_line {
            Reply::new(500, (5, 5, 2), "Line too long")
        } else {
            let envelope = Envelope {
                mail_from: tx.from,
                recipients: tx.recipients,
            };
            self.handler.on_data(&self.info, envelope, message).await
        };
        self.send(io, &reply);
        Ok(true)
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn utf8(bytes: Vec<u8>) -> Result<String, Reply> {
    String::from_utf8(bytes).map_err(|_| Reply::new(501, (5, 5, 2), "Credentials are not UTF-8"))
}

/// PLAIN: `authzid\0authcid\0password`; XOAUTH2: `user=<bal>\x01auth=Bearer <t>\x01\x01`.
fn decode_credentials(mech: AuthMechanism, raw: &[u8]) -> Result<(String, String, String), Reply> {
    let bad = || Reply::new(501, (5, 5, 2), "Malformed SASL response");
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    match mech {
        AuthMechanism::Plain => {
            let mut parts = text.split('\0');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(z), Some(c), Some(p), None) if !c.is_empty() => {
                    Ok((z.to_owned(), c.to_owned(), p.to_owned()))
                }
                _ => Err(bad()),
            }
        }
        AuthMechanism::XOAuth2 => {
            let body = text.strip_suffix("\x01\x01").ok_or_else(bad)?;
            let (user, auth) = body.split_once('\x01').ok_or_else(bad)?;
            let user = user.strip_prefix("user=").ok_or_else(bad)?;
            let token = auth.strip_prefix("auth=Bearer ").ok_or_else(bad)?;
            if user.is_empty() || token.is_empty() {
                return Err(bad());
            }
            Ok((String::new(), user.to_owned(), token.to_owned()))
        }
        AuthMechanism::Login => Err(bad()),
    }
}

/// `FROM:<path> params` / `TO:<path> params`; tolerates one space after the colon.
fn parse_path(arg: &str, keyword: &str) -> Result<(String, String), ()> {
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return Err(());
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<').ok_or(())?;
    let end = rest.find('>').ok_or(())?;
    let mut path = &rest[..end];
    let params = &rest[end + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(());
    }
    // RFC 5321 §4.1.1.3: source routes are accepted and ignored.
    if path.starts_with('@') {
        path = path.split_once(':').ok_or(())?.1;
    }
    if path.len() > 256
        || path.chars().any(|c| c.is_control() || c == ' ' || c == '<')
        || (!path.is_empty() && !path.contains('@') && !path.eq_ignore_ascii_case("postmaster"))
    {
        return Err(());
    }
    Ok((path.to_owned(), params.to_owned()))
}

fn parse_mail_from(arg: &str, max_size: usize) -> Result<MailFrom, Reply> {
    let syntax = || Reply::new(501, (5, 5, 4), "Syntax: MAIL FROM:<address>");
    let (address, params) = parse_path(arg, "FROM:").map_err(|()| syntax())?;
    let mut from = MailFrom {
        address,
        size: None,
        eight_bit: false,
    };
    for param in params.split_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let size: usize = value.parse().map_err(|_| syntax())?;
                if size > max_size {
                    return Err(Reply::new(
                        552,
                        (5, 3, 4),
                        "Message size exceeds fixed limit",
                    ));
                }
                from.size = Some(size);
            }
            "BODY" => match value.to_ascii_uppercase().as_str() {
                "7BIT" => from.eight_bit = false,
                "8BITMIME" => from.eight_bit = true,
                _ => return Err(Reply::new(555, (5, 5, 4), "BODY type not supported")),
            },
            // RFC 4954 §5: accepted and not trusted.
            "AUTH" => {}
            _ => return Err(Reply::new(555, (5, 5, 4), "MAIL parameter not supported")),
        }
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_parameters() {
        let f = parse_mail_from("FROM:<a@b.fr> SIZE=10 BODY=8BITMIME", 100);
        assert_eq!(
            f,
            Ok(MailFrom {
                address: "a@b.fr".into(),
                size: Some(10),
                eight_bit: true
            })
        );
        assert_eq!(
            parse_mail_from("FROM:<>", 100).map(|f| f.address),
            Ok(String::new())
        );
        assert_eq!(
            parse_mail_from("FROM:<a@b> SIZE=101", 100).map_err(|r| r.code),
            Err(552)
        );
        assert_eq!(
            parse_mail_from("FROM:<a@b> X=1", 100).map_err(|r| r.code),
            Err(555)
        );
        assert!(parse_mail_from("FROM:a@b", 100).is_err());
        assert!(parse_mail_from("FROM:<a b@c>", 100).is_err());
        assert_eq!(
            parse_path("TO:<@r1,@r2:u@d>", "TO:"),
            Ok(("u@d".into(), String::new()))
        );
        assert!(parse_path("TO", "TO:").is_err());
        assert!(parse_path("é", "TO:").is_err());
    }

    #[test]
    fn sasl_credentials() {
        let x = decode_credentials(
            AuthMechanism::XOAuth2,
            b"user=jean@medecin.mssante.fr\x01auth=Bearer tok\x01\x01",
        );
        assert_eq!(
            x.map(|c| (c.1, c.2)),
            Ok(("jean@medecin.mssante.fr".into(), "tok".into()))
        );
        assert!(decode_credentials(AuthMechanism::Plain, b"\0u").is_err());
        assert!(decode_credentials(AuthMechanism::XOAuth2, b"user=u\x01auth=tok\x01\x01").is_err());
    }
}
