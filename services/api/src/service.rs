//! The generated `TableEncryption` trait, delegating to one module per resource.

use std::sync::Arc;

use tablecrypt_engine::InventoryScanner;
use tablecrypt_fleet::Fleet;
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_server::TableEncryption;
use tablecrypt_store::Store;
use tonic::{Request, Response, Status};

use crate::change_requests::{ChangeRequests, WatchStream};
use crate::{accounts, inventory};

/// The metadata header naming the caller, recorded as who asked for scans and who created or approved change
/// requests, until authentication replaces it.
pub const CALLER_HEADER: &str = "x-tablecrypt-caller";

/// The caller as the temporary identity header says, or "anonymous".
fn caller<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(CALLER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .unwrap_or("anonymous")
        .to_owned()
}

/// The service behind every RPC; cheap to clone.
#[derive(Debug, Clone)]
pub struct TableEncryptionService {
    store: Store,
    fleet: Arc<Fleet>,
    scanner: InventoryScanner,
    changes: ChangeRequests,
}

impl TableEncryptionService {
    pub fn new(store: Store, scanner: InventoryScanner, changes: ChangeRequests) -> Self {
        Self {
            store,
            fleet: scanner.fleet().clone(),
            scanner,
            changes,
        }
    }
}

#[tonic::async_trait]
impl TableEncryption for TableEncryptionService {
    async fn register_account(
        &self,
        request: Request<pb::RegisterAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(
            accounts::register(&self.store, request.into_inner()).await?,
        ))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(
            accounts::get(&self.store, request.into_inner()).await?,
        ))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        Ok(Response::new(
            accounts::list(&self.store, request.into_inner()).await?,
        ))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(
            accounts::update(&self.store, request.into_inner()).await?,
        ))
    }

    async fn deregister_account(
        &self,
        request: Request<pb::DeregisterAccountRequest>,
    ) -> Result<Response<pb::DeregisterAccountResponse>, Status> {
        Ok(Response::new(
            accounts::deregister(&self.store, request.into_inner()).await?,
        ))
    }

    async fn verify_account(
        &self,
        request: Request<pb::VerifyAccountRequest>,
    ) -> Result<Response<pb::VerifyAccountResponse>, Status> {
        Ok(Response::new(
            inventory::verify_account(&self.store, &self.fleet, request.into_inner()).await?,
        ))
    }

    async fn get_table_encryption(
        &self,
        request: Request<pb::GetTableEncryptionRequest>,
    ) -> Result<Response<pb::EncryptedTable>, Status> {
        Ok(Response::new(
            inventory::get_table_encryption(&self.store, &self.fleet, request.into_inner()).await?,
        ))
    }

    async fn list_table_encryptions(
        &self,
        request: Request<pb::ListTableEncryptionsRequest>,
    ) -> Result<Response<pb::ListTableEncryptionsResponse>, Status> {
        Ok(Response::new(
            inventory::list_table_encryptions(&self.store, &self.fleet, request.into_inner())
                .await?,
        ))
    }

    async fn refresh_inventory(
        &self,
        request: Request<pb::RefreshInventoryRequest>,
    ) -> Result<Response<pb::InventoryScan>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            inventory::refresh_inventory(&self.store, &self.scanner, &caller, request.into_inner())
                .await?,
        ))
    }

    async fn get_inventory_scan(
        &self,
        request: Request<pb::GetInventoryScanRequest>,
    ) -> Result<Response<pb::InventoryScan>, Status> {
        Ok(Response::new(
            inventory::get_inventory_scan(&self.store, request.into_inner()).await?,
        ))
    }

    async fn get_key_usage(
        &self,
        request: Request<pb::GetKeyUsageRequest>,
    ) -> Result<Response<pb::GetKeyUsageResponse>, Status> {
        Ok(Response::new(
            inventory::get_key_usage(&self.store, &self.fleet, request.into_inner()).await?,
        ))
    }

    async fn create_change_request(
        &self,
        request: Request<pb::CreateChangeRequestRequest>,
    ) -> Result<Response<pb::CreateChangeRequestResponse>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.changes.create(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_change_request(
        &self,
        request: Request<pb::GetChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        Ok(Response::new(self.changes.get(request.into_inner()).await?))
    }

    async fn list_change_requests(
        &self,
        request: Request<pb::ListChangeRequestsRequest>,
    ) -> Result<Response<pb::ListChangeRequestsResponse>, Status> {
        Ok(Response::new(
            self.changes.list(request.into_inner()).await?,
        ))
    }

    async fn list_change_items(
        &self,
        request: Request<pb::ListChangeItemsRequest>,
    ) -> Result<Response<pb::ListChangeItemsResponse>, Status> {
        Ok(Response::new(
            self.changes.list_items(request.into_inner()).await?,
        ))
    }

    async fn approve_change_request(
        &self,
        request: Request<pb::ApproveChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.changes.approve(&caller, request.into_inner()).await?,
        ))
    }

    async fn cancel_change_request(
        &self,
        request: Request<pb::CancelChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.changes.cancel(&caller, request.into_inner()).await?,
        ))
    }

    async fn pause_change_request(
        &self,
        request: Request<pb::PauseChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.changes.pause(&caller, request.into_inner()).await?,
        ))
    }

    async fn resume_change_request(
        &self,
        request: Request<pb::ResumeChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.changes.resume(&caller, request.into_inner()).await?,
        ))
    }

    type WatchChangeRequestStream = WatchStream;

    async fn watch_change_request(
        &self,
        request: Request<pb::WatchChangeRequestRequest>,
    ) -> Result<Response<Self::WatchChangeRequestStream>, Status> {
        Ok(Response::new(
            self.changes.watch(request.into_inner()).await?,
        ))
    }

    async fn update_table_encryption(
        &self,
        request: Request<pb::UpdateTableEncryptionRequest>,
    ) -> Result<Response<pb::CreateChangeRequestResponse>, Status> {
        let caller = caller(&request);
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
        let caller = caller(&request);
        Ok(Response::new(
            self.changes.rollback(&caller, request.into_inner()).await?,
        ))
    }

    async fn list_key_rotation_history(
        &self,
        request: Request<pb::ListKeyRotationHistoryRequest>,
    ) -> Result<Response<pb::ListKeyRotationHistoryResponse>, Status> {
        Ok(Response::new(
            self.changes.history(request.into_inner()).await?,
        ))
    }
}
