//! "Key A -> key B" said once for the whole fleet: a selector's current key given as an alias name is resolved in
//! every account-region it covers, tables are chosen by their tags, and tables owned by infrastructure as code are
//! blocked unless the request includes them. Judged from the emulator (which tables were sent an UpdateTable, and
//! each table's key as DynamoDB reports it through the AWS SDK), not from tablecrypt's own word.

use std::collections::BTreeMap;

use fleet_emulator::{Emulator, FleetSpec, RunningEmulator};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::{
    EU, ROLE, US, create, field_violations, items, register_and_scan, updates_sent, wait_terminal,
};
use tablecrypt_tests::{TestApp, TestDatabase, aws};
use tonic::Code;

const ONE: &str = "111111111111";
const TWO: &str = "222222222222";
const THREE: &str = "333333333333";
/// Labelled like the others but refuses AssumeRole.
const LOCKED_OUT: &str = "444444444444";
const STACK: &str = "arn:aws:cloudformation:eu-west-1:111111111111:stack/payments/0a1b2c3d";

/// Three payments accounts in two regions, each account-region with its own alias/payments-a and
/// alias/payments-b, except that 333333333333 us-east-1 has no alias/payments-b (and its role may not read tags). Every account-region holds `pay`
/// (tagged app=checkout) on key A; 111111111111 eu-west-1 also holds a CloudFormation table, a Terraform table and a
/// table on another key; 222222222222 eu-west-1 holds `batch` (app=batch) on key A.
fn fleet() -> String {
    let mut yaml = String::from(
        "hub: {account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}\n\
         settings: {update_seconds: 0.3, inaccessible_after_seconds: 0}\naccounts:\n",
    );
    for account in [ONE, TWO, THREE] {
        yaml.push_str(&format!(
            "  - account_id: \"{account}\"\n    roles: [{{name: {ROLE}{denied}}}]\n    regions: [{EU}, {US}]\n    keys:\n",
            // 333333333333's role may not read tags: whether IaC owns its tables cannot be told.
            denied = if account == THREE {
                ", denied_actions: [dynamodb:ListTagsOfResource]"
            } else {
                ""
            }
        ));
        for region in [EU, US] {
            yaml.push_str(&format!(
                "      - {{region: {region}, aliases: [alias/payments-a]}}\n"
            ));
            if !(account == THREE && region == US) {
                yaml.push_str(&format!(
                    "      - {{region: {region}, aliases: [alias/payments-b]}}\n"
                ));
            }
        }
        if account == ONE {
            yaml.push_str(&format!(
                "      - {{region: {EU}, aliases: [alias/other]}}\n"
            ));
        }
        yaml.push_str("    tables:\n");
        for region in [EU, US] {
            yaml.push_str(&format!(
                "      - {{name: pay, region: {region}, encryption: alias/payments-a, tags: {{app: checkout}}}}\n"
            ));
        }
        if account == ONE {
            yaml.push_str(&format!(
                "      - {{name: stack-table, region: {EU}, encryption: alias/payments-a, \
                 tags: {{\"aws:cloudformation:stack-id\": \"{STACK}\"}}}}\n      \
                 - {{name: tf-table, region: {EU}, encryption: alias/payments-a, tags: {{ManagedBy: terraform}}}}\n      \
                 - {{name: unrelated, region: {EU}, encryption: alias/other}}\n"
            ));
        }
        if account == TWO {
            yaml.push_str(&format!(
                "      - {{name: batch, region: {EU}, encryption: alias/payments-a, tags: {{app: batch}}}}\n"
            ));
        }
    }
    yaml.push_str(&format!(
        "  - account_id: \"{LOCKED_OUT}\"\n    roles: []\n    regions: [{EU}]\n"
    ));
    yaml
}

struct Fleet {
    _db: TestDatabase,
    app: TestApp,
    emulator: RunningEmulator,
}

async fn setup() -> Fleet {
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let app = TestApp::spawn_on(
        &db.url,
        &format!(
            "aws_endpoint_url = '{}'\n{}\nupdate_rate = 50.0\niac_owner_tags = ['ManagedBy=terraform']\n",
            emulator.endpoint(),
            tablecrypt_tests::changes::FAST
        ),
    )
    .await
    .expect("server");
    register_and_scan(
        &app,
        &[
            (ONE, &[EU, US], "payments"),
            (TWO, &[EU, US], "payments"),
            (THREE, &[EU, US], "payments"),
            (LOCKED_OUT, &[EU], "payments-archive"),
        ],
    )
    .await;
    Fleet {
        _db: db,
        app,
        emulator,
    }
}

fn from_a_to_b(selector: pb::TableSelector, validate_only: bool) -> pb::CreateChangeRequestRequest {
    pb::CreateChangeRequestRequest {
        selector: Some(selector),
        target: Some(pb::TargetEncryption {
            mode: pb::EncryptionMode::CustomerManaged as i32,
            kms_key: "alias/payments-b".into(),
        }),
        validate_only,
        ..Default::default()
    }
}

fn payments(current: &[&str]) -> pb::TableSelector {
    pb::TableSelector {
        account_label_selector: "team=payments".into(),
        current_kms_keys: current.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

/// `account/region/table` -> (action, reason).
fn plan_of(
    response: &pb::CreateChangeRequestResponse,
) -> BTreeMap<String, (pb::PlanAction, pb::ItemReason)> {
    response
        .items
        .iter()
        .map(|i| {
            (
                format!("{}/{}/{}", i.account_id, i.region, i.table_name),
                (i.action(), i.reason()),
            )
        })
        .collect()
}

/// The key ARN of `alias` in an account-region, as KMS (the emulator) reports it.
async fn alias_arn(emulator: &RunningEmulator, account: &str, region: &str, alias: &str) -> String {
    let (_, kms) = aws::member_clients(&emulator.endpoint(), account, ROLE, region).await;
    kms.describe_key()
        .key_id(alias)
        .send()
        .await
        .expect("describe key")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("key arn")
}

/// The table's key as DynamoDB reports it.
async fn table_key(emulator: &RunningEmulator, account: &str, region: &str, table: &str) -> String {
    let (dynamodb, _) = aws::member_clients(&emulator.endpoint(), account, ROLE, region).await;
    dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe table")
        .table
        .and_then(|t| t.sse_description)
        .and_then(|s| s.kms_master_key_arn)
        .unwrap_or_default()
}

#[tokio::test]
async fn one_request_moves_key_a_to_key_b_in_every_account_region_blocking_iac_and_missing_keys() {
    let f = setup().await;
    use pb::ItemReason as R;
    use pb::PlanAction as A;
    let plan = create(
        &f.app,
        "alice",
        from_a_to_b(payments(&["alias/payments-a"]), true),
    )
    .await
    .expect("plan");
    let mut want: BTreeMap<String, (A, R)> = BTreeMap::new();
    for account in [ONE, TWO, THREE] {
        for region in [EU, US] {
            want.insert(
                format!("{account}/{region}/pay"),
                (A::Change, R::Unspecified),
            );
        }
    }
    want.insert(format!("{THREE}/{US}/pay"), (A::Blocked, R::KeyMissing));
    // Its tags could not be read: ownership by IaC cannot be ruled out.
    want.insert(format!("{THREE}/{EU}/pay"), (A::Blocked, R::IacOwned));
    want.insert(format!("{ONE}/{EU}/stack-table"), (A::Blocked, R::IacOwned));
    want.insert(format!("{ONE}/{EU}/tf-table"), (A::Blocked, R::IacOwned));
    want.insert(format!("{TWO}/{EU}/batch"), (A::Change, R::Unspecified));
    assert_eq!(
        plan_of(&plan),
        want,
        "unrelated (another key) and the locked-out account's tables are not chosen"
    );
    let message = |name: &str| {
        plan.items
            .iter()
            .find(|i| i.table_name == name)
            .map(|i| i.message.clone())
            .unwrap_or_default()
    };
    assert!(
        message("stack-table").contains(&format!("aws:cloudformation:stack-id={STACK}")),
        "{}",
        message("stack-table")
    );
    assert!(
        message("tf-table").contains("ManagedBy=terraform"),
        "{}",
        message("tf-table")
    );
    let unreadable = plan
        .items
        .iter()
        .find(|i| i.account_id == THREE && i.region == EU)
        .map(|i| i.message.clone())
        .unwrap_or_default();
    assert!(unreadable.contains("could not be read"), "{unreadable}");
    // Each account-region's own key B is the target, not one account's.
    for account in [ONE, TWO] {
        let item = plan
            .items
            .iter()
            .find(|i| i.account_id == account && i.region == US && i.table_name == "pay")
            .expect("pay");
        assert_eq!(
            item.to_kms_key_arn,
            alias_arn(&f.emulator, account, US, "alias/payments-b").await
        );
    }

    let created = create(
        &f.app,
        "alice",
        from_a_to_b(payments(&["alias/payments-a"]), false),
    )
    .await
    .expect("create");
    let id = created.change_request.expect("request").change_request_id;
    let done = wait_terminal(&f.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{done:?}");

    // From AWS's side: every chosen table switched once to its account-region's key B, nothing else was sent.
    let sent = updates_sent(&f.emulator).await;
    let mut want_sent: BTreeMap<String, usize> = BTreeMap::new();
    for account in [ONE, TWO] {
        // updates_sent keys by account/table: pay in both regions. THREE: none (key B missing in us-east-1, tags
        // unreadable in eu-west-1).
        want_sent.insert(format!("{account}/pay"), 2);
    }
    want_sent.insert(format!("{TWO}/batch"), 1);
    assert_eq!(sent, want_sent);
    for account in [ONE, TWO, THREE] {
        for region in [EU, US] {
            let key = table_key(&f.emulator, account, region, "pay").await;
            let expected = if account == THREE {
                "alias/payments-a"
            } else {
                "alias/payments-b"
            };
            assert_eq!(
                key,
                alias_arn(&f.emulator, account, region, expected).await,
                "{account}/{region}/pay"
            );
        }
    }
    for table in ["stack-table", "tf-table"] {
        assert_eq!(
            table_key(&f.emulator, ONE, EU, table).await,
            alias_arn(&f.emulator, ONE, EU, "alias/payments-a").await,
            "{table} is owned by IaC and stays"
        );
    }
    let blocked = items(&f.app, &id)
        .await
        .into_iter()
        .filter(|i| i.reason() == R::IacOwned)
        .count();
    assert_eq!(
        blocked, 3,
        "the CloudFormation and Terraform tables, and the one whose tags were unreadable"
    );
}

#[tokio::test]
async fn tables_are_chosen_by_tag_and_iac_owned_ones_only_when_included() {
    let f = setup().await;
    // The inventory shows what the scan read: tags, and who owns a table.
    let mut client = f.app.client.clone();
    let listed = client
        .list_table_encryptions(pb::ListTableEncryptionsRequest {
            account_ids: vec![ONE.into()],
            regions: vec![EU.into()],
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .tables;
    let row = |name: &str| {
        listed
            .iter()
            .find(|t| t.table_name == name)
            .expect(name)
            .clone()
    };
    assert_eq!(
        row("pay").tags.get("app").map(String::as_str),
        Some("checkout")
    );
    assert!(row("pay").tags_read && row("pay").iac_owner.is_empty());
    assert_eq!(
        row("stack-table").iac_owner,
        format!("aws:cloudformation:stack-id={STACK}")
    );
    assert_eq!(row("tf-table").iac_owner, "ManagedBy=terraform");
    assert_eq!(
        f.app
            .list_tables(pb::ListTableEncryptionsRequest {
                table_tag_selector: "app=batch".into(),
                ..Default::default()
            })
            .await,
        vec![format!("{TWO}/{EU}/batch")]
    );
    assert_eq!(
        f.app
            .list_tables(pb::ListTableEncryptionsRequest {
                table_tag_selector: "aws:cloudformation:stack-id".into(),
                ..Default::default()
            })
            .await,
        vec![format!("{ONE}/{EU}/stack-table")]
    );

    // A tag selector narrows a fleet-wide request: only the checkout tables.
    let plan = create(
        &f.app,
        "alice",
        from_a_to_b(
            pb::TableSelector {
                table_tag_selector: "app=checkout".into(),
                ..payments(&["alias/payments-a"])
            },
            true,
        ),
    )
    .await
    .expect("plan");
    let chosen: Vec<String> = plan_of(&plan).into_keys().collect();
    // 333333333333's tags were never read: its tables match no tag term.
    assert_eq!(chosen.len(), 4, "{chosen:?}");
    assert!(chosen.iter().all(|k| k.ends_with("/pay")), "{chosen:?}");

    // Asked to include IaC-owned tables, they are planned like any other; several current keys are any of them.
    let mut request = from_a_to_b(payments(&["alias/payments-a", "alias/other"]), true);
    request.options = Some(pb::ChangeOptions {
        include_iac_owned: true,
        ..Default::default()
    });
    let plan = plan_of(&create(&f.app, "alice", request).await.expect("plan"));
    assert_eq!(
        plan[&format!("{ONE}/{EU}/stack-table")].0,
        pb::PlanAction::Change
    );
    assert_eq!(
        plan[&format!("{ONE}/{EU}/tf-table")].0,
        pb::PlanAction::Change
    );
    assert_eq!(
        plan[&format!("{ONE}/{EU}/unrelated")].0,
        pb::PlanAction::Change
    );
    assert!(
        updates_sent(&f.emulator).await.is_empty(),
        "plans send nothing"
    );

    // The audit log reads what was asked, as JSON, and marks the plans as dry runs.
    let mut audited = None;
    let mut last_events = Vec::new();
    for _ in 0..50 {
        let events = client
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("audit")
            .into_inner()
            .events;
        last_events = events
            .iter()
            .map(|e| (e.method.clone(), e.target.clone()))
            .collect::<Vec<_>>();
        audited = events
            .into_iter()
            .filter(|e| e.method.ends_with("CreateChangeRequest"))
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.target).expect("a JSON target"))
            .find(|t| t["selector"]["table_tag_selector"] == "app=checkout");
        if audited.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let audited = audited
        .unwrap_or_else(|| panic!("the tag-selector plan is not audited: {:?}", last_events));
    assert_eq!(audited["dry_run"], true, "{audited}");
    assert_eq!(
        audited["selector"]["current_kms_keys"][0], "alias/payments-a",
        "{audited}"
    );
    assert_eq!(
        audited["target"]["kms_key"], "alias/payments-b",
        "{audited}"
    );
    assert!(
        audited["selector"].get("regions").is_none(),
        "unset fields are left out: {audited}"
    );
}

#[tokio::test]
async fn current_keys_that_cannot_be_resolved_are_refused_saying_where() {
    let f = setup().await;
    // An alias no account-region has: nothing is chosen, and the call says so rather than matching every key.
    let status = create(
        &f.app,
        "alice",
        from_a_to_b(payments(&["alias/nowhere"]), true),
    )
    .await
    .expect_err("no such key anywhere");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("alias/nowhere")
            && status.message().contains("6 account-regions"),
        "{}",
        status.message()
    );
    // A label typo is named as such, not blamed on a stale inventory.
    let status = create(
        &f.app,
        "alice",
        from_a_to_b(
            pb::TableSelector {
                account_label_selector: "tema=payments".into(),
                ..payments(&["alias/payments-a"])
            },
            true,
        ),
    )
    .await
    .expect_err("typo");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("no registered account matches `tema=payments`"),
        "{}",
        status.message()
    );
    // An account whose role cannot be assumed: its tables cannot be told apart, so the call names it.
    let status = create(
        &f.app,
        "alice",
        from_a_to_b(
            pb::TableSelector {
                account_label_selector: "team=payments-archive".into(),
                current_kms_keys: vec!["alias/payments-a".into()],
                ..Default::default()
            },
            true,
        ),
    )
    .await
    .expect_err("locked out");
    assert!(status.message().contains(LOCKED_OUT), "{status:?}");

    // Bad input names the field and stores nothing.
    for (selector, field) in [
        (payments(&["alias/"]), "selector.current_kms_keys[0]"),
        (
            payments(&["alias/payments-a", "alias/payments-a"]),
            "selector.current_kms_keys[1]",
        ),
        (
            pb::TableSelector {
                table_tag_selector: "app=a=b".into(),
                ..payments(&[])
            },
            "selector.table_tag_selector",
        ),
        (
            pb::TableSelector {
                table_tag_selector: "app\0=x".into(),
                ..payments(&[])
            },
            "selector.table_tag_selector",
        ),
    ] {
        let status = create(&f.app, "alice", from_a_to_b(selector, false))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            field_violations(&status).contains(&field.to_owned()),
            "{field}: {status:?}"
        );
    }
    let too_many: Vec<String> = (0..21).map(|i| format!("alias/k{i}")).collect();
    let status = create(
        &f.app,
        "alice",
        from_a_to_b(
            pb::TableSelector {
                current_kms_keys: too_many,
                ..payments(&[])
            },
            false,
        ),
    )
    .await
    .expect_err("21 keys");
    assert!(
        field_violations(&status).contains(&"selector.current_kms_keys".to_owned()),
        "{status:?}"
    );
    assert!(updates_sent(&f.emulator).await.is_empty());
    let stored = f
        .app
        .client
        .clone()
        .list_change_requests(pb::ListChangeRequestsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .change_requests;
    assert!(stored.is_empty());
}
