//! Rate slots against a real Postgres: the fleet-wide scope couples account-regions only while it can bind.
//! Reserved together with an account-region's scope, its row took that account-region's future slot as its next
//! free time, so every other account-region waited for it (a 200/s migration sent about 70/s).

use std::time::{Duration, Instant};

use tablecrypt_store::Store;
use tablecrypt_store::rate_slots::{Reserved, Slot};
use tablecrypt_tests::TestDatabase;

const FLEET: &str = "update:*";
const LOOKAHEAD: Duration = Duration::from_secs(1);

async fn store() -> (TestDatabase, sqlx::PgPool, Store) {
    let db = TestDatabase::create().await.expect("db");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    tablecrypt_store::migrate(&pool).await.expect("migrate");
    (db, pool.clone(), Store::new(pool))
}

/// One slot in `region`'s scope and the fleet's (service account-region rate 2/s), if one is within reach.
async fn try_reserve(
    store: &Store,
    region: &str,
    region_rate: f64,
    fleet_rate: f64,
) -> Option<Slot> {
    store
        .rate_slots
        .reserve(
            &[
                (format!("update:{region}"), region_rate),
                (FLEET.to_owned(), fleet_rate),
            ],
            Duration::ZERO,
            LOOKAHEAD,
            Some((FLEET, 2.0)),
            1,
        )
        .await
        .expect("reserve")
        .slot()
}

/// A slot as an instant, so slots reserved by successive calls compare whatever time passed between the calls.
async fn reserve(
    store: &Store,
    region: &str,
    region_rate: f64,
    fleet_rate: f64,
) -> (Instant, Slot) {
    let slot = try_reserve(store, region, region_rate, fleet_rate)
        .await
        .expect("a slot within reach");
    (Instant::now() + slot.wait, slot)
}

/// Creates the scopes' rows (new rows start a lookahead ahead, in case a crash emptied a busy table) and waits
/// until every slot is free again.
async fn warm_up(store: &Store, regions: &[&str], fleet_rate: f64) {
    for region in regions {
        for _ in 0..40 {
            if try_reserve(store, region, 1000.0, fleet_rate)
                .await
                .is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(LOOKAHEAD + Duration::from_millis(200)).await;
}

async fn register(pool: &sqlx::PgPool, accounts: usize) {
    for i in 0..accounts {
        sqlx::query(
            "INSERT INTO accounts (account_id, role_arn, regions) VALUES ($1, $2, ARRAY['eu-west-1', 'us-east-1'])",
        )
        .bind(format!("{:012}", i + 1))
        .bind(format!("arn:aws:iam::{:012}:role/r", i + 1))
        .execute(pool)
        .await
        .expect("account");
    }
}

#[tokio::test]
async fn a_fleet_rate_that_cannot_bind_does_not_hold_one_account_region_behind_another() {
    let (_db, pool, store) = store().await;
    // Two account-regions at 2/s each (one account, two regions): 6/s at most with a second's edge, under the
    // fleet's 10/s.
    register(&pool, 1).await;
    warm_up(&store, &["a", "b"], 10.0).await;
    let first = reserve(&store, "a", 2.0, 10.0).await;
    let second = reserve(&store, "a", 2.0, 10.0).await;
    assert!(
        second.0 >= first.0 + Duration::from_millis(400),
        "{first:?} {second:?}"
    );
    // Account-region b's first slot comes before a's second one, not after it.
    let other = reserve(&store, "b", 2.0, 10.0).await;
    assert!(
        other.0 + Duration::from_millis(250) < second.0,
        "b waited for a's slot: {other:?} (a: {first:?}, {second:?})"
    );
    // The fleet's scope was left out, so it does not narrow how late a send may go.
    assert_eq!(other.1.spacing, Duration::from_millis(500), "{other:?}");
}

#[tokio::test]
async fn a_fleet_rate_that_can_bind_paces_every_account_region_together() {
    let (_db, pool, store) = store().await;
    // Three accounts of two regions at 2/s (3/s with the edge each): 18/s, above the fleet's 4/s. The fleet's
    // scope holds them to it: a slot every 250 ms across account-regions.
    register(&pool, 3).await;
    warm_up(&store, &["a", "b", "c", "d"], 1000.0).await;
    let mut slots = Vec::new();
    for region in ["a", "b", "c", "d"] {
        slots.push(reserve(&store, region, 2.0, 4.0).await);
    }
    for pair in slots.windows(2) {
        assert!(
            pair[1].0 >= pair[0].0 + Duration::from_millis(150),
            "four account-regions at a fleet rate of 4/s: {slots:?}"
        );
        assert_eq!(pair[1].1.spacing, Duration::from_millis(250), "{pair:?}");
    }
}

#[tokio::test]
async fn a_batch_of_slots_fits_in_the_lookahead_and_the_next_reservation_comes_after_it() {
    let (_db, _pool, store) = store().await;
    let scope = vec![("describe:a".to_owned(), 5.0)];
    let batch = |wanted| {
        let store = store.clone();
        let scope = scope.clone();
        async move {
            let asked = Instant::now();
            let slot = store
                .rate_slots
                .reserve(&scope, Duration::ZERO, LOOKAHEAD, None, wanted)
                .await
                .expect("reserve")
                .slot();
            slot.map(|slot| (asked + slot.wait, slot))
        }
    };
    // New rows start a lookahead ahead: wait until the scope is free.
    for _ in 0..40 {
        if batch(1).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(LOOKAHEAD + Duration::from_millis(200)).await;
    // 100 wanted at 5/s: only the slots within a second of the first (200 ms apart) are handed out.
    let (first, slots) = batch(100).await.expect("a batch within reach");
    assert!(
        (5..=6).contains(&slots.count),
        "{slots:?}: 5/s within a 1 s lookahead"
    );
    assert_eq!(slots.step, Duration::from_millis(200), "{slots:?}");
    // The next slot, whoever asks, is after the batch's last: the batch's slots are the caller's alone.
    let (next, _) = loop {
        if let Some(next) = batch(1).await {
            break next;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = first + slots.step * (slots.count - 1);
    assert!(
        next >= last + Duration::from_millis(150),
        "the next slot {next:?} falls within the batch ending {last:?}"
    );
}

#[tokio::test]
async fn a_reservation_with_no_slot_in_reach_says_when_one_will_be() {
    let (_db, pool, store) = store().await;
    register(&pool, 1).await;
    warm_up(&store, &["a"], 1000.0).await;
    // At 0.4/s a slot every 2.5 s: after the first, the next is 2.5 s away, 1.5 s beyond the 1 s lookahead.
    let first = reserve(&store, "a", 0.4, 1000.0).await;
    let asked = Instant::now();
    let answer = store
        .rate_slots
        .reserve(
            &[("update:a".to_owned(), 0.4), (FLEET.to_owned(), 1000.0)],
            Duration::ZERO,
            LOOKAHEAD,
            Some((FLEET, 2.0)),
            1,
        )
        .await
        .expect("reserve");
    let Reserved::NotYet { within_reach_in } = answer else {
        panic!("a slot 2.5 s away was handed out with a 1 s lookahead: {answer:?}");
    };
    // The next slot (first + 2.5 s) comes within reach 1 s before it.
    // Read by the database somewhere between the ask and the answer: allow for that round trip.
    let expected = (first.0 + Duration::from_millis(1500)).saturating_duration_since(asked);
    assert!(
        within_reach_in.abs_diff(expected) < Duration::from_millis(100) + asked.elapsed(),
        "within reach in {within_reach_in:?}, expected about {expected:?}"
    );
    // Asked again then, it is handed out.
    tokio::time::sleep(within_reach_in + Duration::from_millis(20)).await;
    assert!(
        try_reserve(&store, "a", 0.4, 1000.0).await.is_some(),
        "no slot once the answer said one would be in reach"
    );
}
