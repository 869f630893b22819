//! One directory entry (one BAL) and the accent/case folding used for matching.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;

/// One MSSanté mailbox as the cache serves it. The searchable fields are copies of the
/// source's values, never rewritten (RE_2.1_5030: the Annuaire's data is indexed, not
/// altered); `raw` keeps the whole source record as received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The BAL address.
    pub mail: String,
    /// BAL type as declared: PER, ORG, APP or CAB.
    pub bal_type: String,
    /// Practising surname (nom d'exercice).
    pub nom: String,
    /// Practising first name (prénom d'exercice).
    pub prenom: String,
    /// Profession label.
    pub profession: String,
    /// Speciality (savoir-faire) label.
    pub specialite: String,
    /// Structure name (raison sociale, else enseigne).
    pub organisation: String,
    /// Town: the acheminement line (L6) of the structure's address.
    pub ville: String,
    /// Postcode of the structure.
    pub code_postal: String,
    /// The whole source record (column name → value, or the FHIR resource), unaltered.
    #[serde(default)]
    pub raw: serde_json::Value,
}

/// The searchable fields, in a fixed order shared by the SQL schema and the query layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Mail,
    BalType,
    Nom,
    Prenom,
    Profession,
    Specialite,
    Organisation,
    Ville,
    CodePostal,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::Mail,
        Field::BalType,
        Field::Nom,
        Field::Prenom,
        Field::Profession,
        Field::Specialite,
        Field::Organisation,
        Field::Ville,
        Field::CodePostal,
    ];

    /// SQL column name; a fixed identifier, never built from input.
    pub fn column(self) -> &'static str {
        match self {
            Field::Mail => "mail",
            Field::BalType => "bal_type",
            Field::Nom => "nom",
            Field::Prenom => "prenom",
            Field::Profession => "profession",
            Field::Specialite => "specialite",
            Field::Organisation => "organisation",
            Field::Ville => "ville",
            Field::CodePostal => "code_postal",
        }
    }
}

impl Entry {
    pub fn field(&self, field: Field) -> &str {
        match field {
            Field::Mail => &self.mail,
            Field::BalType => &self.bal_type,
            Field::Nom => &self.nom,
            Field::Prenom => &self.prenom,
            Field::Profession => &self.profession,
            Field::Specialite => &self.specialite,
            Field::Organisation => &self.organisation,
            Field::Ville => &self.ville,
            Field::CodePostal => &self.code_postal,
        }
    }

    /// The display name: "Prénom Nom" for a person, the structure for an organisational BAL.
    pub fn common_name(&self) -> String {
        let person = format!("{} {}", self.prenom, self.nom);
        let person = person.trim();
        if person.is_empty() {
            if self.organisation.is_empty() {
                self.mail.clone()
            } else {
                self.organisation.clone()
            }
        } else {
            person.to_owned()
        }
    }
}

/// Accent- and case-insensitive form used for comparisons only (never stored in place of
/// the original): NFD, combining marks dropped, lowercase.
pub fn fold(text: &str) -> String {
    text.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn fold_removes_accents_and_case() {
        assert_eq!(fold("Hélène ZOÉ Saint-Étienne"), "helene zoe saint-etienne");
        assert_eq!(fold("Çà"), "ca");
    }
}
