//! A serving process's PostgreSQL connections: it opens a set of them when it starts serving
//! and readies each for the write path before a customer's message waits on it. Needs PostgreSQL
//! (127.0.0.1:5432 by default, or BOTLINKD_TEST_POSTGRES) and fails when it is missing.

use std::time::Duration;

use sqlx::Connection;

use crate::harness::{PATIENCE, TestDb};

/// Connections a store keeps warm (`WARM_CONNECTIONS` in `src/store/postgres/open.rs`).
const WARM: i64 = 12;

/// When a store starts serving, its warm connections are there, the ingest writer's and the
/// completer's own connections among them, each has already called both write routines (counted by
/// PostgreSQL's function statistics), and the calls wrote nothing.
#[tokio::test]
async fn a_serving_store_keeps_connections_that_have_already_called_the_write_routines() {
    use botlinkd::clock::Clock;
    use botlinkd::store::Store;
    use botlinkd::store::postgres::PgStore;
    let db = TestDb::postgres().await;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    // Connections opened from now on count calls of PL/pgSQL functions.
    sqlx::query(&format!("ALTER DATABASE {database} SET track_functions = 'pl'"))
        .execute(&mut admin)
        .await
        .unwrap();

    let store = PgStore::open(&db.url).await.unwrap();
    store.start_serving(Clock::system().now_ms()).await.unwrap();
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(open >= WARM, "{open} connections open, not at least {WARM}");
    // The writers on threads of their own have opened their connections too.
    let writers: Vec<String> = sqlx::query_scalar(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name IN ('botlinkd-ingest', 'botlinkd-completer') ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        writers,
        ["botlinkd-completer", "botlinkd-ingest"],
        "the writers' connections are not open before the first message"
    );

    // Backends report their statistics when idle, within seconds.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let calls: Vec<(String, i64)> = sqlx::query_as(
            "SELECT regexp_replace(funcname, '_[0-9a-f]{12}$', ''), calls FROM pg_stat_user_functions \
             WHERE funcname LIKE 'botlinkd\\_%' ORDER BY 1",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if calls.len() == 2 && calls.iter().all(|(_, n)| *n >= WARM) {
            assert_eq!(calls[0].0, "botlinkd_delivered");
            assert_eq!(calls[1].0, "botlinkd_ingest");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "routine calls {calls:?}, not at least {WARM} of each"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for table in [
        "messages",
        "events",
        "deliveries",
        "attempts",
        "attempt_stats",
        "conversations",
    ] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(rows, 0, "{table} written by a warm-up");
    }
    drop(store);
}
