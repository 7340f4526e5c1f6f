//! The webhook outbox in Redis (layout in [`crate::outbox`]); events are written by the
//! replay store's swap script, claimed, completed, rescheduled and dead-lettered here, each in
//! one command or one Lua script.
//!
//! **Across a failover** (`min_replicas_acked` > 0) a claim and a completion are acknowledged
//! by that many replicas (`WAIT`, as the record written before a broadcast), else they fail:
//! - a claim the replicas do not hold is not delivered (the new primary would hand the event
//!   to a second worker while the first delivers it), and its acknowledgement also covers the
//!   event's own creation, so no event is delivered from a write a failover can still undo
//!   (the engine would then write it again, and it would go out twice);
//! - a completion the replicas do not hold fails, and the worker repeats it (it is
//!   idempotent) within the claim's lease, so the new primary learns it before the event is
//!   due again.

use std::time::Duration;

use async_trait::async_trait;

use super::redis_store::RedisStore;
use super::{ClaimedEvent, Outbox, OutboxDepth, OutboxEvent, StoreError};
use crate::outbox::DEAD_RETENTION;

/// Claims the due events of one outbox shard (KEYS[1]; an event's hash is ARGV[4] .. id ..
/// ARGV[6], the shard's tag): each is pushed past the lease and marked with the claim; its fields
/// come back flat (id, key, type, body, created_ms, attempts) per event. An id without its hash
/// (e.g. deleted by hand) is dropped.
const CLAIM: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local ek = ARGV[4] .. id .. ARGV[6]
  if redis.call('EXISTS', ek) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    local attempts = redis.call('HINCRBY', ek, 'attempts', 1)
    redis.call('HSET', ek, 'claim', ARGV[5])
    local v = redis.call('HMGET', ek, 'key', 'type', 'body', 'created_ms')
    table.insert(out, id)
    table.insert(out, v[1] or '')
    table.insert(out, v[2] or '')
    table.insert(out, v[3] or '')
    table.insert(out, v[4] or '0')
    table.insert(out, tostring(attempts))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"#;

/// Delivered: the event is gone.
const COMPLETE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"#;

/// Not delivered: due again at ARGV[3], if this claim still holds it.
const RETRY: &str = r#"
if redis.call('HGET', KEYS[2], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], 'last_error', ARGV[4])
return 1
"#;

/// Given up: out of the outbox, into the dead set (whose old entries are trimmed), the hash
/// kept for the retention.
const DEAD: &str = r#"
if redis.call('HGET', KEYS[2], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[6])
redis.call('HSET', KEYS[2], 'last_error', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"#;

impl RedisStore {
    /// The shards where event `id` may be: the one this process claimed it from, else all.
    fn shards_of(&self, id: &str) -> Vec<u16> {
        match self
            .claimed_shards
            .lock()
            .expect("claimed shards lock")
            .get(id)
        {
            Some(s) => vec![*s],
            None => (0..self.layout.shards()).collect(),
        }
    }

    fn forget_claimed(&self, id: &str) {
        self.claimed_shards
            .lock()
            .expect("claimed shards lock")
            .remove(id);
    }

    async fn claim_shard(
        &self,
        shard: u16,
        limit: usize,
        lease: Duration,
        claim: &str,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = self.clock.unix_ms();
        let script = redis::Script::new(CLAIM);
        let mut inv = script.key(self.layout.outbox(shard));
        inv.arg(now)
            .arg(now + lease.as_millis() as u64)
            .arg(limit.max(1))
            .arg(format!("{}:webhooks:event:", self.layout.prefix()))
            .arg(claim)
            .arg(format!(":{}", self.layout.tag(shard)));
        let flat: Vec<String> = self.run_script("outbox_claim", &inv, true).await?;
        Ok(flat
            .chunks_exact(6)
            .map(|f| ClaimedEvent {
                event: OutboxEvent {
                    id: f[0].clone(),
                    key: f[1].clone(),
                    kind: f[2].clone(),
                    body: f[3].clone(),
                    created_ms: f[4].parse().unwrap_or_default(),
                },
                attempts: f[5].parse().unwrap_or(1),
            })
            .collect())
    }
}

/// Walks the outbox shards ([`crate::replay::keys::Layout::outbox`]) from a rotating start, so
/// that no shard waits behind a busy one.
static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[async_trait]
impl Outbox for RedisStore {
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        claim: &str,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let n = usize::from(self.layout.shards());
        let start = NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        let mut out = Vec::new();
        // A shard whose node is down or unacknowledged waits; the others are still served.
        let mut failed = None;
        for i in 0..n {
            let remaining = limit.max(1).saturating_sub(out.len());
            if remaining == 0 {
                break;
            }
            let shard = ((start + i) % n) as u16;
            let events = match self.claim_shard(shard, remaining, lease, claim).await {
                Ok(events) => events,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            if !events.is_empty() {
                let mut map = self.claimed_shards.lock().expect("claimed shards lock");
                for e in &events {
                    map.insert(e.event.id.clone(), shard);
                }
            }
            out.extend(events);
        }
        match failed {
            Some(e) if out.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "webhook outbox: a shard could not be claimed");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        for shard in self.shards_of(id) {
            let script = redis::Script::new(COMPLETE);
            let mut inv = script.key(self.layout.outbox(shard));
            inv.key(self.layout.outbox_event(shard, id)).arg(id);
            let _: i64 = self.run_script("outbox_done", &inv, true).await?;
        }
        self.forget_claimed(id);
        Ok(())
    }

    async fn retry(
        &self,
        id: &str,
        claim: &str,
        at_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        for shard in self.shards_of(id) {
            let script = redis::Script::new(RETRY);
            let mut inv = script.key(self.layout.outbox(shard));
            inv.key(self.layout.outbox_event(shard, id))
                .arg(id)
                .arg(claim)
                .arg(at_ms)
                .arg(error);
            let _: i64 = self
                .timed("outbox_retry", inv.invoke_async(&mut self.conn.clone()))
                .await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, id: &str, claim: &str, error: &str) -> Result<(), StoreError> {
        let (now, retention) = (self.clock.unix_ms(), DEAD_RETENTION.as_millis() as u64);
        for shard in self.shards_of(id) {
            let script = redis::Script::new(DEAD);
            let mut inv = script.key(self.layout.outbox(shard));
            inv.key(self.layout.outbox_event(shard, id))
                .key(self.layout.outbox_dead(shard))
                .arg(id)
                .arg(claim)
                .arg(now)
                .arg(error)
                .arg(retention)
                .arg(now.saturating_sub(retention));
            let _: i64 = self
                .timed("outbox_dead", inv.invoke_async(&mut self.conn.clone()))
                .await?;
        }
        self.forget_claimed(id);
        Ok(())
    }

    async fn depth(&self) -> Result<OutboxDepth, StoreError> {
        let shards = futures::future::try_join_all((0..self.layout.shards()).map(|shard| {
            let mut pipe = redis::pipe();
            pipe.cmd("ZCARD")
                .arg(self.layout.outbox(shard))
                .cmd("ZCARD")
                .arg(self.layout.outbox_dead(shard));
            async move {
                self.timed(
                    "outbox_depth",
                    pipe.query_async::<(u64, u64)>(&mut self.conn.clone()),
                )
                .await
            }
        }))
        .await?;
        Ok(shards
            .into_iter()
            .fold(OutboxDepth::default(), |d, (pending, dead)| OutboxDepth {
                pending: d.pending + pending,
                dead: d.dead + dead,
            }))
    }
}
