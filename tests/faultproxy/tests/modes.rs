//! Each proxy mode against a tiny echo server on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use passerelle_faultproxy::{FaultProxy, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on an ephemeral loopback port; it lives as long as the runtime.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxy() -> FaultProxy {
    FaultProxy::start(echo_server().await)
        .await
        .expect("start proxy")
}

async fn roundtrip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.expect("write");
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .expect("echo within 10 s")
        .expect("read echo");
    buf
}

/// Reads until EOF or reset; returns what arrived before the stream ended.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the proxy must close the connection within 10 s");
        match read {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts() {
    let proxy = proxy().await;
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
    assert_eq!(roundtrip(&mut s, b"world!").await, b"world!");
    let c = proxy.counters();
    assert_eq!(c.connections, 1);
    assert_eq!(c.bytes_to_upstream, 11);
    assert_eq!(c.bytes_to_client, 11);
}

#[tokio::test]
async fn delay_holds_each_chunk() {
    let proxy = proxy().await;
    let delay = Duration::from_millis(300);
    proxy.set_mode(Mode::Delay(delay)).await.expect("mode");
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    let start = Instant::now();
    assert_eq!(roundtrip(&mut s, b"slow").await, b"slow");
    // One delay on the way up and one on the way back.
    assert!(
        start.elapsed() >= 2 * delay,
        "elapsed {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn blackhole_reads_but_answers_nothing() {
    let proxy = proxy().await;
    proxy.set_mode(Mode::Blackhole).await.expect("mode");
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    s.write_all(b"anyone there?")
        .await
        .expect("write is accepted");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
    assert!(read.is_err(), "a blackhole must not answer: {read:?}");
    assert_eq!(proxy.counters().bytes_to_upstream, 0);
    assert_eq!(proxy.counters().connections, 1);
}

#[tokio::test]
async fn blackhole_silences_an_open_connection() {
    let proxy = proxy().await;
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    assert_eq!(roundtrip(&mut s, b"before").await, b"before");
    proxy.set_mode(Mode::Blackhole).await.expect("mode");
    s.write_all(b"after").await.expect("write");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
    assert!(read.is_err(), "nothing must come back: {read:?}");
}

#[tokio::test]
async fn cut_after_closes_both_sides() {
    let proxy = proxy().await;
    proxy.set_mode(Mode::CutAfter(10)).await.expect("mode");
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    s.write_all(&[b'x'; 100]).await.expect("write");
    let got = read_until_closed(&mut s).await;
    assert!(
        got.len() < 10,
        "budget is shared by both directions, got {}",
        got.len()
    );
    let c = proxy.counters();
    assert_eq!(c.bytes_to_upstream + c.bytes_to_client, 10, "{c:?}");
}

#[tokio::test]
async fn cut_after_counts_the_reply_direction_too() {
    let proxy = proxy().await;
    proxy.set_mode(Mode::CutAfter(8)).await.expect("mode");
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    // 4 bytes up and 4 echoed back spend the budget exactly: the proxy then closes.
    assert_eq!(roundtrip(&mut s, b"ping").await, b"ping");
    assert!(read_until_closed(&mut s).await.is_empty());
}

#[tokio::test]
async fn refuse_then_rebind_same_port() {
    let proxy = proxy().await;
    let addr = proxy.local_addr();
    proxy.set_mode(Mode::Refuse).await.expect("refuse");
    let err = TcpStream::connect(addr)
        .await
        .expect_err("connect must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    proxy.set_mode(Mode::Pass).await.expect("pass again");
    assert_eq!(proxy.local_addr(), addr);
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect after rebind");
    assert_eq!(roundtrip(&mut s, b"back").await, b"back");
}

#[tokio::test]
async fn cut_all_drops_open_connections_only() {
    let proxy = proxy().await;
    let mut a = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect a");
    let mut b = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect b");
    assert_eq!(roundtrip(&mut a, b"a").await, b"a");
    assert_eq!(roundtrip(&mut b, b"b").await, b"b");
    proxy.cut_all();
    assert!(read_until_closed(&mut a).await.is_empty());
    assert!(read_until_closed(&mut b).await.is_empty());
    // The listener survives: new connections work.
    let mut c = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect c");
    assert_eq!(roundtrip(&mut c, b"c").await, b"c");
    assert_eq!(proxy.counters().connections, 3);
}

#[tokio::test]
async fn handle_outlives_borrows() {
    let proxy = proxy().await;
    let handle = proxy.handle();
    let addr = proxy.local_addr();
    tokio::spawn(async move { handle.set_mode(Mode::Refuse).await })
        .await
        .expect("join")
        .expect("mode");
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eq!(proxy.handle().mode(), Mode::Refuse);
}
