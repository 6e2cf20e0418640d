//! Table tests of the decision: one per behaviour of AWS the engine must be right under.

use super::*;
use crate::table::ReplicaEncryption;
use crate::{AccountId, Region, TableName};

const A: &str = "arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111";
const B: &str = "arn:aws:kms:eu-west-1:111111111111:key/bbbbbbbb-1111-4111-8111-111111111111";
const B_US: &str = "arn:aws:kms:us-east-1:111111111111:key/bbbbbbbb-2222-4222-8222-222222222222";

fn table(status: &str, mode: EncryptionMode, key: Option<&str>, sse: &str) -> TableEncryption {
    TableEncryption {
        account_id: AccountId::parse("111111111111").expect("id"),
        region: Region::parse("eu-west-1").expect("region"),
        table_name: TableName::parse("orders").expect("name"),
        mode,
        key_arn: key.map(str::to_owned),
        sse_status: sse.to_owned(),
        table_status: status.to_owned(),
        inaccessible_since: None,
        replicas: Vec::new(),
        observed_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time"),
        tags: None,
    }
}

fn to(mode: EncryptionMode, key: Option<&str>) -> ApplyTarget {
    ApplyTarget {
        mode,
        key_arn: key.map(str::to_owned),
        replica_keys: Vec::new(),
    }
}

use EncryptionMode::{AwsManaged, AwsOwned, CustomerManaged};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
}

/// Nothing sent yet.
fn unsent() -> SendClock {
    SendClock {
        sent_at: None,
        last_call: None,
        now: at(0),
        settle: chrono::Duration::minutes(5),
    }
}

/// Sent `ago` seconds ago, with a five-minute settle timeout.
fn sent(ago: i64) -> SendClock {
    SendClock {
        sent_at: Some(at(0)),
        last_call: Some(CallKind::Sse),
        now: at(ago),
        settle: chrono::Duration::minutes(5),
    }
}

#[test]
fn done_when_the_table_shows_the_target() {
    let on_b = table("ACTIVE", CustomerManaged, Some(B), "ENABLED");
    let target = to(CustomerManaged, Some(B));
    assert_eq!(
        next_step(&on_b, &target, sent(10), None),
        Step::Done { changed: true }
    );
    assert_eq!(
        next_step(&on_b, &target, unsent(), None),
        Step::Done { changed: false }
    );
    let owned = table("ACTIVE", AwsOwned, None, "");
    assert_eq!(
        next_step(&owned, &to(AwsOwned, None), unsent(), None),
        Step::Done { changed: false }
    );
    let managed = table("ACTIVE", AwsManaged, Some(A), "ENABLED");
    assert_eq!(
        next_step(&managed, &to(AwsManaged, None), sent(10), None),
        Step::Done { changed: true }
    );
}

#[test]
fn a_change_under_way_is_waited_for() {
    let updating = table("UPDATING", CustomerManaged, Some(B), "UPDATING");
    assert_eq!(
        next_step(&updating, &to(CustomerManaged, Some(B)), sent(10), None),
        Step::Wait
    );
    // The key shown but not yet in use is not the end either.
    let enabling = table("ACTIVE", CustomerManaged, Some(B), "UPDATING");
    assert_eq!(
        after_poll(&enabling, &to(CustomerManaged, Some(B)), sent(10)),
        PollStep::KeepWaiting
    );
}

#[test]
fn an_active_table_on_the_old_key_is_sent_the_change() {
    let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
    assert_eq!(
        next_step(&on_a, &to(CustomerManaged, Some(B)), unsent(), None),
        Step::Send(Call::Sse)
    );
}

#[test]
fn a_busy_table_is_retried_and_an_inaccessible_one_fails() {
    let busy = table("UPDATING", CustomerManaged, Some(A), "ENABLED");
    assert!(matches!(
        next_step(&busy, &to(CustomerManaged, Some(B)), unsent(), None),
        Step::Retry {
            reason: ItemReason::TableNotActive,
            ..
        }
    ));
    let mut locked = table("ACTIVE", CustomerManaged, Some(A), "INACCESSIBLE");
    locked.inaccessible_since = Some(locked.observed_at);
    assert!(matches!(
        next_step(&locked, &to(CustomerManaged, Some(B)), unsent(), None),
        Step::Fail {
            reason: ItemReason::TableInaccessible,
            ..
        }
    ));
}

#[test]
fn the_switch_quota_defers_until_it_frees() {
    let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
    let until = on_a.observed_at + chrono::Duration::hours(6);
    assert!(matches!(
        next_step(&on_a, &to(CustomerManaged, Some(B)), unsent(), Some(until)),
        Step::DeferUntil { until: u, .. } if u == until
    ));
}

#[test]
fn a_global_table_is_done_only_when_every_replica_shows_its_key() {
    let mut global = table("ACTIVE", CustomerManaged, Some(B), "ENABLED");
    global.replicas = vec![ReplicaEncryption {
        region: "us-east-1".into(),
        status: "ACTIVE".into(),
        key_arn: Some(A.into()),
    }];
    let target = ApplyTarget {
        mode: CustomerManaged,
        key_arn: Some(B.into()),
        replica_keys: vec![("us-east-1".into(), Some(B_US.into()))],
    };
    // The table's own key shows; the replica's needs its own call, never sent with the SSE change.
    assert_eq!(after_poll(&global, &target, sent(5)), PollStep::Look);
    assert_eq!(
        next_step(&global, &target, sent(5), None),
        Step::Send(Call::ReplicaKeys(vec![("us-east-1".into(), B_US.into())]))
    );
    global.replicas[0].key_arn = Some(B_US.into());
    assert_eq!(after_poll(&global, &target, sent(600)), PollStep::Done);
}

#[test]
fn a_table_settled_on_another_key_is_noticed() {
    let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
    assert_eq!(
        after_poll(&on_a, &to(CustomerManaged, Some(B)), sent(600)),
        PollStep::SettledElsewhere
    );
}

/// AWS shows the old key, ACTIVE, for the first seconds of an SSE change: after our send that is a change
/// starting, never a reason to send again, until the settle timeout passes with no sign of it.
#[test]
fn the_old_key_after_our_send_is_waited_for_until_the_settle_timeout() {
    let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
    let target = to(CustomerManaged, Some(B));
    for ago in [0, 8, 25, 299] {
        assert_eq!(
            next_step(&on_a, &target, sent(ago), None),
            Step::Wait,
            "{ago} s"
        );
        assert_eq!(
            after_poll(&on_a, &target, sent(ago)),
            PollStep::KeepWaiting,
            "{ago} s"
        );
    }
    assert_eq!(
        next_step(&on_a, &target, sent(300), None),
        Step::Send(Call::Sse)
    );
    assert_eq!(
        after_poll(&on_a, &target, sent(300)),
        PollStep::SettledElsewhere
    );
    // AWS's other status names during the change are waited for too.
    let updating = table("ACTIVE", CustomerManaged, None, "UPDATING");
    assert_eq!(
        after_poll(&updating, &target, sent(12)),
        PollStep::KeepWaiting
    );
    assert_eq!(next_step(&updating, &target, sent(12), None), Step::Wait);
}

/// A table that became inaccessible fails even while our send settles: waiting would not help.
#[test]
fn an_inaccessible_table_fails_while_a_send_settles() {
    let mut locked = table("ACTIVE", CustomerManaged, Some(A), "INACCESSIBLE");
    locked.inaccessible_since = Some(locked.observed_at);
    assert!(matches!(
        next_step(&locked, &to(CustomerManaged, Some(B)), sent(5), None),
        Step::Fail {
            reason: ItemReason::TableInaccessible,
            ..
        }
    ));
}

fn global(home: (EncryptionMode, Option<&str>), replica_key: Option<&str>) -> TableEncryption {
    let mut t = table(
        "ACTIVE",
        home.0,
        home.1,
        if home.1.is_some() { "ENABLED" } else { "" },
    );
    t.replicas = vec![ReplicaEncryption {
        region: "us-east-1".into(),
        status: "ACTIVE".into(),
        key_arn: replica_key.map(str::to_owned),
    }];
    t
}

/// A global table to a customer managed key: the table's own SSE call, then the replicas' keys in a call of
/// their own (AWS refuses SSE and ReplicaUpdates together), each waited for under the settle rule.
#[test]
fn a_global_table_moves_in_calls_of_one_concern() {
    let target = ApplyTarget {
        mode: CustomerManaged,
        key_arn: Some(B.into()),
        replica_keys: vec![("us-east-1".into(), Some(B_US.into()))],
    };
    let start = global(
        (CustomerManaged, Some(A)),
        Some("arn:aws:kms:us-east-1:111111111111:key/a"),
    );
    assert_eq!(
        next_step(&start, &target, unsent(), None),
        Step::Send(Call::Sse)
    );
    let home_done = global(
        (CustomerManaged, Some(B)),
        Some("arn:aws:kms:us-east-1:111111111111:key/a"),
    );
    let replicas_sent = SendClock {
        last_call: Some(CallKind::ReplicaKeys),
        ..sent(3)
    };
    // The replica keys were sent: the old replica key showing is how that change starts.
    assert_eq!(
        next_step(&home_done, &target, replicas_sent, None),
        Step::Wait
    );
    assert_eq!(
        after_poll(&home_done, &target, replicas_sent),
        PollStep::KeepWaiting
    );
    let mut replica_busy = global((CustomerManaged, Some(B)), Some(B_US));
    replica_busy.replicas[0].status = "UPDATING".into();
    assert_eq!(
        next_step(&replica_busy, &target, replicas_sent, None),
        Step::Wait
    );
    let done = global((CustomerManaged, Some(B)), Some(B_US));
    assert_eq!(
        next_step(&done, &target, replicas_sent, None),
        Step::Done { changed: true }
    );
}

/// AWS managed on a global table: one SSE call, which AWS applies to every replica; a replica that did not
/// follow within the settle timeout gets its own call in its own region.
#[test]
fn an_aws_managed_global_table_is_one_call_unless_a_replica_lags() {
    const M_EU: &str = "arn:aws:kms:eu-west-1:111111111111:key/managed-eu";
    const M_US: &str = "arn:aws:kms:us-east-1:111111111111:key/managed-us";
    let target = ApplyTarget {
        mode: AwsManaged,
        key_arn: None,
        replica_keys: vec![("us-east-1".into(), Some(M_US.into()))],
    };
    let start = global(
        (CustomerManaged, Some(A)),
        Some("arn:aws:kms:us-east-1:111111111111:key/a"),
    );
    assert_eq!(
        next_step(&start, &target, unsent(), None),
        Step::Send(Call::Sse)
    );
    let lagging = global(
        (AwsManaged, Some(M_EU)),
        Some("arn:aws:kms:us-east-1:111111111111:key/a"),
    );
    assert_eq!(next_step(&lagging, &target, sent(20), None), Step::Wait);
    assert_eq!(
        after_poll(&lagging, &target, sent(20)),
        PollStep::KeepWaiting
    );
    assert_eq!(after_poll(&lagging, &target, sent(300)), PollStep::Look);
    assert_eq!(
        next_step(&lagging, &target, sent(300), None),
        Step::Send(Call::ReplicaSse("us-east-1".into()))
    );
    let followed = global((AwsManaged, Some(M_EU)), Some(M_US));
    assert_eq!(
        next_step(&followed, &target, sent(20), None),
        Step::Done { changed: true }
    );
}

#[test]
fn an_archived_table_fails_with_its_own_reason() {
    for status in ["ARCHIVING", "ARCHIVED"] {
        let archived = table(status, CustomerManaged, Some(A), "ENABLED");
        assert!(matches!(
            next_step(&archived, &to(CustomerManaged, Some(B)), sent(400), None),
            Step::Fail {
                reason: ItemReason::TableArchived,
                ..
            }
        ));
    }
}

#[test]
fn call_kinds_round_trip_their_stored_names() {
    for kind in [CallKind::Sse, CallKind::ReplicaKeys, CallKind::ReplicaSse] {
        assert_eq!(CallKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(CallKind::parse("SSE_AND_REPLICAS"), None);
}

/// A table that shows the target key but became inaccessible (the target key disabled after the switch) fails;
/// it used to wait for a change with nothing left to send, holding its lease for ever.
#[test]
fn an_inaccessible_table_on_the_target_fails_instead_of_waiting() {
    let mut locked = table(
        "INACCESSIBLE_ENCRYPTION_CREDENTIALS",
        CustomerManaged,
        Some(B),
        "INACCESSIBLE",
    );
    locked.inaccessible_since = Some(locked.observed_at);
    let target = to(CustomerManaged, Some(B));
    assert_eq!(after_poll(&locked, &target, sent(10)), PollStep::Look);
    assert!(matches!(
        next_step(&locked, &target, sent(10), None),
        Step::Fail {
            reason: ItemReason::TableInaccessible,
            ..
        }
    ));
    let archived = table("ARCHIVING", CustomerManaged, Some(B), "ENABLED");
    assert_eq!(after_poll(&archived, &target, sent(10)), PollStep::Look);
}

/// A send recorded before calls were (no call kind): the engine sent the SSE and the replica keys in one call,
/// so a replica still on its old key is waited for, not sent again within the settle timeout.
#[test]
fn a_send_of_unknown_kind_may_bring_the_replicas_too() {
    let target = ApplyTarget {
        mode: CustomerManaged,
        key_arn: Some(B.into()),
        replica_keys: vec![("us-east-1".into(), Some(B_US.into()))],
    };
    let home_done = global(
        (CustomerManaged, Some(B)),
        Some("arn:aws:kms:us-east-1:111111111111:key/a"),
    );
    let legacy = SendClock {
        last_call: None,
        ..sent(5)
    };
    assert_eq!(next_step(&home_done, &target, legacy, None), Step::Wait);
    assert_eq!(
        after_poll(&home_done, &target, legacy),
        PollStep::KeepWaiting
    );
}

/// The table's own key changed away after our replica call (someone else's change): sending the SSE again is a
/// retry that spends a switch, never the "next call" of this change.
#[test]
fn a_home_changed_behind_our_back_is_settled_elsewhere() {
    let target = ApplyTarget {
        mode: CustomerManaged,
        key_arn: Some(B.into()),
        replica_keys: vec![("us-east-1".into(), Some(B_US.into()))],
    };
    let moved = global((CustomerManaged, Some(A)), Some(B_US));
    let replicas_sent = SendClock {
        last_call: Some(CallKind::ReplicaKeys),
        ..sent(3)
    };
    assert_eq!(
        after_poll(&moved, &target, replicas_sent),
        PollStep::SettledElsewhere
    );
}

#[test]
fn each_call_spends_a_switch_of_the_copies_it_changes() {
    assert_eq!(Call::Sse.regions_changed("eu-west-1"), ["eu-west-1"]);
    assert_eq!(
        Call::ReplicaSse("us-east-1".into()).regions_changed("eu-west-1"),
        ["us-east-1"]
    );
    let keys = vec![
        (
            "us-east-1".to_owned(),
            "arn:aws:kms:us-east-1:1:key/b".to_owned(),
        ),
        (
            "ap-south-1".to_owned(),
            "arn:aws:kms:ap-south-1:1:key/b".to_owned(),
        ),
    ];
    assert_eq!(
        Call::ReplicaKeys(keys).regions_changed("eu-west-1"),
        ["us-east-1", "ap-south-1"]
    );
}

/// Going to the AWS owned key, AWS shows `{Status: UPDATING}` with no key while the change runs (the table stays
/// ACTIVE): that is the change under way, not the owned key in use.
#[test]
fn a_change_to_the_owned_key_is_done_only_when_updating_ends() {
    let target = to(AwsOwned, None);
    let updating = table("ACTIVE", AwsOwned, None, "UPDATING");
    assert!(!target.reached_by(&updating));
    assert_eq!(
        after_poll(&updating, &target, sent(12)),
        PollStep::KeepWaiting
    );
    assert_eq!(next_step(&updating, &target, sent(12), None), Step::Wait);
    for done in ["", "DISABLED"] {
        let owned = table("ACTIVE", AwsOwned, None, done);
        assert!(target.reached_by(&owned), "{done:?}");
    }
}

/// An AWS managed or owned change of a global table's own encryption spends every replica's switch too.
#[test]
fn an_aws_key_change_of_a_global_table_spends_every_replicas_switch() {
    let mut target = to(AwsManaged, None);
    target.replica_keys = vec![("us-east-1".into(), Some(B_US.into()))];
    assert_eq!(
        target.regions_changed(&Call::Sse, "eu-west-1"),
        ["eu-west-1", "us-east-1"]
    );
    let mut customer = to(CustomerManaged, Some(B));
    customer.replica_keys = vec![("us-east-1".into(), Some(B_US.into()))];
    assert_eq!(
        customer.regions_changed(&Call::Sse, "eu-west-1"),
        ["eu-west-1"]
    );
}
