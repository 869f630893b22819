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
        "mail.no_service",
        "Le service de messagerie du cabinet n'est pas configuré sur cet appareil ; seules les sessions Pro Santé Connect sont affichées.",
        "The practice mail service is not configured on this appliance; only the Pro Santé Connect sessions are shown.",
    ),
    ("mail.bals", "Boîtes aux lettres (BAL)", "Mailboxes (BALs)"),
    (
        "mail.not_started",
        "Le service de messagerie n'a pas encore démarré.",
        "The mail service has not started yet.",
    ),
    ("mail.bal", "BAL", "BAL"),
    ("mail.kind", "Type", "Kind"),
    ("mail.state", "État", "State"),
    (
        "mail.kind_app",
        "applicative (certificat)",
        "applicative (certificate)",
    ),
    (
        "mail.kind_per",
        "personnelle (Pro Santé Connect)",
        "personal (Pro Santé Connect)",
    ),
    (
        "mail.kind_org",
        "organisationnelle (Pro Santé Connect)",
        "organisational (Pro Santé Connect)",
    ),
    ("mail.online", "connectée", "connected"),
    (
        "mail.offline",
        "hors ligne : serveur de l'opérateur injoignable, messages conservés",
        "offline: operator unreachable, mail kept",
    ),
    (
        "mail.reauth",
        "ré-authentification requise",
        "re-authentication required",
    ),
    ("mail.test", "Tester la connexion", "Test the connection"),
    (
        "mail.psc_sign_in",
        "Se connecter avec Pro Santé Connect",
        "Sign in with Pro Santé Connect",
    ),
    (
        "mail.next_restart",
        "appliqué au prochain redémarrage",
        "applied on the next restart",
    ),
    (
        "mail.psc_not_configured",
        "Connexion Pro Santé Connect indisponible : l'adresse d'autorisation PSC n'est pas configurée ([webadmin] psc_authorize_url).",
        "Pro Santé Connect sign-in unavailable: the PSC authorize URL is not configured ([webadmin] psc_authorize_url).",
    ),
    (
        "mail.add",
        "Ajouter une BAL applicative",
        "Add an applicative BAL",
    ),
    (
        "mail.add_unavailable",
        "Ajout impossible : le service de messagerie n'a pas de fichier de BAL ajoutées.",
        "Cannot add: the mail service has no file for added BALs.",
    ),
    (
        "mail.add_no_key",
        "Ajout impossible : aucune clé du jeton n'a de certificat (importez le certificat ORG AUTH_CLI dans Clés et certificats).",
        "Cannot add: no token key has a certificate (import the ORG AUTH_CLI certificate in Keys and certificates).",
    ),
    (
        "mail.add_intro",
        "Une BAL applicative s'authentifie avec un certificat ORG AUTH_CLI du jeton et le mot de passe fourni par l'opérateur. Elle est appliquée au prochain redémarrage.",
        "An applicative BAL authenticates with an ORG AUTH_CLI certificate in the token and the password the operator gave. It is applied on the next restart.",
    ),
    (
        "mail.name",
        "Nom court (a-z, 0-9, - _)",
        "Short name (a-z, 0-9, - _)",
    ),
    ("mail.address", "Adresse de la BAL", "BAL address"),
    (
        "mail.key",
        "Clé et certificat du jeton",
        "Token key and certificate",
    ),
    (
        "mail.password",
        "Mot de passe de la BAL (AUTH PLAIN)",
        "BAL password (AUTH PLAIN)",
    ),
    (
        "mail.host",
        "Serveur de soumission (vide : configuration automatique)",
        "Submission server (empty: autoconfiguration)",
    ),
    ("mail.port", "Port", "Port"),
    (
        "mail.accounts",
        "Comptes locaux autorisés à envoyer",
        "Local accounts allowed to send",
    ),
    ("mail.add_submit", "Ajouter la BAL", "Add the BAL"),
    ("mail.added", "BAL ajoutée", "BAL added"),
    (
        "mail.psc_sessions",
        "Sessions Pro Santé Connect",
        "Pro Santé Connect sessions",
    ),
    ("mail.psc_none", "aucune session", "no session"),
    ("mail.psc_active", "session active", "session active"),
    ("mail.unknown_bal", "BAL inconnue.", "Unknown BAL."),
    ("mail.test_ok", "Connexion réussie à", "Connected to"),
    (
        "mail.test_ok_auth",
        "STARTTLS puis authentification",
        "STARTTLS then authentication",
    ),
    ("mail.test_ok_in", "acceptée en", "accepted in"),
    (
        "mail.test_auth_refused",
        "Échec : authentification refusée par le serveur de l'opérateur :",
        "Failed: the operator's server refused the authentication:",
    ),
    (
        "mail.test_unreachable",
        "Échec : serveur de l'opérateur injoignable :",
        "Failed: the operator's server is unreachable:",
    ),
    (
        "mail.redirecting",
        "Redirection vers Pro Santé Connect…",
        "Redirecting to Pro Santé Connect…",
    ),
    ("mail.continue", "Continuer", "Continue"),
    (
        "mail.psc_busy",
        "Trop de connexions Pro Santé Connect en cours ; réessayez dans quelques minutes.",
        "Too many Pro Santé Connect sign-ins in progress; try again in a few minutes.",
    ),
    (
        "mail.psc_bad_callback",
        "Retour de Pro Santé Connect illisible.",
        "Unreadable return from Pro Santé Connect.",
    ),
    (
        "mail.psc_bad_state",
        "Connexion Pro Santé Connect inconnue ou expirée : recommencez depuis la page Messagerie.",
        "Unknown or expired Pro Santé Connect sign-in: start again from the Mail page.",
    ),
    (
        "mail.psc_refused",
        "Connexion Pro Santé Connect refusée :",
        "Pro Santé Connect sign-in refused:",
    ),
    (
        "mail.psc_done",
        "Connexion Pro Santé Connect enregistrée pour",
        "Pro Santé Connect session stored for",
    ),
    (
        "err.host",
        "Nom d'hôte de la requête invalide.",
        "Invalid request host name.",
    ),
    (
        "err.bal_name",
        "1 à 32 caractères : minuscules, chiffres, - _",
        "1 to 32 characters: lowercase letters, digits, - _",
    ),
    (
        "err.bal_address",
        "Adresse de BAL invalide (nom@domaine).",
        "Invalid BAL address (name@domain).",
    ),
    (
        "err.bal_password",
        "Mot de passe obligatoire (256 caractères au plus, sur une ligne).",
        "Password required (at most 256 characters, one line).",
    ),
    (
        "err.bal_taken",
        "Ce nom ou cette adresse de BAL existe déjà.",
        "This BAL name or address already exists.",
    ),
    (
        "err.port",
        "Port entre 1 et 65535.",
        "Port between 1 and 65535.",
    ),
    ("err.lot", "Identifiant de lot invalide.", "Invalid lot id."),
    ("lot.received", "reçu", "received"),
    ("lot.blocked", "bloqué", "blocked"),
    ("lot.encrypted", "chiffré", "encrypted"),
    ("lot.sent", "envoyé", "sent"),
    (
        "lot.acknowledged",
        "acquitté (ARL positif)",
        "acknowledged (positive ARL)",
    ),
    ("lot.rejected", "rejeté", "rejected"),
    ("lot.overdue", "ARL en retard", "ARL overdue"),
    ("lot.refused", "refusé (pas un lot)", "refused (not a lot)"),
    ("bill.counts", "Lots par état", "Lots by state"),
    ("bill.arl_deadline", "Délai d'ARL", "ARL deadline"),
    (
        "bill.last_poll",
        "Dernière relève de la boîte de retours",
        "Last poll of the returns mailbox",
    ),
    ("bill.returns", "retours", "returns"),
    ("bill.changed", "ont changé un lot", "changed a lot"),
    ("bill.problems", "inexploitables", "unusable"),
    (
        "bill.crl",
        "Listes de révocation SESAM-Vitale",
        "SESAM-Vitale revocation lists",
    ),
    ("bill.crl_ca", "Autorité", "Authority"),
    (
        "bill.crl_next_update",
        "Prochaine mise à jour",
        "Next update",
    ),
    ("bill.crl_last", "Dernier téléchargement", "Last download"),
    ("bill.crl_installed", "installée", "installed"),
    ("bill.crl_unchanged", "inchangée", "unchanged"),
    (
        "bill.crl_missing",
        "absente : envoi bloqué ([CE2])",
        "missing: sending blocked ([CE2])",
    ),
    (
        "bill.crl_alert",
        "alerte : téléchargements en échec, expiration proche",
        "alert: downloads failing, expiry near",
    ),
    ("bill.history", "Historique du lot", "Lot history"),
    ("bill.from", "De", "From"),
    ("bill.to", "Vers", "To"),
    ("bill.reason", "Motif", "Reason"),
    ("bill.lots", "Lots", "Lots"),
    ("bill.state", "État", "State"),
    ("bill.all", "tous", "all"),
    ("bill.none", "Aucun lot.", "No lot."),
    ("bill.lot", "Lot", "Lot"),
    ("bill.flow", "Flux", "Flow"),
    ("bill.received", "Reçu le", "Received"),
    ("bill.updated", "Mis à jour le", "Updated"),
    ("bill.sends", "Envois", "Sends"),
    ("bill.arl_positive", "positif", "positive"),
    ("bill.arl_negative", "négatif", "negative"),
    ("bill.resend", "Renvoyer", "Resend"),
    ("bill.resent", "Lot remis en envoi", "Lot queued again"),
    ("bill.round", "tour", "round"),
    ("bill.resend_refused", "Renvoi refusé", "Resend refused"),
    (
        "upd.idle",
        "aucune vérification depuis le démarrage",
        "no check since start",
    ),
    (
        "upd.checking",
        "vérification et téléchargement en cours",
        "checking and downloading",
    ),
    ("upd.up_to_date", "à jour", "up to date"),
    (
        "upd.armed",
        "mise à jour vérifiée et prête, redémarrage requis",
        "update verified and ready, restart required",
    ),
    (
        "upd.rejected",
        "mise à jour refusée, rien n'a été installé",
        "update refused, nothing installed",
    ),
    (
        "upd.fell_back",
        "la mise à jour n'a pas démarré correctement ; retour automatique à la version précédente",
        "the update did not start correctly; fell back to the previous version",
    ),
    ("upd.version", "Version en service", "Running version"),
    ("upd.slot", "Partition active", "Active slot"),
    ("upd.last_check", "Dernier événement", "Last event"),
    ("upd.check", "Vérifier maintenant", "Check now"),
    (
        "upd.install",
        "Installer (redémarrer sur la mise à jour)",
        "Install (restart into the update)",
    ),
    ("upd.history", "Historique", "History"),
    (
        "upd.no_history",
        "Aucune tentative enregistrée.",
        "No attempt recorded.",
    ),
    (
        "upd.check_sent",
        "Vérification demandée.",
        "Check requested.",
    ),
    (
        "upd.install_sent",
        "Installation demandée : l'appareil redémarre sur la mise à jour.",
        "Install requested: the appliance restarts into the update.",
    ),
    (
        "upd.nothing_armed",
        "Aucune mise à jour prête à installer.",
        "No update ready to install.",
    ),
    (
        "upd.busy",
        "Une demande est déjà en attente.",
        "A request is already waiting.",
    ),
    (
        "dash.oldest_chart",
        "Ancienneté du plus ancien sur 24 h",
        "Oldest item age over 24 h",
    ),
    (
        "dash.upstream",
        "Opérateur MSSanté (API LPS)",
        "MSSanté operator (API LPS)",
    ),
    (
        "alert.reauth",
        "Ré-authentification Pro Santé Connect requise pour",
        "Pro Santé Connect re-authentication required for",
    ),
    (
        "alert.bal_offline",
        "Serveur de l'opérateur injoignable pour la BAL",
        "Operator unreachable for BAL",
    ),
    (
        "alert.arl_overdue",
        "lots sans ARL dans le délai",
        "lots without ARL in time",
    ),
    (
        "alert.crl",
        "Liste de révocation SESAM-Vitale : téléchargement en échec ou expiration proche",
        "SESAM-Vitale revocation list: download failing or expiry near",
    ),
    (
        "alert.update_fell_back",
        "Mise à jour : retour automatique à la version précédente",
        "Update: fell back to the previous version",
    ),
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
