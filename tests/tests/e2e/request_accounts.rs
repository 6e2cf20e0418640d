//! A request's accounts, as authorization reads them: kept by the database as items are written (by any
//! binary, since a trigger fills them), and never read as "no accounts" when they are missing.

use tablecrypt_store::Store;
use tablecrypt_tests::TestDatabase;
use uuid::Uuid;

async fn store() -> (TestDatabase, sqlx::PgPool, Store) {
    let db = TestDatabase::create().await.expect("db");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    tablecrypt_store::migrate(&pool).await.expect("migrate");
    (db, pool.clone(), Store::new(pool))
}

/// A request with `accounts.len()` items, one per account, written in one statement per account (as an older
/// binary or a second insert of the same request would), the first account twice.
async fn request(pool: &sqlx::PgPool, accounts: &[&str]) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        r#"INSERT INTO change_requests (request_id, state, targets, target_mode, created_by)
           VALUES ($1, 'RUNNING', '{"selector": {}}', 'AWS_OWNED', 'test')"#,
    )
    .bind(id)
    .execute(pool)
    .await
    .expect("request");
    let mut owners: Vec<&str> = accounts.to_vec();
    owners.push(accounts[0]);
    for (ordinal, account) in owners.iter().enumerate() {
        sqlx::query(
            "INSERT INTO change_items (request_id, ordinal, account_id, region, table_name, state, from_mode,
                 to_mode)
             VALUES ($1, $2, $3, 'us-east-1', $4, 'PENDING', 'AWS_MANAGED', 'AWS_OWNED')",
        )
        .bind(id)
        .bind(ordinal as i32)
        .bind(*account)
        .bind(format!("t-{ordinal}"))
        .execute(pool)
        .await
        .expect("item");
    }
    id
}

fn sorted(mut accounts: Vec<String>) -> Vec<String> {
    accounts.sort();
    accounts
}

/// `accounts_of` both requests at once gives each its own accounts.
async fn assert_accounts(store: &Store, (a, of_a): (Uuid, &[&str]), (b, of_b): (Uuid, &[&str])) {
    let mut of = store
        .change_items
        .accounts_of(&[a, b])
        .await
        .expect("accounts");
    for (id, expected) in [(a, of_a), (b, of_b)] {
        assert_eq!(sorted(of.remove(&id).unwrap_or_default()), expected, "{id}");
    }
}

#[tokio::test]
async fn a_requests_accounts_are_kept_as_items_are_written_and_a_gap_never_reads_as_none() {
    let (_db, pool, store) = store().await;
    let ours = ["111111111111", "222222222222"];
    let id = request(&pool, &ours).await;
    let other = request(&pool, &["333333333333"]).await;

    let kept: Vec<String> =
        sqlx::query_scalar("SELECT account_id FROM change_request_accounts WHERE request_id = $1")
            .bind(id)
            .fetch_all(&pool)
            .await
            .expect("kept");
    assert_eq!(sorted(kept), ours.map(str::to_owned).to_vec());
    assert_accounts(&store, (id, &ours), (other, &["333333333333"])).await;

    let listed = |scope: Vec<String>| {
        let store = store.clone();
        async move {
            store
                .change_requests
                .list(&[], Some(&scope), None, 10)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.request_id)
                .collect::<Vec<_>>()
        }
    };
    let both = vec!["111111111111".to_owned(), "222222222222".to_owned()];
    assert_eq!(listed(both.clone()).await, vec![id]);
    assert!(listed(vec!["111111111111".to_owned()]).await.is_empty());

    // Rows missing (a restore without triggers, a trigger disabled by hand): the accounts are read from the
    // items, and the scoped list leaves the request out rather than showing it to every scope.
    sqlx::query("DELETE FROM change_request_accounts")
        .execute(&pool)
        .await
        .expect("gap");
    assert_accounts(&store, (id, &ours), (other, &["333333333333"])).await;
    assert!(listed(vec!["444444444444".to_owned()]).await.is_empty());
    assert!(listed(both).await.is_empty());
}
