//! IMAP STARTTLS by hand: `async-imap` speaks IMAP over an established stream only, and both
//! IMAP clients of passerelle (the practice BAL mirror, the billing returns) must never send
//! anything in clear but `STARTTLS` (MSSanté TLS profile; SESAM-Vitale returns mailbox).
//!
//! Before TLS, lines are bounded, the server's go-ahead is required, and a server (or a man
//! in the middle) that sends bytes after the go-ahead is refused: they would be read as if
//! they came through TLS (the CVE-2011-0411 family).

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// The TLS stream the IMAP session runs over.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Longest line read before TLS (greeting, STARTTLS reply).
pub const MAX_PLAIN_LINE: u64 = 8 * 1024;

/// Which step of the upgrade failed and why (server text made printable and cut short).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {why}")]
pub struct StarttlsError {
    /// `greeting`, `STARTTLS` or `TLS handshake`.
    pub step: &'static str,
    pub why: String,
}

fn error(step: &'static str, why: impl std::fmt::Display) -> StarttlsError {
    StarttlsError {
        step,
        why: why.to_string(),
    }
}

/// Reads the greeting from `tcp`, issues `STARTTLS`, and hands the TLS session (server
/// checked by `tls` for `server_name`) to `async-imap`, which has not read a greeting: the
/// caller goes straight to authentication.
pub async fn starttls(
    tcp: TcpStream,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<async_imap::Client<Tls>, StarttlsError> {
    let mut plain = BufReader::new(tcp);
    let greeting = read_line(&mut plain)
        .await
        .map_err(|e| error("greeting", e))?;
    if !greeting.starts_with("* OK") {
        return Err(error("greeting", printable(&greeting)));
    }
    plain
        .get_mut()
        .write_all(b"T0 STARTTLS\r\n")
        .await
        .map_err(|e| error("STARTTLS", e))?;
    loop {
        let line = read_line(&mut plain)
            .await
            .map_err(|e| error("STARTTLS", e))?;
        if line.starts_with("T0 ") {
            if !line.starts_with("T0 OK") {
                return Err(error("STARTTLS", printable(&line)));
            }
            break;
        }
    }
    if !plain.buffer().is_empty() {
        return Err(error("STARTTLS", "data after the go-ahead"));
    }
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, plain.into_inner())
        .await
        .map_err(|e| error("TLS handshake", e))?;
    Ok(async_imap::Client::new(stream))
}

async fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_PLAIN_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !buf.ends_with(b"\n") {
        return Err(std::io::Error::other("line too long"));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}

/// Server text for an error message: no control characters, at most 200 characters.
pub fn printable(line: &str) -> String {
    line.chars().take(200).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that writes `script` once the client connects and keeps the connection open
    /// until the client is done; the happy path runs against Dovecot in the mirror's and the
    /// billing crate's tests, these are the answers Dovecot does not give.
    async fn scripted(script: &'static [u8]) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(script).await.expect("script");
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        TcpStream::connect(addr).await.expect("connect")
    }

    fn client_config() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    async fn refusal(script: &'static [u8]) -> StarttlsError {
        let tcp = scripted(script).await;
        let name = ServerName::try_from("imap.test").expect("name");
        match starttls(tcp, client_config(), name).await {
            Ok(_) => panic!("upgrade accepted"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn bytes_after_the_go_ahead_are_refused_before_any_handshake() {
        let e = refusal(b"* OK ready\r\nT0 OK Begin TLS\r\n* OK injected\r\n").await;
        assert_eq!(
            (e.step, e.why.as_str()),
            ("STARTTLS", "data after the go-ahead")
        );
    }

    #[tokio::test]
    async fn a_refused_starttls_is_reported_with_the_server_text() {
        let e = refusal(b"* OK ready\r\n* BYE\x07 going\r\nT0 NO not now\r\n").await;
        assert_eq!((e.step, e.why.as_str()), ("STARTTLS", "T0 NO not now"));
    }

    #[tokio::test]
    async fn a_greeting_other_than_ok_is_refused() {
        let e = refusal(b"* BYE too many connections\r\n").await;
        assert_eq!(
            (e.step, e.why.as_str()),
            ("greeting", "* BYE too many connections")
        );
    }

    #[tokio::test]
    async fn an_endless_plaintext_line_is_cut_at_the_limit() {
        static LONG: [u8; 9000] = [b'x'; 9000];
        let e = refusal(&LONG).await;
        assert_eq!((e.step, e.why.as_str()), ("greeting", "line too long"));
    }
}
