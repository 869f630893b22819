//! One test per real peer, proving it starts and answers.

use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use passerelle_harness::lineclient::LineClient;
use passerelle_harness::{ApduHandler, Dovecot, Pcscd, Postfix, Slapd, SoftHsm};

const ALICE: &str = "alice@passerelle.test";
const ALICE_PASSWORD: &str = "alice-secret";

#[test]
fn postfix_answers_banner_and_ehlo() -> anyhow::Result<()> {
    let postfix = Postfix::builder().start()?;
    let mut smtp = LineClient::connect(postfix.smtp_addr())?;
    let banner = smtp.smtp_reply()?;
    assert_eq!(banner.code, 220, "{banner:?}");
    assert!(
        banner.lines[0].starts_with("mx.passerelle.test ESMTP"),
        "{banner:?}"
    );
    let ehlo = smtp.smtp_command("EHLO client.passerelle.test")?;
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.lines.iter().any(|l| l == "PIPELINING"), "{ehlo:?}");
    // Loopback is not trusted by IP: relaying elsewhere is refused.
    assert!(smtp
        .smtp_command("MAIL FROM:<a@client.test>")?
        .is_positive());
    let relay = smtp.smtp_command("RCPT TO:<someone@elsewhere.test>")?;
    assert_eq!(relay.code / 100, 4, "relay must be refused: {relay:?}");
    assert_eq!(smtp.smtp_command("QUIT")?.code, 221);
    Ok(())
}

#[test]
fn dovecot_answers_imap_capability_and_lmtp() -> anyhow::Result<()> {
    let dovecot = Dovecot::builder()
        .user(ALICE, ALICE_PASSWORD)
        .pop3(true)
        .start()?;
    let mut imap = LineClient::connect(dovecot.imap_addr())?;
    assert!(imap.read_line()?.starts_with("* OK"));
    let caps = imap.imap_command("a1", "CAPABILITY")?;
    assert!(caps[0].starts_with("* CAPABILITY IMAP4rev1"), "{caps:?}");
    assert!(
        caps.last().is_some_and(|l| l.starts_with("a1 OK")),
        "{caps:?}"
    );

    assert_eq!(dovecot.inbox_count(ALICE)?, 0);
    dovecot.deliver(
        "bob@passerelle.test",
        ALICE,
        "Subject: hello\n\n.dot-stuffed line\n",
    )?;
    assert_eq!(dovecot.inbox_count(ALICE)?, 1);
    let login = imap.imap_command("a2", &format!("LOGIN {ALICE} {ALICE_PASSWORD}"))?;
    assert!(
        login.last().is_some_and(|l| l.starts_with("a2 OK")),
        "{login:?}"
    );
    let status = imap.imap_command("a3", "STATUS INBOX (MESSAGES)")?;
    assert_eq!(status[0], "* STATUS INBOX (MESSAGES 1)", "{status:?}");

    let mut pop3 = LineClient::connect(dovecot.pop3_addr().context("pop3 on")?)?;
    assert!(pop3.read_line()?.starts_with("+OK"));
    Ok(())
}

#[test]
fn dovecot_refuses_a_wrong_password() -> anyhow::Result<()> {
    let dovecot = Dovecot::builder().user(ALICE, ALICE_PASSWORD).start()?;
    let mut imap = LineClient::connect(dovecot.imap_addr())?;
    imap.read_line()?;
    let login = imap.imap_command("a1", &format!("LOGIN {ALICE} wrong"))?;
    assert!(
        login.last().is_some_and(|l| l.starts_with("a1 NO")),
        "{login:?}"
    );
    Ok(())
}

#[test]
fn postfix_delivers_into_dovecot_over_lmtp() -> anyhow::Result<()> {
    let dovecot = Dovecot::builder().user(ALICE, ALICE_PASSWORD).start()?;
    let postfix = Postfix::builder()
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .start()?;
    let mut smtp = LineClient::connect(postfix.smtp_addr())?;
    smtp.smtp_reply()?;
    for cmd in [
        "EHLO client.test",
        "MAIL FROM:<bob@client.test>",
        &format!("RCPT TO:<{ALICE}>"),
    ] {
        let reply = smtp.smtp_command(cmd)?;
        assert!(
            reply.is_positive(),
            "{cmd}: {reply:?}\n{}",
            postfix.log_tail(20)
        );
    }
    assert_eq!(smtp.smtp_command("DATA")?.code, 354);
    smtp.smtp_data(
        "From: bob@client.test\nTo: alice@passerelle.test\nSubject: chain\n\nvia Postfix\n",
    )?;
    let queued = smtp.smtp_reply()?;
    assert!(queued.is_positive(), "{queued:?}");
    smtp.smtp_command("QUIT")?;

    let delivered = dovecot.wait_for_inbox_count(ALICE, 1, Duration::from_secs(30));
    if let Err(e) = delivered {
        bail!("{e}\n--- postfix ---\n{}", postfix.log_tail(30));
    }
    let mut imap = LineClient::connect(dovecot.imap_addr())?;
    imap.read_line()?;
    imap.imap_command("a1", &format!("LOGIN {ALICE} {ALICE_PASSWORD}"))?;
    let select = imap.imap_command("a2", "SELECT INBOX")?;
    assert!(select.iter().any(|l| l == "* 1 EXISTS"), "{select:?}");
    let fetch = imap.imap_command("a3", "FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")?;
    assert!(fetch.iter().any(|l| l == "Subject: chain"), "{fetch:?}");
    Ok(())
}

#[test]
fn slapd_search_returns_loaded_entry() -> anyhow::Result<()> {
    let slapd = Slapd::builder()
        .suffix("o=sesam-vitale,c=fr")
        .ldif(
            "dn: cn=Jean Dupont,o=sesam-vitale,c=fr
objectClass: inetOrgPerson
cn: Jean Dupont
sn: Dupont
mail: jean.dupont@passerelle.test",
        )
        .start()?;
    assert_eq!(slapd.root_dn(), "cn=admin,o=sesam-vitale,c=fr");
    let found = slapd.search("(sn=Dupont)", &["mail"])?;
    assert!(
        found.contains("dn: cn=Jean Dupont,o=sesam-vitale,c=fr"),
        "{found}"
    );
    assert!(
        found.contains("mail: jean.dupont@passerelle.test"),
        "{found}"
    );
    assert!(slapd.search("(sn=Martin)", &[])?.trim().is_empty());
    Ok(())
}

#[test]
fn softhsm_token_login_and_wrong_pin() -> anyhow::Result<()> {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error, RvError};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let hsm = SoftHsm::builder()
        .token("passerelle-a", "87654321", "1111")
        .token("passerelle-b", "87654321", "2222")
        .build()?;
    hsm.set_process_env();
    let pkcs11 = Pkcs11::new(hsm.module_path())?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let token = &hsm.tokens()[1];
    let slot = pkcs11
        .get_slots_with_token()?
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .is_ok_and(|i| i.label() == token.label)
        })
        .context("token by label")?;

    let session = pkcs11.open_ro_session(slot)?;
    let wrong = session.login(UserType::User, Some(&AuthPin::from("9999")));
    assert!(
        matches!(wrong, Err(Error::Pkcs11(RvError::PinIncorrect, _))),
        "{wrong:?}"
    );
    session.login(
        UserType::User,
        Some(&AuthPin::from(token.user_pin.as_str())),
    )?;
    session.logout()?;
    Ok(())
}

/// Answers SELECT with 90 00 and records every APDU.
#[derive(Debug, Default)]
struct RecordingCard {
    apdus: Vec<Vec<u8>>,
}

const CPS3_ATR: [u8; 17] = [
    0x3B, 0xAC, 0x00, 0x40, 0x2A, 0x00, 0x12, 0x25, 0x00, 0x64, 0x80, 0x00, 0x03, 0x10, 0x00, 0x90,
    0x00,
];

impl ApduHandler for RecordingCard {
    fn atr(&self) -> Vec<u8> {
        CPS3_ATR.to_vec()
    }

    fn transmit(&mut self, capdu: &[u8]) -> Vec<u8> {
        self.apdus.push(capdu.to_vec());
        match capdu {
            [0x00, 0xA4, ..] => vec![0x90, 0x00],
            _ => vec![0x6D, 0x00],
        }
    }
}

/// Waits (bounded) until `reader` reports `wanted`, using PC/SC's own change notification.
fn wait_for_state(
    ctx: &pcsc::Context,
    reader: &CString,
    wanted: pcsc::State,
) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states = [pcsc::ReaderState::new(reader.clone(), pcsc::State::UNAWARE)];
    loop {
        match ctx.get_status_change(Duration::from_millis(500), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(e).context("SCardGetStatusChange"),
        }
        if states[0].event_state().contains(wanted) {
            return Ok(states[0].atr().to_vec());
        }
        if Instant::now() > deadline {
            bail!(
                "{reader:?} never reached {wanted:?}: {:?}",
                states[0].event_state()
            );
        }
        states[0].sync_current_state();
    }
}

#[test]
fn pcsc_sees_virtual_reader_and_card() -> anyhow::Result<()> {
    let pcscd = Pcscd::builder().apdu_log(false).start()?;
    pcscd.set_process_env();
    let mut card = pcscd.virtual_card(0, RecordingCard::default())?;
    assert_eq!(card.reader_name(), "Virtual PCD 00 00");

    let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
    let readers = ctx.list_readers_owned()?;
    let reader = CString::new(card.reader_name())?;
    assert!(
        readers.contains(&reader),
        "{readers:?}\n{}",
        pcscd.log_tail(30)
    );
    wait_for_state(&ctx, &reader, pcsc::State::EMPTY)?;

    card.insert()?;
    let atr = wait_for_state(&ctx, &reader, pcsc::State::PRESENT)?;
    assert_eq!(atr, CPS3_ATR);
    let conn = ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)?;
    assert_eq!(conn.status2_owned()?.atr(), CPS3_ATR);
    let select = [
        0x00, 0xA4, 0x04, 0x00, 0x08, 0x80, 0x25, 0x00, 0x00, 0x01, 0xFF, 0x01, 0x00,
    ];
    let mut buf = [0u8; 258];
    let answer = conn.transmit(&select, &mut buf)?;
    assert_eq!(answer, [0x90, 0x00]);
    assert!(card.handler().apdus.contains(&select.to_vec()));
    drop(conn);

    card.remove();
    wait_for_state(&ctx, &reader, pcsc::State::EMPTY)?;
    // And back in: the same reader sees it again.
    card.insert()?;
    wait_for_state(&ctx, &reader, pcsc::State::PRESENT)?;
    Ok(())
}
