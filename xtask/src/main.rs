//! Chores as code.
//!
//! `xtask requirements <spec-dir> <out.tsv>` extracts every requirement ID from the English
//! digests of the specifications (`shared/spec/*.md`) into `conformance/requirements.tsv`,
//! which is committed so the report does not depend on files outside the repository.
//!
//! `xtask conformance <junit.xml> <out.md>` reads nextest's JUnit report and writes the
//! conformance report: for every requirement, the tests whose names carry its ID and whether
//! they passed. Naming rule (README): the ID in lowercase, dots and spaces as underscores,
//! at the start of the test name or after an underscore (`EX_LPS_1200` → `ex_lps_1200_…`,
//! `EX_3.1_5030` → `ex_3_1_5030_…`, SESAM-Vitale `[CE2]` → `ce2_…`, Réf. #2 `Req 1.10` →
//! `ref2_1_10_…`, derived test case `Q-01` → `q_01_…`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["requirements", spec_dir, out] => requirements(Path::new(spec_dir), Path::new(out)),
        ["conformance", junit, out] => conformance(Path::new(junit), Path::new(out)),
        _ => bail!(
            "usage: xtask requirements <spec-dir> <out.tsv> | xtask conformance <junit.xml> <out.md>"
        ),
    }
}

/// One requirement: its ID as written, the test-name prefix that proves it, where it comes
/// from, and a one-line description.
struct Requirement {
    id: String,
    prefix: String,
    source: String,
    description: String,
}

fn test_prefix(id: &str) -> String {
    id.trim_matches(|c| c == '[' || c == ']')
        .chars()
        .map(|c| match c {
            '.' | ' ' | '-' | '#' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect::<String>()
        .replace("__", "_")
}

fn requirements(spec_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut found: BTreeMap<String, Requirement> = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(spec_dir)
        .with_context(|| format!("reading {}", spec_dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    for path in files {
        let source = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            for (id, description) in ids_in_line(line) {
                let entry = found.entry(id.clone()).or_insert_with(|| Requirement {
                    prefix: test_prefix(&id),
                    id,
                    source: source.clone(),
                    description: String::new(),
                });
                // A synthesis-table row describes the ID best; otherwise keep the first mention.
                if entry.description.is_empty() || description.1 {
                    entry.description.clone_from(&description.0);
                }
            }
        }
    }
    let mut tsv = String::from("# id\ttest_prefix\tsource\tdescription\n");
    for req in found.values() {
        let _ = writeln!(
            tsv,
            "{}\t{}\t{}\t{}",
            req.id, req.prefix, req.source, req.description
        );
    }
    std::fs::write(out, tsv).with_context(|| format!("writing {}", out.display()))?;
    println!("{} requirements written to {}", found.len(), out.display());
    Ok(())
}

/// The IDs a line of a digest mentions, each with a description and whether that description
/// comes from a table row (authoritative) rather than prose.
fn ids_in_line(line: &str) -> Vec<(String, (String, bool))> {
    let mut ids = Vec::new();
    let trimmed = line.trim();
    let clean = |s: &str| {
        let s: String = s.replace("**", "").replace('\t', " ");
        let s = s
            .trim()
            .trim_start_matches(['-', '*', ' ', ':', '—'])
            .trim();
        s.chars().take(160).collect::<String>()
    };
    // Synthesis-table rows: | EX_3.2_5020 | 6.7.2 | paraphrase | O |
    if let Some(rest) = trimmed.strip_prefix('|') {
        let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
        if cells.len() >= 3 && is_spec_id(cells[0]) {
            ids.push((cells[0].to_owned(), (clean(cells[2]), true)));
            return ids;
        }
    }
    for token in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        let token = token.trim_end_matches('.');
        if is_spec_id(token) {
            ids.push((token.to_owned(), (clean(line), false)));
        }
    }
    // SESAM-Vitale rule identifiers.
    for rule in ["[CE1]", "[CE2]", "[CP1]", "[CP2]"] {
        if line.contains(rule) {
            ids.push((rule.to_owned(), (clean(line), false)));
        }
    }
    // Réf. #2 (seed 002) requirements: **Req 1.10 (…):** …
    if let Some(rest) = trimmed.strip_prefix("**Req ") {
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if !number.is_empty() {
            ids.push((format!("Ref2 {number}"), (clean(trimmed), true)));
        }
    }
    // Derived test cases of the digests: - **Q-01** — …
    if let Some(rest) = trimmed.strip_prefix("- **")
        && let Some((case, tail)) = rest.split_once("**")
        && is_derived_case(case)
    {
        ids.push((case.to_owned(), (clean(tail), true)));
    }
    ids
}

/// `EX_LPS_1200`, `RE_2.1_5030`, `EX_1.1.1_5010`: prefix, a group of letters/digits/dots,
/// and a four-digit number.
fn is_spec_id(token: &str) -> bool {
    let Some(rest) = token
        .strip_prefix("EX_")
        .or_else(|| token.strip_prefix("RE_"))
    else {
        return false;
    };
    let Some((group, number)) = rest.rsplit_once('_') else {
        return false;
    };
    !group.is_empty()
        && group
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.')
        && number.len() == 4
        && number.chars().all(|c| c.is_ascii_digit())
}

fn is_derived_case(case: &str) -> bool {
    case.split_once('-').is_some_and(|(letters, digits)| {
        (1..=4).contains(&letters.len())
            && letters.chars().all(|c| c.is_ascii_uppercase())
            && digits.len() == 2
            && digits.chars().all(|c| c.is_ascii_digit())
    })
}

struct TestResult {
    name: String,
    passed: bool,
}

fn conformance(junit: &Path, out: &Path) -> anyhow::Result<()> {
    let tsv_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/requirements.tsv");
    let tsv = std::fs::read_to_string(&tsv_path)
        .with_context(|| format!("reading {}", tsv_path.display()))?;
    let reqs: Vec<Requirement> = tsv
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let mut cells = line.splitn(4, '\t');
            Some(Requirement {
                id: cells.next()?.to_owned(),
                prefix: cells.next()?.to_owned(),
                source: cells.next()?.to_owned(),
                description: cells.next().unwrap_or_default().to_owned(),
            })
        })
        .collect();

    let xml = std::fs::read_to_string(junit)
        .with_context(|| format!("reading the JUnit report {}", junit.display()))?;
    let doc = roxmltree::Document::parse(&xml).context("parsing the JUnit report")?;
    let tests: Vec<TestResult> = doc
        .descendants()
        .filter(|node| node.has_tag_name("testcase"))
        .map(|case| TestResult {
            name: format!(
                "{}::{}",
                case.attribute("classname").unwrap_or_default(),
                case.attribute("name").unwrap_or_default()
            ),
            passed: !case.children().any(|child| {
                child.has_tag_name("failure")
                    || child.has_tag_name("error")
                    || child.has_tag_name("skipped")
            }),
        })
        .collect();

    let mut covered = String::new();
    let mut uncovered = Vec::new();
    let (mut proven, mut failing) = (0usize, 0usize);
    for req in &reqs {
        let matching: Vec<&TestResult> = tests
            .iter()
            .filter(|test| names_requirement(&test.name, &req.prefix))
            .collect();
        if matching.is_empty() {
            uncovered.push(req.id.as_str());
            continue;
        }
        let all_pass = matching.iter().all(|test| test.passed);
        if all_pass {
            proven += 1;
        } else {
            failing += 1;
        }
        let names: Vec<String> = matching
            .iter()
            .map(|test| {
                let mark = if test.passed { "pass" } else { "**FAIL**" };
                format!("`{}` ({mark})", test.name)
            })
            .collect();
        let _ = writeln!(
            covered,
            "| {} | {} | {} | {} | {} |",
            req.id,
            req.description.replace('|', "\\|"),
            req.source,
            names.join("<br>"),
            if all_pass { "pass" } else { "**FAIL**" }
        );
    }

    let mut report = String::new();
    let _ = writeln!(report, "# Conformance report\n");
    let _ = writeln!(
        report,
        "From `{}`: {} tests run. {} of {} requirements are named by tests: {proven} pass, \
         {failing} fail.\n",
        junit.display(),
        tests.len(),
        proven + failing,
        reqs.len()
    );
    let _ = writeln!(
        report,
        "| Requirement | Description | Source | Tests | Result |\n|---|---|---|---|---|"
    );
    report.push_str(&covered);
    let _ = writeln!(
        report,
        "\n## Not yet named by any test ({})\n\n{}",
        uncovered.len(),
        uncovered.join(", ")
    );
    std::fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "conformance: {proven} requirements proven, {failing} failing, {} not yet covered -> {}",
        uncovered.len(),
        out.display()
    );
    Ok(())
}

/// True when the last segment of a test path names the requirement: the prefix at its start
/// or after an underscore, followed by an underscore or the end.
fn names_requirement(test_path: &str, prefix: &str) -> bool {
    let name = test_path.rsplit("::").next().unwrap_or(test_path);
    name.match_indices(prefix).any(|(at, _)| {
        let before_ok = at == 0 || name.as_bytes()[at - 1] == b'_';
        let after = at + prefix.len();
        let after_ok = after == name.len() || name.as_bytes()[after] == b'_';
        before_ok && after_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_naming_rule() {
        assert_eq!(test_prefix("EX_LPS_1200"), "ex_lps_1200");
        assert_eq!(test_prefix("EX_3.1_5030"), "ex_3_1_5030");
        assert_eq!(test_prefix("[CE2]"), "ce2");
        assert_eq!(test_prefix("Ref2 1.10"), "ref2_1_10");
        assert_eq!(test_prefix("Q-01"), "q_01");
    }

    #[test]
    fn test_names_match_on_word_boundaries_only() {
        assert!(names_requirement(
            "x::ex_lps_1200_applicative_bal",
            "ex_lps_1200"
        ));
        assert!(names_requirement(
            "x::tls::ex_ope_5020_ex_ope_5040_rogue",
            "ex_ope_5040"
        ));
        assert!(names_requirement("ce2_no_crl_blocks_sending", "ce2"));
        assert!(!names_requirement("x::price2_is_not_ce2x", "ce2"));
        assert!(!names_requirement("x::ex_lps_12000", "ex_lps_1200"));
    }

    #[test]
    fn ids_are_recognised_in_prose_and_tables() {
        assert!(is_spec_id("EX_1.1.1_5010"));
        assert!(is_spec_id("RE_OPE_5040"));
        assert!(!is_spec_id("EX_LPS_120"));
        assert!(!is_spec_id("EXTRA_1"));
        let row = ids_in_line("| EX_3.2_5020 | 6.7.2 | Emission over SMTP in mutual TLS | O |");
        assert_eq!(row[0].0, "EX_3.2_5020");
        assert_eq!(row[0].1.0, "Emission over SMTP in mutual TLS");
        let case = ids_in_line("- **Q-01** — Power loss during enqueue → no corruption");
        assert_eq!(case[0].0, "Q-01");
    }
}
