//! Intake and the lot state machine: spool folder (atomic rename protocol, crash re-pickup),
//! the local HTTP API over a real socket, bad input, transitions and history.

use std::path::Path;
use std::time::{Duration, SystemTime};

use passerelle_billing::{Intake, LotId, LotState, LotStore, QUEUE_KIND, api_router, scan_spool};
use passerelle_queue::{Queue, QueueConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn b2(seed: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for rec in [
        format!("000TE12345678901234CP  B2128{seed}"),
        "1LOT001".to_owned(),
    ] {
        out.extend_from_slice(format!("{rec:<128}").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn intake(dir: &Path) -> Intake {
    Intake {
        store: LotStore::open(&dir.join("lots")).await.expect("lot store"),
        queue: Queue::open_sqlite(dir.join("queue"), QueueConfig::default())
            .await
            .expect("queue"),
        max_lot_bytes: 1 << 20,
    }
}

/// The LPS's side of the protocol: sidecar then lot, each written as `.tmp` and renamed.
fn spool_write(spool: &Path, name: &str, content: &[u8], meta: &str) {
    let m = spool.join(format!("{name}.meta.json"));
    std::fs::write(spool.join(format!("{name}.meta.json.tmp")), meta).expect("write");
    std::fs::rename(spool.join(format!("{name}.meta.json.tmp")), m).expect("rename");
    std::fs::write(spool.join(format!("{name}.tmp")), content).expect("write");
    std::fs::rename(spool.join(format!("{name}.tmp")), spool.join(name)).expect("rename");
}

const FSE_META: &str =
    r#"{"flow":"fse","env":"test","recipient":"amo","subject":"SV140610/00000001/20261123/00001"}"#;

#[tokio::test]
async fn spool_lots_are_queued_once_and_moved_to_done() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool");
    let intake = intake(dir.path()).await;

    // Incomplete: `.tmp` names and a lot whose sidecar is not there yet are left alone.
    std::fs::write(spool.join("L1.tmp"), b2("1")).expect("write");
    std::fs::write(spool.join("L2"), b2("2")).expect("write");
    assert!(scan_spool(&spool, &intake).await.expect("scan").is_empty());

    spool_write(&spool, "L1", &b2("1"), FSE_META);
    let picked = scan_spool(&spool, &intake).await.expect("scan");
    assert_eq!(picked, vec![LotId::of(&b2("1"))]);
    assert!(spool.join("done/L1").exists() && spool.join("done/L1.meta.json").exists());
    assert!(spool.join("L2").exists(), "no sidecar yet: not picked up");

    // A crash after the enqueue, before the move: the file is there again; same lot, no
    // duplicate row nor queue item.
    spool_write(&spool, "L1", &b2("1"), FSE_META);
    scan_spool(&spool, &intake).await.expect("scan");
    let lots = intake.store.list(None).await.expect("list");
    assert_eq!(lots.len(), 1);
    assert_eq!(lots[0].state, LotState::Received);
    assert_eq!(lots[0].meta.file_name, "L1");
    let leased = intake
        .queue
        .lease(QUEUE_KIND, 10, Duration::from_secs(60))
        .await
        .expect("lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].payload(), lots[0].id.as_str().as_bytes());
    assert_eq!(
        intake.store.content(&lots[0].id).await.expect("content"),
        b2("1")
    );
}

#[tokio::test]
async fn bad_spooled_input_is_refused_kept_and_listed_with_its_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool");
    let intake = intake(dir.path()).await;

    spool_write(&spool, "empty", b"", FSE_META);
    spool_write(&spool, "notb2", &[b'X'; 300], FSE_META);
    spool_write(&spool, "badmeta", &b2("3"), r#"{"flow":"fse"}"#);
    let dre_to_amo = r#"{"flow":"dre","env":"test","recipient":"amo","subject":"DR140610/x"}"#;
    spool_write(&spool, "wrongrecipient", &b2("4"), dre_to_amo);
    scan_spool(&spool, &intake).await.expect("scan");

    for (name, why) in [
        ("empty", "empty"),
        ("notb2", "`000`"),
        ("badmeta", "meta.json"),
        ("wrongrecipient", "goes to the amc"),
    ] {
        assert!(spool.join("refused").join(name).exists(), "{name} kept");
        let reason = std::fs::read_to_string(spool.join("refused").join(format!("{name}.reason")))
            .expect("reason");
        assert!(reason.contains(why), "{name}: {reason}");
    }
    let refused = intake
        .store
        .list(Some(LotState::Refused))
        .await
        .expect("list");
    assert_eq!(refused.len(), 4);
    // Nothing that is not a lot reaches the send queue.
    let leased = intake
        .queue
        .lease(QUEUE_KIND, 10, Duration::from_secs(60))
        .await
        .expect("lease");
    assert!(leased.is_empty());
}

async fn http(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().expect("status");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn post(query: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /lots?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn http_api_answers_201_after_enqueue_and_422_for_bad_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let intake = intake(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = api_router(intake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let q = "flow=fse&env=test&recipient=amo&subject=SV140610%2F00000001%2Fx&name=F0001";
    let (status, body) = http(addr, &post(q, &b2("9"))).await;
    assert_eq!(status, 201, "{body}");
    let id = LotId::of(&b2("9"));
    assert!(body.contains(id.as_str()), "{body}");
    assert_eq!(
        intake
            .store
            .get(&id)
            .await
            .expect("get")
            .expect("lot")
            .state,
        LotState::Received
    );
    // The same lot again: 200, duplicate, still one lot.
    let (status, body) = http(addr, &post(q, &b2("9"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"duplicate\":true"), "{body}");

    let (status, body) = http(addr, &post(q, b"")).await;
    assert_eq!(status, 422);
    assert!(body.contains("empty"), "{body}");
    let (status, body) = http(
        addr,
        &post("flow=fse&env=test&recipient=amo&subject=XX", &b2("8")),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("subject"), "{body}");

    let get = format!("GET /lots/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = http(addr, get.as_bytes()).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"state\":\"received\""), "{body}");
    assert_eq!(intake.store.list(None).await.expect("list").len(), 1);
}

#[tokio::test]
async fn lot_state_machine_records_history_and_refuses_bad_transitions() {
    let dir = tempfile::tempdir().expect("tmp");
    let intake = intake(dir.path()).await;
    let meta = passerelle_billing::LotMeta {
        flow: passerelle_sesam::Flow::Fse,
        env: passerelle_sesam::Env::Test,
        recipient: passerelle_billing::RecipientKind::Amo,
        subject: "SV140610/1".into(),
        file_name: "F1".into(),
    };
    let id = intake.accept(&meta, &b2("s")).await.expect("accept").lot_id;
    let store = &intake.store;
    assert!(
        store.transition(&id, LotState::Sent, "x").await.is_err(),
        "received → sent skips encryption"
    );
    store
        .transition(&id, LotState::Encrypted, "for sv-amo-test")
        .await
        .expect("encrypted");
    store.mark_sent(&id, "<m1@passerelle>").await.expect("sent");
    assert_eq!(
        store
            .by_message_id("<m1@passerelle>")
            .await
            .expect("by id")
            .expect("lot")
            .id,
        id
    );

    // Missing ARL: overdue after the deadline, not before.
    assert!(
        store
            .mark_overdue(Duration::from_secs(3600), SystemTime::now())
            .await
            .expect("overdue")
            .is_empty()
    );
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert_eq!(
        store
            .mark_overdue(Duration::from_secs(3600), later)
            .await
            .expect("overdue"),
        vec![id.clone()]
    );

    // A late ARL still acknowledges; a duplicate changes nothing; no way back.
    assert_eq!(
        store
            .transition(&id, LotState::Acknowledged, "ARL+")
            .await
            .expect("ack"),
        Some(LotState::Overdue)
    );
    assert_eq!(
        store
            .transition(&id, LotState::Acknowledged, "ARL+")
            .await
            .expect("dup"),
        None
    );
    assert!(
        store
            .transition(&id, LotState::Received, "resend")
            .await
            .is_err()
    );
    let steps: Vec<_> = store
        .history(&id)
        .await
        .expect("history")
        .iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(
        steps,
        [
            LotState::Received,
            LotState::Encrypted,
            LotState::Sent,
            LotState::Overdue,
            LotState::Acknowledged
        ]
    );
    assert!(
        store.content(&id).await.is_err(),
        "content dropped once acknowledged"
    );
}

/// Bad input: a 200 MB file in the spool (above the default 100 MiB maximum) is refused
/// with the reason, kept in `refused/`, and never read into memory (sparse here: the size
/// is checked before any byte is read).
#[tokio::test]
async fn a_200_mb_spooled_file_is_refused_with_its_size_and_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool");
    let mut intake = intake(dir.path()).await;
    intake.max_lot_bytes = passerelle_sesam::DEFAULT_MAX_LOT_BYTES;
    spool_write(&spool, "huge", b"", FSE_META);
    std::fs::OpenOptions::new()
        .write(true)
        .open(spool.join("huge"))
        .and_then(|f| f.set_len(200 * 1024 * 1024))
        .expect("sparse 200 MB");
    scan_spool(&spool, &intake).await.expect("scan");
    assert!(spool.join("refused/huge").exists(), "kept");
    let reason = std::fs::read_to_string(spool.join("refused/huge.reason")).expect("reason");
    assert!(
        reason.contains("209715200 bytes, above the maximum"),
        "{reason}"
    );
    let refused = intake
        .store
        .list(Some(LotState::Refused))
        .await
        .expect("list");
    assert_eq!(refused.len(), 1);
    assert!(
        intake
            .queue
            .lease(QUEUE_KIND, 10, Duration::from_secs(60))
            .await
            .expect("lease")
            .is_empty(),
        "nothing queued"
    );
}
