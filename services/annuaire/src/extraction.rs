//! The public extraction of MSSanté addresses ("extraction_correspondance_mssante", a
//! pipe-delimited UTF-8 text file with one header row).
//!
//! Column layout: the 31 columns of the file as published on data.gouv, recovered from the
//! projects that parse it (cardio75/adressesmssante `creer_bd_mssante.py` and test fixtures
//! of other consumers); they are the Tableau 32 attributes of Réf. #1 with French labels.
//! Columns are found by header name (accent-, case- and space-insensitive), so their order
//! may change. Only the columns in [`REQUIRED_COLUMNS`] must be present.
//!
//! Limits: the file, each row and each field have a maximum size. A hostile row (wrong
//! field count, oversize, control characters, not UTF-8, no plausible BAL address or type) is
//! rejected, counted and reported with its line number, and never stops the load. A file
//! whose *structure* is wrong (no header, a required column missing, last line truncated,
//! no valid row) is refused as a whole, and the previous cache keeps serving.

use std::collections::HashMap;

use crate::entry::{Entry, fold};
use crate::error::{AnnuaireError, Result};

/// The header of the published file, in its published order.
pub const COLUMNS: [&str; 31] = [
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
];

/// Columns without which the file is not an extraction of MSSanté addresses.
pub const REQUIRED_COLUMNS: [&str; 4] = [
    "Type de BAL",
    "Adresse BAL",
    "Nom d'exercice",
    "Raison Sociale structure BAL",
];

/// The BAL types of TRE_R256-TypeMessagerie.
pub const BAL_TYPES: [&str; 4] = ["PER", "ORG", "APP", "CAB"];

/// Size limits of the parser.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_row_bytes: usize,
    pub max_field_bytes: usize,
    /// Rejected rows kept with their reason in the report (all are counted).
    pub max_reported_rejections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // The national file is a few hundred MB; 1 GiB leaves room without being unbounded.
            max_file_bytes: 1 << 30,
            max_row_bytes: 8 * 1024,
            // The widest column of Tableau 32 is X(256).
            max_field_bytes: 512,
            max_reported_rejections: 100,
        }
    }
}

/// One row that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    pub reason: String,
}

/// The outcome of parsing a whole file.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    /// Data rows read (valid and rejected).
    pub rows: usize,
    pub rejected_count: usize,
    /// The first [`Limits::max_reported_rejections`] rejected rows.
    pub rejected: Vec<Rejected>,
}

/// Parse a whole extraction file. `source_name` names the file or URL in errors.
pub fn parse(source_name: &str, data: &[u8], limits: &Limits) -> Result<Parsed> {
    let refuse = |reason: String| AnnuaireError::ExtractionRefused {
        source_name: source_name.to_owned(),
        reason,
    };
    if data.len() as u64 > limits.max_file_bytes {
        return Err(refuse(format!(
            "{} bytes exceeds the limit of {}",
            data.len(),
            limits.max_file_bytes
        )));
    }
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    if data.is_empty() {
        return Err(refuse("empty file".to_owned()));
    }
    // A download cut short ends mid-row: the published file always ends with a newline.
    if !data.ends_with(b"\n") {
        return Err(refuse(
            "last line is not terminated: the file is truncated".to_owned(),
        ));
    }
    let mut lines = data[..data.len() - 1].split(|b| *b == b'\n');
    let header = lines.next().unwrap_or_default();
    let header = std::str::from_utf8(strip_cr(header))
        .map_err(|_| refuse("header is not UTF-8".to_owned()))?;
    if header.len() > limits.max_row_bytes {
        return Err(refuse("header row exceeds the row size limit".to_owned()));
    }
    let names: Vec<&str> = header.split('|').map(str::trim).collect();
    let index: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (header_key(n), i))
        .collect();
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .filter(|c| !index.contains_key(&header_key(c)))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "header lacks the column(s) {missing:?}: not an extraction of MSSanté addresses"
        )));
    }
    let col = |name: &str| index.get(&header_key(name)).copied();
    let layout = Layout {
        bal_type: col("Type de BAL"),
        mail: col("Adresse BAL"),
        nom: col("Nom d'exercice"),
        prenom: col("Prénom d'exercice"),
        profession: col("Libellé Profession"),
        specialite: col("Libellé savoir-faire"),
        raison_sociale: col("Raison Sociale structure BAL"),
        enseigne: col("Enseigne commerciale structure BAL"),
        ville: col("L6LIGNEACHEMINEMENT structure BAL"),
        code_postal: col("Code postal structure BAL"),
    };

    let mut parsed = Parsed {
        entries: Vec::new(),
        rows: 0,
        rejected_count: 0,
        rejected: Vec::new(),
    };
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let line = strip_cr(line);
        if line.is_empty() {
            continue;
        }
        parsed.rows += 1;
        match parse_row(line, &names, &layout, limits) {
            Ok(entry) => parsed.entries.push(entry),
            Err(reason) => {
                parsed.rejected_count += 1;
                tracing::debug!(source = source_name, line = line_no, %reason, "extraction row rejected");
                if parsed.rejected.len() < limits.max_reported_rejections {
                    parsed.rejected.push(Rejected {
                        line: line_no,
                        reason,
                    });
                }
            }
        }
    }
    if parsed.entries.is_empty() {
        return Err(refuse(format!(
            "no valid row ({} read, {} rejected)",
            parsed.rows, parsed.rejected_count
        )));
    }
    Ok(parsed)
}

struct Layout {
    bal_type: Option<usize>,
    mail: Option<usize>,
    nom: Option<usize>,
    prenom: Option<usize>,
    profession: Option<usize>,
    specialite: Option<usize>,
    raison_sociale: Option<usize>,
    enseigne: Option<usize>,
    ville: Option<usize>,
    code_postal: Option<usize>,
}

fn parse_row(
    line: &[u8],
    names: &[&str],
    layout: &Layout,
    limits: &Limits,
) -> Result<Entry, String> {
    if line.len() > limits.max_row_bytes {
        return Err(format!(
            "row of {} bytes exceeds the limit of {}",
            line.len(),
            limits.max_row_bytes
        ));
    }
    let line = std::str::from_utf8(line).map_err(|_| "row is not UTF-8".to_owned())?;
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() != names.len() {
        return Err(format!(
            "{} fields where the header has {}",
            fields.len(),
            names.len()
        ));
    }
    for (name, value) in names.iter().zip(&fields) {
        if value.len() > limits.max_field_bytes {
            return Err(format!(
                "field {name:?} exceeds {} bytes",
                limits.max_field_bytes
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("field {name:?} contains control characters"));
        }
    }
    let get = |i: Option<usize>| i.map_or("", |i| fields[i].trim()).to_owned();
    let mail = get(layout.mail);
    if !plausible_address(&mail) {
        return Err(format!("{mail:?} is not a BAL address"));
    }
    let bal_type = get(layout.bal_type);
    if !BAL_TYPES.contains(&bal_type.as_str()) {
        return Err(format!("BAL type {bal_type:?} is not one of {BAL_TYPES:?}"));
    }
    let mut organisation = get(layout.raison_sociale);
    if organisation.is_empty() {
        organisation = get(layout.enseigne);
    }
    let raw = names
        .iter()
        .zip(&fields)
        .map(|(n, v)| ((*n).to_owned(), serde_json::Value::from(*v)))
        .collect::<serde_json::Map<_, _>>();
    Ok(Entry {
        mail,
        bal_type,
        nom: get(layout.nom),
        prenom: get(layout.prenom),
        profession: get(layout.profession),
        specialite: get(layout.specialite),
        organisation,
        ville: get(layout.ville),
        code_postal: get(layout.code_postal),
        raw: serde_json::Value::Object(raw),
    })
}

/// One `@`, non-empty local part and domain with a dot, no spaces, at most X(256).
pub(crate) fn plausible_address(mail: &str) -> bool {
    let Some((local, domain)) = mail.split_once('@') else {
        return false;
    };
    mail.len() <= 256
        && !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !mail.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn header_key(name: &str) -> String {
    fold(name).chars().filter(|c| c.is_alphanumeric()).collect()
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Synthetic extraction with `rows` entries in the published column layout, for tests and
/// the A1 bench (deterministic: row `i` always yields the same entry).
pub fn synthetic(rows: usize) -> String {
    const NOMS: [&str; 8] = [
        "Lefèvre",
        "Müller",
        "Benoît",
        "Garçon",
        "Dupré",
        "Lemaître",
        "Ollivier",
        "Zébulon",
    ];
    const PRENOMS: [&str; 8] = [
        "Hélène",
        "Zoé",
        "Jérôme",
        "Anaïs",
        "François",
        "Maëlle",
        "Noël",
        "Cécile",
    ];
    const VILLES: [(&str, &str); 6] = [
        ("42000", "SAINT-ÉTIENNE"),
        ("75012", "PARIS"),
        ("69003", "LYON"),
        ("13005", "MARSEILLE"),
        ("97400", "SAINT-DENIS"),
        ("29200", "BREST"),
    ];
    const PROFESSIONS: [(&str, &str); 4] = [
        ("Médecin", "Cardiologie"),
        ("Infirmier", ""),
        ("Chirurgien-Dentiste", "Orthopédie dento-faciale"),
        ("Sage-Femme", ""),
    ];
    let mut out = COLUMNS.join("|");
    out.push('\n');
    for i in 0..rows {
        let nom = NOMS[i % NOMS.len()];
        let prenom = PRENOMS[(i / NOMS.len()) % PRENOMS.len()];
        let (cp, ville) = VILLES[i % VILLES.len()];
        let (profession, specialite) = PROFESSIONS[i % PROFESSIONS.len()];
        let mut f = vec![String::new(); COLUMNS.len()];
        "PER".clone_into(&mut f[0]);
        f[1] = format!("{}.{}{i}@synthetique.mssante.fr", fold(prenom), fold(nom)).replace(' ', "");
        f[3] = format!("8{i:010}");
        f[9] = format!("{nom}{i}");
        prenom.clone_into(&mut f[10]);
        profession.clone_into(&mut f[14]);
        specialite.clone_into(&mut f[16]);
        f[18] = format!("Cabinet {nom}");
        f[27] = format!("{cp} {ville}");
        cp.clone_into(&mut f[28]);
        cp[..2].clone_into(&mut f[29]);
        "France".clone_into(&mut f[30]);
        out.push_str(&f.join("|"));
        out.push('\n');
    }
    out
}
