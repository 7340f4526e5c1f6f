//! The webhook outbox in Redis (layout in [`crate::outbox`]); events are written by the
//! replay store's swap script, claimed, completed, rescheduled and dead-lettered here, each in
//! one command or one Lua script.

use std::time::Duration;

use async_trait::async_trait;

use super::redis_store::RedisStore;
use super::{ClaimedEvent, Outbox, OutboxDepth, OutboxEvent, StoreError};
use crate::outbox::DEAD_RETENTION;

/// Claims the due events: each is pushed past the lease and marked with the claim; its fields
/// come back flat (id, key, type, body, created_ms, attempts) per event. An id without its hash
/// (e.g. deleted by hand) is dropped.
const CLAIM: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local ek = ARGV[4] .. id
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
    fn event_key(&self, id: &str) -> String {
        format!("{}{id}", self.outbox_events)
    }
}

#[async_trait]
impl Outbox for RedisStore {
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        claim: &str,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = self.clock.unix_ms();
        let script = redis::Script::new(CLAIM);
        let mut inv = script.key(&self.outbox);
        inv.arg(now)
            .arg(now + lease.as_millis() as u64)
            .arg(limit.max(1))
            .arg(&self.outbox_events)
            .arg(claim);
        let flat: Vec<String> = self
            .timed("outbox_claim", inv.invoke_async(&mut self.conn.clone()))
            .await?;
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

    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        let script = redis::Script::new(COMPLETE);
        let mut inv = script.key(&self.outbox);
        inv.key(self.event_key(id)).arg(id);
        let _: i64 = self
            .timed("outbox_done", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(())
    }

    async fn retry(
        &self,
        id: &str,
        claim: &str,
        at_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let script = redis::Script::new(RETRY);
        let mut inv = script.key(&self.outbox);
        inv.key(self.event_key(id))
            .arg(id)
            .arg(claim)
            .arg(at_ms)
            .arg(error);
        let _: i64 = self
            .timed("outbox_retry", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, id: &str, claim: &str, error: &str) -> Result<(), StoreError> {
        let (now, retention) = (self.clock.unix_ms(), DEAD_RETENTION.as_millis() as u64);
        let script = redis::Script::new(DEAD);
        let mut inv = script.key(&self.outbox);
        inv.key(self.event_key(id))
            .key(&self.outbox_dead)
            .arg(id)
            .arg(claim)
            .arg(now)
            .arg(error)
            .arg(retention)
            .arg(now.saturating_sub(retention));
        let _: i64 = self
            .timed("outbox_dead", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(())
    }

    async fn depth(&self) -> Result<OutboxDepth, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD")
            .arg(&self.outbox)
            .cmd("ZCARD")
            .arg(&self.outbox_dead);
        let (pending, dead): (u64, u64) = self
            .timed("outbox_depth", pipe.query_async(&mut self.conn.clone()))
            .await?;
        Ok(OutboxDepth { pending, dead })
    }
}
