//! The services the pages show, each optional: a page whose service is absent says so.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use passerelle_queue::{Queue, QueueError, QueueMetrics, Store};

/// Anything that reports queue metrics (a [`Queue`] over any store).
pub trait QueueMetricsSource: Send + Sync {
    fn metrics(&self) -> BoxFuture<'_, Result<QueueMetrics, QueueError>>;
}

impl<S: Store> QueueMetricsSource for Queue<S> {
    fn metrics(&self) -> BoxFuture<'_, Result<QueueMetrics, QueueError>> {
        Box::pin(Queue::metrics(self))
    }
}

/// The anchors directory and its pin list (`[trust]` of the config).
#[derive(Clone, Debug)]
pub struct AnchorFiles {
    pub dir: PathBuf,
    pub pins_file: PathBuf,
}

/// Handles on the running services.
#[derive(Clone, Default)]
pub struct AdminServices {
    pub queue: Option<Arc<dyn QueueMetricsSource>>,
    pub keystore: Option<passerelle_keystore::Keystore>,
    pub anchors: Option<AnchorFiles>,
    pub liste_blanche: Option<passerelle_liste_blanche::ListeBlancheHandle>,
    pub annuaire: Option<Arc<passerelle_annuaire::Cache>>,
    pub cards: Option<passerelle_cards::CardService>,
    /// Practice mail (API LPS): per-BAL state, connection test, added applicative BALs.
    pub mail: Option<passerelle_api_lps::MailHandle>,
    /// Pro Santé Connect sessions and the interactive login.
    pub psc: Option<passerelle_psc::Psc>,
    /// Billing lots, ARLs, CRLs, resend.
    pub billing: Option<passerelle_billing::BillingStatus>,
    /// The updater: version, slot, status, commands.
    pub updates: Option<passerelle_updater::service::Handle>,
}

impl fmt::Debug for AdminServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServices")
            .field("queue", &self.queue.is_some())
            .field("keystore", &self.keystore.is_some())
            .field("anchors", &self.anchors)
            .field("liste_blanche", &self.liste_blanche.is_some())
            .field("annuaire", &self.annuaire.is_some())
            .field("cards", &self.cards.is_some())
            .field("mail", &self.mail.is_some())
            .field("psc", &self.psc.is_some())
            .field("billing", &self.billing.is_some())
            .field("updates", &self.updates.is_some())
            .finish()
    }
}
