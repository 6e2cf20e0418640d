//! Security end to end: TLS and mutual TLS, bearer tokens and JWTs (expired, wrong audience), health open and
//! reflection closed to anonymous callers, every RPC against every role, scopes by account labels, the
//! two-person rule, the per-caller rate limit, and the audit log of allowed and refused calls.

use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tablecrypt_tests::changes::{self, *};
use tablecrypt_tests::security::*;
use tablecrypt_tests::{TestApp, TestDatabase};
use tonic::Code;
use tonic::transport::Channel;

type Client = TableEncryptionClient<Channel>;

async fn audit_events(client: &Client, token: &str) -> Vec<pb::AuditEvent> {
    client
        .clone()
        .list_audit_events(bearer(
            token,
            pb::ListAuditEventsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("audit log")
        .into_inner()
        .events
}

fn has_event(events: &[pb::AuditEvent], caller: &str, method: &str, outcome: &str) -> bool {
    events
        .iter()
        .any(|e| e.caller == caller && e.method == method && e.outcome == outcome)
}

fn account(id: &str, team: &str) -> pb::Account {
    pb::Account {
        account_id: id.into(),
        role_arn: format!("arn:aws:iam::{id}:role/tablecrypt-member"),
        regions: vec!["eu-west-1".into()],
        labels: [("team".to_owned(), team.to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn tls_client_certificates_tokens_and_jwts_authenticate_and_every_refusal_is_audited() {
    let pki = Pki::new();
    let db = TestDatabase::create().await.expect("db");
    let toml = format!(
        "insecure = false\n{}{}",
        tokens_and_grants(&[
            ("ops-admin", "admin", ""),
            ("spiffe://tablecrypt/ci", "viewer", ""),
            (&format!("jwt:{JWT_ISSUER}:jwt-user"), "operator", ""),
        ]),
        pki.tls_and_jwt_toml()
    );
    let app = TestApp::spawn_tls(&db.url, &toml, pki.client_tls(None))
        .await
        .expect("TLS server");
    let anonymous = app.client.clone();

    // No credentials: UNAUTHENTICATED; health stays open; reflection needs a caller.
    let refused = anonymous
        .clone()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tablecrypt.v1.TableEncryption".into(),
        })
        .await
        .expect("health is open")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    let reflection = || {
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        tokio_stream::iter(vec![tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let mut reflect =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            app.channel.clone(),
        );
    let err = reflect
        .server_reflection_info(reflection())
        .await
        .expect_err("reflection needs a caller");
    assert_eq!(err.code(), Code::Unauthenticated);
    reflect
        .server_reflection_info(bearer("token-ops-admin", reflection()))
        .await
        .expect("reflection with a token");

    // A static token: the admin registers an account.
    anonymous
        .clone()
        .register_account(as_token(
            "ops-admin",
            pb::RegisterAccountRequest {
                account: Some(account("123456789012", "payments")),
            },
        ))
        .await
        .expect("admin registers");
    let err = anonymous
        .clone()
        .list_accounts(bearer("not-a-token", pb::ListAccountsRequest::default()))
        .await
        .expect_err("unknown token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains("not-a-token"), "{err:?}");

    // A client certificate: identity from its URI SAN; a viewer reads but may not register.
    let ci = TableEncryptionClient::new(
        pki.channel(
            app.addr,
            Some(pki.client_certificate("spiffe://tablecrypt/ci")),
        )
        .await,
    );
    let listed = ci
        .clone()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("viewer lists")
        .into_inner();
    assert_eq!(listed.accounts.len(), 1);
    let err = ci
        .clone()
        .register_account(pb::RegisterAccountRequest {
            account: Some(account("210987654321", "search")),
        })
        .await
        .expect_err("viewer may not register");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("admin"), "{err:?}");

    // A certificate cannot pose as a token: URI SANs "ops-admin" and "token:ops-admin" are cert-uri identities
    // with no grant, not the admin token's identity.
    for san in ["ops-admin", "token:ops-admin"] {
        let impostor = TableEncryptionClient::new(
            pki.channel(app.addr, Some(pki.client_certificate(san)))
                .await,
        );
        let err = impostor
            .clone()
            .list_accounts(pb::ListAccountsRequest::default())
            .await
            .expect_err("a certificate named like the admin token");
        assert_eq!(err.code(), Code::PermissionDenied, "{san}: {err:?}");
        assert!(
            err.message().contains(&format!("cert-uri:{san}")),
            "{err:?}"
        );
    }

    // JWTs: valid, expired, wrong audience.
    anonymous
        .clone()
        .list_accounts(bearer(
            &pki.jwt("jwt-user", JWT_AUDIENCE, 300),
            pb::ListAccountsRequest::default(),
        ))
        .await
        .expect("valid JWT");
    for (token, why) in [
        (pki.jwt("jwt-user", JWT_AUDIENCE, -300), "Expired"),
        (pki.jwt("jwt-user", "someone-else", 300), "Audience"),
    ] {
        let err = anonymous
            .clone()
            .list_accounts(bearer(&token, pb::ListAccountsRequest::default()))
            .await
            .expect_err(why);
        assert_eq!(err.code(), Code::Unauthenticated, "{why}: {err:?}");
        assert!(err.message().contains(why), "{why}: {err:?}");
    }

    // The audit log: allowed and refused calls, with the caller and how it authenticated.
    let events = audit_events(&anonymous, "token-ops-admin").await;
    let registered = events
        .iter()
        .find(|e| e.method == "RegisterAccount" && e.outcome == "OK")
        .expect("allowed registration audited");
    assert_eq!(registered.caller, "token:ops-admin");
    assert_eq!(registered.authenticated_by, "token");
    assert_eq!(registered.target, "account 123456789012");
    let denied = events
        .iter()
        .find(|e| e.method == "RegisterAccount" && e.outcome == "PERMISSION_DENIED")
        .expect("refused registration audited");
    assert_eq!(denied.caller, "spiffe://tablecrypt/ci");
    assert_eq!(denied.authenticated_by, "mtls");
    assert!(has_event(
        &events,
        "unauthenticated",
        "ListAccounts",
        "UNAUTHENTICATED"
    ));
    assert!(
        events
            .iter()
            .all(|e| !e.message.contains("token-") && !e.target.contains("token-")),
        "no token in the audit log"
    );
    let err = ci
        .clone()
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .expect_err("viewers do not read the audit log");
    assert_eq!(err.code(), Code::PermissionDenied);

    // Append-only: the database refuses to rewrite history, through the log or this month's partition.
    let month = format!("audit_log_{}", chrono::Utc::now().format("%Y_%m"));
    tablecrypt_tests::assert_append_only(
        &db.url,
        &[
            "UPDATE audit_log SET outcome = 'OK'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            &format!("DELETE FROM {month}"),
            &format!("TRUNCATE {month}"),
            "TRUNCATE audit_events",
        ],
    )
    .await;
    app.stop().await.expect("stop");
}

/// A refused call is audited whatever bytes it carried: a viewer's CreateChangeRequest with a NUL in its selector
/// is refused and recorded (PostgreSQL text cannot hold NUL, and the audit insert used to fail, leaving the call
/// unaudited); a NUL in a free-text filter is INVALID_ARGUMENT naming the field, not INTERNAL.
#[tokio::test]
async fn a_nul_byte_neither_escapes_the_audit_log_nor_breaks_a_filter() {
    let pki = Pki::new();
    let db = TestDatabase::create().await.expect("db");
    let toml = format!(
        "insecure = false\n{}{}",
        tokens_and_grants(&[("prober", "viewer", ""), ("ops-admin", "admin", "")]),
        pki.tls_and_jwt_toml()
    );
    let app = TestApp::spawn_tls(&db.url, &toml, pki.client_tls(None))
        .await
        .expect("TLS server");
    let refused = app
        .client
        .clone()
        .create_change_request(bearer(
            "token-prober",
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector {
                    table_name_prefix: "orders\0--".into(),
                    ..Default::default()
                }),
                target: Some(pb::TargetEncryption {
                    mode: pb::EncryptionMode::AwsOwned as i32,
                    kms_key: String::new(),
                }),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a viewer may not change");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let events = audit_events(&app.client, "token-ops-admin").await;
    assert!(
        has_event(
            &events,
            "token:prober",
            "CreateChangeRequest",
            "PERMISSION_DENIED"
        ),
        "{events:#?}"
    );
    let bad = app
        .client
        .clone()
        .list_table_encryptions(bearer(
            "token-ops-admin",
            pb::ListTableEncryptionsRequest {
                table_name_prefix: "orders\0".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("NUL in a filter");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("table_name_prefix"), "{bad:?}");
    app.stop().await.expect("stop");
}

/// A JWT is good only from its `nbf` on: one that is not valid for another hour is refused.
#[tokio::test]
async fn a_jwt_before_its_not_before_time_is_refused() {
    let pki = Pki::new();
    let db = TestDatabase::create().await.expect("db");
    let toml = format!(
        "insecure = false\n{}{}",
        tokens_and_grants(&[(&format!("jwt:{JWT_ISSUER}:jwt-user"), "operator", "")]),
        pki.tls_and_jwt_toml()
    );
    let app = TestApp::spawn_tls(&db.url, &toml, pki.client_tls(None))
        .await
        .expect("TLS server");
    let list = |token: String| {
        let client = app.client.clone();
        async move {
            client
                .clone()
                .list_accounts(bearer(&token, pb::ListAccountsRequest::default()))
                .await
        }
    };
    list(pki.jwt_from("jwt-user", JWT_AUDIENCE, 0, 600))
        .await
        .expect("a JWT valid now");
    let early = list(pki.jwt_from("jwt-user", JWT_AUDIENCE, 3600, 7200))
        .await
        .expect_err("not yet valid");
    assert_eq!(early.code(), Code::Unauthenticated, "{early:?}");
    app.stop().await.expect("stop");
}

/// The permission each RPC needs; None: admin over every account (the audit log).
const MATRIX: &[(&str, &[&str])] = &[
    ("RegisterAccount", &["admin"]),
    ("GetAccount", &["viewer", "operator", "approver", "admin"]),
    ("ListAccounts", &["viewer", "operator", "approver", "admin"]),
    ("UpdateAccount", &["admin"]),
    ("DeregisterAccount", &["admin"]),
    (
        "VerifyAccount",
        &["viewer", "operator", "approver", "admin"],
    ),
    (
        "GetTableEncryption",
        &["viewer", "operator", "approver", "admin"],
    ),
    (
        "ListTableEncryptions",
        &["viewer", "operator", "approver", "admin"],
    ),
    ("RefreshInventory", &["operator", "admin"]),
    (
        "GetInventoryScan",
        &["viewer", "operator", "approver", "admin"],
    ),
    ("GetKeyUsage", &["viewer", "operator", "approver", "admin"]),
    ("CreateChangeRequest", &["operator", "admin"]),
    (
        "GetChangeRequest",
        &["viewer", "operator", "approver", "admin"],
    ),
    (
        "ListChangeRequests",
        &["viewer", "operator", "approver", "admin"],
    ),
    (
        "ListChangeItems",
        &["viewer", "operator", "approver", "admin"],
    ),
    ("ApproveChangeRequest", &["approver", "admin"]),
    ("CancelChangeRequest", &["operator", "admin"]),
    ("PauseChangeRequest", &["operator", "admin"]),
    ("ResumeChangeRequest", &["operator", "admin"]),
    (
        "WatchChangeRequest",
        &["viewer", "operator", "approver", "admin"],
    ),
    ("UpdateTableEncryption", &["operator", "admin"]),
    ("RollbackChangeRequest", &["operator", "admin"]),
    (
        "ListKeyRotationHistory",
        &["viewer", "operator", "approver", "admin"],
    ),
    ("ListAuditEvents", &["admin"]),
];

/// Calls `method` with an empty (mostly invalid) request as `identity` (None: no credentials). Authorization
/// comes before validation, so the code tells whether the role was enough.
async fn call(client: &Client, method: &str, identity: Option<&str>) -> Result<(), tonic::Status> {
    let mut c = client.clone();
    macro_rules! rpc {
        ($name:ident, $request:expr) => {{
            let message = $request;
            let request = match identity {
                Some(who) => as_token(who, message),
                None => tonic::Request::new(message),
            };
            c.$name(request).await.map(|_| ())
        }};
    }
    match method {
        "RegisterAccount" => rpc!(register_account, pb::RegisterAccountRequest::default()),
        "GetAccount" => rpc!(get_account, pb::GetAccountRequest::default()),
        "ListAccounts" => rpc!(list_accounts, pb::ListAccountsRequest::default()),
        "UpdateAccount" => rpc!(update_account, pb::UpdateAccountRequest::default()),
        "DeregisterAccount" => rpc!(deregister_account, pb::DeregisterAccountRequest::default()),
        "VerifyAccount" => rpc!(verify_account, pb::VerifyAccountRequest::default()),
        "GetTableEncryption" => rpc!(
            get_table_encryption,
            pb::GetTableEncryptionRequest::default()
        ),
        "ListTableEncryptions" => rpc!(
            list_table_encryptions,
            pb::ListTableEncryptionsRequest::default()
        ),
        "RefreshInventory" => rpc!(
            refresh_inventory,
            pb::RefreshInventoryRequest {
                account_ids: vec!["not-an-account".into()],
                ..Default::default()
            }
        ),
        "GetInventoryScan" => rpc!(get_inventory_scan, pb::GetInventoryScanRequest::default()),
        "GetKeyUsage" => rpc!(get_key_usage, pb::GetKeyUsageRequest::default()),
        "CreateChangeRequest" => rpc!(
            create_change_request,
            pb::CreateChangeRequestRequest::default()
        ),
        "GetChangeRequest" => rpc!(get_change_request, pb::GetChangeRequestRequest::default()),
        "ListChangeRequests" => rpc!(
            list_change_requests,
            pb::ListChangeRequestsRequest::default()
        ),
        "ListChangeItems" => rpc!(list_change_items, pb::ListChangeItemsRequest::default()),
        "ApproveChangeRequest" => rpc!(
            approve_change_request,
            pb::ApproveChangeRequestRequest::default()
        ),
        "CancelChangeRequest" => rpc!(
            cancel_change_request,
            pb::CancelChangeRequestRequest::default()
        ),
        "PauseChangeRequest" => rpc!(
            pause_change_request,
            pb::PauseChangeRequestRequest::default()
        ),
        "ResumeChangeRequest" => rpc!(
            resume_change_request,
            pb::ResumeChangeRequestRequest::default()
        ),
        "WatchChangeRequest" => rpc!(
            watch_change_request,
            pb::WatchChangeRequestRequest::default()
        ),
        "UpdateTableEncryption" => rpc!(
            update_table_encryption,
            pb::UpdateTableEncryptionRequest::default()
        ),
        "RollbackChangeRequest" => rpc!(
            rollback_change_request,
            pb::RollbackChangeRequestRequest::default()
        ),
        "ListKeyRotationHistory" => rpc!(
            list_key_rotation_history,
            pb::ListKeyRotationHistoryRequest::default()
        ),
        "ListAuditEvents" => rpc!(list_audit_events, pb::ListAuditEventsRequest::default()),
        other => panic!("no such RPC in the matrix: {other}"),
    }
}

#[tokio::test]
async fn every_rpc_needs_its_role() {
    let db = TestDatabase::create().await.expect("db");
    // Tokens over plaintext (development transport) keep this test about roles, not TLS; its unauthenticated
    // calls are many and quick, so no per-address limit on them.
    let toml = format!(
        "insecure = true\nunauthenticated_rate_limit = 0\n{}",
        tokens_and_grants(&[
            ("viewer", "viewer", ""),
            ("operator", "operator", ""),
            ("approver", "approver", ""),
            ("admin", "admin", ""),
            ("nobody", "viewer", "team=nonexistent"),
        ])
    );
    let app = TestApp::spawn_with(&db, &toml).await.expect("server");
    let methods = [
        "RegisterAccount",
        "GetAccount",
        "ListAccounts",
        "UpdateAccount",
        "DeregisterAccount",
        "VerifyAccount",
        "GetTableEncryption",
        "ListTableEncryptions",
        "RefreshInventory",
        "GetInventoryScan",
        "GetKeyUsage",
        "CreateChangeRequest",
        "GetChangeRequest",
        "ListChangeRequests",
        "ListChangeItems",
        "ApproveChangeRequest",
        "CancelChangeRequest",
        "PauseChangeRequest",
        "ResumeChangeRequest",
        "WatchChangeRequest",
        "UpdateTableEncryption",
        "RollbackChangeRequest",
        "ListKeyRotationHistory",
        "ListAuditEvents",
    ];
    assert_eq!(methods.len(), MATRIX.len(), "every RPC is in the matrix");
    let mut checked = 0;
    for (method, allowed) in MATRIX {
        let err = call(&app.client, method, None)
            .await
            .expect_err("no credentials");
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "{method} without credentials"
        );
        for role in ["viewer", "operator", "approver", "admin"] {
            let outcome = call(&app.client, method, Some(role)).await;
            let code = outcome.as_ref().err().map_or(Code::Ok, tonic::Status::code);
            if allowed.contains(&role) {
                assert!(
                    code != Code::PermissionDenied && code != Code::Unauthenticated,
                    "{role} must be allowed {method}: {outcome:?}"
                );
            } else {
                assert_eq!(
                    code,
                    Code::PermissionDenied,
                    "{role} must be refused {method}: {outcome:?}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * methods.len());
    // The audit log needs an admin grant over every account, not over some.
    let scoped_admin = format!(
        "insecure = true\n{}",
        tokens_and_grants(&[("team-admin", "admin", "team=payments")])
    );
    let app2 = TestApp::spawn_with(&db, &scoped_admin)
        .await
        .expect("server");
    let err = call(&app2.client, "ListAuditEvents", Some("team-admin"))
        .await
        .expect_err("scoped admin");
    assert_eq!(err.code(), Code::PermissionDenied);
    app2.stop().await.expect("stop");
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn scopes_limit_a_team_to_its_accounts_and_approval_needs_a_second_person() {
    // The fleet registered and scanned by a development server; then a secured server on the same database.
    let s = changes::setup("").await;
    let toml = format!(
        "insecure = true\napproval_required = true\naws_endpoint_url = '{}'\n{FAST}\nupdate_rate = 50.0\n{}",
        s.emulator.endpoint(),
        tokens_and_grants(&[
            ("pay-op", "operator", "team=payments"),
            ("pay-lead", "operator", "team=payments"),
            ("pay-lead", "approver", "team=payments"),
            ("pay-approver", "approver", "team=payments"),
            // pay-lead again under another token, differently cased: the same person to the two-person rule.
            ("Pay-Lead", "approver", "team=payments"),
            ("search-viewer", "viewer", "team=search"),
            ("search-op", "operator", "team=search"),
            ("auditor", "admin", ""),
        ])
    );
    let app = TestApp::spawn_with(&s.db, &toml).await.expect("server");
    let client = app.client.clone();

    // Lists show only the team's accounts and tables.
    let accounts = client
        .clone()
        .list_accounts(as_token("pay-op", pb::ListAccountsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .accounts;
    let ids: Vec<&str> = accounts.iter().map(|a| a.account_id.as_str()).collect();
    assert_eq!(ids, [PAYMENTS]);
    let tables = client
        .clone()
        .list_table_encryptions(as_token(
            "pay-op",
            pb::ListTableEncryptionsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("tables")
        .into_inner()
        .tables;
    assert!(!tables.is_empty());
    assert!(tables.iter().all(|t| t.account_id == PAYMENTS));

    // Page by page, a search viewer sees every search table and nothing else: full pages, and no page token
    // carries another team's account or table (tokens used to be built from rows before the scope filter).
    let search_tables: Vec<String> = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            account_ids: vec![SEARCH.into()],
            ..Default::default()
        })
        .await;
    let mut token = String::new();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = client
            .clone()
            .list_table_encryptions(as_token(
                "search-viewer",
                pb::ListTableEncryptionsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(
            page.tables.len() == 1 || page.next_page_token.is_empty(),
            "{page:?}"
        );
        seen.extend(
            page.tables
                .iter()
                .map(|t| format!("{}/{}/{}", t.account_id, t.region, t.table_name)),
        );
        let decoded = base64_url_decode(&page.next_page_token);
        assert!(
            !decoded.contains(PAYMENTS) && !decoded.contains(SANDBOX),
            "a page token names another team's account: {decoded}"
        );
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, search_tables);
    let mut token = String::new();
    let mut accounts_seen = Vec::new();
    loop {
        let page = client
            .clone()
            .list_accounts(as_token(
                "search-viewer",
                pb::ListAccountsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("accounts page")
            .into_inner();
        accounts_seen.extend(page.accounts.into_iter().map(|a| a.account_id));
        let decoded = base64_url_decode(&page.next_page_token);
        assert!(
            !decoded.contains(PAYMENTS) && !decoded.contains(SANDBOX),
            "{decoded}"
        );
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(accounts_seen, [SEARCH]);
    client
        .clone()
        .refresh_inventory(as_token(
            "pay-op",
            pb::RefreshInventoryRequest {
                account_ids: vec![PAYMENTS.into()],
                ..Default::default()
            },
        ))
        .await
        .expect("refresh in scope");
    let err = client
        .clone()
        .refresh_inventory(as_token("pay-op", pb::RefreshInventoryRequest::default()))
        .await
        .expect_err("the whole fleet is beyond the team's scope");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains(SANDBOX), "{err:?}");
    let everything = s
        .app
        .refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
    let seen = client
        .clone()
        .get_inventory_scan(as_token(
            "search-viewer",
            pb::GetInventoryScanRequest {
                scan_id: everything.scan_id.clone(),
            },
        ))
        .await
        .expect("scan")
        .into_inner();
    assert!(!seen.targets.is_empty());
    assert!(
        seen.targets.iter().all(|t| t.account_id == SEARCH),
        "only the team's targets: {:?}",
        seen.targets
    );

    let err = client
        .clone()
        .list_table_encryptions(as_token(
            "pay-op",
            pb::ListTableEncryptionsRequest {
                account_ids: vec![SEARCH.into()],
                ..Default::default()
            },
        ))
        .await
        .expect_err("another team's account");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains(SEARCH), "{err:?}");

    // A selector reaches only the accounts the caller may change: "every table" is every table of its own
    // accounts, and nothing names the other team's (it was refused naming them, after planning there).
    let plan = client
        .clone()
        .create_change_request(as_token(
            "pay-op",
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector::default()),
                target: to_key("alias/b"),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("whole fleet, as far as the scope goes")
        .into_inner();
    assert!(!plan.items.is_empty());
    assert!(
        plan.items.iter().all(|i| i.account_id == PAYMENTS),
        "{plan:?}"
    );
    assert!(!format!("{plan:?}").contains(SEARCH), "{plan:?}");
    assert_eq!(stored_requests(&s.app).await, 0);

    // Within scope: created, pending approval; the creator may not approve it, a second approver may.
    let created = client
        .clone()
        .create_change_request(as_token(
            "pay-lead",
            pb::CreateChangeRequestRequest {
                selector: bulk_selector(),
                target: to_key("alias/b"),
                request_id: "payments-q4-rotation".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create in scope")
        .into_inner()
        .change_request
        .expect("request");
    assert_eq!(created.created_by, "token:pay-lead");
    // Request ids belong to their caller: another team using the same id gets a request of its own, neither
    // payments' request nor an error naming payments' accounts (it used to be PERMISSION_DENIED naming them).
    let search_create = || {
        as_token(
            "search-op",
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector {
                    account_ids: vec![SEARCH.into()],
                    ..Default::default()
                }),
                target: Some(pb::TargetEncryption {
                    mode: pb::EncryptionMode::AwsManaged as i32,
                    kms_key: String::new(),
                }),
                request_id: "payments-q4-rotation".into(),
                ..Default::default()
            },
        )
    };
    let theirs = client
        .clone()
        .create_change_request(search_create())
        .await
        .expect("the same request id, another caller")
        .into_inner()
        .change_request
        .expect("request");
    assert_ne!(theirs.change_request_id, created.change_request_id);
    assert_eq!(theirs.created_by, "token:search-op");
    // Replayed exactly, each caller's id returns that caller's request.
    let again = client
        .clone()
        .create_change_request(search_create())
        .await
        .expect("replay")
        .into_inner()
        .change_request
        .expect("request");
    assert_eq!(again.change_request_id, theirs.change_request_id);
    // Replayed for a different change (AIP-155): ALREADY_EXISTS naming the request id, nothing stored.
    let before = stored_requests(&s.app).await;
    let changed = client
        .clone()
        .create_change_request(as_token(
            "pay-lead",
            pb::CreateChangeRequestRequest {
                selector: bulk_selector(),
                target: to_key("alias/a"),
                request_id: "payments-q4-rotation".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("the same request id for another change");
    assert_eq!(changed.code(), Code::AlreadyExists, "{changed:?}");
    assert!(
        changed.message().contains("request_id")
            && changed.message().contains(&created.change_request_id),
        "{changed:?}"
    );
    assert_eq!(stored_requests(&s.app).await, before);
    assert_eq!(created.state(), pb::ChangeRequestState::PendingApproval);
    let id = created.change_request_id.clone();
    let approve = |who: &'static str| {
        let mut c = client.clone();
        let id = id.clone();
        async move {
            c.approve_change_request(as_token(
                who,
                pb::ApproveChangeRequestRequest {
                    change_request_id: id,
                },
            ))
            .await
        }
    };
    let err = approve("pay-lead").await.expect_err("own request");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = approve("Pay-Lead")
        .await
        .expect_err("own request, under another token and case");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("token:pay-lead"), "{err:?}");
    let err = approve("pay-op").await.expect_err("not an approver");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    approve("pay-approver")
        .await
        .expect("second person approves");

    // Another team sees neither the request nor its items.
    let err = client
        .clone()
        .get_change_request(as_token(
            "search-viewer",
            pb::GetChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect_err("another team's request");
    assert_eq!(err.code(), Code::PermissionDenied);
    let listed = client
        .clone()
        .list_change_requests(as_token(
            "search-viewer",
            pb::ListChangeRequestsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner()
        .change_requests;
    assert!(
        listed.iter().all(|r| r.created_by == "token:search-op"),
        "only search's own request: {listed:?}"
    );

    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);
    let rows = history(&s.app, history_of(&id)).await;
    assert_eq!(rows.len(), BULK);
    assert!(
        rows.iter()
            .all(|r| r.requested_by == "token:pay-lead" && r.approved_by == "token:pay-approver")
    );
    let hidden = client
        .clone()
        .list_key_rotation_history(as_token(
            "search-viewer",
            pb::ListKeyRotationHistoryRequest::default(),
        ))
        .await
        .expect("history")
        .into_inner()
        .rotations;
    assert!(hidden.is_empty(), "another team's history is hidden");

    let events = audit_events(&client, "token-auditor").await;
    assert!(has_event(
        &events,
        "token:pay-op",
        "ListTableEncryptions",
        "PERMISSION_DENIED"
    ));
    assert!(has_event(
        &events,
        "token:pay-lead",
        "CreateChangeRequest",
        "OK"
    ));
    assert!(has_event(
        &events,
        "token:pay-lead",
        "ApproveChangeRequest",
        "PERMISSION_DENIED"
    ));
    assert!(has_event(
        &events,
        "token:pay-approver",
        "ApproveChangeRequest",
        "OK"
    ));
    let approved = events
        .iter()
        .find(|e| e.caller == "token:pay-approver" && e.method == "ApproveChangeRequest")
        .expect("approval event");
    assert_eq!(approved.target, format!("change request {id}"));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn a_caller_over_its_call_rate_gets_resource_exhausted_and_others_do_not() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn_with(&db, "caller_rate_limit = 3")
        .await
        .expect("server");
    let mut exhausted = 0;
    for _ in 0..10 {
        let result = app
            .client
            .clone()
            .list_accounts(as_caller("chatty", pb::ListAccountsRequest::default()))
            .await;
        if let Err(status) = result {
            assert_eq!(status.code(), Code::ResourceExhausted);
            exhausted += 1;
        }
    }
    assert!(exhausted >= 5, "only {exhausted} of 10 calls limited");
    app.client
        .clone()
        .list_accounts(as_caller("quiet", pb::ListAccountsRequest::default()))
        .await
        .expect("another caller is not limited");
    app.stop().await.expect("stop");
}

/// A page token's contents (URL-safe base64, no padding), to look for names it must not carry.
fn base64_url_decode(token: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in token.bytes() {
        let Some(value) = ALPHABET.iter().position(|b| *b == byte) else {
            continue;
        };
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Page tokens are signed with keys shared by every replica: the first signs, the others are still accepted.
const PAGE_KEY_1: &str = "page-token-key-one-0123456789abcdef";
const PAGE_KEY_2: &str = "page-token-key-two-0123456789abcdef";

/// Every page of a scoped caller's change requests and history holds only rows it may see, the scope applied
/// before the page is cut (it was applied after: a search viewer got empty pages whose tokens came from payments'
/// rows). Tokens are signed and bound to the caller, the RPC and the filter: another caller's, another RPC's, a
/// changed or a made-up token is INVALID_ARGUMENT naming page_token. A replica with the same keys continues a
/// page another made, also during a key rotation; one without the signing key refuses it.
#[tokio::test]
async fn scoped_pages_hold_only_the_callers_rows_and_tokens_are_signed_and_bound() {
    let s = changes::setup(&format!("page_token_keys = '{PAGE_KEY_1}'")).await;
    let mut admin = s.app.client.clone();
    // Newest first the list is payments, search, payments, search: a search viewer's page of one, cut before
    // the scope, would start with a payments request.
    let mut search_ids = Vec::new();
    for (account, table_name, target) in [
        (
            SEARCH,
            "orders",
            pb::TargetEncryption {
                mode: pb::EncryptionMode::AwsManaged as i32,
                kms_key: String::new(),
            },
        ),
        (PAYMENTS, "orders", to_key("alias/b").expect("target")),
        (SEARCH, "orders", to_key("alias/a").expect("target")),
        (PAYMENTS, "orders", to_key("alias/a").expect("target")),
    ] {
        let id = admin
            .create_change_request(pb::CreateChangeRequestRequest {
                tables: tables(vec![table(account, EU, table_name)]),
                target: Some(target),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .change_request
            .expect("request")
            .change_request_id;
        let done = wait_terminal(&s.app, &id).await;
        assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{done:?}");
        if account == SEARCH {
            search_ids.insert(0, id);
        }
    }
    let grants = tokens_and_grants(&[
        ("search-viewer", "viewer", "team=search"),
        ("search-op", "operator", "team=search"),
    ]);
    let secured = |keys: &str| {
        format!(
            "insecure = true\naws_endpoint_url = '{}'\n{FAST}\npage_token_keys = '{keys}'\n{grants}",
            s.emulator.endpoint()
        )
    };
    let replica = TestApp::spawn_with(&s.db, &secured(PAGE_KEY_1))
        .await
        .expect("replica");
    let list_requests = |app: &TestApp, identity: &str, token: &str| {
        let mut client = app.client.clone();
        let request = as_token(
            identity,
            pb::ListChangeRequestsRequest {
                page_size: 1,
                page_token: token.to_owned(),
                ..Default::default()
            },
        );
        async move { client.list_change_requests(request).await }
    };

    // Full pages of the team's own requests, then the end.
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut first_token = String::new();
    for page_number in 0..10 {
        let page = list_requests(&replica, "search-viewer", &token)
            .await
            .expect("page")
            .into_inner();
        assert_eq!(
            page.change_requests.len(),
            1,
            "page {page_number}: {page:?}"
        );
        seen.push(page.change_requests[0].change_request_id.clone());
        token = page.next_page_token;
        if page_number == 0 {
            first_token = token.clone();
        }
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, search_ids);

    // The history likewise: the search table's two rows, a page each.
    let mut token = String::new();
    let mut rows = Vec::new();
    loop {
        let page = replica
            .client
            .clone()
            .list_key_rotation_history(as_token(
                "search-viewer",
                pb::ListKeyRotationHistoryRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("history page")
            .into_inner();
        assert_eq!(page.rotations.len(), 1, "{page:?}");
        rows.extend(page.rotations.into_iter().map(|r| r.account_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(rows, [SEARCH, SEARCH]);

    let refused =
        |result: Result<tonic::Response<pb::ListChangeRequestsResponse>, tonic::Status>,
         why: &str| {
            let status = result.expect_err(why);
            assert_eq!(status.code(), Code::InvalidArgument, "{why}: {status:?}");
            assert!(status.message().contains("page_token"), "{why}: {status:?}");
        };
    // Another caller with the same scope, a changed token, a made-up one.
    refused(
        list_requests(&replica, "search-op", &first_token).await,
        "another caller's token",
    );
    let mut changed = first_token.clone().into_bytes();
    let last = changed.len() - 1;
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    refused(
        list_requests(
            &replica,
            "search-viewer",
            &String::from_utf8(changed).expect("ascii"),
        )
        .await,
        "a changed token",
    );
    refused(
        list_requests(&replica, "search-viewer", "eyJhZnRlciI6IjEifQ").await,
        "an unsigned token of the old format",
    );
    let other_rpc = replica
        .client
        .clone()
        .list_key_rotation_history(as_token(
            "search-viewer",
            pb::ListKeyRotationHistoryRequest {
                page_token: first_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another RPC's token");
    assert_eq!(other_rpc.code(), Code::InvalidArgument, "{other_rpc:?}");

    // Another replica with the same keys, then mid-rotation (the new key signs, the old one still accepted),
    // continues the page; one that dropped the old key refuses it.
    for keys in [PAGE_KEY_1.to_owned(), format!("{PAGE_KEY_2},{PAGE_KEY_1}")] {
        let other = TestApp::spawn_with(&s.db, &secured(&keys))
            .await
            .expect("replica");
        let page = list_requests(&other, "search-viewer", &first_token)
            .await
            .unwrap_or_else(|e| panic!("keys {keys}: {e:?}"))
            .into_inner();
        assert_eq!(
            page.change_requests
                .iter()
                .map(|r| r.change_request_id.clone())
                .collect::<Vec<_>>(),
            search_ids[1..]
        );
        other.stop().await.expect("stop");
    }
    let rotated = TestApp::spawn_with(&s.db, &secured(PAGE_KEY_2))
        .await
        .expect("replica");
    refused(
        list_requests(&rotated, "search-viewer", &first_token).await,
        "a token signed with a dropped key",
    );
    rotated.stop().await.expect("stop");
    replica.stop().await.expect("stop");
}

/// A change request of an account that has since been deregistered is left to callers whose grant covers every
/// account: a team's scope cannot match an account that has no labels any more (such requests were readable and
/// controllable from every scope: a payments approver approved a search request).
#[tokio::test]
async fn a_deregistered_accounts_requests_are_left_to_grants_over_every_account() {
    let s = changes::setup("").await;
    let mut admin = s.app.client.clone();
    let id = admin
        .create_change_request(pb::CreateChangeRequestRequest {
            tables: tables(vec![table(SEARCH, EU, "orders")]),
            target: Some(pb::TargetEncryption {
                mode: pb::EncryptionMode::AwsManaged as i32,
                kms_key: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .change_request
        .expect("request")
        .change_request_id;
    wait_terminal(&s.app, &id).await;
    admin
        .deregister_account(pb::DeregisterAccountRequest {
            account_id: SEARCH.into(),
            ..Default::default()
        })
        .await
        .expect("deregister");
    let toml = format!(
        "insecure = true\naws_endpoint_url = '{}'\n{FAST}\n{}",
        s.emulator.endpoint(),
        tokens_and_grants(&[
            ("pay-viewer", "viewer", "team=payments"),
            ("pay-op", "operator", "team=payments"),
            ("auditor", "admin", ""),
        ])
    );
    let app = TestApp::spawn_with(&s.db, &toml).await.expect("server");
    let get = |who: &str| {
        let mut client = app.client.clone();
        let request = as_token(
            who,
            pb::GetChangeRequestRequest {
                change_request_id: id.clone(),
            },
        );
        async move { client.get_change_request(request).await }
    };
    let err = get("pay-viewer").await.expect_err("another team's scope");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = app
        .client
        .clone()
        .rollback_change_request(as_token(
            "pay-op",
            pb::RollbackChangeRequestRequest {
                change_request_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("controlling it");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let items = app
        .client
        .clone()
        .list_change_items(as_token(
            "pay-viewer",
            pb::ListChangeItemsRequest {
                change_request_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("its items");
    assert_eq!(items.code(), Code::PermissionDenied, "{items:?}");
    get("auditor").await.expect("a grant over every account");
    app.stop().await.expect("stop");
}

/// A scoped operator naming another team's tables is refused before tablecrypt calls AWS in that account: 200
/// made-up table names made as many DescribeTable calls there (ignoring every rate limit) before the refusal.
/// Judged from the emulator's request log.
#[tokio::test]
async fn tables_of_another_teams_account_are_refused_before_any_aws_call_there() {
    let s = changes::setup("").await;
    let toml = format!(
        "insecure = true\naws_endpoint_url = '{}'\n{FAST}\n{}",
        s.emulator.endpoint(),
        tokens_and_grants(&[("pay-op", "operator", "team=payments")])
    );
    let app = TestApp::spawn_with(&s.db, &toml).await.expect("server");
    let before = calls_in(&s.emulator, SEARCH).await;
    for validate_only in [true, false] {
        let err = app
            .client
            .clone()
            .create_change_request(as_token(
                "pay-op",
                pb::CreateChangeRequestRequest {
                    tables: tables(
                        (0..200)
                            .map(|i| table(SEARCH, EU, &format!("made-up-{i}")))
                            .collect(),
                    ),
                    target: to_key("alias/a"),
                    validate_only,
                    ..Default::default()
                },
            ))
            .await
            .expect_err("another team's account");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains(SEARCH), "{err:?}");
    }
    // A selector that names no account reaches only the operator's own: nothing is asked in the other team's
    // account (its target alias, its current keys) and the answer does not name it.
    let created = app
        .client
        .clone()
        .create_change_request(as_token(
            "pay-op",
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector {
                    regions: vec![EU.into()],
                    table_name_prefix: "orders".into(),
                    ..Default::default()
                }),
                target: to_key("alias/a"),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("a plan over the operator's own accounts")
        .into_inner();
    assert!(
        created.items.iter().all(|i| i.account_id == PAYMENTS),
        "{created:?}"
    );
    assert_eq!(
        calls_in(&s.emulator, SEARCH).await,
        before,
        "AWS calls made in the other team's account"
    );
    assert_eq!(stored_requests(&s.app).await, 0);
    app.stop().await.expect("stop");
}

/// A viewer of one team can neither resolve a key through another team's account (its role would ask KMS there
/// and AWS's answer would come back) nor learn whether another team's key is in use: GetKeyUsage and every
/// kms_key filter are refused before any call there, with the same answer whether the alias (or the account)
/// exists or not. The team's own keys answer as before.
#[tokio::test]
async fn keys_of_another_teams_account_are_neither_resolved_nor_reported() {
    let s = changes::setup("").await;
    s.app
        .refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
    let toml = format!(
        "insecure = true\naws_endpoint_url = '{}'\n{FAST}\n{}",
        s.emulator.endpoint(),
        tokens_and_grants(&[("pay-viewer", "viewer", "team=payments")])
    );
    let app = TestApp::spawn_with(&s.db, &toml).await.expect("server");
    let client = || app.client.clone();
    let before = calls_in(&s.emulator, SEARCH).await;
    let denied = |result: Result<(), tonic::Status>, what: &str| {
        let err = result.expect_err(what);
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        err.message().to_owned()
    };
    let alias = |account: &str, name: &str| format!("arn:aws:kms:{EU}:{account}:alias/{name}");
    let mut answers = Vec::new();
    for key in [
        key_arn(SEARCH, EU, KEY_SEARCH),
        alias(SEARCH, "a"),
        alias(SEARCH, "no-such-alias"),
        key_arn(SEARCH, EU, "00000000-0000-4000-8000-000000000000"),
    ] {
        let usage = client()
            .get_key_usage(as_token(
                "pay-viewer",
                pb::GetKeyUsageRequest {
                    kms_key: key.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop);
        answers.push(denied(usage, &format!("GetKeyUsage {key}")));
        let tables = client()
            .list_table_encryptions(as_token(
                "pay-viewer",
                pb::ListTableEncryptionsRequest {
                    kms_key: key.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop);
        answers.push(denied(tables, &format!("ListTableEncryptions {key}")));
        let history = client()
            .list_key_rotation_history(as_token(
                "pay-viewer",
                pb::ListKeyRotationHistoryRequest {
                    kms_key_arn: key.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop);
        answers.push(denied(history, &format!("ListKeyRotationHistory {key}")));
    }
    for name in ["alias/a", "alias/no-such-alias"] {
        let usage = client()
            .get_key_usage(as_token(
                "pay-viewer",
                pb::GetKeyUsageRequest {
                    kms_key: name.into(),
                    account_id: SEARCH.into(),
                    region: EU.into(),
                },
            ))
            .await
            .map(drop);
        answers.push(denied(usage, &format!("GetKeyUsage {name} in {SEARCH}")));
    }
    let distinct: std::collections::BTreeSet<&String> = answers.iter().collect();
    assert_eq!(
        distinct.len(),
        2,
        "one answer for kms_key and one for kms_key_arn, whatever exists: {distinct:#?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| a.contains(SEARCH) && !a.contains("User:")),
        "{answers:#?}"
    );
    assert_eq!(
        calls_in(&s.emulator, SEARCH).await,
        before,
        "KMS or DynamoDB was asked in the other team's account"
    );

    // The team's own key, by alias name in its own account, answers as before.
    let own = client()
        .get_key_usage(as_token(
            "pay-viewer",
            pb::GetKeyUsageRequest {
                kms_key: "alias/a".into(),
                account_id: PAYMENTS.into(),
                region: EU.into(),
            },
        ))
        .await
        .expect("own key")
        .into_inner();
    assert_eq!(own.kms_key_arn, payments_key(KEY_A));
    assert!(!own.unused);
    assert!(
        own.tables.iter().any(|t| t.table_name == "orders"),
        "{own:?}"
    );
    assert!(
        own.tables.iter().all(|t| t.account_id == PAYMENTS),
        "{own:?}"
    );
    app.stop().await.expect("stop");
}

/// The JWKS file is read again without a restart. Periodically: once the old key leaves the file, tokens signed
/// with it are refused within a reload interval. And at once for a token naming a key id the server does not know
/// (the identity provider rotated before the next periodic read). Before, the key set was read only at start, so
/// a rotation locked every JWT caller out until a restart.
#[tokio::test]
async fn a_rotated_jwt_key_set_is_picked_up_without_a_restart() {
    let mut pki = Pki::new();
    let db = TestDatabase::create().await.expect("db");
    let spawn = |interval: &str, pki: &Pki| {
        let toml = format!(
            "insecure = false\njwks_reload_interval = '{interval}'\n{}{}",
            tokens_and_grants(&[(&format!("jwt:{JWT_ISSUER}:jwt-user"), "viewer", "")]),
            pki.tls_and_jwt_toml()
        );
        let tls = pki.client_tls(None);
        let url = db.url.clone();
        async move {
            TestApp::spawn_tls(&url, &toml, tls)
                .await
                .expect("TLS server")
        }
    };
    let list = |app: &TestApp, token: String| {
        let client = app.client.clone();
        async move {
            client
                .clone()
                .list_accounts(bearer(&token, pb::ListAccountsRequest::default()))
                .await
        }
    };

    // Periodic: a reload every second.
    let app = spawn("1s", &pki).await;
    let old_token = pki.jwt("jwt-user", JWT_AUDIENCE, 600);
    list(&app, old_token.clone()).await.expect("the first key");
    pki.rotate_jwt_key("test-key-2");
    let mut refused = None;
    for _ in 0..50 {
        if let Err(err) = list(&app, old_token.clone()).await {
            refused = Some(err);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let err = refused.expect("the old key is still accepted 5 s after it left the key set");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("test-key-1"), "{err:?}");
    list(&app, pki.jwt("jwt-user", JWT_AUDIENCE, 600))
        .await
        .expect("a token signed with the new key");
    app.stop().await.expect("stop");

    // An unknown key id: read at once, long before the hourly reload.
    let app = spawn("1h", &pki).await;
    list(&app, pki.jwt("jwt-user", JWT_AUDIENCE, 600))
        .await
        .expect("the key at start");
    pki.rotate_jwt_key("test-key-3");
    list(&app, pki.jwt("jwt-user", JWT_AUDIENCE, 600))
        .await
        .expect("a token signed with a key rotated in after start, at once");
    app.stop().await.expect("stop");
}

/// The identity provider's `jwks_uri`, fetched over HTTP (loopback here; https elsewhere): the key set is fetched
/// before the server serves, a key rotated in is fetched when a token names it, an outage of the provider (HTTP
/// 500, an empty key set) leaves the keys in use, and a key that left the set is refused after the next fetch.
#[tokio::test]
async fn a_jwks_uri_is_fetched_at_start_on_rotation_and_survives_an_outage() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: the key set file's contents; 1: HTTP 500; 2: an empty key set.
    let mode = Arc::new(AtomicU8::new(0));
    let mut pki = Pki::new();
    let jwks_path = pki.path("jwks.json");
    let app_state = (mode.clone(), jwks_path.clone());
    let provider = axum::Router::new()
        .route(
            "/.well-known/jwks.json",
            axum::routing::get(
                |axum::extract::State((mode, path)): axum::extract::State<(
                    Arc<AtomicU8>,
                    std::path::PathBuf,
                )>| async move {
                    match mode.load(Ordering::SeqCst) {
                        0 => (
                            axum::http::StatusCode::OK,
                            std::fs::read_to_string(&path).expect("jwks"),
                        ),
                        1 => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                        _ => (axum::http::StatusCode::OK, r#"{"keys": []}"#.to_owned()),
                    }
                },
            ),
        )
        .with_state(app_state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let uri = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, provider).await });

    let db = TestDatabase::create().await.expect("db");
    let jwt_toml = pki.tls_and_jwt_toml().replace(
        &format!("jwks_file = '{}'", jwks_path.display()),
        &format!("jwks_uri = '{uri}'"),
    );
    assert!(jwt_toml.contains("jwks_uri"), "{jwt_toml}");
    let toml = |interval: &str| {
        format!(
            "insecure = false\njwks_reload_interval = '{interval}'\n{}{jwt_toml}",
            tokens_and_grants(&[(&format!("jwt:{JWT_ISSUER}:jwt-user"), "viewer", "")]),
        )
    };
    let app = TestApp::spawn_tls(&db.url, &toml("1s"), pki.client_tls(None))
        .await
        .expect("TLS server");
    let list = |app: &TestApp, token: String| {
        let client = app.client.clone();
        async move {
            client
                .clone()
                .list_accounts(bearer(&token, pb::ListAccountsRequest::default()))
                .await
        }
    };
    let first = pki.jwt("jwt-user", JWT_AUDIENCE, 600);
    list(&app, first.clone())
        .await
        .expect("the key set fetched at start");

    // The provider fails, then answers an empty set: the keys in use stay, over several reload intervals.
    for outage in [1, 2] {
        mode.store(outage, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        list(&app, first.clone())
            .await
            .expect("a provider outage locks nobody out");
    }
    mode.store(0, Ordering::SeqCst);
    app.stop().await.expect("stop");

    // A rotation, with no periodic fetch for an hour: the new key is fetched because a token names it (at most a
    // moment after the first such call).
    let app = TestApp::spawn_tls(&db.url, &toml("1h"), pki.client_tls(None))
        .await
        .expect("TLS server");
    pki.rotate_jwt_key("test-key-2");
    let rotated = pki.jwt("jwt-user", JWT_AUDIENCE, 600);
    let mut accepted = false;
    for _ in 0..30 {
        if list(&app, rotated.clone()).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "a token signed with the rotated key was refused for 3 s"
    );
    let err = list(&app, first)
        .await
        .expect_err("the key that left the set is refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    app.stop().await.expect("stop");

    // A provider that cannot be reached at start stops the start, naming the setting.
    mode.store(1, Ordering::SeqCst);
    let err = TestApp::spawn_tls(&db.url, &toml("1s"), pki.client_tls(None))
        .await
        .err()
        .expect("no key set, no start");
    assert!(format!("{err:#}").contains("jwks_uri"), "{err:#}");
}

/// A renewed server certificate is served to new connections without a restart: after the files change (a new
/// CA here, so the difference shows), a client trusting only the new CA connects within a reload interval, and
/// client certificates still work. Before, the files were read only at start.
#[tokio::test]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let db = TestDatabase::create().await.expect("db");
    let toml = format!(
        "insecure = false\ntls_reload_interval = '1s'\n{}{}",
        tokens_and_grants(&[
            ("ops-admin", "admin", ""),
            ("spiffe://tablecrypt/ci", "viewer", "")
        ]),
        pki.tls_and_jwt_toml()
    );
    let app = TestApp::spawn_tls(&db.url, &toml, pki.client_tls(None))
        .await
        .expect("TLS server");
    let connect = |tls: tonic::transport::ClientTlsConfig| {
        let addr = app.addr;
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
                .expect("uri")
                .tls_config(tls)
                .expect("tls")
                .connect()
                .await?;
            Ok::<_, tonic::transport::Error>(TableEncryptionClient::new(channel))
        }
    };
    pki.rotate_server_certificate();
    let mut renewed = None;
    for _ in 0..50 {
        if let Ok(client) = connect(pki.client_tls_trusting("ca-next.pem")).await {
            renewed = Some(client);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    renewed
        .expect("the renewed certificate is not served 5 s after the files changed")
        .list_accounts(as_token("ops-admin", pb::ListAccountsRequest::default()))
        .await
        .expect("a call over the renewed certificate");
    // A client certificate (still from the first CA) over the renewed server certificate.
    let mut tls = pki.client_tls_trusting("ca-next.pem");
    let (cert, key) = pki.client_certificate("spiffe://tablecrypt/ci");
    tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    connect(tls)
        .await
        .expect("mutual TLS")
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("the client certificate's identity");
    app.stop().await.expect("stop");
}

/// Retention the append-only guarantee allows: the audit log is partitioned by month (this month's and the next
/// exist from the start), rows land in their month's partition, single rows still cannot be deleted, and an old
/// month is dropped whole by whoever maintains the database, leaving the rest readable. Before, one table grew
/// for ever and nothing could be removed from it.
#[tokio::test]
async fn old_months_of_the_audit_log_are_dropped_whole_while_rows_stay_append_only() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    client
        .register_account(pb::RegisterAccountRequest {
            account: Some(account("123456789012", "payments")),
        })
        .await
        .expect("an audited call");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let month = |offset: u32| {
        let now = chrono::Utc::now().date_naive();
        let first = chrono::Datelike::with_day(&now, 1).expect("first");
        let first = first
            .checked_add_months(chrono::Months::new(offset))
            .expect("month");
        format!("audit_log_{}", first.format("%Y_%m"))
    };
    for partition in [month(0), month(1)] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&partition)
            .fetch_one(&pool)
            .await
            .expect("query");
        assert!(exists, "{partition} was not made ahead");
    }
    let landed: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM audit_log ORDER BY event_id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("latest row");
    assert_eq!(landed, month(0));

    // An old month with one row in it.
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "SELECT audit_log_ensure_month('2020-01-01');
         INSERT INTO audit_log (event_time, caller, authenticated_by, method, outcome)
         VALUES ('2020-01-15', 'long-ago', 'none', 'RegisterAccount', 'OK');",
    ))
    .execute(&pool)
    .await
    .expect("an old month");
    let callers = || async {
        app.client
            .clone()
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("audit log")
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.caller)
            .collect::<Vec<_>>()
    };
    assert!(callers().await.contains(&"long-ago".to_owned()));
    tablecrypt_tests::assert_append_only(
        &db.url,
        &["DELETE FROM audit_log WHERE caller = 'long-ago'"],
    )
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe("DROP TABLE audit_log_2020_01"))
        .execute(&pool)
        .await
        .expect("an old month is dropped whole");
    let left = callers().await;
    assert!(!left.contains(&"long-ago".to_owned()), "{left:?}");
    assert!(!left.is_empty(), "this month's rows are still there");
    pool.close().await;
    app.stop().await.expect("stop");
}
