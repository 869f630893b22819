//! Refresh from the shipped fixture extraction, search by each field, atomic swap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use passerelle_annuaire::{
    AnnuaireConfig, AnnuaireError, Attr, Cache, Field, Pattern, Query, QueryLimits, refresh,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/extraction_correspondance_mssante.txt"
);
const FIXTURE_ROWS: usize = 30;

fn config(cache_dir: &Path, file: &Path) -> AnnuaireConfig {
    let toml = format!(
        "cache_dir = {cache:?}\n[extraction]\nurl = \"file://{file}\"\n",
        cache = cache_dir.display().to_string(),
        file = file.display()
    );
    toml::from_str(&toml).expect("test config")
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write test file");
    path
}

async fn loaded() -> (tempfile::TempDir, Cache, AnnuaireConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir.path().join("cache"), Path::new(FIXTURE));
    let cache = Cache::open(&config.cache_dir).await.expect("open cache");
    let report = refresh(&config, &cache).await.expect("refresh");
    assert_eq!(report.status.entries, FIXTURE_ROWS);
    (dir, cache, config)
}

async fn mails(cache: &Cache, query: &Query) -> Vec<String> {
    let found = cache.search(query, 100).await.expect("search");
    found.entries.into_iter().map(|e| e.mail).collect()
}

#[tokio::test]
async fn re_2_1_5030_refresh_indexes_the_extraction_without_altering_it() {
    let (_dir, cache, _) = loaded().await;
    let q = Query::free_text("lefevre", &QueryLimits::default()).expect("query");
    let found = cache.search(&q, 10).await.expect("search");
    assert_eq!(found.entries.len(), 1);
    let e = &found.entries[0];
    // Indexed folded, served exactly as published.
    assert_eq!(e.nom, "Lefèvre");
    assert_eq!(e.prenom, "Hélène");
    assert_eq!(e.ville, "42000 SAINT-ÉTIENNE");
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('|').collect();
    let row: Vec<&str> = lines
        .find(|l| l.contains(&e.mail))
        .expect("row")
        .split('|')
        .collect();
    for (name, value) in header.iter().zip(row) {
        assert_eq!(e.raw[*name], value, "column {name}");
    }
}

#[tokio::test]
async fn re_2_1_5030_search_by_each_field_with_and_without_accents() {
    let (_dir, cache, _) = loaded().await;
    let cases: [(Field, &[&str], &str); 9] = [
        (
            Field::Nom,
            &["Lefèvre", "lefevre", "LEFÈ"],
            "helene.lefevre@",
        ),
        (
            Field::Prenom,
            &["Maëlle", "maelle", "MAELLE"],
            "maelle.noel@",
        ),
        (
            Field::Profession,
            &["Pédicure", "pedicure-podo"],
            "gaelle.roux@",
        ),
        (
            Field::Specialite,
            &["Néphrologie", "nephro"],
            "benedicte.herve@",
        ),
        (
            Field::Organisation,
            &["Pasteur-Éole", "pasteur-eole"],
            "laboratoire@",
        ),
        (
            Field::Ville,
            &["Compiègne", "COMPIEGNE", "compiè"],
            "cecile.lemaitre@",
        ),
        (Field::CodePostal, &["60200", "602"], "cecile.lemaitre@"),
        (
            Field::Mail,
            &["ehpad.les-tilleuls", "EHPAD.LES"],
            "ehpad.les-tilleuls@",
        ),
        (
            Field::BalType,
            &["CAB", "cab"],
            "secretariat.cabinet-du-parc@",
        ),
    ];
    for (field, texts, want) in cases {
        for text in texts {
            let by_field = Query::Match(Attr::Field(field), Pattern::contains(text));
            let got = mails(&cache, &by_field).await;
            assert!(
                got.iter().any(|m| m.starts_with(want)),
                "{field:?} contains {text:?}: {got:?}"
            );
            let free = Query::free_text(text, &QueryLimits::default()).expect("query");
            let got = mails(&cache, &free).await;
            assert!(
                got.iter().any(|m| m.starts_with(want)),
                "free text {text:?}: {got:?}"
            );
        }
    }
    // Several words are ANDed, in any field.
    let q =
        Query::free_text("zoé saint-etienne pediatrie", &QueryLimits::default()).expect("query");
    assert_eq!(
        mails(&cache, &q).await,
        ["zoe.benoit@exemple-sante.mssante.fr"]
    );
    // Short words (below the trigram size) still match.
    let q = Query::free_text("Ana Lo", &QueryLimits::default()).expect("query");
    assert!(
        mails(&cache, &q)
            .await
            .contains(&"ana.lopes@exemple-sante.mssante.fr".to_owned())
    );
}

#[tokio::test]
async fn ex_2_1_3_5020_truncated_extraction_is_refused_and_old_cache_keeps_serving() {
    let (dir, cache, _) = loaded().await;
    let before = cache.status().expect("status");
    let full = std::fs::read(FIXTURE).expect("fixture");
    // A download cut in the middle of a row.
    let cut = write(dir.path(), "truncated.txt", &full[..full.len() * 2 / 3]);
    let err = refresh(&config(&dir.path().join("cache"), &cut), &cache)
        .await
        .expect_err("truncated file refused");
    assert!(
        matches!(&err, AnnuaireError::ExtractionRefused { reason, .. } if reason.contains("truncated")),
        "{err}"
    );
    let after = cache.status().expect("status");
    assert_eq!(after.refreshed_at, before.refreshed_at);
    assert_eq!(after.entries, FIXTURE_ROWS);
    let q = Query::free_text("Hélène", &QueryLimits::default()).expect("query");
    assert_eq!(mails(&cache, &q).await.len(), 1);
    // A process opening the cache afresh sees the old generation too.
    let reopened = Cache::open(&dir.path().join("cache"))
        .await
        .expect("reopen");
    assert_eq!(reopened.status().expect("status").entries, FIXTURE_ROWS);
}

#[tokio::test]
async fn ex_2_1_3_5020_malformed_or_shrunken_extraction_is_refused_whole() {
    let (dir, cache, _) = loaded().await;
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let cache_dir = dir.path().join("cache");
    let no_header: String = text.lines().skip(1).flat_map(|l| [l, "\n"]).collect();
    let garbage = "<html><body>502 Bad Gateway</body></html>\n".to_owned();
    let few: String = text.lines().take(6).flat_map(|l| [l, "\n"]).collect();
    for (name, data) in [("no-header", no_header), ("html", garbage), ("few", few)] {
        let path = write(dir.path(), name, data.as_bytes());
        let err = refresh(&config(&cache_dir, &path), &cache)
            .await
            .expect_err(name);
        match name {
            "few" => assert!(
                matches!(
                    err,
                    AnnuaireError::BelowSanityFloor {
                        new: 5,
                        previous: 30,
                        floor: 15
                    }
                ),
                "{err}"
            ),
            _ => assert!(
                matches!(err, AnnuaireError::ExtractionRefused { .. }),
                "{name}: {err}"
            ),
        }
        assert_eq!(
            cache.status().expect("status").entries,
            FIXTURE_ROWS,
            "{name}"
        );
    }
    // Only the good generation is on disk.
    let generations = std::fs::read_dir(&cache_dir)
        .expect("cache dir")
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.file_name().to_string_lossy().starts_with("gen-"))
        })
        .count();
    assert_eq!(generations, 1);
}

#[tokio::test]
async fn ex_2_1_3_5020_hostile_rows_are_rejected_counted_and_never_stop_the_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Column order is free: swap the first two columns in the header and every row.
    for line in &mut lines {
        let mut f: Vec<&str> = line.split('|').collect();
        f.swap(0, 1);
        *line = f.join("|");
    }
    let good_row = lines[1].clone();
    let mut hostile: Vec<Vec<u8>> = vec![
        b"only|three|fields".to_vec(),
        good_row.replace("Lefèvre", "Lef\u{1b}[31mvre").into_bytes(),
        good_row.replace("Lefèvre", &"x".repeat(600)).into_bytes(),
        good_row
            .replace("helene.lefevre@exemple-sante.mssante.fr", "not-an-address")
            .into_bytes(),
        good_row.replace("|PER|", "|XXX|").into_bytes(),
        good_row
            .replace("Lefèvre", "Lef\u{e8}vre|injected")
            .into_bytes(),
        [good_row.as_bytes(), &[0xff, 0xfe]].concat(),
        vec![b'|'; 20_000],
    ];
    let mut data = b"\xEF\xBB\xBF".to_vec();
    for line in &lines {
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    for row in &mut hostile {
        data.append(row);
        data.extend_from_slice(b"\r\n");
    }
    let path = write(dir.path(), "hostile.txt", &data);
    let config = config(&dir.path().join("cache"), &path);
    let cache = Cache::open(&config.cache_dir).await.expect("open");
    let report = refresh(&config, &cache).await.expect("refresh goes on");
    assert_eq!(report.status.entries, FIXTURE_ROWS);
    assert_eq!(report.status.rejected, 8);
    let lines_rejected: Vec<usize> = report.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines_rejected, (32..=39).collect::<Vec<_>>());
    assert!(
        report.rejected[1].reason.contains("control characters"),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[2].reason.contains("exceeds"),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[7].reason.contains("row of 20000 bytes"),
        "{:?}",
        report.rejected
    );
    let q = Query::free_text("Hélène Lefèvre", &QueryLimits::default()).expect("query");
    assert_eq!(mails(&cache, &q).await.len(), 1);
}

#[tokio::test]
async fn re_2_1_5030_new_generation_replaces_the_old_and_staleness_is_reported() {
    let (dir, cache, config) = loaded().await;
    let first = cache.status().expect("status");
    assert!(!first.is_stale(Duration::from_secs(3600)));
    assert!(first.is_stale(Duration::ZERO));
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let more = format!(
        "{text}PER|nouvelle.entree@exemple-sante.mssante.fr{}\n",
        "|".repeat(29)
    );
    let path = write(dir.path(), "more.txt", more.as_bytes());
    let status = refresh(&self::config(&config.cache_dir, &path), &cache)
        .await
        .expect("refresh")
        .status;
    assert_eq!(status.entries, FIXTURE_ROWS + 1);
    assert!(status.refreshed_at > first.refreshed_at);
    let q = Query::free_text("nouvelle.entree", &QueryLimits::default()).expect("query");
    assert_eq!(mails(&cache, &q).await.len(), 1);
}

#[tokio::test]
async fn search_text_is_bounded_and_fts_syntax_is_inert() {
    let (_dir, cache, _) = loaded().await;
    let limits = QueryLimits::default();
    assert!(Query::free_text("", &limits).is_err());
    assert!(Query::free_text(&"a".repeat(limits.max_value_bytes + 1), &limits).is_err());
    for hostile in [
        "\" OR \"",
        "* NOT x",
        "lef\"evre",
        "NEAR(a b)",
        "{nom} : x",
        "'; DROP TABLE entry; --",
    ] {
        let q = Query::free_text(hostile, &limits).expect("query");
        assert!(mails(&cache, &q).await.is_empty(), "{hostile}");
    }
    assert_eq!(cache.status().expect("status").entries, FIXTURE_ROWS);
}

#[tokio::test]
async fn ex_2_1_3_5020_refresh_loop_loads_the_cache_and_keeps_it_when_the_source_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "extraction.txt",
        &std::fs::read(FIXTURE).expect("fixture"),
    );
    let mut config = config(&dir.path().join("cache"), &file);
    config.refresh_every = Duration::from_millis(50);
    let cache = std::sync::Arc::new(Cache::open(&config.cache_dir).await.expect("open"));
    let task = tokio::spawn(passerelle_annuaire::refresh_loop(
        config,
        std::sync::Arc::clone(&cache),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.status().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no refresh in 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The source breaks: the following rounds fail and the cache keeps serving.
    std::fs::write(&file, b"garbage").expect("break the source");
    let first = cache.status().expect("status").refreshed_at;
    let broken_since = tokio::time::Instant::now();
    while broken_since.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.status().expect("status").entries, FIXTURE_ROWS);
    }
    assert!(cache.status().expect("status").refreshed_at >= first);
    task.abort();
}
