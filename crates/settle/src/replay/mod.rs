//! The replay store: one [`SettlementRecord`] per payment under its replay key, created
//! atomically and moved from state to state by compare-and-swap, so two requests or two replicas
//! never both advance a record.
//!
//! Key layout: see [`keys`]. Values: JSON [`SettlementRecord`]. Implementations: [`RedisStore`]
//! (shared by replicas; every operation is one command or one Lua script) and [`MemoryStore`]
//! (one process only).

pub mod keys;
mod memory;
pub mod migrate;
mod redis_outbox;
pub(crate) mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::outbox::{ClaimedEvent, Outbox, OutboxDepth, OutboxEvent};
pub use crate::record::*;
pub use crate::store_error::StoreError;
pub use memory::MemoryStore;
pub use redis_store::{CallObserver, RedisStore, StoreOptions};

/// A record as read, with the exact stored bytes that a later [`ReplayStore::swap`] compares.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The decoded record.
    pub record: SettlementRecord,
    /// The stored JSON, compared byte for byte by [`ReplayStore::swap`].
    pub raw: String,
}

/// [`ReplayStore::standing`]'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Amounts (atomic units) of the payer's in-flight debits reserved before the record.
    pub ahead: Vec<String>,
    /// How much longer the payer's settlements are refused for reverting, ms (0: not).
    pub blocked_ms: u64,
}

/// Result of [`ReplayStore::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call created the record; the stored JSON.
    Created(String),
    /// A record exists under the key already.
    Exists,
    /// A claim key is held by another payment (its replay key).
    Claimed {
        /// The claim key.
        claim: String,
        /// The replay key holding it.
        holder: String,
    },
}

/// Atomic record storage for settlements, with the webhook outbox written in the same atomic
/// steps ([`ReplayStore::swap_emitting`]).
#[async_trait]
pub trait ReplayStore: Outbox + Send + Sync {
    /// Creates `record` under `key` with expiry `ttl` only if the key is absent and no claim key
    /// in `claims` is held by another replay key; sets the claims to `key` with the same expiry,
    /// and, when the record is unresolved, indexes it as such and writes its in-flight debit
    /// ([`crate::debits`]). The record and its index are one atomic step; the claims come
    /// before it and the debit just before it (each in its own hash slot on Redis Cluster, see
    /// [`RedisStore`]), and what this call added is given back when the record exists or a
    /// claim is held. [`ReplayStore::swap`] into a resolved state and [`ReplayStore::remove`]
    /// release the debit.
    async fn create(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
        claims: &[String],
    ) -> Result<Created, StoreError>;
    /// Reads the record.
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Replaces the record with `next` only if it is still exactly `expected` (keeping its
    /// expiry), updates the unresolved index and indexes `next`'s transactions. `Ok(Some(raw))`:
    /// swapped, the new stored JSON; `Ok(None)`: someone changed it first (re-read).
    async fn swap(
        &self,
        key: &str,
        expected: &str,
        next: &SettlementRecord,
    ) -> Result<Option<String>, StoreError> {
        self.swap_emitting(key, expected, next, None).await
    }
    /// [`ReplayStore::swap`], and when it swaps and `event` is given, writes `event` into the
    /// outbox (due now) in the same atomic step: the state and its notification are recorded
    /// together or not at all.
    async fn swap_emitting(
        &self,
        key: &str,
        expected: &str,
        next: &SettlementRecord,
        event: Option<&OutboxEvent>,
    ) -> Result<Option<String>, StoreError>;
    /// Deletes the record (and its claims) only if it is still exactly `expected`: a reservation
    /// refused before anything was signed, so the payment can be retried.
    async fn remove(
        &self,
        key: &str,
        expected: &str,
        claims: &[String],
    ) -> Result<bool, StoreError>;
    /// Where `payment`'s payer stands before the record under `key` is signed: its in-flight
    /// debits (same network and asset) reserved before that record and not resolved (every
    /// other one when `key` has no debit; see [`crate::debits`]), and whether its settlements
    /// are refused on this network for reverting ([`ReplayStore::payer_reverted`]). One round
    /// trip.
    async fn standing(&self, key: &str, payment: &PaymentFacts) -> Result<Standing, StoreError>;
    /// Counts a settlement of `payment`'s payer that reverted (or failed) on chain after
    /// passing every check; once `limit` of them fall within `window`, the payer's settlements
    /// on the network are refused for `block` ([`Standing::blocked_ms`]). `Ok(true)` when this
    /// count started a block.
    async fn payer_reverted(
        &self,
        payment: &PaymentFacts,
        limit: u32,
        window: Duration,
        block: Duration,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` replay keys of unresolved records, least recently changed first.
    async fn open_keys(&self, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Drops `key` from the unresolved index (its record expired).
    async fn forget_open(&self, key: &str) -> Result<(), StoreError>;
    /// The key of the answer index entry of `scoped_id` (an id a caller gets its answer back
    /// with, [`crate::engine::AnswerId::scoped`]): held as a claim of the record it was first
    /// sent with (see [`keys`]).
    fn answer_key(&self, scoped_id: &str) -> String;
    /// The replay key a claim key (e.g. an [`ReplayStore::answer_key`]) points at.
    async fn claim_holder(&self, claim: &str) -> Result<Option<String>, StoreError>;
    /// The replay key of the record that signed `transaction`.
    async fn key_of_transaction(&self, transaction: &str) -> Result<Option<String>, StoreError>;
    /// Takes a short exclusive lease on `key` for `holder` (`SET NX PX`), e.g. a signer's nonce
    /// across replicas, or the reconciler. `Ok(false)` while someone else holds it.
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Ends the lease if `holder` still holds it (compare-and-delete).
    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// `"redis"` or `"memory"`, for `/health`.
    fn kind(&self) -> &'static str;
    /// The Redis nodes behind the store, their roles and reachability (`/health/ready`,
    /// metrics); none for the in-memory store.
    async fn nodes(&self) -> Vec<crate::redis_conn::NodeStatus> {
        Vec::new()
    }
}

fn encode(record: &SettlementRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
        what: "settlement record (not encodable)".into(),
        source: Some(Arc::new(e)),
    })
}

fn decode(raw: &str) -> Result<SettlementRecord, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt {
        what: "settlement record".into(),
        source: Some(Arc::new(e)),
    })
}
