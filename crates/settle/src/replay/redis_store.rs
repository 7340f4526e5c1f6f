//! Redis replay store: atomic across replicas (each step one command or one Lua script whose
//! keys share one hash slot, so it runs on Redis Cluster too; layout in [`super::keys`]), fail
//! closed when Redis is down or slow (every call has a deadline), and durable across a
//! failover where it matters: the record written before a broadcast and the final state with
//! its webhook event are acknowledged by `min_replicas_acked` replicas (`WAIT`, pipelined with
//! the write on the same connection) before the call returns, else the call fails and nothing
//! is broadcast.
//!
//! One payment's steps touch three kinds of slot, in this order: its claims (memo, answer ids:
//! each its own key, set first, so a claim held by another payment refuses before anything
//! else is written), its payer's in-flight debit (the payer's slot), then its record with the
//! shard indexes (the record's shard). Undo on refusal runs in reverse; a crash between steps
//! leaves at most a claim pointing at a replay key without a record (the same payment retried
//! takes it again; it expires with the record's lifetime) or a debit that counts until it
//! expires (the funds check errs towards refusing).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::keys::{Layout, debits_key, debits_seq_key, payer_blocked_key, reverts_key};
use super::{
    Created, OutboxEvent, PaymentFacts, ReplayStore, SettlementRecord, Standing, StoreError,
    Stored, decode, encode,
};
use crate::clock::Clock;
use crate::redis_conn::{RedisConn, RedisTarget};

/// Sets claim KEYS[1] to ARGV[1] (a replay key) for ARGV[2] ms unless another key holds it:
/// 1 set now, 0 held by ARGV[1] already, else the holder.
const CLAIM: &str = r#"
local h = redis.call('GET', KEYS[1])
if h and h ~= ARGV[1] then return h end
if h then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Deletes claim KEYS[1] if ARGV[1] still holds it.
const UNCLAIM: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Writes the in-flight debit of replay key ARGV[1] (KEYS[1] the payer's debits, KEYS[2] their
/// order counter; ARGV[2] the record's expiry, Unix ms; ARGV[3] the amount; ARGV[4] the
/// lifetime, ms) unless it has one: 1 written now, 0 there already.
const DEBIT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], seq .. ':' .. ARGV[2] .. ':' .. ARGV[3])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
return 1
"#;

/// Creates the record (KEYS[1]) if absent, and indexes it in its shard's unresolved set
/// (KEYS[2]) when ARGV[4] is 1 (ARGV[5]: the replay key).
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5]) end
return 1
"#;

/// Compare-and-swap of the whole record (KEYS[1]); the shard's unresolved set (KEYS[2]), its
/// transaction index (ARGV[6] .. transaction .. ARGV[7], for ARGV[13..]) and, when ARGV[8]
/// (the event id) is not empty, the webhook event (KEYS[3] the shard's outbox, KEYS[4] the
/// event hash) in the same step. ARGV[5]: the replay key.
const SWAP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
local ttl = redis.call('PTTL', KEYS[1])
for i = 13, #ARGV do
  if ttl > 0 then
    redis.call('SET', ARGV[6] .. ARGV[i] .. ARGV[7], ARGV[5], 'PX', ttl)
  else
    redis.call('SET', ARGV[6] .. ARGV[i] .. ARGV[7], ARGV[5])
  end
end
if ARGV[8] ~= '' and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'key', ARGV[9], 'type', ARGV[10], 'body', ARGV[11],
    'created_ms', ARGV[12], 'attempts', 0)
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[8])
end
return 1
"#;

/// Compare-and-delete of a record (KEYS[1]) and its entry in the shard's unresolved set
/// (KEYS[2]; ARGV[2] the replay key).
const REMOVE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"#;

/// Counts a reverted settlement of a payer (KEYS[1], trimmed to the window ARGV[2] ms before
/// ARGV[1]); at ARGV[3] or more, blocks the payer (KEYS[2]) for ARGV[4] ms unless blocked
/// already. 1 when this count started a block. (`KEYS[1] .. ':n'` shares KEYS[1]'s hash tag.)
const COUNT_REVERT: &str = r#"
local now = tonumber(ARGV[1])
local member = ARGV[1] .. ':' .. redis.call('INCR', KEYS[1] .. ':n')
redis.call('PEXPIRE', KEYS[1] .. ':n', ARGV[2])
redis.call('ZADD', KEYS[1], now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], now, 'PX', ARGV[4])
  return 1
end
return 0
"#;

const END_LEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Receives every replay-store Redis call: the operation (`create`, `get`, `swap`, `remove`,
/// `claim`, `open_keys`, `forget_open`, `tx_index`, `answer_index`, `debits`, `reverts`,
/// `lease`, `ping`, `outbox_claim`, `outbox_done`, `outbox_retry`, `outbox_dead`,
/// `outbox_depth`), its duration, and whether it succeeded.
pub type CallObserver = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// How the store lays out and guards its keys (`[redis]`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Key prefix (default `x402`).
    pub prefix: String,
    /// Index shards ([`super::keys::DEFAULT_SHARDS`] by default; never changed on live data).
    pub shards: u16,
    /// Replicas that must acknowledge the record written before a broadcast and the final
    /// state (Redis `WAIT`); 0: none (a single node).
    pub min_replicas_acked: u32,
}

impl StoreOptions {
    /// `prefix`, the default shard count, no replica acknowledgement.
    pub fn new(prefix: &str) -> Self {
        StoreOptions {
            prefix: prefix.to_string(),
            shards: super::keys::DEFAULT_SHARDS,
            min_replicas_acked: 0,
        }
    }
}

/// Replay store over a Redis connection ([`RedisConn`]: single node, Sentinel or Cluster).
#[derive(Clone)]
pub struct RedisStore {
    pub(super) conn: RedisConn,
    pub(super) layout: Layout,
    prefix: String,
    min_replicas_acked: u32,
    observer: Option<CallObserver>,
    pub(super) clock: Clock,
    /// The shard of each webhook event this process claimed (for its completion).
    pub(super) claimed_shards: Arc<Mutex<HashMap<String, u16>>>,
}

pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// An answer of an unexpected shape (out of protocol: counted as unavailable).
fn parse_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected answer: {e}"))
}

/// Whether a record state is the write before an irreversible act (a broadcast, or the final
/// state a webhook announces): replicas must hold it before the caller acts on it.
fn needs_replicas(record: &SettlementRecord) -> bool {
    matches!(record, SettlementRecord::Broadcast(_)) || record.is_resolved()
}

impl RedisStore {
    /// Connects to the single node at `url` (`redis://host:port/db`); keys live under `prefix`
    /// (default shards, no `WAIT`); every command gives up after `timeout` (the store then
    /// counts as unavailable and settlement refuses). Errors when the URL is malformed or
    /// Redis does not answer within `timeout`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let conn = RedisConn::connect(&RedisTarget::single(url, timeout)).await?;
        Self::open(conn, StoreOptions::new(prefix)).await
    }

    /// The store over `conn` (any [`crate::redis_conn::RedisMode`]) with `options`; checks that
    /// Redis answers.
    pub async fn open(conn: RedisConn, options: StoreOptions) -> Result<Self, StoreError> {
        let store = RedisStore {
            conn,
            layout: Layout::new(&options.prefix, options.shards),
            prefix: options.prefix,
            min_replicas_acked: options.min_replicas_acked,
            observer: None,
            clock: Clock::system(),
            claimed_shards: Arc::new(Mutex::new(HashMap::new())),
        };
        store.ping().await?;
        Ok(store)
    }

    /// Reads the time of index scores and outbox due times from `clock` (default: the system
    /// clock; replicas sharing Redis need synchronised wall clocks).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The key layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The connection (shared with the rate limiter, health checks).
    pub fn connection(&self) -> &RedisConn {
        &self.conn
    }

    /// The in-flight debits hash of the payer of `payment`.
    fn debits_of(&self, payment: &PaymentFacts) -> String {
        debits_key(
            &self.prefix,
            &payment.network,
            &payment.asset,
            &payment.payer,
        )
    }

    /// Reports every later call to `observer` (e.g. a latency histogram by operation).
    pub fn with_call_observer(mut self, observer: CallObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Awaits one Redis call of operation `op`, reporting its duration.
    pub(super) async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        if let Some(observer) = &self.observer {
            observer(op, started.elapsed(), result.is_ok());
        }
        result.map_err(unavailable)
    }

    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.timed(op, cmd.query_async(&mut self.conn.clone()))
            .await
    }

    /// Runs `inv`; when `durable` and replicas are required, pipelines `WAIT` after it on the
    /// same connection (so it waits for exactly this write) and fails unless enough replicas
    /// acknowledged it within half the Redis deadline.
    pub(super) async fn run_script<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
        durable: bool,
    ) -> Result<T, StoreError> {
        let need = self.min_replicas_acked;
        if need == 0 || !durable {
            return self
                .timed(op, inv.invoke_async(&mut self.conn.clone()))
                .await;
        }
        let wait_ms = (self.conn.timeout().as_millis() / 2).max(1) as u64;
        let started = Instant::now();
        let result = async {
            let mut conn = self.conn.clone();
            let mut loaded = false;
            loop {
                let mut pipe = redis::pipe();
                pipe.invoke_script(inv).cmd("WAIT").arg(need).arg(wait_ms);
                match pipe.query_async::<(redis::Value, i64)>(&mut conn).await {
                    Err(e)
                        if !loaded
                            && e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        inv.load_async(&mut conn).await?;
                        loaded = true;
                    }
                    Ok((redis::Value::ServerError(e), _))
                        if !loaded && e.kind() == Some(redis::ServerErrorKind::NoScript) =>
                    {
                        inv.load_async(&mut conn).await?;
                        loaded = true;
                    }
                    other => return other,
                }
            }
        }
        .await;
        if let Some(observer) = &self.observer {
            observer(op, started.elapsed(), result.is_ok());
        }
        let (value, acked) = result.map_err(unavailable)?;
        if acked < i64::from(need) {
            return Err(StoreError::Unavailable(format!(
                "redis: the write was acknowledged by {acked} of the {need} replicas required                  (min_replicas_acked) within {wait_ms} ms"
            )));
        }
        redis::from_redis_value(value).map_err(parse_error)
    }

    /// Sets `claims` to `key` for `ttl_ms`; on a claim held by another key, gives back the ones
    /// set by this call. `Ok(Ok(newly set))` or `Ok(Err((claim, holder)))`.
    async fn take_claims(
        &self,
        key: &str,
        claims: &[String],
        ttl_ms: u64,
    ) -> Result<Result<Vec<String>, (String, String)>, StoreError> {
        let mut taken = Vec::new();
        for claim in claims {
            let script = redis::Script::new(CLAIM);
            let mut inv = script.key(claim);
            inv.arg(key).arg(ttl_ms);
            let reply: redis::Value = self
                .timed("claim", inv.invoke_async(&mut self.conn.clone()))
                .await?;
            match reply {
                redis::Value::Int(1) => taken.push(claim.clone()),
                redis::Value::Int(_) => {}
                other => {
                    let holder: String = redis::from_redis_value(other).map_err(parse_error)?;
                    self.give_back_claims(key, &taken).await?;
                    return Ok(Err((claim.clone(), holder)));
                }
            }
        }
        Ok(Ok(taken))
    }

    /// Deletes each of `claims` still held by `key`.
    async fn give_back_claims(&self, key: &str, claims: &[String]) -> Result<(), StoreError> {
        for claim in claims {
            let script = redis::Script::new(UNCLAIM);
            let mut inv = script.key(claim);
            inv.arg(key);
            let _: i64 = self
                .timed("claim", inv.invoke_async(&mut self.conn.clone()))
                .await?;
        }
        Ok(())
    }

    /// Releases the in-flight debit of `key` (after its record was resolved or deleted). A
    /// failure is logged, not returned: the record's step is done, and a debit whose record is
    /// resolved or gone is pruned by the next [`ReplayStore::standing`] of the payer, or
    /// expires.
    async fn release_debit(&self, key: &str, payment: &PaymentFacts) {
        let hash = self.debits_of(payment);
        if let Err(e) = self
            .query::<i64>("debits", redis::cmd("HDEL").arg(&hash).arg(key))
            .await
        {
            tracing::warn!(key, error = %e, "could not release the in-flight debit (it counts until pruned)");
        }
    }
}

#[async_trait]
impl ReplayStore for RedisStore {
    async fn create(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
        claims: &[String],
    ) -> Result<Created, StoreError> {
        let raw = encode(record)?;
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let now_ms = self.clock.unix_ms();
        // 1. The claims (each in its own slot).
        let taken = match self.take_claims(key, claims, ttl_ms).await? {
            Ok(taken) => taken,
            Err((claim, holder)) => return Ok(Created::Claimed { claim, holder }),
        };
        // 2. The in-flight debit (the payer's slot), before the record can be seen.
        let unresolved = !record.is_resolved();
        let mut debited = false;
        if unresolved {
            let hash = self.debits_of(record.payment());
            let script = redis::Script::new(DEBIT);
            let mut inv = script.prepare_invoke();
            inv.key(&hash)
                .key(debits_seq_key(&hash))
                .arg(key)
                .arg(now_ms.saturating_add(ttl_ms))
                .arg(&record.payment().amount)
                .arg(ttl_ms);
            let written: i64 = self.run_script("create", &inv, false).await?;
            debited = written == 1;
        }
        // 3. The record and its shard index (the record's slot).
        let shard = self.layout.shard_of(key);
        let script = redis::Script::new(CREATE);
        let mut inv = script.prepare_invoke();
        inv.key(self.layout.record_key(key))
            .key(self.layout.open_index(shard))
            .arg(&raw)
            .arg(ttl_ms)
            .arg(now_ms)
            .arg(if unresolved { "1" } else { "0" })
            .arg(key);
        let created: i64 = self
            .run_script("create", &inv, needs_replicas(record))
            .await?;
        if created == 1 {
            return Ok(Created::Created(raw));
        }
        // Someone else's record: what this call added is given back.
        if debited {
            self.release_debit(key, record.payment()).await;
        }
        self.give_back_claims(key, &taken).await?;
        Ok(Created::Exists)
    }

    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let raw: Option<String> = self
            .query("get", redis::cmd("GET").arg(self.layout.record_key(key)))
            .await?;
        raw.map(|raw| {
            Ok(Stored {
                record: decode(&raw)?,
                raw,
            })
        })
        .transpose()
    }

    async fn swap_emitting(
        &self,
        key: &str,
        expected: &str,
        next: &SettlementRecord,
        event: Option<&OutboxEvent>,
    ) -> Result<Option<String>, StoreError> {
        let raw = encode(next)?;
        let shard = self.layout.shard_of(key);
        let script = redis::Script::new(SWAP);
        let mut inv = script.prepare_invoke();
        let outbox = self.layout.outbox(shard);
        let event_key = match event {
            Some(e) => self.layout.outbox_event(shard, &e.id),
            None => outbox.clone(),
        };
        inv.key(self.layout.record_key(key))
            .key(self.layout.open_index(shard))
            .key(&outbox)
            .key(&event_key)
            .arg(expected)
            .arg(&raw)
            .arg(self.clock.unix_ms())
            .arg(if next.is_resolved() { "0" } else { "1" })
            .arg(key)
            .arg(self.layout.tx_index_prefix())
            .arg(format!(":{}", self.layout.tag(shard)));
        match event {
            Some(e) => inv
                .arg(&e.id)
                .arg(&e.key)
                .arg(&e.kind)
                .arg(&e.body)
                .arg(e.created_ms),
            None => inv.arg("").arg("").arg("").arg("").arg(0),
        };
        for tx in next.all_transactions() {
            inv.arg(tx.to_ascii_lowercase_if_hex());
        }
        let swapped: i64 = self.run_script("swap", &inv, needs_replicas(next)).await?;
        if swapped != 1 {
            return Ok(None);
        }
        if next.is_resolved() {
            self.release_debit(key, next.payment()).await;
        }
        Ok(Some(raw))
    }

    async fn remove(
        &self,
        key: &str,
        expected: &str,
        claims: &[String],
    ) -> Result<bool, StoreError> {
        let shard = self.layout.shard_of(key);
        let script = redis::Script::new(REMOVE);
        let mut inv = script.prepare_invoke();
        inv.key(self.layout.record_key(key))
            .key(self.layout.open_index(shard))
            .arg(expected)
            .arg(key);
        let removed: i64 = self.run_script("remove", &inv, false).await?;
        if removed != 1 {
            return Ok(false);
        }
        // The debit lives under the payer of the record deleted.
        if let Ok(r) = decode(expected) {
            self.release_debit(key, r.payment()).await;
        }
        self.give_back_claims(key, claims).await?;
        Ok(true)
    }

    async fn standing(&self, key: &str, payment: &PaymentFacts) -> Result<Standing, StoreError> {
        let hash = self.debits_of(payment);
        let blocked = payer_blocked_key(&self.prefix, &payment.network, &payment.payer);
        let all_cmd = redis::cmd("HGETALL").arg(&hash).clone();
        let pttl_cmd = redis::cmd("PTTL").arg(&blocked).clone();
        let (all, blocked_ms) = futures::future::try_join(
            self.query::<Vec<(String, String)>>("debits", &all_cmd),
            self.query::<i64>("debits", &pttl_cmd),
        )
        .await?;
        let (entries, mut prune) = crate::debits::ahead_entries(
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            key,
            self.clock.unix_ms(),
        );
        // A debit whose record is resolved already was released in a step cut short.
        let states = futures::future::try_join_all(entries.iter().map(|(k, _)| async move {
            let get = redis::cmd("GET").arg(self.layout.record_key(k)).clone();
            let raw: Option<String> = self.query("debits", &get).await?;
            Ok::<_, StoreError>(raw.and_then(|r| decode(&r).ok()).map(|r| r.is_resolved()))
        }))
        .await?;
        let mut amounts = Vec::new();
        for ((k, amount), resolved) in entries.into_iter().zip(states) {
            if resolved == Some(true) {
                prune.push(k);
            } else {
                amounts.push(amount);
            }
        }
        if !prune.is_empty() {
            // Records that expired unresolved, or were resolved: their debits count no more.
            let _: i64 = self
                .query("debits", redis::cmd("HDEL").arg(&hash).arg(&prune))
                .await?;
        }
        Ok(Standing {
            ahead: amounts,
            blocked_ms: blocked_ms.max(0) as u64,
        })
    }

    async fn payer_reverted(
        &self,
        payment: &PaymentFacts,
        limit: u32,
        window: Duration,
        block: Duration,
    ) -> Result<bool, StoreError> {
        let script = redis::Script::new(COUNT_REVERT);
        let mut inv = script.prepare_invoke();
        inv.key(reverts_key(&self.prefix, &payment.network, &payment.payer))
            .key(payer_blocked_key(
                &self.prefix,
                &payment.network,
                &payment.payer,
            ))
            .arg(self.clock.unix_ms())
            .arg(window.as_millis().max(1) as u64)
            .arg(limit)
            .arg(block.as_millis().max(1) as u64);
        let started: i64 = self
            .timed("reverts", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(started == 1)
    }

    async fn open_keys(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = limit.max(1);
        let shards = futures::future::try_join_all((0..self.layout.shards()).map(|shard| {
            let cmd = redis::cmd("ZRANGE")
                .arg(self.layout.open_index(shard))
                .arg(0)
                .arg(limit as i64 - 1)
                .arg("WITHSCORES")
                .clone();
            async move { self.query::<Vec<(String, f64)>>("open_keys", &cmd).await }
        }))
        .await?;
        let mut all: Vec<(String, f64)> = shards.into_iter().flatten().collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        all.truncate(limit);
        Ok(all.into_iter().map(|(k, _)| k).collect())
    }

    async fn forget_open(&self, key: &str) -> Result<(), StoreError> {
        let index = self.layout.open_index(self.layout.shard_of(key));
        let _: i64 = self
            .query("forget_open", redis::cmd("ZREM").arg(index).arg(key))
            .await?;
        Ok(())
    }

    fn answer_key(&self, scoped_id: &str) -> String {
        super::keys::answer_index_key(&self.prefix, scoped_id)
    }

    async fn claim_holder(&self, claim: &str) -> Result<Option<String>, StoreError> {
        self.query("answer_index", redis::cmd("GET").arg(claim))
            .await
    }

    async fn key_of_transaction(&self, transaction: &str) -> Result<Option<String>, StoreError> {
        // The transaction does not name its shard: every shard is asked at once.
        let tx = transaction.to_ascii_lowercase_if_hex();
        let found = futures::future::try_join_all((0..self.layout.shards()).map(|shard| {
            let cmd = redis::cmd("GET")
                .arg(self.layout.tx_index(shard, &tx))
                .clone();
            async move { self.query::<Option<String>>("tx_index", &cmd).await }
        }))
        .await?;
        Ok(found.into_iter().flatten().next())
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .query(
                "lease",
                redis::cmd("SET")
                    .arg(key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(reply.is_some())
    }

    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let script = redis::Script::new(END_LEASE);
        let mut inv = script.key(key);
        inv.arg(holder);
        let _: i64 = self
            .timed("lease", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query("ping", &redis::cmd("PING")).await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn nodes(&self) -> Vec<crate::redis_conn::NodeStatus> {
        self.conn.nodes().await
    }
}

/// Transaction ids in the index: EVM hashes lower-case (callers may send any case), Solana
/// signatures (base58, case-sensitive) unchanged.
pub(crate) trait TxIdCase {
    fn to_ascii_lowercase_if_hex(&self) -> String;
}

impl TxIdCase for str {
    fn to_ascii_lowercase_if_hex(&self) -> String {
        if self.starts_with("0x") || self.starts_with("0X") {
            self.to_ascii_lowercase()
        } else {
            self.to_string()
        }
    }
}
