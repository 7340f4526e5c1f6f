//! Redis replay store: atomic across replicas (`SET NX PX`), fail closed when Redis is down.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ReplayStore, SettlementRecord, StoreError, decode, encode};

/// How long one Redis command may take before the store counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Replay store over a Redis connection manager (reconnects by itself).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`). Errors when the URL is malformed or Redis does
    /// not answer within the command timeout.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        let store = RedisStore { conn };
        store.ping().await?;
        Ok(store)
    }
}

impl RedisStore {
    /// `SET key value NX PX ttl`: true when this call set it.
    async fn set_nx_px(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(reply.is_some())
    }
}

#[async_trait]
impl ReplayStore for RedisStore {
    async fn reserve(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_nx_px(key, &encode(record)?, ttl).await
    }

    async fn get(&self, key: &str) -> Result<Option<SettlementRecord>, StoreError> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        raw.map(|r| decode(&r)).transpose()
    }

    async fn update(&self, key: &str, record: &SettlementRecord) -> Result<(), StoreError> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(encode(record)?)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match reply {
            Some(_) => Ok(()),
            None => Err(StoreError(format!("record {key} vanished before update"))),
        }
    }

    async fn finish(&self, key: &str, done: &SettlementRecord) -> Result<bool, StoreError> {
        // Records are serde JSON with the `state` tag first: `{"state":"done",…}`.
        let script = redis::Script::new(
            r#"local v = redis.call('GET', KEYS[1])
            if not v then return -1 end
            if string.sub(v, 1, 16) == '{"state":"done",' then return 0 end
            redis.call('SET', KEYS[1], ARGV[1], 'XX', 'KEEPTTL')
            return 1"#,
        );
        let done_now: i64 = script
            .key(key)
            .arg(encode(done)?)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match done_now {
            -1 => Err(StoreError(format!(
                "record {key} vanished before it was finished"
            ))),
            n => Ok(n == 1),
        }
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.set_nx_px(key, holder, ttl).await
    }

    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        let _: i64 = script
            .key(key)
            .arg(holder)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
