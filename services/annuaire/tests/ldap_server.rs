//! The LAN LDAP server, queried by a real `ldapsearch` and by the ldap3 client.

use std::net::SocketAddr;
use std::sync::Arc;

use ldap3::{LdapConnAsync, Scope, SearchEntry, SearchOptions};
use passerelle_annuaire::ldap_server::LdapServer;
use passerelle_annuaire::{AnnuaireConfig, Cache, refresh};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/extraction_correspondance_mssante.txt"
);
const BASE: &str = "ou=annuaire,o=passerelle";

struct Running {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start(size_limit: usize) -> Running {
    start_with(size_limit, "").await
}

async fn start_with(size_limit: usize, extra: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "cache_dir = {:?}\n[extraction]\nurl = \"file://{FIXTURE}\"\n[ldap_server]\nlisten = \"127.0.0.1:0\"\nbase_dn = \"{BASE}\"\nsize_limit = {size_limit}\n{extra}",
        dir.path().join("cache").display().to_string()
    );
    let config: AnnuaireConfig = toml::from_str(&toml).expect("config");
    let cache = Arc::new(Cache::open(&config.cache_dir).await.expect("cache"));
    refresh(&config, &cache).await.expect("refresh");
    let server = LdapServer::bind(config.ldap_server.clone().expect("server config"), cache)
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    Running {
        addr,
        _dir: dir,
        server: tokio::spawn(server.run()),
    }
}

/// `ldapsearch` as a mail client would run it; returns (exit code, LDIF output).
async fn ldapsearch(addr: SocketAddr, filter: &str, attrs: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H"])
        .arg(format!("ldap://{addr}"))
        .args(["-b", BASE, filter])
        .args(attrs)
        .output()
        .await
        .expect("ldapsearch (package ldap-utils)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn mails(ldif: &str) -> Vec<&str> {
    ldif.lines()
        .filter_map(|l| l.strip_prefix("mail: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldapsearch_finds_entries_by_substring_on_the_usual_attributes() {
    let server = start(50).await;
    let cases = [
        ("(cn=*hélène*)", "helene.lefevre@exemple-sante.mssante.fr"),
        (
            "(cn=*HELENE LEF*)",
            "helene.lefevre@exemple-sante.mssante.fr",
        ),
        ("(sn=benoit)", "zoe.benoit@exemple-sante.mssante.fr"),
        ("(givenName=Maël*)", "maelle.noel@exemple-sante.mssante.fr"),
        (
            "(mail=jerome.garcon@*)",
            "jerome.garcon@exemple-sante.mssante.fr",
        ),
        (
            "(&(o=*pasteur-eole*)(description=ORG))",
            "laboratoire@biologie-exemple.mssante.fr",
        ),
        ("(l=*compiegne)", "cecile.lemaitre@exemple-sante.mssante.fr"),
        (
            "(&(l=*saint-étienne*)(title=médecin)(businessCategory=*cardio*))",
            "helene.lefevre@exemple-sante.mssante.fr",
        ),
        (
            "(|(sn=nobody)(postalCode=60200))",
            "cecile.lemaitre@exemple-sante.mssante.fr",
        ),
    ];
    for (filter, want) in cases {
        let (code, ldif) = ldapsearch(server.addr, filter, &["mail"]).await;
        assert_eq!(code, 0, "{filter}: {ldif}");
        assert_eq!(mails(&ldif), [want], "{filter}");
    }
    // NOT, presence and objectClass as address books send them.
    let (code, ldif) = ldapsearch(
        server.addr,
        "(&(objectClass=inetOrgPerson)(description=CAB)(!(givenName=*)))",
        &["mail", "cn"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        mails(&ldif),
        ["secretariat.cabinet-du-parc@exemple-sante.mssante.fr"]
    );
    assert!(ldif.contains("cn: Cabinet du Parc"), "{ldif}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_returns_the_first_entries_and_size_limit_exceeded() {
    let server = start(5).await;
    let (code, ldif) = ldapsearch(server.addr, "(mail=*@exemple-sante*)", &["mail"]).await;
    // ldapsearch exits with the result code: 4 = sizeLimitExceeded.
    assert_eq!(code, 4, "{ldif}");
    assert_eq!(mails(&ldif).len(), 5);

    let (conn, mut ldap) = LdapConnAsync::new(&format!("ldap://{}", server.addr))
        .await
        .expect("connect");
    ldap3::drive!(conn);
    // The client's own smaller limit wins.
    let result = ldap
        .with_search_options(SearchOptions::new().sizelimit(2))
        .search(BASE, Scope::Subtree, "(sn=*e*)", vec!["mail"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 4);
    assert_eq!(result.0.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filters_are_refused_with_a_reason_and_the_server_keeps_serving() {
    let server = start(50).await;
    let url = format!("ldap://{}", server.addr);
    let (conn, mut ldap) = LdapConnAsync::new(&url).await.expect("connect");
    ldap3::drive!(conn);

    // Filter injection: the value's metacharacters arrive escaped and match literally.
    let result = ldap
        .search(
            BASE,
            Scope::Subtree,
            "(cn=*\\2a\\29\\28mail=\\2a*)",
            vec!["mail"],
        )
        .await
        .expect("search");
    assert_eq!(result.1.rc, 0);
    assert!(result.0.is_empty());

    // Deeply nested.
    let deep = format!("{}(cn=*a*){}", "(&".repeat(12), ")".repeat(12));
    let result = ldap
        .search(BASE, Scope::Subtree, &deep, vec!["mail"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 53, "{}", result.1.text);
    assert!(result.1.text.contains("deeper"), "{}", result.1.text);

    // Too many terms.
    let wide = format!("(|{})", "(cn=*ab*)".repeat(100));
    let result = ldap
        .search(BASE, Scope::Subtree, &wide, vec!["mail"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 53);
    assert!(result.1.text.contains("terms"), "{}", result.1.text);

    // Over-long values.
    let long = format!("(cn=*{}*)", "x".repeat(2000));
    let result = ldap
        .search(BASE, Scope::Subtree, &long, vec!["mail"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 53);

    // Read-only, anonymous only, known base only.
    let result = ldap
        .simple_bind("cn=admin,o=passerelle", "guess")
        .await
        .expect("bind");
    assert_eq!(result.rc, 49);
    let result = ldap
        .add(
            "mail=x@y.fr,ou=annuaire,o=passerelle",
            vec![("mail", ["x@y.fr"].into())],
        )
        .await
        .expect("add");
    assert_eq!(result.rc, 53);
    let result = ldap
        .search("o=elsewhere", Scope::Subtree, "(cn=*)", vec!["mail"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 32);

    // A message beyond the size limit closes that connection only.
    let huge = format!("(cn=*{}*)", "y".repeat(40_000));
    assert!(
        ldap.search(BASE, Scope::Subtree, &huge, vec!["mail"])
            .await
            .is_err()
    );
    let (code, ldif) = ldapsearch(server.addr, "(sn=lefevre)", &["mail"]).await;
    assert_eq!(code, 0);
    assert_eq!(mails(&ldif), ["helene.lefevre@exemple-sante.mssante.fr"]);

    // And the entry the mail client reads back carries the inetOrgPerson attributes.
    let (conn, mut ldap) = LdapConnAsync::new(&url).await.expect("connect");
    ldap3::drive!(conn);
    let (entries, _) = ldap
        .search(BASE, Scope::Subtree, "(mail=zoe.benoit@*)", vec!["*"])
        .await
        .expect("search")
        .success()
        .expect("success");
    let entry = SearchEntry::construct(entries.into_iter().next().expect("one entry"));
    assert_eq!(
        entry.dn,
        format!("mail=zoe.benoit@exemple-sante.mssante.fr,{BASE}")
    );
    assert_eq!(entry.attrs["cn"], ["Zoé Benoît"]);
    assert_eq!(entry.attrs["sn"], ["Benoît"]);
    assert_eq!(entry.attrs["givenName"], ["Zoé"]);
    assert_eq!(entry.attrs["o"], ["Maison de santé des Forges"]);
    assert_eq!(entry.attrs["l"], ["42100 SAINT-ÉTIENNE"]);
    assert_eq!(entry.attrs["description"], ["PER"]);
}

/// PHC string of `password` (fixed salt: the test only needs a valid hash).
fn hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_account_bind_when_anonymous_use_is_off() {
    let dn = "cn=lps,ou=annuaire,o=passerelle";
    let extra = format!(
        "allow_anonymous = false\n[[ldap_server.accounts]]\ndn = \"{dn}\"\npassword_hash = \"{}\"\n",
        hash("s3cret-lps")
    );
    let server = start_with(50, &extra).await;
    let search = |args: Vec<String>| {
        let addr = server.addr;
        async move {
            let out = tokio::process::Command::new("ldapsearch")
                .args(["-x", "-LLL", "-H"])
                .arg(format!("ldap://{addr}"))
                .args(args)
                .args(["-b", BASE, "(sn=lefevre)", "mail"])
                .output()
                .await
                .expect("ldapsearch");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    // Anonymous: refused with inappropriateAuthentication (48).
    let (code, _) = search(Vec::new()).await;
    assert_eq!(code, 48);
    // Wrong password: invalidCredentials (49).
    let (code, _) = search(vec!["-D".into(), dn.into(), "-w".into(), "guess".into()]).await;
    assert_eq!(code, 49);
    // The local account searches.
    let (code, ldif) = search(vec![
        "-D".into(),
        dn.into(),
        "-w".into(),
        "s3cret-lps".into(),
    ])
    .await;
    assert_eq!(code, 0, "{ldif}");
    assert_eq!(mails(&ldif), ["helene.lefevre@exemple-sante.mssante.fr"]);
    // A client that never binds gets insufficientAccessRights (50).
    let (conn, mut ldap) = LdapConnAsync::new(&format!("ldap://{}", server.addr))
        .await
        .expect("connect");
    ldap3::drive!(conn);
    let result = ldap
        .search(BASE, Scope::Subtree, "(sn=lefevre)", vec!["mail"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 50);
}
