//! The account registry through the real server: every RPC's success and error paths.

use std::collections::HashMap;

use prost_types::FieldMask;
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::{TestApp, TestDatabase};
use tonic::Code;
use tonic_types::StatusExt as _;

const ACCOUNT: &str = "111111111111";

fn account(id: &str) -> pb::Account {
    pb::Account {
        account_id: id.to_owned(),
        display_name: format!("Account {id}"),
        role_arn: format!("arn:aws:iam::{id}:role/tablecrypt-member"),
        external_id: "ext-id-for-tests".to_owned(),
        regions: vec!["eu-west-1".to_owned(), "us-east-1".to_owned()],
        labels: HashMap::from([("team".to_owned(), "payments".to_owned())]),
        ..Default::default()
    }
}

fn register(account: pb::Account) -> pb::RegisterAccountRequest {
    pb::RegisterAccountRequest {
        account: Some(account),
    }
}

/// The fields named by the BadRequest detail of an INVALID_ARGUMENT status.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries a BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn all_accounts(app: &TestApp) -> Vec<pb::Account> {
    app.client
        .clone()
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .accounts
}

#[tokio::test]
async fn register_get_and_list_round_trip_without_returning_the_external_id() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();

    let created = client
        .register_account(register(account(ACCOUNT)))
        .await
        .expect("register")
        .into_inner();
    assert_eq!(created.account_id, ACCOUNT);
    assert_eq!(created.regions, vec!["eu-west-1", "us-east-1"]);
    assert_eq!(
        created.labels.get("team").map(String::as_str),
        Some("payments")
    );
    assert!(
        created.external_id.is_empty(),
        "external id must never be returned"
    );
    assert!(created.external_id_set);
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some() && created.update_time.is_some());

    let fetched = client
        .get_account(pb::GetAccountRequest {
            account_id: ACCOUNT.to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, created);
    assert_eq!(all_accounts(&app).await, vec![created]);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn registering_twice_is_already_exists() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    client
        .register_account(register(account(ACCOUNT)))
        .await
        .expect("first");
    let status = client
        .register_account(register(account(ACCOUNT)))
        .await
        .expect_err("second");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains(ACCOUNT), "{}", status.message());
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn bad_registrations_name_the_field_and_store_nothing() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();

    let cases: Vec<(&str, pb::Account, &str)> = vec![
        (
            "11-digit id",
            pb::Account {
                account_id: "11111111111".into(),
                ..account(ACCOUNT)
            },
            "account.account_id",
        ),
        (
            "role in another account",
            pb::Account {
                role_arn: "arn:aws:iam::222222222222:role/x".into(),
                ..account(ACCOUNT)
            },
            "account.role_arn",
        ),
        (
            "not a role ARN",
            pb::Account {
                role_arn: "tablecrypt".into(),
                ..account(ACCOUNT)
            },
            "account.role_arn",
        ),
        (
            "unknown region",
            pb::Account {
                regions: vec!["eu-west-1".into(), "mars-north-1".into()],
                ..account(ACCOUNT)
            },
            "account.regions[1]",
        ),
        (
            "empty regions",
            pb::Account {
                regions: vec![],
                ..account(ACCOUNT)
            },
            "account.regions",
        ),
        (
            "duplicate region",
            pb::Account {
                regions: vec!["eu-west-1".into(), "eu-west-1".into()],
                ..account(ACCOUNT)
            },
            "account.regions[1]",
        ),
        (
            "region of another partition",
            pb::Account {
                regions: vec!["cn-north-1".into()],
                ..account(ACCOUNT)
            },
            "account.regions[0]",
        ),
        (
            "label key with spaces",
            pb::Account {
                labels: HashMap::from([("has space".into(), "x".into())]),
                ..account(ACCOUNT)
            },
            "account.labels[\"has space\"]",
        ),
        (
            "short external id",
            pb::Account {
                external_id: "x".into(),
                ..account(ACCOUNT)
            },
            "account.external_id",
        ),
        (
            "control character in display name",
            pb::Account {
                display_name: "bad\u{7}".into(),
                ..account(ACCOUNT)
            },
            "account.display_name",
        ),
    ];
    for (case, bad, field) in cases {
        let status = client
            .register_account(register(bad))
            .await
            .expect_err(case);
        assert_eq!(
            violated_fields(&status),
            vec![field.to_owned()],
            "{case}: {status:?}"
        );
        assert!(
            !status.message().to_lowercase().contains("sql"),
            "{case}: {}",
            status.message()
        );
    }
    let status = client
        .register_account(pb::RegisterAccountRequest { account: None })
        .await
        .expect_err("none");
    assert_eq!(violated_fields(&status), vec!["account"]);

    // Several problems at once are all reported.
    let many = pb::Account {
        account_id: "1".into(),
        role_arn: String::new(),
        regions: vec![],
        ..Default::default()
    };
    let fields = violated_fields(
        &client
            .register_account(register(many))
            .await
            .expect_err("many"),
    );
    assert_eq!(
        fields,
        vec!["account.account_id", "account.role_arn", "account.regions"]
    );

    assert!(all_accounts(&app).await.is_empty(), "nothing may be stored");
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn get_names_missing_and_malformed_ids() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    let status = client
        .get_account(pb::GetAccountRequest {
            account_id: "999999999999".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("999999999999"));
    let status = client
        .get_account(pb::GetAccountRequest {
            account_id: "abc".into(),
        })
        .await
        .expect_err("bad");
    assert_eq!(violated_fields(&status), vec!["account_id"]);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn list_pages_through_every_account_in_order() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    let ids: Vec<String> = (1..=7).map(|i| format!("{i:012}")).collect();
    for id in ids.iter().rev() {
        client
            .register_account(register(account(id)))
            .await
            .expect("register");
    }

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_accounts(pb::ListAccountsRequest {
                page_size: 3,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(page.accounts.len() <= 3);
        seen.extend(page.accounts.into_iter().map(|a| a.account_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let status = client
        .list_accounts(pb::ListAccountsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(violated_fields(&status), vec!["page_token"]);

    let first = client
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("first")
        .into_inner();
    let status = client
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            label_selector: "team=payments".into(),
        })
        .await
        .expect_err("token from another filter");
    assert_eq!(violated_fields(&status), vec!["page_token"]);

    let status = client
        .list_accounts(pb::ListAccountsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(violated_fields(&status), vec!["page_size"]);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn list_filters_by_label_selector() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    let with_labels = |id: &str, labels: &[(&str, &str)]| pb::Account {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..account(id)
    };
    client
        .register_account(register(with_labels(
            "000000000001",
            &[("team", "payments"), ("env", "prod")],
        )))
        .await
        .expect("1");
    client
        .register_account(register(with_labels(
            "000000000002",
            &[("team", "payments"), ("env", "dev")],
        )))
        .await
        .expect("2");
    client
        .register_account(register(with_labels("000000000003", &[("team", "search")])))
        .await
        .expect("3");

    let select = |selector: &str| {
        let mut client = client.clone();
        let selector = selector.to_owned();
        async move {
            client
                .list_accounts(pb::ListAccountsRequest {
                    label_selector: selector,
                    ..Default::default()
                })
                .await
                .map(|r| {
                    r.into_inner()
                        .accounts
                        .into_iter()
                        .map(|a| a.account_id)
                        .collect::<Vec<_>>()
                })
        }
    };
    assert_eq!(
        select("team=payments").await.expect("eq"),
        vec!["000000000001", "000000000002"]
    );
    assert_eq!(
        select("team=payments,env=prod").await.expect("and"),
        vec!["000000000001"]
    );
    assert_eq!(
        select("env!=prod").await.expect("ne"),
        vec!["000000000002", "000000000003"]
    );
    assert_eq!(
        select("env").await.expect("exists"),
        vec!["000000000001", "000000000002"]
    );
    assert_eq!(select("!env").await.expect("absent"), vec!["000000000003"]);
    assert_eq!(
        select("team=a,team=b").await.expect("contradiction"),
        Vec::<String>::new()
    );
    let status = select("has space=x").await.expect_err("bad selector");
    assert_eq!(violated_fields(&status), vec!["label_selector"]);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn update_changes_only_masked_fields_and_honours_etags() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    let created = client
        .register_account(register(account(ACCOUNT)))
        .await
        .expect("register")
        .into_inner();

    let update = |account: pb::Account, paths: &[&str]| pb::UpdateAccountRequest {
        account: Some(account),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        validate_only: false,
    };
    let renamed = client
        .update_account(update(
            pb::Account {
                account_id: ACCOUNT.into(),
                display_name: "Payments prod".into(),
                regions: vec!["ap-south-1".into()],
                etag: created.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(renamed.display_name, "Payments prod");
    assert_eq!(
        renamed.regions, created.regions,
        "regions were not in the mask"
    );
    assert_eq!(renamed.role_arn, created.role_arn);
    assert!(renamed.external_id_set);
    assert_ne!(renamed.etag, created.etag);

    // A stale etag is refused and changes nothing.
    let status = client
        .update_account(update(
            pb::Account {
                account_id: ACCOUNT.into(),
                display_name: "stale".into(),
                etag: created.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(status.code(), Code::Aborted);

    // An update that changes nothing writes nothing (the etag stays), but a stale etag is still refused.
    let same = |etag: &str| {
        update(
            pb::Account {
                account_id: ACCOUNT.into(),
                display_name: "Payments prod".into(),
                etag: etag.into(),
                ..Default::default()
            },
            &["display_name"],
        )
    };
    let unchanged = client
        .update_account(same(&renamed.etag))
        .await
        .expect("no-op")
        .into_inner();
    assert_eq!(unchanged.etag, renamed.etag);
    let status = client
        .update_account(same(&created.etag))
        .await
        .expect_err("stale etag, no change");
    assert_eq!(status.code(), Code::Aborted);
    // validate_only: the account as it would be, with no etag, and nothing written; an external id is compared.
    let external_id = |value: &str, validate_only: bool| pb::UpdateAccountRequest {
        validate_only,
        ..update(
            pb::Account {
                account_id: ACCOUNT.into(),
                external_id: value.into(),
                ..Default::default()
            },
            &["external_id"],
        )
    };
    let would = client
        .update_account(external_id("another-external-id", true))
        .await
        .expect("validate only")
        .into_inner();
    assert_eq!(would.etag, "", "a change would be made");
    let stored = client
        .get_account(pb::GetAccountRequest {
            account_id: ACCOUNT.into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(stored.etag, renamed.etag, "validate_only wrote nothing");
    client
        .update_account(external_id("another-external-id", false))
        .await
        .expect("set the external id");
    let stored = client
        .get_account(pb::GetAccountRequest {
            account_id: ACCOUNT.into(),
        })
        .await
        .expect("get")
        .into_inner();
    let would = client
        .update_account(external_id("another-external-id", true))
        .await
        .expect("validate only")
        .into_inner();
    assert_eq!(
        would.etag, stored.etag,
        "the same external id changes nothing"
    );

    // Invalid values and masks are refused with the field named, and change nothing.
    let status = client
        .update_account(update(
            pb::Account {
                account_id: ACCOUNT.into(),
                role_arn: "arn:aws:iam::222222222222:role/x".into(),
                ..Default::default()
            },
            &["role_arn"],
        ))
        .await
        .expect_err("foreign role");
    assert_eq!(violated_fields(&status), vec!["account.role_arn"]);
    let status = client
        .update_account(update(
            pb::Account {
                account_id: ACCOUNT.into(),
                ..Default::default()
            },
            &["account_id"],
        ))
        .await
        .expect_err("immutable");
    assert_eq!(violated_fields(&status), vec!["update_mask"]);
    let status = client
        .update_account(update(
            pb::Account {
                account_id: ACCOUNT.into(),
                ..Default::default()
            },
            &["regions"],
        ))
        .await
        .expect_err("empty regions");
    assert_eq!(violated_fields(&status), vec!["account.regions"]);

    // Clearing the external id, and replacing labels, without an etag.
    let cleared = client
        .update_account(update(
            pb::Account {
                account_id: ACCOUNT.into(),
                ..Default::default()
            },
            &["external_id", "labels"],
        ))
        .await
        .expect("clear")
        .into_inner();
    assert!(!cleared.external_id_set);
    assert!(cleared.labels.is_empty());
    assert_eq!(cleared.display_name, "Payments prod");

    // No mask: the non-empty fields are applied.
    let unmasked = client
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                account_id: ACCOUNT.into(),
                regions: vec!["eu-central-1".into()],
                ..Default::default()
            }),
            update_mask: None,
            validate_only: false,
        })
        .await
        .expect("unmasked")
        .into_inner();
    assert_eq!(unmasked.regions, vec!["eu-central-1"]);
    assert_eq!(unmasked.display_name, "Payments prod");

    let status = client
        .update_account(update(
            pb::Account {
                account_id: "999999999999".into(),
                display_name: "x".into(),
                ..Default::default()
            },
            &["display_name"],
        ))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);

    let stored = client
        .get_account(pb::GetAccountRequest {
            account_id: ACCOUNT.into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(stored, unmasked);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn deregister_removes_the_account_and_honours_etags() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    let created = client
        .register_account(register(account(ACCOUNT)))
        .await
        .expect("register")
        .into_inner();
    client
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                account_id: ACCOUNT.into(),
                display_name: "v2".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
            validate_only: false,
        })
        .await
        .expect("update");

    let status = client
        .deregister_account(pb::DeregisterAccountRequest {
            account_id: ACCOUNT.into(),
            etag: created.etag,
        })
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(all_accounts(&app).await.len(), 1);

    let status = client
        .deregister_account(pb::DeregisterAccountRequest {
            account_id: ACCOUNT.into(),
            etag: "nonsense".into(),
        })
        .await
        .expect_err("malformed etag");
    assert_eq!(violated_fields(&status), vec!["etag"]);

    client
        .deregister_account(pb::DeregisterAccountRequest {
            account_id: ACCOUNT.into(),
            etag: String::new(),
        })
        .await
        .expect("deregister");
    let status = client
        .get_account(pb::GetAccountRequest {
            account_id: ACCOUNT.into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .deregister_account(pb::DeregisterAccountRequest {
            account_id: ACCOUNT.into(),
            etag: String::new(),
        })
        .await
        .expect_err("twice");
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn accounts_survive_a_restart() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let created = app
        .client
        .clone()
        .register_account(register(account(ACCOUNT)))
        .await
        .expect("register")
        .into_inner();
    app.stop().await.expect("stop");

    let app = TestApp::spawn(&db).await.expect("restarted server");
    assert_eq!(all_accounts(&app).await, vec![created]);
    app.stop().await.expect("stop");
}
