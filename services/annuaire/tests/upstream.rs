//! TM2.1.1A against a real slapd (and a stalled or limit-answering fake for what slapd
//! cannot be made to do on demand).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{LdapMsg, LdapOp, LdapResult, LdapResultCode};
use passerelle_annuaire::upstream::{Criteria, UpstreamClient};
use passerelle_annuaire::{AnnuaireError, UpstreamLdap};
use passerelle_harness::Slapd;
use tokio_util::codec::Framed;

const SUFFIX: &str = "ou=bal,o=mssante,c=fr";
const PRENOMS: [&str; 6] = ["Hélène", "Zoé", "Jérôme", "Anaïs", "François", "Cécile"];

/// 120 Martin (over the size limit of 100) and 20 others; Lyon for every fourth.
fn ldif() -> String {
    let mut out = String::new();
    for i in 0..140 {
        let (sn, prenom) = if i < 120 {
            ("Martin", PRENOMS[i % PRENOMS.len()])
        } else {
            ("Lefèvre", "Noël")
        };
        let ville = if i % 4 == 0 {
            "69003 LYON"
        } else {
            "42000 SAINT-ÉTIENNE"
        };
        let _ = write!(
            out,
            "dn: mail=bal{i}@upstream.mssante.fr,{SUFFIX}\nobjectClass: inetOrgPerson\ncn: {prenom} {sn}\nsn: {sn}\ngivenName: {prenom}\nmail: bal{i}@upstream.mssante.fr\nl: {ville}\ntitle: Médecin\ndescription: PER\n\n"
        );
    }
    out
}

fn config(url: &str, timeout: Duration) -> UpstreamLdap {
    toml::from_str(&format!(
        "url = \"{url}\"\nbase_dn = \"{SUFFIX}\"\nsize_limit = 100\ntimeout = \"{}ms\"\n",
        timeout.as_millis()
    ))
    .expect("config")
}

fn criteria(nom: Option<&str>, prenom: Option<&str>, ville: Option<&str>) -> Criteria {
    Criteria {
        nom: nom.map(str::to_owned),
        prenom: prenom.map(str::to_owned),
        ville: ville.map(str::to_owned),
        ..Criteria::default()
    }
}

fn slapd() -> Slapd {
    Slapd::builder()
        .suffix(SUFFIX)
        .ldif(ldif())
        .start()
        .expect("slapd")
}

#[tokio::test]
async fn ex_2_1_1_5010_no_bulk_harvest_from_the_national_ldap() {
    // Nothing listens there: a refused search must not even try to connect.
    let client = UpstreamClient::new(config("ldap://127.0.0.1:9", Duration::from_secs(1)));
    for c in [
        Criteria::default(),
        criteria(Some("*"), None, None),
        criteria(Some(" ** "), Some(""), None),
        criteria(Some("m"), None, Some("l*")),
    ] {
        let err = client.search(&c).await.expect_err("refused");
        assert!(
            matches!(err, AnnuaireError::BulkHarvestRefused { .. }),
            "{c:?}: {err}"
        );
        assert!(err.to_string().contains("EX_2.1.1_5010"));
    }
}

#[tokio::test]
async fn re_2_1_5010_size_limit_exceeded_becomes_refine_your_search() {
    let slapd = slapd();
    let client = UpstreamClient::new(config(slapd.url(), Duration::from_secs(10)));
    let err = client
        .search(&criteria(Some("martin"), None, None))
        .await
        .expect_err("120 entries over a limit of 100");
    assert!(
        matches!(
            err,
            AnnuaireError::RefineSearch {
                limit: "SizeLimitExceeded",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refine your search"));
    // Refined, the same search fits and "contains" ignores neither accents nor case upstream.
    let set = client
        .search(&criteria(Some("MART"), Some("Hélène"), None))
        .await
        .expect("refined search");
    assert_eq!(set.entries.len(), 20);
    assert!(
        set.entries
            .iter()
            .all(|e| e.prenom == "Hélène" && e.nom == "Martin")
    );
    // Filter metacharacters in a criterion are escaped, not interpreted.
    let set = client
        .search(&criteria(Some("tin*)(mail=*"), None, None))
        .await
        .expect("escaped search");
    assert!(set.entries.is_empty());
}

#[tokio::test]
async fn re_2_1_5020_refining_filters_the_previous_result_locally() {
    let slapd = slapd();
    let client = UpstreamClient::new(config(slapd.url(), Duration::from_secs(10)));
    let first = client
        .search(&criteria(None, None, Some("lyon")))
        .await
        .expect("35 entries in Lyon");
    assert_eq!(first.entries.len(), 35);
    // The upstream is gone: a refinement that needed it would fail.
    drop(slapd);
    let narrower = criteria(Some("lefe"), None, Some("LYON"));
    let refined = first
        .refine(&narrower)
        .expect("narrower criteria refine locally");
    assert_eq!(refined.entries.len(), 5);
    assert!(refined.entries.iter().all(|e| e.nom == "Lefèvre"));
    let refined = refined
        .refine(&criteria(Some("lefèvre"), Some("noel"), Some("lyon")))
        .expect("narrower again");
    assert_eq!(refined.entries.len(), 5);
    // Other criteria are a new search, not a refinement.
    assert!(first.refine(&criteria(None, None, Some("paris"))).is_none());
    assert!(
        first
            .refine(&criteria(Some("martin"), None, None))
            .is_none()
    );
}

/// A fake upstream that answers every search with `code`, or never answers when `None`.
async fn fake_upstream(code: Option<LdapResultCode>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ldap://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let code = code.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, LdapCodec::default());
                while let Some(Ok(msg)) = framed.next().await {
                    let Some(code) = code.clone() else { continue };
                    if matches!(msg.op, LdapOp::SearchRequest(_)) {
                        let done = LdapMsg {
                            msgid: msg.msgid,
                            op: LdapOp::SearchResultDone(LdapResult {
                                code,
                                matcheddn: String::new(),
                                message: String::new(),
                                referral: Vec::new(),
                            }),
                            ctrl: Vec::new(),
                        };
                        if framed.send(done).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn re_2_1_5010_time_limit_exceeded_becomes_refine_your_search() {
    let url = fake_upstream(Some(LdapResultCode::TimeLimitExceeded)).await;
    let client = UpstreamClient::new(config(&url, Duration::from_secs(5)));
    let err = client
        .search(&criteria(Some("martin"), None, None))
        .await
        .expect_err("time limit");
    assert!(
        matches!(
            err,
            AnnuaireError::RefineSearch {
                limit: "TimeLimitExceeded",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_stalled_upstream_is_bounded_by_the_timeout() {
    let url = fake_upstream(None).await;
    let client = UpstreamClient::new(config(&url, Duration::from_millis(500)));
    let started = Instant::now();
    let err = client
        .search(&criteria(Some("martin"), None, None))
        .await
        .expect_err("stalled");
    assert!(matches!(err, AnnuaireError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
