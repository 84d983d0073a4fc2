//! The embedded schema's data migrations, run on a database an older release wrote:
//! what it held must read back the same through the store afterwards.

use arbiter_server::audit::merkle::{leaf_hash, Frontier};
use arbiter_server::store::{SqliteStore, Store, SQLITE_MIGRATIONS};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;

/// The last migration of the release before the appended tree (0014).
const BEFORE_APPENDED_TREE: i64 = 13;

/// A tree of `n` leaves as an older release stored it: one `merkle_nodes` row per node,
/// keyed by (level, idx), the hash in hex.
async fn old_tree(pool: &SqlitePool, n: u64) -> HashMap<(u32, u64), [u8; 32]> {
    let mut frontier = Frontier::default();
    let mut nodes = HashMap::new();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..n {
        for node in frontier.push(leaf_hash(format!("entry {i}").as_bytes())) {
            sqlx::query("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)")
                .bind(i64::from(node.level))
                .bind(node.index as i64)
                .bind(hex::encode(node.hash))
                .execute(&mut *tx)
                .await
                .unwrap();
            nodes.insert((node.level, node.index), node.hash);
        }
    }
    tx.commit().await.unwrap();
    nodes
}

async fn count(pool: &SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn the_appended_tree_migration_keeps_every_node_and_drops_only_closed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arbiter.db");
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    SQLITE_MIGRATIONS
        .run_to(BEFORE_APPENDED_TREE, &pool)
        .await
        .unwrap();

    // 1,000 leaves reach level 9; 37 more leave a ragged right edge.
    let leaves = 1_037;
    let nodes = old_tree(&pool, leaves).await;
    for (id, recorded) in [("dec_open", 0), ("dec_done", 1)] {
        sqlx::query("INSERT INTO decisions (decision_id, agent_id, body_json, created_ms, recorded) VALUES (?, 'a', '{}', 1, ?)")
            .bind(id)
            .bind(recorded)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (id, settled) in [("res_open", 0), ("res_done", 1)] {
        sqlx::query("INSERT INTO reservations (id, decision_id, agent_id, keys_json, micro_usd, tokens, calls, created_ms, expires_ms, settled) VALUES (?, 'd', 'a', '[]', 1, 0, 0, 1, 2, ?)")
            .bind(id)
            .bind(settled)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path, false).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.tree_size().await.unwrap(), leaves);
    for (&(level, index), hash) in &nodes {
        assert_eq!(
            store.node(level, index).await.unwrap(),
            Some(*hash),
            "node {level}/{index}"
        );
    }
    let wanted: Vec<(u32, u64)> = nodes.keys().copied().collect();
    assert_eq!(store.nodes(&wanted).await.unwrap(), nodes);
    assert_eq!(
        store.node(0, leaves).await.unwrap(),
        None,
        "no leaf past the end"
    );

    let pool = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM merkle_tree").await,
        nodes.len() as i64
    );
    // Only the open rows are kept: the settled reservation and the recorded decision go.
    for (table, key, open) in [
        ("decisions", "decision_id", "dec_open"),
        ("reservations", "id", "res_open"),
    ] {
        let keys: Vec<String> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT {key} FROM {table}")))
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(keys, [open], "{table}");
    }
    // The tree stays append-only.
    let refused = sqlx::query("DELETE FROM merkle_tree WHERE pos = 0")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
}
