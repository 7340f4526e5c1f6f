//! In-memory replay store: the documented default for a single process when no Redis URL is
//! configured. Not shared between replicas, lost on restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ReplayStore, SettlementRecord, StoreError, decode, encode};

/// A `HashMap` of records with expiry times behind a mutex.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// `SET NX PX`: true when this call inserted it.
    fn insert_if_absent(&self, key: &str, value: String, ttl: Duration) -> bool {
        self.with(|m| {
            if m.contains_key(key) {
                return false;
            }
            m.insert(key.to_string(), (value, Instant::now() + ttl));
            true
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (String, Instant)>) -> T) -> T {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, exp)| *exp > now);
        f(&mut map)
    }
}

#[async_trait]
impl ReplayStore for MemoryStore {
    async fn reserve(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.insert_if_absent(key, encode(record)?, ttl))
    }

    async fn get(&self, key: &str) -> Result<Option<SettlementRecord>, StoreError> {
        self.with(|m| m.get(key).map(|(v, _)| v.clone()))
            .map(|v| decode(&v))
            .transpose()
    }

    async fn update(&self, key: &str, record: &SettlementRecord) -> Result<(), StoreError> {
        let value = encode(record)?;
        self.with(|m| match m.get_mut(key) {
            Some(entry) => {
                entry.0 = value;
                Ok(())
            }
            None => Err(StoreError(format!("record {key} vanished before update"))),
        })
    }

    async fn finish(&self, key: &str, done: &SettlementRecord) -> Result<bool, StoreError> {
        let value = encode(done)?;
        self.with(|m| match m.get_mut(key) {
            Some(entry) if matches!(decode(&entry.0)?, SettlementRecord::Done { .. }) => Ok(false),
            Some(entry) => {
                entry.0 = value;
                Ok(true)
            }
            None => Err(StoreError(format!(
                "record {key} vanished before it was finished"
            ))),
        })
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.with(|m| m.remove(key));
        Ok(())
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.insert_if_absent(key, holder.to_string(), ttl))
    }

    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.with(|m| {
            if m.get(key).is_some_and(|(h, _)| h == holder) {
                m.remove(key);
            }
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
