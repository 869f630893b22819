//! Intake (a): the LPS mails its lot to the LAN SMTP relay (our engine on a real socket);
//! `250` only after the lot is durable, `554 5.6.0` for input that is not a lot.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::b2;
use passerelle_billing::{Intake, LotId, LotRelay, LotState, LotStore};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_smtp::{ClientConfig, MailFrom, ServerConfig, SmtpClient};

fn lot_mail(description: &str, subject: &str, file: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(file);
    format!(
        "From: lps@cabinet.test\r\nTo: 01996@996.01.rss.fr\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: Application/EDI-consent; name=\"F0042\"\r\n\
         Content-Disposition: attachment; filename=\"F0042\"\r\n\
         Content-Description: {description}\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn lan_relay_takes_lot_mails_and_refuses_what_is_not_a_lot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let intake = Intake {
        store: LotStore::open(&dir.path().join("lots")).await?,
        queue: Queue::open_sqlite(dir.path().join("queue"), QueueConfig::default()).await?,
        max_lot_bytes: 1 << 20,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let relay = Arc::new(LotRelay {
        intake: intake.clone(),
    });
    tokio::spawn(passerelle_smtp::serve(
        listener,
        relay,
        ServerConfig::new("passerelle.test"),
        std::future::pending(),
    ));
    let mut config = ClientConfig::new("lps.test");
    config.require_tls = false; // loopback test of the handler; the LAN listener's TLS is the daemon's
    let mut client = SmtpClient::connect(addr, config).await?;
    let envelope = passerelle_smtp::Envelope {
        mail_from: MailFrom {
            address: "lps@cabinet.test".into(),
            size: None,
            eight_bit: false,
        },
        recipients: vec!["01996@996.01.rss.fr".into()],
    };
    let subject = "SV140610/00000001/20261123/00001";
    let mut send = async |mail: Vec<u8>| -> anyhow::Result<passerelle_smtp::Reply> {
        Ok(client.send(&envelope, &mail).await?.recipients[0]
            .reply
            .clone())
    };

    let reply = send(lot_mail("FSETEST/B2", subject, &b2("relay"))).await?;
    assert_eq!(reply.code, 250, "{reply:?}");
    let id = LotId::of(&b2("relay"));
    assert!(reply.to_string().contains(id.as_str()), "{reply:?}");
    let lot = intake.store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Received);
    assert_eq!(
        (lot.meta.file_name.as_str(), lot.meta.subject.as_str()),
        ("F0042", subject)
    );

    // Gzipped by the LPS (`/Z`): the same lot once decompressed, so a duplicate.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &b2("relay"))?;
    let reply = send(lot_mail("FSETEST/B2/Z", subject, &gz.finish()?)).await?;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(intake.store.list(None).await?.len(), 1);

    for (mail, why) in [
        (lot_mail("FSETEST/B2", subject, b""), "empty"),
        (lot_mail("FSETEST/B2", subject, &[b'X'; 300]), "`000`"),
        (
            lot_mail("FSETEST/B2/K", subject, &b2("k")),
            "already encrypted",
        ),
        (
            lot_mail("ARL/NOEMIE", subject, &b2("a")),
            "not an FSE or DRE lot",
        ),
        (lot_mail("FSETEST/B2", "no reference", &b2("s")), "subject"),
    ] {
        let reply = send(mail).await?;
        assert_eq!(reply.code, 554, "{why}: {reply:?}");
        assert!(reply.to_string().contains(why), "{why}: {reply:?}");
    }
    assert_eq!(
        intake.store.list(None).await?.len(),
        1,
        "nothing else taken"
    );
    Ok(())
}
