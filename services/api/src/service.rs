//! The generated `TableEncryption` trait, delegating to one module per resource.

use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_server::TableEncryption;
use tablecrypt_store::Store;
use tonic::{Request, Response, Status};

use crate::accounts;

/// The service behind every RPC; cheap to clone (the store is a pool handle).
#[derive(Debug, Clone)]
pub struct TableEncryptionService {
    store: Store,
}

impl TableEncryptionService {
    pub fn new(store: Store) -> Self {
        Self { store }
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
}
