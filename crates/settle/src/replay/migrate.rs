//! One-shot upgrade of a single Redis node from the one-slot key layout (before `[redis] mode`)
//! to the hash-tagged one ([`super::keys`]): run with every replica stopped
//! (`x402-facilitator migrate-redis`). Each key keeps its value and expiry (`RENAME`, or the
//! members moved one by one into their shard); keys already in the tagged layout are left
//! alone, so a second run moves nothing. Single node only (`RENAME` across hash slots).
//!
//! Moved: records (`{p}:replay:…` → `…:{p:shard}`), the unresolved index, the transaction
//! index, the webhook outbox (pending and dead), in-flight debits (with each payer's order
//! counter started at the old global one), revert counters and blocks, and nonce counters.
//! Unchanged: claims, answer ids, rate-limit budgets, the reconciler lease.

use redis::aio::ConnectionLike;

use super::StoreError;
use super::keys::{Layout, debits_seq_key};
use super::redis_store::{TxIdCase, unavailable};

/// What [`migrate_single_node`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Settlement records.
    pub records: usize,
    /// Unresolved-index entries.
    pub open: usize,
    /// Transaction-index entries.
    pub transactions: usize,
    /// Webhook events (pending and dead).
    pub events: usize,
    /// Per-payer keys (debits, reverts, blocks).
    pub payer_keys: usize,
    /// Per-signer nonce keys.
    pub nonce_keys: usize,
}

async fn scan<C: ConnectionLike + Send>(
    conn: &mut C,
    pattern: &str,
) -> Result<Vec<String>, StoreError> {
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Whether `key` is in the tagged layout already.
fn tagged(key: &str) -> bool {
    key.contains('{')
}

async fn rename<C: ConnectionLike + Send>(
    conn: &mut C,
    from: &str,
    to: &str,
) -> Result<bool, StoreError> {
    let moved: i64 = redis::cmd("RENAMENX")
        .arg(from)
        .arg(to)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    Ok(moved == 1)
}

/// Moves every old-layout key under `layout`'s prefix into the tagged layout on the single node
/// behind `conn`. Errors: Redis unreachable, or a command refused (e.g. on a cluster).
pub async fn migrate_single_node<C: ConnectionLike + Send>(
    conn: &mut C,
    layout: &Layout,
) -> Result<Migrated, StoreError> {
    let p = layout.prefix().to_string();
    let mut done = Migrated::default();
    // Records.
    for key in scan(conn, &format!("{p}:replay:*")).await? {
        if !tagged(&key) && rename(conn, &key, &layout.record_key(&key)).await? {
            done.records += 1;
        }
    }
    // The unresolved index.
    let old_open = format!("{p}:settlements:open");
    let open: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&old_open)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    for (member, score) in &open {
        let _: i64 = redis::cmd("ZADD")
            .arg(layout.open_index(layout.shard_of(member)))
            .arg(*score)
            .arg(member)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        done.open += 1;
    }
    let _: i64 = redis::cmd("DEL")
        .arg(&old_open)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    // The transaction index: `{p}:settlement:tx:<tx>` → its record's shard.
    let tx_prefix = layout.tx_index_prefix();
    for key in scan(conn, &format!("{tx_prefix}*")).await? {
        if tagged(&key) {
            continue;
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        if let Some(holder) = holder {
            let tx = &key[tx_prefix.len()..];
            if rename(conn, &key, &layout.tx_index(layout.shard_of(&holder), tx)).await? {
                done.transactions += 1;
            }
        }
    }
    // The webhook outbox: each event into the shard of its payment.
    for (old_set, dead) in [
        (format!("{p}:webhooks:outbox"), false),
        (format!("{p}:webhooks:dead"), true),
    ] {
        let ids: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&old_set)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        for (id, score) in ids {
            let old_event = format!("{p}:webhooks:event:{id}");
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&old_event)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            if exists == 0 {
                continue;
            }
            let record_shard = event_shard(conn, layout, &old_event).await?;
            rename(conn, &old_event, &layout.outbox_event(record_shard, &id)).await?;
            let set = if dead {
                layout.outbox_dead(record_shard)
            } else {
                layout.outbox(record_shard)
            };
            let _: i64 = redis::cmd("ZADD")
                .arg(set)
                .arg(score)
                .arg(&id)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            done.events += 1;
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&old_set)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
    }
    // Per payer: `{p}:debits|reverts|blocked:<rest>` → `{p}:…:{<rest>}`; debit order counters
    // start at the old global counter so that old debits stay ordered before new ones.
    let old_seq: Option<u64> = redis::cmd("GET")
        .arg(format!("{p}:debits:seq"))
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    for kind in ["debits", "reverts", "blocked"] {
        let head = format!("{p}:{kind}:");
        for key in scan(conn, &format!("{head}*")).await? {
            let rest = &key[head.len()..];
            if tagged(&key) || (kind == "debits" && rest == "seq") {
                continue;
            }
            let (body, suffix) = match (kind, rest.strip_suffix(":n"), rest.strip_suffix(":seq")) {
                ("reverts", Some(b), _) => (b, ":n"),
                ("debits", _, Some(b)) => (b, ":seq"),
                _ => (rest, ""),
            };
            let new = format!("{head}{{{body}}}{suffix}");
            if rename(conn, &key, &new).await? {
                done.payer_keys += 1;
                if kind == "debits"
                    && suffix.is_empty()
                    && let Some(seq) = old_seq
                {
                    let _: () = redis::cmd("SET")
                        .arg(debits_seq_key(&new))
                        .arg(seq)
                        .query_async(conn)
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
    }
    // Per signer: `{p}:nonce:evm:<chain>:<signer>:<next|free|owners>`.
    let head = format!("{p}:nonce:evm:");
    for key in scan(conn, &format!("{head}*")).await? {
        if tagged(&key) {
            continue;
        }
        let rest = &key[head.len()..];
        if let Some((body, field)) = rest.rsplit_once(':')
            && rename(conn, &key, &format!("{head}{{{body}}}:{field}")).await?
        {
            done.nonce_keys += 1;
        }
    }
    Ok(done)
}

/// The shard of an old event hash: the shard of the record whose transaction index names the
/// event's transaction (`data.transaction` of its body), else of the event id.
async fn event_shard<C: ConnectionLike + Send>(
    conn: &mut C,
    layout: &Layout,
    event: &str,
) -> Result<u16, StoreError> {
    let body: Option<String> = redis::cmd("HGET")
        .arg(event)
        .arg("body")
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let tx = body
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["data"]["transaction"].as_str().map(str::to_string));
    if let Some(tx) = tx {
        for shard in 0..layout.shards() {
            let holder: Option<String> = redis::cmd("GET")
                .arg(layout.tx_index(shard, &tx.to_ascii_lowercase_if_hex()))
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            if let Some(holder) = holder {
                return Ok(layout.shard_of(&holder));
            }
        }
    }
    Ok(layout.shard_of(event))
}
