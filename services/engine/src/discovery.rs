//! Account discovery: read the AWS Organization, plan the registry's changes (`tablecrypt_core::discovery`),
//! and write them, each one audited. Run by DiscoverAccounts and, when configured, periodically (never pruning).

use std::sync::Arc;
use std::time::Duration;

use tablecrypt_core::discovery::{self, Discovered, DiscoveryAction, DiscoveryRules, OrgAccount};
use tablecrypt_core::{Account, AccountId, AccountSpec};
use tablecrypt_fleet::{Fleet, OrganizationAccess};
use tablecrypt_store::{NewAuditEvent, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::error::EngineError;

/// The audit log's caller for periodic discovery: the server itself, not a person.
pub const PERIODIC_CALLER: &str = "tablecrypt:discovery";

/// Where the organization is read and how its accounts become registry entries.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    pub organization: OrganizationAccess,
    pub rules: DiscoveryRules,
}

/// Who asked, for the audit log.
#[derive(Debug, Clone)]
pub struct Requester {
    pub identity: String,
    pub authenticated_by: String,
}

/// One account's line, and the error that stopped its write (if one did).
#[derive(Debug, Clone)]
pub struct DiscoveryLine {
    pub line: Discovered,
    pub error: Option<String>,
}

/// A discovery's outcome.
#[derive(Debug, Clone)]
pub struct DiscoveryReport {
    pub lines: Vec<DiscoveryLine>,
    pub applied: bool,
}

/// Runs discoveries; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccountDiscovery {
    store: Store,
    fleet: Arc<Fleet>,
    settings: Option<Arc<DiscoverySettings>>,
}

impl AccountDiscovery {
    /// `settings` is `None` where discovery is not configured: every run is then refused.
    pub fn new(store: Store, fleet: Arc<Fleet>, settings: Option<DiscoverySettings>) -> Self {
        Self {
            store,
            fleet,
            settings: settings.map(Arc::new),
        }
    }

    /// Reads the organization and plans; unless `dry_run`, writes the plan. One discovery writes at a time across
    /// replicas: another gets FAILED_PRECONDITION.
    pub async fn run(
        &self,
        requester: &Requester,
        dry_run: bool,
        prune: bool,
    ) -> Result<DiscoveryReport, EngineError> {
        let settings = self.settings()?;
        let organization = self.fleet.read_organization(&settings.organization).await?;
        self.reconcile(settings, &organization, requester, dry_run, prune)
            .await
    }

    fn settings(&self) -> Result<&DiscoverySettings, EngineError> {
        self.settings.as_deref().ok_or_else(|| {
            EngineError::FailedPrecondition(
                "account discovery is not configured: set [discovery] organization_role_arn, member_role and \
                 regions in the server's configuration"
                    .to_owned(),
            )
        })
    }

    /// Plans against the registry and writes, under the discovery lock. The organization is read before (AWS
    /// calls take seconds to minutes; the lock's transaction stays short), the registry after taking it.
    async fn reconcile(
        &self,
        settings: &DiscoverySettings,
        organization: &[OrgAccount],
        requester: &Requester,
        dry_run: bool,
        prune: bool,
    ) -> Result<DiscoveryReport, EngineError> {
        let Some(lock) = self.store.accounts.lock_discovery().await? else {
            return Err(EngineError::FailedPrecondition(
                "another account discovery is running; try again when it has finished".to_owned(),
            ));
        };
        let registered = crate::access::all_accounts(&self.store).await?;
        let candidates: Vec<String> = registered
            .iter()
            .filter(|a| a.spec.labels.get(discovery::DISCOVERED_MARKER).is_some())
            .map(|a| a.account_id.to_string())
            .collect();
        let in_flight = if prune {
            self.store
                .accounts
                .with_items_in_flight(&candidates)
                .await?
        } else {
            Default::default()
        };
        let plan = discovery::plan(
            organization,
            &registered,
            &settings.rules,
            prune,
            &in_flight,
        );
        let mut lines = Vec::with_capacity(plan.len());
        for line in plan {
            let error = if dry_run || !line.action.writes() {
                None
            } else {
                self.apply(&line, &registered, requester).await?
            };
            lines.push(DiscoveryLine { line, error });
        }
        drop(lock);
        Ok(DiscoveryReport {
            lines,
            applied: !dry_run,
        })
    }

    /// Writes one line and audits it; the error a line the registry refused (changed concurrently, a request
    /// planned meanwhile) ends with, while the rest goes on. A database failure stops the run (a rerun redoes
    /// only what is left, as every write is conditional).
    async fn apply(
        &self,
        line: &Discovered,
        registered: &[Account],
        requester: &Requester,
    ) -> Result<Option<String>, EngineError> {
        let Ok(id) = AccountId::parse(&line.account_id) else {
            return Ok(Some("not an account id".to_owned()));
        };
        let (method, written): (&str, Result<(), StoreError>) = match &line.action {
            DiscoveryAction::Register(spec) => (
                "discovery/register",
                self.store.accounts.insert(&id, spec).await.map(drop),
            ),
            DiscoveryAction::Relabel { version, labels } => {
                let Some(current) = registered.iter().find(|a| a.account_id == id) else {
                    return Ok(Some("the account is no longer registered".to_owned()));
                };
                let spec = AccountSpec {
                    labels: labels.clone(),
                    ..current.spec.clone()
                };
                (
                    "discovery/relabel",
                    self.store
                        .accounts
                        .update(&id, *version, &spec)
                        .await
                        .map(drop),
                )
            }
            DiscoveryAction::Deregister { version } => (
                "discovery/deregister",
                match self.store.accounts.delete_if_idle(&id, *version).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(StoreError::VersionConflict {
                        resource: "account",
                        id: id.to_string(),
                    }),
                    Err(e) => Err(e),
                },
            ),
            _ => return Ok(None),
        };
        let error = match written {
            Ok(()) => None,
            Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => Some(
                "the account changed (or a change request was planned for it) since discovery read it: run \
                 discovery again"
                    .to_owned(),
            ),
            Err(StoreError::AlreadyExists { .. }) => Some(
                "the account was registered since discovery read the registry: run discovery again".to_owned(),
            ),
            // The database itself failed: the run stops, and a rerun picks up where it did.
            Err(other) => return Err(other.into()),
        };
        let event = NewAuditEvent {
            caller: requester.identity.clone(),
            authenticated_by: requester.authenticated_by.clone(),
            method: method.to_owned(),
            target: format!("account {}", line.account_id),
            outcome: if error.is_none() { "OK" } else { "ABORTED" }.to_owned(),
            message: error.clone().unwrap_or_else(|| line.notes.join("; ")),
            peer: None,
            call_count: 1,
            first_time: None,
        };
        if let Err(e) = self.store.audit.record(&event).await {
            tracing::warn!(error = %e, account_id = %line.account_id, "discovery change not audited");
        }
        tracing::info!(account_id = %line.account_id, action = %line.action, error = ?error, "account discovery");
        Ok(error)
    }

    /// Discovers every `interval` until `shutdown`, never pruning (only an explicit prune deregisters). Shutdown
    /// stops a run while it reads AWS, never between a registry write and its audit record.
    pub async fn periodically(self, interval: Duration, shutdown: CancellationToken) {
        let requester = Requester {
            identity: PERIODIC_CALLER.to_owned(),
            authenticated_by: "server".to_owned(),
        };
        let Ok(settings) = self.settings() else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let read = tokio::select! {
                read = self.fleet.read_organization(&settings.organization) => read,
                () = shutdown.cancelled() => return,
            };
            let run = match read {
                Ok(organization) => {
                    self.reconcile(settings, &organization, &requester, false, false)
                        .await
                }
                Err(error) => Err(error.into()),
            };
            match run {
                Ok(report) => {
                    let written = report
                        .lines
                        .iter()
                        .filter(|l| l.line.action.writes() && l.error.is_none())
                        .count();
                    tracing::info!(
                        accounts = report.lines.len(),
                        written,
                        "periodic account discovery"
                    );
                }
                // Another replica's run (or an operator's) holds the lock: this one's turn comes next time.
                Err(EngineError::FailedPrecondition(reason)) => {
                    tracing::info!(%reason, "periodic account discovery skipped");
                }
                Err(error) => tracing::warn!(%error, "periodic account discovery failed"),
            }
        }
    }
}
