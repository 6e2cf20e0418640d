//! The lease heartbeat against a real Postgres: an item whose own task has just recorded its outcome is not
//! "lost". The heartbeat used to report every item it did not renew as lost, so each of a busy worker's
//! finishing items logged "lease lost" and had its task cancelled: about 1,100 warnings in a 10,000-table
//! migration benchmark in which no lease was lost.

use tablecrypt_store::{ItemEnd, Store};
use tablecrypt_tests::changes::{migrate_bulk, setup};

#[tokio::test]
async fn items_finished_by_their_own_claim_are_not_lost_and_taken_or_expired_ones_are() {
    // The API only: no worker of the server claims the items under the test's feet.
    let s = setup("role = 'api'").await;
    migrate_bulk(&s.app).await;
    let pool = sqlx::PgPool::connect(&s.db.url).await.expect("connect");
    let store = Store::new(pool.clone());
    let owner = uuid::Uuid::new_v4();
    let claimed = store
        .change_items
        .claim(
            owner,
            30.0,
            500,
            3,
            &[],
            &tablecrypt_store::schema::known_migrations(),
        )
        .await
        .expect("claim");
    assert_eq!(
        claimed.len(),
        3,
        "the bulk migration has at least three tables"
    );
    let held: Vec<(i64, i64)> = claimed
        .iter()
        .map(|c| (c.item.item_id, c.lease_token))
        .collect();
    assert_eq!(
        store
            .change_items
            .heartbeat(&held, 30.0)
            .await
            .expect("heartbeat"),
        Vec::<i64>::new(),
        "every lease renewed"
    );

    // The first finishes (its own claim's write); the second is handed back; the third's lease runs out.
    store
        .change_items
        .finish(
            &claimed[0],
            &ItemEnd::Skipped {
                message: "test".into(),
            },
        )
        .await
        .expect("finish");
    store
        .change_items
        .release(&held[1..2])
        .await
        .expect("release");
    sqlx::query("UPDATE change_items SET lease_expire_time = now() - interval '1 second' WHERE item_id = $1")
        .bind(held[2].0)
        .execute(&pool)
        .await
        .expect("expire");
    let mut lost = store
        .change_items
        .heartbeat(&held, 30.0)
        .await
        .expect("heartbeat");
    lost.sort_unstable();
    assert_eq!(lost, [held[1].0, held[2].0]);
}
