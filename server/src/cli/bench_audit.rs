//! `arbiter bench-audit`: builds a log of N synthetic entries through the real store
//! and batcher code paths (chain, tree, checkpoint), then measures chain verification
//! over the database and inclusion-proof latency. For docs/benchmarks.md.

use super::term::{say, tell};
use crate::audit::canonical::{canonical_entry, canonical_string, EntryDraft, SealedEntry};
use crate::audit::integrity;
use crate::audit::merkle::{self, Frontier};
use crate::audit::verify::{Failure, Verifier};
use crate::audit::{checkpoint, HmacKey, KeyRing, KeyStatus, GENESIS};
use crate::store::{CheckpointRow, CommitUnit, SqliteStore, Store, TreeUpdate};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchAuditArgs {
    /// Entries to write (skipped when the data dir already holds at least this many).
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Where to build the log (kept, so a server can be started on it afterwards).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Inclusion proofs to time.
    #[arg(long, default_value_t = 2000)]
    pub proofs: u64,
}

pub async fn run(a: BenchAuditArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)?;
    let (keys, _) = crate::keys::load_or_generate(&a.data_dir.join("keys").join("hmac.json"))?;
    let (signer, _) =
        crate::keys::load_or_generate_signer(&a.data_dir.join("keys").join("signing.json"), None)?;
    let store = SqliteStore::open(&a.data_dir.join("arbiter.db"), false).await?;
    store.migrate().await?;
    let have = store.audit_head().await?.map_or(0, |h| h.0);
    if have > 0 && have < a.entries {
        anyhow::bail!(
            "{} holds {have} entries; use an empty or a complete directory",
            a.data_dir.display()
        );
    }
    if have == 0 {
        let started = Instant::now();
        write_synthetic(&store, &keys, &signer, a.entries).await?;
        tell!(
            "wrote {} entries in {:.1} s",
            a.entries,
            started.elapsed().as_secs_f64()
        );
    }
    let n = store.audit_head().await?.map_or(0, |h| h.0);

    // Reading alone, to split the verification time between the store and the checks.
    let started = Instant::now();
    let (mut next, mut read) = (1, 0u64);
    while next <= n {
        let page = store.audit_page(next, n, integrity::PAGE).await?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        read += page.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    say!("read: {read} entries in {secs:.2} s = {:.0} entries/s (SQLite pages of 10 000 rows, no checks)", read as f64 / secs);

    let cp = store
        .checkpoint(None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
    let root: [u8; 32] = hex::decode(&cp.root_hex)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("root"))?;
    checks_alone(&store, &keys, n.min(200_000)).await?;

    // Chain verification straight from the database, as `VerifyAudit` does for a range.
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let started = Instant::now();
    let (checked, failure) = integrity::walk(&shared, &keys, 1, n, *GENESIS, None).await?;
    fail_on(failure)?;
    let secs = started.elapsed().as_secs_f64();
    say!("verify: {checked} entries in {secs:.2} s = {:.0} entries/s (position, columns, key, MAC; from SQLite)", checked as f64 / secs);

    // The whole log, as `VerifyAudit` does for it: the chain, and the leaf hashes
    // rebuilding the newest signed checkpoint's root.
    let started = Instant::now();
    let mut rebuild = integrity::Rebuild::new(cp.size);
    let (checked, failure) =
        integrity::walk(&shared, &keys, 1, n, *GENESIS, Some(&mut rebuild)).await?;
    fail_on(failure)?;
    anyhow::ensure!(
        rebuild.root_at_target() == Some(root),
        "the entries do not rebuild the signed root"
    );
    let secs = started.elapsed().as_secs_f64();
    say!("verify whole log: {checked} entries in {secs:.2} s = {:.0} entries/s (the above, and every leaf hash into the tree, its root against the signed checkpoint's)", checked as f64 / secs);

    // Inclusion proofs against the stored tree, as `GetInclusionProof` does.
    let mut lat = hdrhistogram::Histogram::<u64>::new(3)?;
    for i in 0..a.proofs {
        let seq = 1 + (i * 7_919_993) % cp.size;
        let t = Instant::now();
        let mut wanted = Vec::new();
        merkle::inclusion_proof(seq - 1, cp.size, |l, x| {
            wanted.push((l, x));
            Some([0u8; 32])
        });
        let found = store.nodes(&wanted).await?;
        let proof = merkle::inclusion_proof(seq - 1, cp.size, |l, x| found.get(&(l, x)).copied())
            .ok_or_else(|| anyhow::anyhow!("missing node"))?;
        lat.record(t.elapsed().as_micros().max(1) as u64)?;
        let entry = store
            .audit_range(seq, seq, 1)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("entry"))?;
        anyhow::ensure!(merkle::verify_inclusion(
            seq - 1,
            cp.size,
            &merkle::leaf_hash(entry.canonical.as_bytes()),
            &proof,
            &root
        ));
    }
    say!(
        "inclusion proof at tree size {}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} proofs, each verified)",
        cp.size,
        lat.value_at_quantile(0.5) as f64 / 1000.0,
        lat.value_at_quantile(0.99) as f64 / 1000.0,
        lat.max() as f64 / 1000.0,
        a.proofs
    );
    Ok(())
}

/// The checks of `VerifyAudit` on its cores (position, columns, key, MAC, leaf hash),
/// timed on the first `count` entries already in memory: what the checks cost without
/// the read.
async fn checks_alone(store: &SqliteStore, keys: &KeyRing, count: u64) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    while (entries.len() as u64) < count {
        let next = entries.len() as u64 + 1;
        let page = store.audit_page(next, count, integrity::PAGE).await?;
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    let started = Instant::now();
    let mut v = Verifier::new(keys, 1, *GENESIS);
    let mut leaves = Vec::with_capacity(entries.len());
    let checked = v.feed_all_hashing(&entries, &mut leaves);
    let secs = started.elapsed().as_secs_f64();
    fail_on(checked.err())?;
    say!(
        "checks alone (all cores, {} entries in memory): {:.0} entries/s (position, columns, key, MAC, leaf hash)",
        v.checked,
        v.checked as f64 / secs
    );
    Ok(())
}

fn fail_on(failure: Option<Failure>) -> anyhow::Result<()> {
    match failure {
        Some(f) => Err(anyhow::anyhow!("seq {}: {}", f.seq, f.message)),
        None => Ok(()),
    }
}

async fn write_synthetic(
    store: &SqliteStore,
    keys: &KeyRing,
    signer: &crate::audit::TreeSigner,
    n: u64,
) -> anyhow::Result<()> {
    let key: &HmacKey = keys.active();
    let mut prev = *GENESIS;
    let mut frontier = Frontier::default();
    let mut seq = 0u64;
    let body = canonical_string(&serde_json::json!({
        "decision_id": "dec_synthetic", "action": {"tool": "bench_tool"}, "reasons": [], "policy_version": "sha256:0"
    }))
    .map_err(anyhow::Error::msg)?;
    while seq < n {
        let mut units = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..5_000.min(n - seq) {
            seq += 1;
            let draft = EntryDraft {
                ts_ms: 1_800_000_000_000 + seq as i64,
                kind: "evaluate".into(),
                agent_id: format!("agent-{}", seq % 100),
                session_id: String::new(),
                outcome: "allow".into(),
                body: serde_json::Value::Null.into(),
            };
            let canonical = canonical_entry(&draft, &body, seq, &key.id);
            let mac = key.mac(&prev, canonical.as_bytes());
            prev = mac;
            nodes.extend(frontier.push(merkle::leaf_hash(canonical.as_bytes())));
            units.push(CommitUnit {
                entry: SealedEntry {
                    seq,
                    ts_ms: draft.ts_ms,
                    kind: draft.kind,
                    agent_id: draft.agent_id,
                    session_id: draft.session_id,
                    outcome: draft.outcome,
                    key_id: key.id.clone(),
                    canonical,
                    mac: hex::encode(mac),
                },
                ops: Vec::new(),
            });
        }
        let root = frontier.root();
        let cp = CheckpointRow {
            size: frontier.size,
            root_hex: hex::encode(root),
            note: checkpoint::sign(&signer.origin, frontier.size, &root, &signer.key),
            ts_ms: 0,
        };
        store
            .commit(
                &units,
                &TreeUpdate {
                    nodes,
                    checkpoint: Some(cp),
                },
            )
            .await?;
        store.maintain().await?;
    }
    let _ = KeyStatus::Active;
    Ok(())
}
