//! The bad-input corpus: malformed requests for every RPC (bad ids, ARNs, regions, keys, page tokens, oversized
//! and empty fields, unknown enum values). Each must be INVALID_ARGUMENT naming the field, and nothing may be
//! written.

use sqlx::Row as _;
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::field_violations;
use tablecrypt_tests::{TestApp, TestDatabase};

const ACCOUNT: &str = "123456789012";
const UUID: &str = "0b6f2c1e-8d3a-4c55-9a77-2f1e0c9d4b11";

fn good_account() -> pb::Account {
    pb::Account {
        account_id: ACCOUNT.into(),
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/tablecrypt-member"),
        regions: vec!["eu-west-1".into()],
        ..Default::default()
    }
}

fn table(account: &str, region: &str, name: &str) -> pb::TableRef {
    pb::TableRef {
        account_id: account.into(),
        region: region.into(),
        table_name: name.into(),
    }
}

fn target(mode: i32, key: &str) -> Option<pb::TargetEncryption> {
    Some(pb::TargetEncryption {
        mode,
        kms_key: key.into(),
    })
}

/// Asserts INVALID_ARGUMENT with a violation of `field` (exactly, or as a prefix of a longer path).
fn expect_field<T: std::fmt::Debug>(
    case: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    field: &str,
) {
    let status = match result {
        Ok(response) => panic!("{case}: accepted: {response:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{case}: {status:?}"
    );
    let fields = field_violations(&status);
    assert!(
        fields.iter().any(|f| f == field
            || f.starts_with(&format!("{field}."))
            || f.starts_with(&format!("{field}["))),
        "{case}: wanted a violation of {field}, got {fields:?} ({})",
        status.message()
    );
}

#[tokio::test]
async fn malformed_requests_name_the_field_and_write_nothing() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let c = app.client.clone();
    let long = "x".repeat(5000);

    // Accounts.
    for (case, account, field) in [
        (
            "short id",
            pb::Account {
                account_id: "12345".into(),
                ..good_account()
            },
            "account.account_id",
        ),
        (
            "role in another account",
            pb::Account {
                role_arn: "arn:aws:iam::210987654321:role/x".into(),
                ..good_account()
            },
            "account.role_arn",
        ),
        (
            "not an ARN",
            pb::Account {
                role_arn: "role/x".into(),
                ..good_account()
            },
            "account.role_arn",
        ),
        (
            "unknown region",
            pb::Account {
                regions: vec!["mars-east-1".into()],
                ..good_account()
            },
            "account.regions",
        ),
        (
            "no regions",
            pb::Account {
                regions: vec![],
                ..good_account()
            },
            "account.regions",
        ),
        (
            "oversized display name",
            pb::Account {
                display_name: long.clone(),
                ..good_account()
            },
            "account.display_name",
        ),
        (
            "bad label key",
            pb::Account {
                labels: [("-bad".to_owned(), "x".to_owned())].into(),
                ..good_account()
            },
            "account.labels",
        ),
        (
            "external id too short",
            pb::Account {
                external_id: "x".into(),
                ..good_account()
            },
            "account.external_id",
        ),
        (
            "negative rate limit",
            pb::Account {
                limits: Some(pb::AccountLimits {
                    update_rate_per_second: -2.0,
                    ..Default::default()
                }),
                ..good_account()
            },
            "account.limits.update_rate_per_second",
        ),
        (
            "a rate so low it freezes the account-region",
            pb::Account {
                limits: Some(pb::AccountLimits {
                    update_rate_per_second: 1e-300,
                    ..Default::default()
                }),
                ..good_account()
            },
            "account.limits.update_rate_per_second",
        ),
    ] {
        let result = c
            .clone()
            .register_account(pb::RegisterAccountRequest {
                account: Some(account),
            })
            .await;
        expect_field(case, result, field);
    }
    expect_field(
        "register without an account",
        c.clone()
            .register_account(pb::RegisterAccountRequest { account: None })
            .await,
        "account",
    );
    expect_field(
        "get: bad id",
        c.clone()
            .get_account(pb::GetAccountRequest {
                account_id: "abc".into(),
            })
            .await,
        "account_id",
    );
    expect_field(
        "list: negative page size",
        c.clone()
            .list_accounts(pb::ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        "page_size",
    );
    expect_field(
        "list: forged page token",
        c.clone()
            .list_accounts(pb::ListAccountsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        "page_token",
    );
    expect_field(
        "list: bad selector",
        c.clone()
            .list_accounts(pb::ListAccountsRequest {
                label_selector: "=x".into(),
                ..Default::default()
            })
            .await,
        "label_selector",
    );
    expect_field(
        "update: unknown mask path",
        c.clone()
            .update_account(pb::UpdateAccountRequest {
                account: Some(good_account()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["account_id".into()],
                }),
                validate_only: false,
            })
            .await,
        "update_mask",
    );
    expect_field(
        "update: bad etag",
        c.clone()
            .update_account(pb::UpdateAccountRequest {
                account: Some(pb::Account {
                    etag: "W/\"1\"".into(),
                    display_name: "x".into(),
                    ..good_account()
                }),
                update_mask: None,
                validate_only: false,
            })
            .await,
        "account.etag",
    );
    expect_field(
        "deregister: bad id",
        c.clone()
            .deregister_account(pb::DeregisterAccountRequest {
                account_id: "1234567890123".into(),
                etag: String::new(),
            })
            .await,
        "account_id",
    );
    expect_field(
        "verify: bad region",
        c.clone()
            .verify_account(pb::VerifyAccountRequest {
                account_id: ACCOUNT.into(),
                regions: vec!["EU-WEST-1".into()],
            })
            .await,
        "regions",
    );

    // Inventory.
    expect_field(
        "get table: bad table name",
        c.clone()
            .get_table_encryption(pb::GetTableEncryptionRequest {
                account_id: ACCOUNT.into(),
                region: "eu-west-1".into(),
                table_name: "no spaces allowed".into(),
            })
            .await,
        "table_name",
    );
    expect_field(
        "list tables: unknown mode",
        c.clone()
            .list_table_encryptions(pb::ListTableEncryptionsRequest {
                mode: 42,
                ..Default::default()
            })
            .await,
        "mode",
    );
    expect_field(
        "list tables: bad key",
        c.clone()
            .list_table_encryptions(pb::ListTableEncryptionsRequest {
                kms_key: "arn:aws:kms:eu-west-1:123:key/x".into(),
                ..Default::default()
            })
            .await,
        "kms_key",
    );
    expect_field(
        "list tables: bad account id",
        c.clone()
            .list_table_encryptions(pb::ListTableEncryptionsRequest {
                account_ids: vec!["x".into()],
                ..Default::default()
            })
            .await,
        "account_ids",
    );
    expect_field(
        "refresh: bad region",
        c.clone()
            .refresh_inventory(pb::RefreshInventoryRequest {
                account_ids: vec![],
                regions: vec!["nowhere-1".into()],
            })
            .await,
        "regions",
    );
    expect_field(
        "scan: bad id",
        c.clone()
            .get_inventory_scan(pb::GetInventoryScanRequest {
                scan_id: "scan-1".into(),
            })
            .await,
        "scan_id",
    );
    expect_field(
        "key usage: empty key",
        c.clone()
            .get_key_usage(pb::GetKeyUsageRequest {
                kms_key: String::new(),
                ..Default::default()
            })
            .await,
        "kms_key",
    );

    // Change requests.
    for (case, request, field) in [
        (
            "no targets",
            pb::CreateChangeRequestRequest {
                target: target(3, "alias/a"),
                ..Default::default()
            },
            "tables",
        ),
        (
            "bad table ref",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table("1", "eu-west-1", "t")],
                }),
                target: target(3, "alias/a"),
                ..Default::default()
            },
            "tables.tables[0].account_id",
        ),
        (
            "unknown target mode",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table(ACCOUNT, "eu-west-1", "t")],
                }),
                target: target(99, ""),
                ..Default::default()
            },
            "target.mode",
        ),
        (
            "customer managed without a key",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table(ACCOUNT, "eu-west-1", "t")],
                }),
                target: target(3, ""),
                ..Default::default()
            },
            "target.kms_key",
        ),
        (
            "oversized description",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table(ACCOUNT, "eu-west-1", "t")],
                }),
                target: target(1, ""),
                description: long.clone(),
                ..Default::default()
            },
            "description",
        ),
        (
            "rate above the service's",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table(ACCOUNT, "eu-west-1", "t")],
                }),
                target: target(1, ""),
                options: Some(pb::ChangeOptions {
                    max_updates_per_second: 1e9,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "options.max_updates_per_second",
        ),
        (
            "a rate so low it freezes the account-region",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table(ACCOUNT, "eu-west-1", "t")],
                }),
                target: target(1, ""),
                options: Some(pb::ChangeOptions {
                    max_updates_per_second: 1e-300,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "options.max_updates_per_second",
        ),
        (
            "bad request id",
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![table(ACCOUNT, "eu-west-1", "t")],
                }),
                target: target(1, ""),
                request_id: long.clone(),
                ..Default::default()
            },
            "request_id",
        ),
    ] {
        let result = c.clone().create_change_request(request).await;
        expect_field(case, result, field);
    }
    expect_field(
        "single table: missing",
        c.clone()
            .update_table_encryption(pb::UpdateTableEncryptionRequest::default())
            .await,
        "table",
    );
    expect_field(
        "get request: bad id",
        c.clone()
            .get_change_request(pb::GetChangeRequestRequest {
                change_request_id: "42".into(),
            })
            .await,
        "change_request_id",
    );
    expect_field(
        "list requests: unknown state",
        c.clone()
            .list_change_requests(pb::ListChangeRequestsRequest {
                states: vec![77],
                ..Default::default()
            })
            .await,
        "states",
    );
    expect_field(
        "list items: forged token",
        c.clone()
            .list_change_items(pb::ListChangeItemsRequest {
                change_request_id: UUID.into(),
                page_token: "AAAA".into(),
                ..Default::default()
            })
            .await,
        "page_token",
    );
    for (case, result) in [
        (
            "approve",
            c.clone()
                .approve_change_request(pb::ApproveChangeRequestRequest {
                    change_request_id: "x".into(),
                })
                .await,
        ),
        (
            "cancel",
            c.clone()
                .cancel_change_request(pb::CancelChangeRequestRequest {
                    change_request_id: "x".into(),
                })
                .await,
        ),
        (
            "pause",
            c.clone()
                .pause_change_request(pb::PauseChangeRequestRequest {
                    change_request_id: "x".into(),
                    ..Default::default()
                })
                .await,
        ),
        (
            "resume",
            c.clone()
                .resume_change_request(pb::ResumeChangeRequestRequest {
                    change_request_id: "x".into(),
                })
                .await,
        ),
    ] {
        expect_field(case, result, "change_request_id");
    }
    expect_field(
        "watch: bad id",
        c.clone()
            .watch_change_request(pb::WatchChangeRequestRequest {
                change_request_id: String::new(),
            })
            .await,
        "change_request_id",
    );
    expect_field(
        "rollback: bad id",
        c.clone()
            .rollback_change_request(pb::RollbackChangeRequestRequest {
                change_request_id: "nope".into(),
                ..Default::default()
            })
            .await,
        "change_request_id",
    );
    expect_field(
        "history: bad region",
        c.clone()
            .list_key_rotation_history(pb::ListKeyRotationHistoryRequest {
                region: "moon-1".into(),
                ..Default::default()
            })
            .await,
        "region",
    );
    expect_field(
        "audit: bad outcome",
        c.clone()
            .list_audit_events(pb::ListAuditEventsRequest {
                outcome: "denied!".into(),
                ..Default::default()
            })
            .await,
        "outcome",
    );

    // Nothing was written (the audit log records the refused mutating calls, by design).
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    for table in [
        "accounts",
        "table_inventory",
        "change_requests",
        "change_items",
        "key_rotation_history",
    ] {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "{table} must stay empty");
    }
    let refused: i64 =
        sqlx::query("SELECT count(*) FROM audit_log WHERE outcome = 'INVALID_ARGUMENT'")
            .fetch_one(&pool)
            .await
            .expect("count")
            .get(0);
    assert!(
        refused >= 10,
        "refused mutating calls are audited: {refused}"
    );
    app.stop().await.expect("stop");
}
