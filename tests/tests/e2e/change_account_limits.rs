//! Per-account limits: an account's own UpdateTable rate and tables-in-flight cap override the service's
//! defaults (up as well as down), as the emulator's request log shows; bad limits are refused field by field.

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::*;

/// The service default the overrides are measured against: slow enough that an account going faster shows.
const DEFAULT_RATE: f64 = 0.5;

async fn set_limits(s: &Setup, limits: pb::AccountLimits) -> Result<pb::Account, tonic::Status> {
    s.app
        .client
        .clone()
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                account_id: PAYMENTS.into(),
                limits: Some(limits),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["limits".into()],
            }),
            validate_only: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Moves the bulk tables to `alias` and returns the emulator times (seconds) of the UpdateTable calls it made.
async fn migrate_bulk(s: &Setup, alias: &str, already: usize) -> Vec<f64> {
    let id = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key(alias),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id;
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{done:?}");
    assert_eq!(history(&s.app, history_of(&id)).await.len(), BULK);
    let mut times: Vec<f64> = update_log(&s.emulator)
        .await
        .into_iter()
        .filter(|u| u.ok)
        .map(|u| u.time)
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), already + BULK, "one UpdateTable per table");
    times.split_off(already)
}

#[tokio::test]
async fn an_account_overrides_the_update_rate_and_tables_in_flight() {
    let s = setup(&format!("update_rate = {DEFAULT_RATE}")).await;

    // Bad limits name each field and change nothing.
    let before = s
        .app
        .client
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: PAYMENTS.into(),
        })
        .await
        .expect("get")
        .into_inner();
    let refused = set_limits(
        &s,
        pb::AccountLimits {
            update_rate_per_second: -1.0,
            poll_rate_per_second: f64::INFINITY,
            max_tables_in_flight: 501,
            settle_timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 500_000_000,
            }),
        },
    )
    .await
    .expect_err("bad limits");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        field_violations(&refused),
        [
            "account.limits.update_rate_per_second",
            "account.limits.poll_rate_per_second",
            "account.limits.max_tables_in_flight",
            "account.limits.settle_timeout",
        ]
    );
    let after = s
        .app
        .client
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: PAYMENTS.into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(after.etag, before.etag, "nothing written");
    assert_eq!(after.limits, None);

    // 1. The account's own rate, above the service's: 3 UpdateTable/s.
    let rate = 3.0;
    let account = set_limits(
        &s,
        pb::AccountLimits {
            update_rate_per_second: rate,
            ..Default::default()
        },
    )
    .await
    .expect("set limits");
    assert_eq!(account.limits.map(|l| l.update_rate_per_second), Some(rate));
    let times = migrate_bulk(&s, "alias/b", 0).await;
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < start + 1.0).count();
        assert!(
            in_window as f64 <= rate + 1.0,
            "{in_window} UpdateTable calls within one second of {start}"
        );
    }
    let span = times[BULK - 1] - times[0];
    let at_default = (BULK as f64 - 1.0) / DEFAULT_RATE;
    assert!(span >= (BULK as f64 - 1.0) / rate - 0.5, "span {span} s");
    assert!(
        span < at_default * 0.7,
        "span {span} s: the account's rate was not used (the default would take {at_default} s)"
    );

    // 2. One table updating at a time: each UpdateTable waits for the previous table to be ACTIVE again (the
    //    emulator keeps a table UPDATING for 0.3 s), however high the rate.
    set_limits(
        &s,
        pb::AccountLimits {
            update_rate_per_second: 100.0,
            max_tables_in_flight: 1,
            ..Default::default()
        },
    )
    .await
    .expect("set limits");
    let times = migrate_bulk(&s, "alias/a", BULK).await;
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 0.28,
            "two tables updating at once: UpdateTable at {} and {}",
            pair[0],
            pair[1]
        );
    }
}
