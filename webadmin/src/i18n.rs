//! The message catalogue: French by default, English by the `lang` cookie (set by the switch,
//! `?lang=en`) or the browser's `Accept-Language`.

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT_LANGUAGE, COOKIE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The switch (`?lang=`) wins, then the cookie, then the first of fr/en in Accept-Language.
    pub fn from_request(query_lang: Option<&str>, headers: &HeaderMap) -> Self {
        if let Some(lang) = query_lang.and_then(Lang::parse) {
            return lang;
        }
        if let Some(lang) = cookie(headers, "lang").and_then(|v| Lang::parse(&v)) {
            return lang;
        }
        let accept = headers
            .get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        for part in accept.split(',').take(16) {
            let tag = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let primary = tag.split('-').next().unwrap_or("");
            if let Some(lang) = Lang::parse(primary) {
                return lang;
            }
        }
        Lang::Fr
    }

    pub fn t(self, key: &str) -> &'static str {
        MESSAGES
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or("?", |(_, fr, en)| match self {
                Lang::Fr => fr,
                Lang::En => en,
            })
    }
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// (key, French, English).
pub const MESSAGES: &[(&str, &str, &str)] = &[
    (
        "app",
        "Passerelle — administration",
        "Passerelle — administration",
    ),
    ("nav.dashboard", "Tableau de bord", "Dashboard"),
    ("nav.mail", "Messagerie", "Mail"),
    ("nav.billing", "Facturation", "Billing"),
    ("nav.cards", "Cartes CPS", "CPS cards"),
    ("nav.keys", "Clés et certificats", "Keys and certificates"),
    ("nav.liste_blanche", "Liste blanche", "Liste blanche"),
    ("nav.annuaire", "Annuaire", "Directory"),
    ("nav.updates", "Mises à jour", "Updates"),
    ("nav.journal", "Journal", "Audit log"),
    ("logout", "Se déconnecter", "Log out"),
    ("login.title", "Connexion", "Log in"),
    ("login.user", "Identifiant", "User name"),
    ("login.password", "Mot de passe", "Password"),
    ("login.submit", "Se connecter", "Log in"),
    (
        "login.failed",
        "Identifiant ou mot de passe incorrect.",
        "Wrong user name or password.",
    ),
    (
        "login.locked",
        "Trop d'échecs : connexion bloquée. Réessayez dans",
        "Too many failures: login locked. Try again in",
    ),
    ("minutes", "min", "min"),
    ("setup.title", "Première mise en service", "First-run setup"),
    (
        "setup.intro",
        "Créez le compte administrateur et choisissez la configuration de l'appareil. Cette page n'est accessible qu'une seule fois.",
        "Create the administrator account and choose the appliance's configuration. This page is available only once.",
    ),
    (
        "setup.account",
        "Compte administrateur",
        "Administrator account",
    ),
    (
        "setup.password2",
        "Confirmer le mot de passe",
        "Confirm password",
    ),
    ("setup.profile", "Profil", "Profile"),
    (
        "profile.practice",
        "Cabinet (passerelle de cabinet)",
        "Practice gateway",
    ),
    (
        "profile.operator",
        "Connecteur d'opérateur MSSanté",
        "MSSanté operator connector",
    ),
    (
        "profile.oct",
        "OCT (organisme concentrateur technique)",
        "OCT (billing concentrator)",
    ),
    ("setup.network", "Réseau", "Network"),
    ("net.dhcp", "DHCP", "DHCP"),
    ("net.static", "Adresse fixe", "Static address"),
    (
        "net.address",
        "Adresse IPv4/préfixe (ex. 192.168.1.10/24)",
        "IPv4 address/prefix (e.g. 192.168.1.10/24)",
    ),
    ("net.gateway", "Passerelle par défaut", "Default gateway"),
    (
        "net.dns",
        "Serveurs DNS (séparés par des espaces)",
        "DNS servers (space separated)",
    ),
    (
        "setup.ntp",
        "Serveurs de temps NTP (obligatoire, EX_SDT_5010)",
        "NTP time servers (mandatory, EX_SDT_5010)",
    ),
    ("setup.pin", "Code PIN du jeton", "Token PIN"),
    (
        "setup.submit",
        "Terminer la mise en service",
        "Finish setup",
    ),
    (
        "err.required",
        "Ce champ est obligatoire.",
        "This field is required.",
    ),
    (
        "err.user",
        "3 à 32 caractères : lettres, chiffres, . _ -",
        "3 to 32 characters: letters, digits, . _ -",
    ),
    (
        "err.password",
        "Au moins 12 caractères.",
        "At least 12 characters.",
    ),
    (
        "err.password2",
        "Les deux mots de passe diffèrent.",
        "The passwords differ.",
    ),
    ("err.choice", "Choix invalide.", "Invalid choice."),
    ("err.address", "Adresse invalide.", "Invalid address."),
    (
        "err.ntp",
        "Au moins un serveur NTP valide (nom ou adresse), 8 au plus.",
        "At least one valid NTP server (name or address), at most 8.",
    ),
    ("err.pin", "4 à 32 chiffres.", "4 to 32 digits."),
    (
        "err.label",
        "1 à 32 caractères : lettres, chiffres, - _",
        "1 to 32 characters: letters, digits, - _",
    ),
    (
        "err.csrf",
        "Requête refusée : jeton anti-falsification absent ou invalide.",
        "Request refused: missing or invalid anti-forgery token.",
    ),
    ("err.upload", "Fichier refusé", "File refused"),
    (
        "err.service",
        "Le service a refusé l'opération",
        "The service refused the operation",
    ),
    ("dash.queues", "Files d'attente", "Queues"),
    ("dash.kind", "Flux", "Flow"),
    ("dash.depth", "En attente", "Pending"),
    ("dash.oldest", "Plus ancien", "Oldest"),
    ("dash.dead", "En échec définitif", "Failed permanently"),
    ("dash.chart", "Profondeur sur 24 h", "Depth over 24 h"),
    ("dash.no_items", "Aucun élément en file.", "No queued item."),
    (
        "dash.no_samples",
        "Pas encore de mesures sur 24 h.",
        "No 24 h samples yet.",
    ),
    ("dash.alerts", "Alertes", "Alerts"),
    ("dash.no_alerts", "Aucune alerte.", "No alert."),
    ("dash.live", "État en direct", "Live status"),
    (
        "dash.total",
        "Éléments en attente (toutes files)",
        "Pending items (all queues)",
    ),
    ("dash.link", "État des liens", "Link state"),
    (
        "alert.dead",
        "éléments en échec définitif dans la file",
        "permanently failed items in queue",
    ),
    (
        "alert.anchors",
        "Ancres de confiance : écart avec la liste épinglée",
        "Trust anchors: mismatch with the pinned list",
    ),
    (
        "alert.lb_stale",
        "Liste blanche périmée",
        "Liste blanche is stale",
    ),
    (
        "alert.lb_none",
        "Aucune liste blanche vérifiée : échanges MSSanté refusés",
        "No verified liste blanche: MSSanté exchanges refused",
    ),
    ("coming", "Cette page arrive avec", "This page arrives with"),
    (
        "coming.mail",
        "le connecteur de messagerie (issue #4) : BAL applicatives avec un certificat du jeton, BAL personnelles via Pro Santé Connect, test de connexion, état par BAL.",
        "the mail connector (issue #4): applicative BALs with a token certificate, personal BALs through Pro Santé Connect, connection test, per-BAL status.",
    ),
    (
        "coming.billing",
        "la facturation SESAM-Vitale (issue #6) : lots, états, ARL, renvoi.",
        "SESAM-Vitale billing (issue #6): lots, states, ARL, resend.",
    ),
    (
        "coming.cards",
        "le service des cartes CPS (issue #7) : lecteurs et cartes en direct, saisie du code PIN.",
        "the CPS card service (issue #7): readers and cards live, PIN entry.",
    ),
    (
        "coming.updates",
        "les mises à jour signées (issue #9) : version, partition, vérification, installation avec progression, historique.",
        "signed updates (issue #9): version, slot, check, install with progress, history.",
    ),
    (
        "coming.link",
        "les connecteurs (issues #4 et #6).",
        "the connectors (issues #4 and #6).",
    ),
    ("cards.reader", "Lecteur", "Reader"),
    ("cards.card", "Carte", "Card"),
    ("cards.holder", "Titulaire", "Holder"),
    ("cards.pin", "Code PIN", "PIN"),
    ("cards.none", "Aucun lecteur détecté.", "No reader found."),
    ("cards.empty", "vide", "empty"),
    ("cards.live", "Lecteurs / cartes", "Readers / cards"),
    ("kind.cps3", "CPS3 (contact)", "CPS3 (contact)"),
    (
        "kind.cps3cl",
        "CPS3 sans contact (pas de signature)",
        "CPS3 contactless (no signature)",
    ),
    ("kind.cps4", "CPS4", "CPS4"),
    ("kind.vitale", "Carte Vitale", "Vitale card"),
    ("kind.unknown", "Carte inconnue", "Unknown card"),
    ("pin.unknown", "non demandé", "not asked"),
    (
        "pin.not_verified",
        "non vérifié, essais restants :",
        "not verified, tries left:",
    ),
    ("pin.verified", "vérifié", "verified"),
    ("pin.blocked", "bloqué", "blocked"),
    ("pin.title", "Saisie du code PIN", "PIN entry"),
    ("pin.submit", "Présenter le code PIN", "Present the PIN"),
    (
        "pin.confirm_last_try",
        "Je confirme : il ne reste qu'un essai, une erreur bloque la carte",
        "I confirm: one try left, a mistake blocks the card",
    ),
    (
        "pin.confirm_required",
        "Confirmation requise, il ne reste qu'un essai : le code PIN n'a pas été présenté.",
        "Confirmation required, one try left: the PIN was not presented.",
    ),
    (
        "err.pin_format",
        "Le code PIN compte de 4 à 8 chiffres.",
        "A PIN is 4 to 8 digits.",
    ),
    ("pin.verified_notice", "Code PIN vérifié.", "PIN verified."),
    (
        "pin.not_verified_notice",
        "Code PIN non vérifié.",
        "PIN not verified.",
    ),
    (
        "pin.wrong",
        "Code PIN erroné, essais restants :",
        "Wrong PIN, tries left:",
    ),
    (
        "pin.blocked_notice",
        "Code PIN bloqué : la carte doit être débloquée par son émetteur.",
        "PIN blocked: the card must be unblocked by its issuer.",
    ),
    (
        "pin.card_changed",
        "La carte a changé depuis l'affichage de la page : le code PIN n'a pas été présenté.",
        "The card changed since the page was shown: the PIN was not presented.",
    ),
    (
        "alert.cert_expired",
        "Certificat expiré pour la clé",
        "Certificate expired for key",
    ),
    (
        "alert.cert_expiring",
        "Certificat bientôt expiré (moins de 30 jours) pour la clé",
        "Certificate expiring within 30 days for key",
    ),
    (
        "not_configured",
        "Service non configuré sur cet appareil.",
        "Service not configured on this appliance.",
    ),
    ("keys.title", "Clés du jeton", "Token keys"),
    ("keys.label", "Libellé", "Label"),
    ("keys.algorithm", "Algorithme", "Algorithm"),
    ("keys.protection", "Protection", "Protection"),
    ("keys.certificate", "Certificat", "Certificate"),
    ("keys.none", "Aucune clé.", "No key."),
    ("keys.generate", "Générer une clé", "Generate a key"),
    ("keys.generated", "Clé générée", "Key generated"),
    ("keys.csr", "Télécharger une CSR", "Download a CSR"),
    ("keys.csr_cn", "Nom (CN)", "Name (CN)"),
    ("keys.csr_o", "Organisation (O)", "Organisation (O)"),
    (
        "keys.import",
        "Importer le certificat",
        "Import the certificate",
    ),
    (
        "keys.imported",
        "Certificat importé",
        "Certificate imported",
    ),
    (
        "keys.file",
        "Fichier (PEM ou DER, 64 Kio au plus)",
        "File (PEM or DER, at most 64 KiB)",
    ),
    (
        "keys.anchors",
        "Ancres de confiance épinglées",
        "Pinned trust anchors",
    ),
    (
        "keys.fingerprint",
        "Empreinte SHA-256",
        "SHA-256 fingerprint",
    ),
    ("keys.anchor_ok", "conforme", "matches"),
    ("keys.anchor_bad", "non conforme", "does not match"),
    ("keys.anchor_missing", "absente", "missing"),
    ("keys.anchor_extra", "non épinglée", "not pinned"),
    ("keys.anchor_unreadable", "illisible", "unreadable"),
    ("lb.version", "Empreinte du fichier", "File digest"),
    ("lb.fetched", "Téléchargée le", "Downloaded at"),
    ("lb.verified", "Vérifiée le", "Verified at"),
    ("lb.domains", "Domaines", "Domains"),
    ("lb.signer", "Signataire", "Signer"),
    ("lb.result", "Vérification", "Verification"),
    ("lb.ok", "signature vérifiée", "signature verified"),
    (
        "lb.stale",
        "signature vérifiée, liste périmée",
        "signature verified, list is stale",
    ),
    ("ann.search", "Rechercher", "Search"),
    (
        "ann.query",
        "Nom, adresse BAL, organisation…",
        "Name, BAL address, organisation…",
    ),
    ("ann.none", "Aucun résultat.", "No result."),
    (
        "ann.truncated",
        "Résultats tronqués : précisez la recherche.",
        "Results truncated: refine the search.",
    ),
    ("journal.at", "Date", "Date"),
    ("journal.actor", "Acteur", "Actor"),
    ("journal.address", "Adresse", "Address"),
    ("journal.action", "Action", "Action"),
    ("journal.detail", "Détail", "Detail"),
    ("journal.outcome", "Résultat", "Outcome"),
    ("journal.since", "Depuis (AAAA-MM-JJ)", "Since (YYYY-MM-DD)"),
    ("journal.filter", "Filtrer", "Filter"),
    (
        "err.date",
        "Date attendue au format AAAA-MM-JJ.",
        "Date expected as YYYY-MM-DD.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_keys_are_unique() {
        for (i, (k, _, _)) in MESSAGES.iter().enumerate() {
            assert!(
                MESSAGES[i + 1..].iter().all(|(other, _, _)| other != k),
                "duplicate key {k}"
            );
        }
    }

    #[test]
    fn accept_language_picks_english_and_defaults_to_french() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::from_request(None, &h), Lang::Fr);
        h.insert(ACCEPT_LANGUAGE, "en-GB,en;q=0.9".parse().expect("header"));
        assert_eq!(Lang::from_request(None, &h), Lang::En);
        assert_eq!(Lang::from_request(Some("fr"), &h), Lang::Fr);
        h.insert(COOKIE, "lang=fr".parse().expect("header"));
        assert_eq!(Lang::from_request(None, &h), Lang::Fr);
    }
}
