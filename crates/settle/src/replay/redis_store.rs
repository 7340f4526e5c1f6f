//! Redis replay store: atomic across replicas (each operation one command or one Lua script),
//! fail closed when Redis is down or slow (every command has a response timeout).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys::{open_index_key, transaction_index_prefix};
use super::{Created, ReplayStore, SettlementRecord, StoreError, Stored, decode, encode};
use crate::clock::unix_ms;

/// Creates the record if absent and no claim is held by another key; claims and index with it.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
for i = 3, #KEYS do
  local h = redis.call('GET', KEYS[i])
  if h and h ~= KEYS[1] then return {2, KEYS[i], h} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, #KEYS do redis.call('SET', KEYS[i], KEYS[1], 'PX', ARGV[2]) end
if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1]) end
return {1}
"#;

/// Compare-and-swap of the whole record; index maintenance in the same step.
const SWAP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
else
  redis.call('ZREM', KEYS[2], KEYS[1])
end
local ttl = redis.call('PTTL', KEYS[1])
for i = 6, #ARGV do
  if ttl > 0 then
    redis.call('SET', ARGV[5] .. ARGV[i], KEYS[1], 'PX', ttl)
  else
    redis.call('SET', ARGV[5] .. ARGV[i], KEYS[1])
  end
end
return 1
"#;

/// Compare-and-delete of a record and the claims it holds.
const REMOVE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == KEYS[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"#;

const END_LEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Replay store over a Redis connection manager (reconnects by itself).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    open_index: String,
    tx_prefix: String,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); index keys live under `prefix`; every command
    /// gives up after `timeout` (the store then counts as unavailable and settlement refuses).
    /// Errors when the URL is malformed or Redis does not answer within `timeout`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| StoreError(format!("redis: no answer within {timeout:?}")))?
                .map_err(unavailable)?;
        let store = RedisStore {
            conn,
            open_index: open_index_key(prefix),
            tx_prefix: transaction_index_prefix(prefix),
        };
        store.ping().await?;
        Ok(store)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        cmd.query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
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
        inv.key(key).key(&self.open_index);
        for c in claims {
            inv.key(c);
        }
        inv.arg(&raw)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(unix_ms())
            .arg(if record.is_resolved() { "0" } else { "1" });
        let reply: Vec<redis::Value> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
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
            _ => Err(StoreError(format!("unexpected create reply {reply:?}"))),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let raw: Option<String> = self.query(redis::cmd("GET").arg(key)).await?;
        raw.map(|raw| {
            Ok(Stored {
                record: decode(&raw)?,
                raw,
            })
        })
        .transpose()
    }

    async fn swap(
        &self,
        key: &str,
        expected: &str,
        next: &SettlementRecord,
    ) -> Result<Option<String>, StoreError> {
        let raw = encode(next)?;
        let script = redis::Script::new(SWAP);
        let mut inv = script.prepare_invoke();
        inv.key(key)
            .key(&self.open_index)
            .arg(expected)
            .arg(&raw)
            .arg(unix_ms())
            .arg(if next.is_resolved() { "0" } else { "1" })
            .arg(&self.tx_prefix);
        for tx in next.all_transactions() {
            inv.arg(tx.to_ascii_lowercase_if_hex());
        }
        let swapped: i64 = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
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
        inv.key(key).key(&self.open_index);
        for c in claims {
            inv.key(c);
        }
        inv.arg(expected);
        let removed: i64 = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn open_keys(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.query(
            redis::cmd("ZRANGE")
                .arg(&self.open_index)
                .arg(0)
                .arg(limit.max(1) as i64 - 1),
        )
        .await
    }

    async fn forget_open(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(redis::cmd("ZREM").arg(&self.open_index).arg(key))
            .await?;
        Ok(())
    }

    async fn key_of_transaction(&self, transaction: &str) -> Result<Option<String>, StoreError> {
        let k = format!(
            "{}{}",
            self.tx_prefix,
            transaction.to_ascii_lowercase_if_hex()
        );
        self.query(redis::cmd("GET").arg(k)).await
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .query(
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
        let _: i64 = redis::Script::new(END_LEASE)
            .key(key)
            .arg(holder)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
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
