//! Redis [`NonceStore`]: shared by replicas, each operation one Lua script or one atomic
//! pipeline. Key layout: [`crate::replay::keys::evm_nonce_keys`].

use std::time::Duration;

use alloy::primitives::Address;
use async_trait::async_trait;

use super::{NonceStore, SignerNonces};
use crate::redis_conn::{RedisConn, RedisTarget};
use crate::replay::StoreError;
use crate::replay::keys::{EvmNonceKeys, evm_nonce_keys};
use crate::replay::redis_store::unavailable;

/// The lowest free nonce, else the counter (raised by one); records the owner. -1: no counter.
const ALLOCATE: &str = r#"
local f = redis.call('ZPOPMIN', KEYS[2])
local n
if f[1] then
  n = f[1]
else
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  n = tostring(redis.call('INCR', KEYS[1]) - 1)
end
redis.call('ZADD', KEYS[3], n, n .. '|' .. ARGV[1])
return tonumber(n)
"#;

/// Gives a never-sent nonce back and forgets its owner.
const RELEASE: &str = r#"
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], ARGV[1], ARGV[1])
return 1
"#;

/// Counter := max(counter, pending); drops free nonces below pending (the node has a
/// transaction there) and owners below mined.
const SYNC: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local pending = tonumber(ARGV[1])
if cur < pending then
  redis.call('SET', KEYS[1], ARGV[1])
  cur = pending
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
return cur
"#;

/// Nonce counters in Redis under one key prefix.
#[derive(Clone)]
pub struct RedisNonceStore {
    conn: RedisConn,
    prefix: String,
}

impl RedisNonceStore {
    /// Connects to `url`; keys live under `prefix`; every command gives up after `timeout`.
    /// Errors: a malformed URL, or no answer within `timeout`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self::open(
            RedisConn::connect(&RedisTarget::single(url, timeout)).await?,
            prefix,
        ))
    }

    /// The store over `conn` (any deployment: a signer's keys share one hash tag, so each
    /// script runs on Redis Cluster too); keys live under `prefix`.
    pub fn open(conn: RedisConn, prefix: &str) -> Self {
        RedisNonceStore {
            conn,
            prefix: prefix.to_string(),
        }
    }

    fn keys(&self, chain_id: u64, signer: Address) -> EvmNonceKeys {
        evm_nonce_keys(&self.prefix, chain_id, signer)
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        lua: &str,
        keys: &EvmNonceKeys,
        args: &[String],
    ) -> Result<T, StoreError> {
        let script = redis::Script::new(lua);
        let mut inv = script.prepare_invoke();
        inv.key(&keys.next).key(&keys.free).key(&keys.owners);
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl NonceStore for RedisNonceStore {
    async fn allocate(
        &self,
        chain_id: u64,
        signer: Address,
        owner: &str,
    ) -> Result<Option<u64>, StoreError> {
        let keys = self.keys(chain_id, signer);
        let n: i64 = self.script(ALLOCATE, &keys, &[owner.to_string()]).await?;
        Ok(u64::try_from(n).ok())
    }

    async fn release(&self, chain_id: u64, signer: Address, nonce: u64) -> Result<(), StoreError> {
        let keys = self.keys(chain_id, signer);
        let _: i64 = self.script(RELEASE, &keys, &[nonce.to_string()]).await?;
        Ok(())
    }

    async fn sync(
        &self,
        chain_id: u64,
        signer: Address,
        pending: u64,
        mined: u64,
    ) -> Result<u64, StoreError> {
        let keys = self.keys(chain_id, signer);
        let next: i64 = self
            .script(SYNC, &keys, &[pending.to_string(), mined.to_string()])
            .await?;
        u64::try_from(next)
            .map_err(|_| StoreError::corrupt(format!("nonce counter ({next}, below zero)")))
    }

    async fn take_free(
        &self,
        chain_id: u64,
        signer: Address,
        nonce: u64,
    ) -> Result<bool, StoreError> {
        let keys = self.keys(chain_id, signer);
        let removed: i64 = redis::cmd("ZREM")
            .arg(&keys.free)
            .arg(nonce.to_string())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn state(&self, chain_id: u64, signer: Address) -> Result<SignerNonces, StoreError> {
        let keys = self.keys(chain_id, signer);
        let (next, free, owners): (Option<u64>, Vec<u64>, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(&keys.next)
            .cmd("ZRANGE")
            .arg(&keys.free)
            .arg(0)
            .arg(-1)
            .cmd("ZRANGE")
            .arg(&keys.owners)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let owners = owners
            .iter()
            .filter_map(|m| {
                let (n, key) = m.split_once('|')?;
                Some((n.parse().ok()?, key.to_string()))
            })
            .collect();
        Ok(SignerNonces { next, free, owners })
    }
}
