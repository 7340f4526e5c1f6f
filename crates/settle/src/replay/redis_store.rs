//! Redis replay store: atomic across replicas (each operation one command or one Lua script),
//! fail closed when Redis is down or slow (every command has a response timeout).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys::{
    debits_key, debits_seq_key, open_index_key, outbox_dead_key, outbox_event_prefix, outbox_key,
    payer_blocked_key, reverts_key, transaction_index_prefix,
};
use super::{
    Created, OutboxEvent, PaymentFacts, ReplayStore, SettlementRecord, Standing, StoreError,
    Stored, decode, encode,
};
use crate::clock::Clock;

/// Creates the record if absent and no claim is held by another key; claims, index and the
/// in-flight debit with it (KEYS[3] the payer's debits, KEYS[4] their order counter; ARGV[5]
/// the amount, ARGV[6] the record's expiry in Unix ms).
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
for i = 5, #KEYS do
  local h = redis.call('GET', KEYS[i])
  if h and h ~= KEYS[1] then return {2, KEYS[i], h} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 5, #KEYS do redis.call('SET', KEYS[i], KEYS[1], 'PX', ARGV[2]) end
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
  local seq = redis.call('INCR', KEYS[4])
  redis.call('HSET', KEYS[3], KEYS[1], seq .. ':' .. ARGV[6] .. ':' .. ARGV[5])
  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
end
return {1}
"#;

/// Compare-and-swap of the whole record; index maintenance, the release of the in-flight
/// debit (KEYS[5], when resolved) and the webhook event (when ARGV[6], its id, is not empty:
/// KEYS[3] the outbox, KEYS[4] the event hash) in the same step.
const SWAP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
else
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('HDEL', KEYS[5], KEYS[1])
end
local ttl = redis.call('PTTL', KEYS[1])
for i = 11, #ARGV do
  if ttl > 0 then
    redis.call('SET', ARGV[5] .. ARGV[i], KEYS[1], 'PX', ttl)
  else
    redis.call('SET', ARGV[5] .. ARGV[i], KEYS[1])
  end
end
if ARGV[6] ~= '' and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'key', ARGV[7], 'type', ARGV[8], 'body', ARGV[9],
    'created_ms', ARGV[10], 'attempts', 0)
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
end
return 1
"#;

/// Compare-and-delete of a record, the claims it holds and its in-flight debit (KEYS[3]).
const REMOVE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('HDEL', KEYS[3], KEYS[1])
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) == KEYS[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"#;

/// Counts a reverted settlement of a payer (KEYS[1], trimmed to the window ARGV[2] ms before
/// ARGV[1]); at ARGV[3] or more, blocks the payer (KEYS[2]) for ARGV[4] ms unless blocked
/// already. 1 when this count started a block.
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
/// `open_keys`, `forget_open`, `tx_index`, `answer_index`, `debits`, `reverts`, `lease`, `ping`, `outbox_claim`, `outbox_done`,
/// `outbox_retry`, `outbox_dead`, `outbox_depth`), its duration, and whether it succeeded.
pub type CallObserver = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// Replay store over a Redis connection manager (reconnects by itself).
#[derive(Clone)]
pub struct RedisStore {
    pub(super) conn: ConnectionManager,
    open_index: String,
    tx_prefix: String,
    prefix: String,
    pub(super) outbox: String,
    pub(super) outbox_events: String,
    pub(super) outbox_dead: String,
    observer: Option<CallObserver>,
    pub(super) clock: Clock,
}

pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// A self-reconnecting connection to `url` whose every command gives up after `timeout`.
/// Errors: a malformed URL, or no answer within `timeout`.
pub(crate) async fn connection(
    url: &str,
    timeout: Duration,
) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(unavailable)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| StoreError::Unavailable(format!("redis: no answer within {timeout:?}")))?
        .map_err(unavailable)
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); index keys live under `prefix`; every command
    /// gives up after `timeout` (the store then counts as unavailable and settlement refuses).
    /// Errors when the URL is malformed or Redis does not answer within `timeout`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let conn = connection(url, timeout).await?;
        let store = RedisStore {
            conn,
            open_index: open_index_key(prefix),
            tx_prefix: transaction_index_prefix(prefix),
            prefix: prefix.to_string(),
            outbox: outbox_key(prefix),
            outbox_events: outbox_event_prefix(prefix),
            outbox_dead: outbox_dead_key(prefix),
            observer: None,
            clock: Clock::system(),
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
        let script = redis::Script::new(CREATE);
        let mut inv = script.prepare_invoke();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let now_ms = self.clock.unix_ms();
        inv.key(key)
            .key(&self.open_index)
            .key(self.debits_of(record.payment()))
            .key(debits_seq_key(&self.prefix));
        for c in claims {
            inv.key(c);
        }
        inv.arg(&raw)
            .arg(ttl_ms)
            .arg(now_ms)
            .arg(if record.is_resolved() { "0" } else { "1" })
            .arg(&record.payment().amount)
            .arg(now_ms.saturating_add(ttl_ms));
        let reply: Vec<redis::Value> = self
            .timed("create", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        let text = |v: &redis::Value| -> String {
            redis::from_redis_value::<String>(v.clone()).unwrap_or_default()
        };
        match reply
            .first()
            .map(|v| redis::from_redis_value::<i64>(v.clone()))
        {
            Some(Ok(1)) => Ok(Created::Created(raw)),
            Some(Ok(0)) => Ok(Created::Exists),
            Some(Ok(2)) if reply.len() == 3 => Ok(Created::Claimed {
                claim: text(&reply[1]),
                holder: text(&reply[2]),
            }),
            _ => Err(StoreError::Unavailable(format!(
                "unexpected create reply {reply:?}"
            ))),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let raw: Option<String> = self.query("get", redis::cmd("GET").arg(key)).await?;
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
        let script = redis::Script::new(SWAP);
        let mut inv = script.prepare_invoke();
        let event_key = match event {
            Some(e) => format!("{}{}", self.outbox_events, e.id),
            None => self.outbox.clone(),
        };
        inv.key(key)
            .key(&self.open_index)
            .key(&self.outbox)
            .key(&event_key)
            .key(self.debits_of(next.payment()))
            .arg(expected)
            .arg(&raw)
            .arg(self.clock.unix_ms())
            .arg(if next.is_resolved() { "0" } else { "1" })
            .arg(&self.tx_prefix);
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
        let swapped: i64 = self
            .timed("swap", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok((swapped == 1).then_some(raw))
    }

    async fn remove(
        &self,
        key: &str,
        expected: &str,
        claims: &[String],
    ) -> Result<bool, StoreError> {
        let script = redis::Script::new(REMOVE);
        let mut inv = script.prepare_invoke();
        // The debit lives under the payer of the record being deleted.
        let debits = decode(expected)
            .map(|r| self.debits_of(r.payment()))
            .unwrap_or_else(|_| debits_key(&self.prefix, "", "", ""));
        inv.key(key).key(&self.open_index).key(debits);
        for c in claims {
            inv.key(c);
        }
        inv.arg(expected);
        let removed: i64 = self
            .timed("remove", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(removed == 1)
    }

    async fn standing(&self, key: &str, payment: &PaymentFacts) -> Result<Standing, StoreError> {
        let hash = self.debits_of(payment);
        let blocked = payer_blocked_key(&self.prefix, &payment.network, &payment.payer);
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&hash).cmd("PTTL").arg(&blocked);
        let (all, blocked_ms): (Vec<(String, String)>, i64) = self
            .timed("debits", pipe.query_async(&mut self.conn.clone()))
            .await?;
        let (amounts, prune) = crate::debits::ahead(
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            key,
            self.clock.unix_ms(),
        );
        if !prune.is_empty() {
            // Records that expired unresolved: their debits count no more.
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
        self.query(
            "open_keys",
            redis::cmd("ZRANGE")
                .arg(&self.open_index)
                .arg(0)
                .arg(limit.max(1) as i64 - 1),
        )
        .await
    }

    async fn forget_open(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "forget_open",
                redis::cmd("ZREM").arg(&self.open_index).arg(key),
            )
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
        let k = format!(
            "{}{}",
            self.tx_prefix,
            transaction.to_ascii_lowercase_if_hex()
        );
        self.query("tx_index", redis::cmd("GET").arg(k)).await
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
