//! PostgreSQL restarted in the middle of a request (a private cluster, stopped with every connection cut, then
//! started again): the server keeps going once the database is back, and nothing is lost or repeated.

use std::time::Duration;

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::*;
use tablecrypt_tests::postgres::PrivatePostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_resumes_after_postgres_restarts_mid_request() {
    let postgres = PrivatePostgres::start();
    let (emulator, app) = fleet_and_server(&postgres.url(), "").await;
    let id = create(
        &app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            // Slow enough that the restart lands mid-request.
            options: Some(pb::ChangeOptions {
                max_updates_per_second: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id;
    let before = wait_until(&app, &id, 30, |r| counts(r).succeeded >= 2).await;
    assert!((counts(&before).succeeded as usize) < BULK);

    postgres.stop_server();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // While it is down, calls fail with UNAVAILABLE rather than hanging or crashing the server.
    let err = app
        .client
        .clone()
        .get_change_request(pb::GetChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect_err("database down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    postgres.start_server();

    let done = wait_terminal(&app, &id).await;
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "{:#?}",
        items(&app, &id).await
    );
    assert_eq!(counts(&done).succeeded as usize, BULK);
    assert_eq!(history(&app, history_of(&id)).await.len(), BULK);
    let sent = updates_sent(&emulator).await;
    assert_eq!(sent.len(), BULK);
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    app.stop().await.expect("server stops");
}
