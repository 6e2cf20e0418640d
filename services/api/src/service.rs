//! The generated `TableEncryption` trait: authorize, note the audit target, delegate to one module per resource.
//!
//! The auth layer has already authenticated the caller; here each RPC checks the caller's role and scope for the
//! accounts it touches, and lists are narrowed to what the caller may see.

use std::sync::Arc;

use tablecrypt_core::{Caller, Labels, Permission, Scope};
use tablecrypt_engine::InventoryScanner;
use tablecrypt_fleet::Fleet;
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_server::TableEncryption;
use tablecrypt_store::Store;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::note_target;
use crate::authorization::{Visible, caller};
use crate::change_requests::{ChangeRequests, WatchStream};
use crate::error::ApiError;
use crate::page_token::PageTokenKeys;
use crate::{accounts, audit, inventory};
use tablecrypt_engine::access;

/// The service behind every RPC; cheap to clone.
#[derive(Debug, Clone)]
pub struct TableEncryptionService {
    store: Store,
    fleet: Arc<Fleet>,
    scanner: InventoryScanner,
    changes: ChangeRequests,
    watches: crate::watch_slots::WatchSlots,
    /// The keys every list's page tokens are signed with.
    page_keys: PageTokenKeys,
    discovery: tablecrypt_engine::AccountDiscovery,
}

impl TableEncryptionService {
    pub fn new(
        store: Store,
        scanner: InventoryScanner,
        changes: ChangeRequests,
        page_keys: PageTokenKeys,
        discovery: tablecrypt_engine::AccountDiscovery,
    ) -> Self {
        Self {
            page_keys,
            discovery,
            store,
            fleet: scanner.fleet().clone(),
            scanner,
            changes,
            watches: crate::watch_slots::WatchSlots::default(),
        }
    }

    async fn check_accounts(
        &self,
        caller: &Caller,
        permission: Permission,
        method: &str,
        account_ids: impl IntoIterator<Item = String>,
    ) -> Result<(), Status> {
        access::check_accounts(&self.store, caller, permission, method, account_ids)
            .await
            .map_err(|e| Status::from(ApiError::from(e)))
    }

    /// The caller's `permission` must cover every account of change request `id` (a malformed id is left to the
    /// call, which names the field).
    async fn check_request(
        &self,
        caller: &Caller,
        permission: Permission,
        method: &str,
        id: &str,
    ) -> Result<(), Status> {
        let Ok(id) = Uuid::parse_str(id) else {
            access::require(caller, permission, method).map_err(ApiError::from)?;
            return Ok(());
        };
        access::check_request(&self.store, caller, permission, method, id)
            .await
            .map_err(|e| Status::from(ApiError::from(e)))
    }

    async fn visible(
        &self,
        caller: &Caller,
        permission: Permission,
        method: &str,
    ) -> Result<Visible, Status> {
        access::visible(&self.store, caller, permission, method)
            .await
            .map_err(|e| Status::from(ApiError::from(e)))
    }
}

/// A short, secret-free description of a change request's targets, for the audit log.
/// Tables a CreateChangeRequest audit target names one by one; the count says how many there were.
const AUDITED_TABLES: usize = 5;

/// A CreateChangeRequest's targets for the audit log, as compact JSON a person (or jq) reads: the tables (count and
/// the first few) or the selector's set fields, the target, and `"dry_run": true` for a plan that stored nothing.
fn describe_targets(request: &pb::CreateChangeRequestRequest) -> String {
    let mut value = serde_json::Map::new();
    match (&request.tables, &request.selector) {
        (Some(list), _) => {
            value.insert(
                "tables".into(),
                serde_json::json!({
                    "count": list.tables.len(),
                    "first": list.tables.iter().take(AUDITED_TABLES)
                        .map(|t| format!("{}/{}/{}", t.account_id, t.region, t.table_name))
                        .collect::<Vec<_>>(),
                }),
            );
        }
        (None, Some(s)) => {
            let mode = match pb::EncryptionMode::try_from(s.current_mode) {
                Ok(pb::EncryptionMode::Unspecified) => "",
                Ok(mode) => mode.as_str_name(),
                Err(_) => "?",
            };
            let fields = [
                ("account_ids", serde_json::json!(s.account_ids)),
                (
                    "account_label_selector",
                    serde_json::json!(s.account_label_selector),
                ),
                ("regions", serde_json::json!(s.regions)),
                ("current_mode", serde_json::json!(mode)),
                ("current_kms_key", serde_json::json!(s.current_kms_key)),
                ("current_kms_keys", serde_json::json!(s.current_kms_keys)),
                ("table_name_prefix", serde_json::json!(s.table_name_prefix)),
                (
                    "table_tag_selector",
                    serde_json::json!(s.table_tag_selector),
                ),
            ];
            let set: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .filter(|(_, v)| match v {
                    serde_json::Value::String(s) => !s.is_empty(),
                    serde_json::Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .map(|(name, v)| (name.to_owned(), v))
                .collect();
            value.insert("selector".into(), serde_json::Value::Object(set));
        }
        (None, None) => {}
    }
    if let Some(t) = &request.target {
        let mode = pb::EncryptionMode::try_from(t.mode)
            .map(|m| m.as_str_name())
            .unwrap_or("?");
        value.insert(
            "target".into(),
            serde_json::json!({"mode": mode, "kms_key": t.kms_key}),
        );
    }
    if request.validate_only {
        value.insert("dry_run".into(), serde_json::Value::Bool(true));
    }
    serde_json::Value::Object(value).to_string()
}

/// " (dry run)" for a plan that stored nothing, so the audit log tells plans from changes.
fn dry_run(validate_only: bool) -> &'static str {
    if validate_only { " (dry run)" } else { "" }
}

#[tonic::async_trait]
impl TableEncryption for TableEncryptionService {
    async fn register_account(
        &self,
        request: Request<pb::RegisterAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = caller(&request)?;
        let account = request.get_ref().account.clone().unwrap_or_default();
        note_target(&request, format!("account {}", account.account_id));
        access::require(&caller, Permission::ManageAccounts, "RegisterAccount")
            .map_err(ApiError::from)?;
        // Labels that do not parse are refused by validation below, naming the field.
        if let Ok(labels) = Labels::parse(account.labels.iter()) {
            access::check_labels(
                &caller,
                Permission::ManageAccounts,
                "RegisterAccount",
                &account.account_id,
                &labels,
            )
            .map_err(ApiError::from)?;
        }
        Ok(Response::new(
            accounts::register(&self.store, request.into_inner()).await?,
        ))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().account_id.clone();
        self.check_accounts(&caller, Permission::Read, "GetAccount", [id])
            .await?;
        Ok(Response::new(
            accounts::get(&self.store, request.into_inner()).await?,
        ))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = caller(&request)?;
        let visible = self
            .visible(&caller, Permission::Read, "ListAccounts")
            .await?;
        Ok(Response::new(
            accounts::list(
                &self.store,
                &visible,
                &self.page_keys.for_call("ListAccounts", &caller.identity),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = caller(&request)?;
        let account = request.get_ref().account.clone().unwrap_or_default();
        let validate_only = if request.get_ref().validate_only {
            " (validate only)"
        } else {
            ""
        };
        note_target(
            &request,
            format!("account {}{validate_only}", account.account_id),
        );
        self.check_accounts(
            &caller,
            Permission::ManageAccounts,
            "UpdateAccount",
            [account.account_id.clone()],
        )
        .await?;
        let relabels = request
            .get_ref()
            .update_mask
            .as_ref()
            .map_or(!account.labels.is_empty(), |m| {
                m.paths.iter().any(|p| p == "labels")
            });
        if relabels && let Ok(labels) = Labels::parse(account.labels.iter()) {
            // The account's labels after the update: the given ones and the discovered ones it keeps.
            let labels = match tablecrypt_core::AccountId::parse(&account.account_id) {
                Ok(id) => match self.store.accounts.get(&id).await {
                    Ok(current) => tablecrypt_core::account::keep_discovered(
                        &current.spec.labels,
                        labels.clone(),
                    )
                    .unwrap_or(labels),
                    Err(_) => labels,
                },
                Err(_) => labels,
            };
            access::check_labels(
                &caller,
                Permission::ManageAccounts,
                "UpdateAccount",
                &account.account_id,
                &labels,
            )
            .map_err(ApiError::from)?;
        }
        Ok(Response::new(
            accounts::update(&self.store, request.into_inner()).await?,
        ))
    }

    async fn deregister_account(
        &self,
        request: Request<pb::DeregisterAccountRequest>,
    ) -> Result<Response<pb::DeregisterAccountResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().account_id.clone();
        note_target(&request, format!("account {id}"));
        self.check_accounts(
            &caller,
            Permission::ManageAccounts,
            "DeregisterAccount",
            [id],
        )
        .await?;
        Ok(Response::new(
            accounts::deregister(&self.store, request.into_inner()).await?,
        ))
    }

    async fn discover_accounts(
        &self,
        request: Request<pb::DiscoverAccountsRequest>,
    ) -> Result<Response<pb::DiscoverAccountsResponse>, Status> {
        let caller = caller(&request)?;
        let what = match (request.get_ref().dry_run, request.get_ref().prune) {
            (true, _) => "organization (dry run)",
            (false, true) => "organization (prune)",
            (false, false) => "organization",
        };
        note_target(&request, what.to_owned());
        access::require_everywhere(&caller, Permission::ManageAccounts, "DiscoverAccounts")
            .map_err(ApiError::from)?;
        let requester = tablecrypt_engine::discovery::Requester {
            identity: caller.identity.clone(),
            authenticated_by: caller.authenticated_by.to_owned(),
        };
        Ok(Response::new(
            accounts::discover(&self.discovery, &requester, request.into_inner()).await?,
        ))
    }

    async fn verify_account(
        &self,
        request: Request<pb::VerifyAccountRequest>,
    ) -> Result<Response<pb::VerifyAccountResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().account_id.clone();
        self.check_accounts(&caller, Permission::Read, "VerifyAccount", [id])
            .await?;
        Ok(Response::new(
            inventory::verify_account(&self.store, &self.fleet, request.into_inner()).await?,
        ))
    }

    async fn get_table_encryption(
        &self,
        request: Request<pb::GetTableEncryptionRequest>,
    ) -> Result<Response<pb::EncryptedTable>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().account_id.clone();
        self.check_accounts(&caller, Permission::Read, "GetTableEncryption", [id])
            .await?;
        Ok(Response::new(
            inventory::get_table_encryption(
                &self.store,
                &self.fleet,
                self.changes.iac(),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn list_table_encryptions(
        &self,
        request: Request<pb::ListTableEncryptionsRequest>,
    ) -> Result<Response<pb::ListTableEncryptionsResponse>, Status> {
        let caller = caller(&request)?;
        let named = request.get_ref().account_ids.clone();
        self.check_accounts(&caller, Permission::Read, "ListTableEncryptions", named)
            .await?;
        let visible = self
            .visible(&caller, Permission::Read, "ListTableEncryptions")
            .await?;
        Ok(Response::new(
            inventory::list_table_encryptions(
                &self.store,
                &self.fleet,
                self.changes.iac(),
                &visible,
                &self
                    .page_keys
                    .for_call("ListTableEncryptions", &caller.identity),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn refresh_inventory(
        &self,
        request: Request<pb::RefreshInventoryRequest>,
    ) -> Result<Response<pb::InventoryScan>, Status> {
        let caller = caller(&request)?;
        let named = request.get_ref().account_ids.clone();
        note_target(
            &request,
            if named.is_empty() {
                "every account".to_owned()
            } else {
                format!("accounts {}", named.join(", "))
            },
        );
        if named.is_empty() {
            // No accounts named means the whole fleet: every registered account must be in scope.
            access::check_every_account(
                &self.store,
                &caller,
                Permission::Refresh,
                "RefreshInventory",
            )
            .await
            .map_err(ApiError::from)?;
        } else {
            self.check_accounts(&caller, Permission::Refresh, "RefreshInventory", named)
                .await?;
        }
        Ok(Response::new(
            inventory::refresh_inventory(
                &self.store,
                &self.scanner,
                &caller.identity,
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn get_inventory_scan(
        &self,
        request: Request<pb::GetInventoryScanRequest>,
    ) -> Result<Response<pb::InventoryScan>, Status> {
        let caller = caller(&request)?;
        let visible = self
            .visible(&caller, Permission::Read, "GetInventoryScan")
            .await?;
        let mut scan = inventory::get_inventory_scan(&self.store, request.into_inner()).await?;
        // The totals are the scan's; the per-account-region results are only the caller's accounts.
        scan.targets.retain(|t| visible.contains(&t.account_id));
        Ok(Response::new(scan))
    }

    async fn get_key_usage(
        &self,
        request: Request<pb::GetKeyUsageRequest>,
    ) -> Result<Response<pb::GetKeyUsageResponse>, Status> {
        let caller = caller(&request)?;
        let visible = self
            .visible(&caller, Permission::Read, "GetKeyUsage")
            .await?;
        Ok(Response::new(
            inventory::get_key_usage(
                &self.store,
                &self.fleet,
                self.changes.iac(),
                &visible,
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn create_change_request(
        &self,
        request: Request<pb::CreateChangeRequestRequest>,
    ) -> Result<Response<pb::CreateChangeRequestResponse>, Status> {
        let caller = caller(&request)?;
        note_target(&request, describe_targets(request.get_ref()));
        access::require(&caller, Permission::Change, "CreateChangeRequest")
            .map_err(ApiError::from)?;
        // The plan's accounts are checked against the caller's scope before anything is stored.
        Ok(Response::new(
            self.changes.create(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_change_request(
        &self,
        request: Request<pb::GetChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        self.check_request(&caller, Permission::Read, "GetChangeRequest", &id)
            .await?;
        Ok(Response::new(self.changes.get(request.into_inner()).await?))
    }

    async fn list_change_requests(
        &self,
        request: Request<pb::ListChangeRequestsRequest>,
    ) -> Result<Response<pb::ListChangeRequestsResponse>, Status> {
        let caller = caller(&request)?;
        let visible = self
            .visible(&caller, Permission::Read, "ListChangeRequests")
            .await?;
        // A request is listed only if every account it touches is visible; the query applies that before the
        // page is cut, so the page token never names a request the caller may not see.
        let pages = self
            .page_keys
            .for_call("ListChangeRequests", &caller.identity);
        Ok(Response::new(
            self.changes
                .list(&visible, &pages, request.into_inner())
                .await?,
        ))
    }

    async fn list_change_items(
        &self,
        request: Request<pb::ListChangeItemsRequest>,
    ) -> Result<Response<pb::ListChangeItemsResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        self.check_request(&caller, Permission::Read, "ListChangeItems", &id)
            .await?;
        Ok(Response::new(
            self.changes
                .list_items(
                    &self.page_keys.for_call("ListChangeItems", &caller.identity),
                    request.into_inner(),
                )
                .await?,
        ))
    }

    async fn approve_change_request(
        &self,
        request: Request<pb::ApproveChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        note_target(&request, format!("change request {id}"));
        self.check_request(&caller, Permission::Approve, "ApproveChangeRequest", &id)
            .await?;
        Ok(Response::new(
            self.changes
                .approve(&caller.identity, request.into_inner())
                .await?,
        ))
    }

    async fn cancel_change_request(
        &self,
        request: Request<pb::CancelChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        note_target(&request, format!("change request {id}"));
        self.check_request(&caller, Permission::Change, "CancelChangeRequest", &id)
            .await?;
        Ok(Response::new(
            self.changes
                .cancel(&caller.identity, request.into_inner())
                .await?,
        ))
    }

    async fn pause_change_request(
        &self,
        request: Request<pb::PauseChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        note_target(&request, format!("change request {id}"));
        self.check_request(&caller, Permission::Change, "PauseChangeRequest", &id)
            .await?;
        Ok(Response::new(
            self.changes
                .pause(&caller.identity, request.into_inner())
                .await?,
        ))
    }

    async fn resume_change_request(
        &self,
        request: Request<pb::ResumeChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        note_target(&request, format!("change request {id}"));
        self.check_request(&caller, Permission::Change, "ResumeChangeRequest", &id)
            .await?;
        Ok(Response::new(
            self.changes
                .resume(&caller.identity, request.into_inner())
                .await?,
        ))
    }

    type WatchChangeRequestStream = WatchStream;

    async fn watch_change_request(
        &self,
        request: Request<pb::WatchChangeRequestRequest>,
    ) -> Result<Response<Self::WatchChangeRequestStream>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        self.check_request(&caller, Permission::Read, "WatchChangeRequest", &id)
            .await?;
        let slot = self.watches.take(&caller.identity)?;
        let updates = self.changes.watch(request.into_inner()).await?;
        // The slot lives as long as the stream: given back when the client goes away or the stream ends.
        Ok(Response::new(Box::pin(updates.map(move |update| {
            let _held = &slot;
            update
        }))))
    }

    async fn update_table_encryption(
        &self,
        request: Request<pb::UpdateTableEncryptionRequest>,
    ) -> Result<Response<pb::CreateChangeRequestResponse>, Status> {
        let caller = caller(&request)?;
        if let Some(t) = &request.get_ref().table {
            note_target(
                &request,
                format!(
                    "table {}/{}/{}{}",
                    t.account_id,
                    t.region,
                    t.table_name,
                    dry_run(request.get_ref().validate_only)
                ),
            );
        }
        access::require(&caller, Permission::Change, "UpdateTableEncryption")
            .map_err(ApiError::from)?;
        Ok(Response::new(
            self.changes
                .update_table(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn rollback_change_request(
        &self,
        request: Request<pb::RollbackChangeRequestRequest>,
    ) -> Result<Response<pb::CreateChangeRequestResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.get_ref().change_request_id.clone();
        note_target(
            &request,
            format!(
                "rollback of change request {id}{}",
                dry_run(request.get_ref().validate_only)
            ),
        );
        self.check_request(&caller, Permission::Change, "RollbackChangeRequest", &id)
            .await?;
        Ok(Response::new(
            self.changes.rollback(&caller, request.into_inner()).await?,
        ))
    }

    async fn list_key_rotation_history(
        &self,
        request: Request<pb::ListKeyRotationHistoryRequest>,
    ) -> Result<Response<pb::ListKeyRotationHistoryResponse>, Status> {
        let caller = caller(&request)?;
        let named = request.get_ref().account_id.clone();
        if !named.is_empty() {
            self.check_accounts(&caller, Permission::Read, "ListKeyRotationHistory", [named])
                .await?;
        }
        let visible = self
            .visible(&caller, Permission::Read, "ListKeyRotationHistory")
            .await?;
        let pages = self
            .page_keys
            .for_call("ListKeyRotationHistory", &caller.identity);
        Ok(Response::new(
            self.changes
                .history(&visible, &pages, request.into_inner())
                .await?,
        ))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&request)?;
        match caller.scope(Permission::ReadAudit) {
            Scope::Everywhere => {}
            Scope::Nowhere => {
                access::require(&caller, Permission::ReadAudit, "ListAuditEvents")
                    .map_err(ApiError::from)?;
            }
            Scope::Matching(_) => {
                return Err(ApiError::PermissionDenied(format!(
                    "{} may not call ListAuditEvents: the audit log covers every account, so it needs an \
                     admin grant over every account",
                    caller.identity
                ))
                .into());
            }
        }
        Ok(Response::new(
            audit::list(
                &self.store,
                &self.page_keys.for_call("ListAuditEvents", &caller.identity),
                request.into_inner(),
            )
            .await?,
        ))
    }
}
