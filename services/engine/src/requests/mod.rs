//! Change requests as use cases, with no transport in sight: create (idempotent, authorized over every account
//! the plan reaches), roll back, the operator's transitions, reads, the history, and watching. The API parses a
//! call into the inputs here, makes one call, and converts the answer.

mod create;
mod read;
mod transitions;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use tablecrypt_core::change::{ChangeItem, ChangeOptions, ChangeRequest, ItemCounts, PlanSummary};
use tablecrypt_core::change::{SelectorSpec, TableRef};
use tablecrypt_core::iac::IacOwnership;
use tablecrypt_core::{InventoryFilter, KeyReference};
use tablecrypt_fleet::Fleet;
use tablecrypt_store::Store;
use tokio_util::sync::CancellationToken;

use crate::planner::{Planner, Target};

pub use read::{HistoryQuery, ItemPage, RequestPage};
pub use watch::{WatchStream, WatchUpdate};

/// The policy requests are created under; from the server's configuration.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// New requests wait in PENDING_APPROVAL for a second person.
    pub approval_required: bool,
    /// How often a watch looks for changes.
    pub watch_interval: Duration,
    /// How long one watch stream lasts before it ends (the client watches again): a stream on a request that
    /// waits for approval, or is paused, would otherwise poll for ever.
    pub watch_max_duration: Duration,
    /// Which table tags mark infrastructure-as-code ownership (planned BLOCKED IAC_OWNED).
    pub iac: IacOwnership,
}

/// Which tables a new request covers.
#[derive(Debug, Clone)]
// One value per call, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Selection {
    /// Listed one by one.
    Tables(Vec<TableRef>),
    /// Chosen from the inventory: the selector as given (stored and shown back), the filter it parses to, and
    /// the current keys (tables on any of them), resolved to ARNs in every account-region covered before planning.
    Selector {
        spec: SelectorSpec,
        filter: InventoryFilter,
        current_keys: Vec<KeyReference>,
    },
}

/// A validated request to change tables' encryption.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub selection: Selection,
    pub target: Target,
    pub description: String,
    /// The caller's `request_id`: a second create with it returns the first request.
    pub idempotency_key: Option<String>,
    pub options: ChangeOptions,
}

/// A validated rollback of an ended request.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub of: uuid::Uuid,
    pub description: Option<String>,
    pub idempotency_key: Option<String>,
}

/// What a create (or its preview) returns: the request, its counts (none for a preview), the plan's totals, and
/// for a preview every planned item.
#[derive(Debug, Clone)]
pub struct Created {
    pub request: ChangeRequest,
    pub counts: Option<ItemCounts>,
    pub summary: PlanSummary,
    pub items: Vec<ChangeItem>,
}

/// The change-request use cases; cheap to clone.
#[derive(Clone)]
pub struct ChangeRequests {
    store: Store,
    fleet: Arc<Fleet>,
    planner: Planner,
    settings: RequestSettings,
    shutdown: CancellationToken,
    watch_polls: watch::WatchPolls,
}

impl std::fmt::Debug for ChangeRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeRequests")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ChangeRequests {
    /// `describes`: the DescribeTable rate per account-region planning's live reads share with the scans.
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        describes: crate::scanner::DescribeLimiter,
        settings: RequestSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            planner: Planner::new(
                store.clone(),
                fleet.clone(),
                describes,
                settings.iac.clone(),
            ),
            store,
            fleet,
            settings,
            shutdown,
            watch_polls: watch::WatchPolls::default(),
        }
    }

    /// Which table tags mark infrastructure-as-code ownership.
    pub fn iac(&self) -> &IacOwnership {
        &self.settings.iac
    }
}
