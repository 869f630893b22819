use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use passerelle_cards::CardError;

/// Why a rights request was not relayed; each becomes a SOAP 1.2 fault for the LPS.
#[derive(Debug, thiserror::Error)]
pub enum RightsError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("no CPS card able to sign")]
    NoCard,
    #[error("CPS PIN not verified")]
    PinNotVerified,
    #[error("CPS PIN blocked")]
    PinBlocked,
    #[error("CPS card removed during the request")]
    CardRemoved,
    #[error("CPS card: {0}")]
    Card(CardError),
    #[error("upstream {peer} unreachable: {detail}")]
    UpstreamDown { peer: String, detail: String },
    #[error("upstream {peer}: no answer within {millis} ms ({step})")]
    UpstreamTimeout {
        peer: String,
        step: &'static str,
        millis: u128,
    },
    #[error("upstream {peer}: answer over {limit} bytes")]
    UpstreamTooLarge { peer: String, limit: usize },
    #[error("request over {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("request is not SOAP 1.2 (content type {0:?})")]
    NotSoap12(String),
    #[error("method {0} not allowed")]
    Method(String),
    #[error("unreadable request: {0}")]
    BadRequest(String),
}

impl From<CardError> for RightsError {
    fn from(e: CardError) -> Self {
        match e {
            CardError::NoCard | CardError::NotUsable { .. } => Self::NoCard,
            CardError::PinNotVerified | CardError::LastTryNeedsConfirmation => Self::PinNotVerified,
            CardError::PinBlocked => Self::PinBlocked,
            CardError::CardRemoved { .. } => Self::CardRemoved,
            e => Self::Card(e),
        }
    }
}

impl RightsError {
    /// HTTP status, SOAP fault code (`Sender`: the request is at fault; `Receiver`: we or the
    /// upstream are), a subcode naming the case, and the French reason.
    fn fault(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            Self::Config(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "env:Receiver",
                "Configuration",
                "La passerelle est mal configurée pour le service de droits.".into(),
            ),
            Self::NoCard => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "env:Receiver",
                "NoCard",
                "Aucune carte CPS utilisable n'est insérée dans le lecteur de la passerelle."
                    .into(),
            ),
            Self::PinNotVerified => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "env:Receiver",
                "PinNotVerified",
                "Le code porteur de la carte CPS n'a pas été saisi : saisissez-le dans \
                 l'interface d'administration de la passerelle."
                    .into(),
            ),
            Self::PinBlocked => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "env:Receiver",
                "PinBlocked",
                "Le code porteur de la carte CPS est bloqué.".into(),
            ),
            Self::CardRemoved => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "env:Receiver",
                "CardRemoved",
                "La carte CPS a été retirée pendant la requête.".into(),
            ),
            Self::Card(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "env:Receiver",
                "CardError",
                format!("La carte CPS n'a pas pu authentifier la connexion : {e}."),
            ),
            Self::UpstreamDown { .. } => (
                StatusCode::BAD_GATEWAY,
                "env:Receiver",
                "UpstreamDown",
                "Le service de droits de l'organisme complémentaire est injoignable.".into(),
            ),
            Self::UpstreamTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "env:Receiver",
                "UpstreamTimeout",
                "Le service de droits de l'organisme complémentaire n'a pas répondu à temps."
                    .into(),
            ),
            Self::UpstreamTooLarge { limit, .. } => (
                StatusCode::BAD_GATEWAY,
                "env:Receiver",
                "UpstreamTooLarge",
                format!("La réponse du service de droits dépasse {limit} octets."),
            ),
            Self::RequestTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "env:Sender",
                "RequestTooLarge",
                format!("Requête SOAP trop volumineuse (limite : {limit} octets)."),
            ),
            Self::NotSoap12(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "env:Sender",
                "NotSoap12",
                "Type de contenu attendu : application/soap+xml (SOAP 1.2).".into(),
            ),
            Self::Method(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "env:Sender",
                "Method",
                "Seule la méthode POST est acceptée.".into(),
            ),
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "env:Sender",
                "BadRequest",
                "Requête illisible.".into(),
            ),
        }
    }

    /// The SOAP 1.2 fault response for the LPS.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let (status, code, subcode, reason) = self.fault();
        let mut resp = Response::new(Full::new(Bytes::from(soap_fault(code, subcode, &reason))));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/soap+xml; charset=utf-8"),
        );
        resp
    }
}

/// A SOAP 1.2 fault envelope: `code` is `env:Sender` or `env:Receiver`, `subcode` a local
/// name in the `urn:passerelle:rights` namespace, `reason` French text (escaped here).
pub fn soap_fault(code: &str, subcode: &str, reason: &str) -> String {
    let reason = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\">\
         <env:Body><env:Fault><env:Code><env:Value>{code}</env:Value>\
         <env:Subcode><env:Value xmlns:p=\"urn:passerelle:rights\">p:{subcode}</env:Value>\
         </env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"fr\">{reason}</env:Text>\
         </env:Reason></env:Fault></env:Body></env:Envelope>"
    )
}
