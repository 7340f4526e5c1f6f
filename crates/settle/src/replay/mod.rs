//! The replay store: one record per payment under its replay key, reserved atomically.
//!
//! Key layout: see [`keys`]. Values: JSON [`SettlementRecord`].

pub mod keys;
mod memory;
mod redis_store;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use x402_proto::SettleResponse;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// The replay store could not be reached or answered garbage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The state of one payment's settlement, stored under its replay key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SettlementRecord {
    /// Reserved by a settling request; nothing signed yet.
    Reserved {
        /// Fingerprint of the exact payment (see `x402_verify::evm::EvmPaymentId`), 0x-hex.
        fingerprint: String,
        /// Unix seconds.
        at: u64,
    },
    /// Signed and (about to be) broadcast: the transaction may land.
    Broadcast {
        /// Fingerprint of the exact payment, 0x-hex.
        fingerprint: String,
        /// Transaction hash, 0x-hex.
        transaction: String,
        /// EIP-2718 signed transaction, 0x-hex, to re-send after a crash.
        raw: String,
        /// Facilitator address that signed it.
        signer: String,
        /// Sender nonce.
        nonce: u64,
        /// The answer to give once confirmed (`success` true), minus nothing.
        receipt: SettleResponse,
        /// Unix seconds of the first broadcast.
        at: u64,
    },
    /// Final: confirmed success, or a terminal failure (reverted on chain).
    Done {
        /// Fingerprint of the exact payment, 0x-hex.
        fingerprint: String,
        /// The final answer.
        response: SettleResponse,
    },
}

impl SettlementRecord {
    /// The payment fingerprint stored in every state.
    pub fn fingerprint(&self) -> &str {
        match self {
            SettlementRecord::Reserved { fingerprint, .. }
            | SettlementRecord::Broadcast { fingerprint, .. }
            | SettlementRecord::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// Atomic reservation and record storage for settlements.
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Stores `record` under `key` only if the key is absent (`SET NX PX`), with expiry `ttl`.
    /// `Ok(true)`: reserved by this call; `Ok(false)`: someone holds it already.
    async fn reserve(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Reads the record.
    async fn get(&self, key: &str) -> Result<Option<SettlementRecord>, StoreError>;
    /// Replaces an existing record, keeping its expiry (`SET XX KEEPTTL`).
    async fn update(&self, key: &str, record: &SettlementRecord) -> Result<(), StoreError>;
    /// Deletes a reservation whose payment was not broadcast, so the payment can be retried.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
    /// Takes a short exclusive lease on `key` for `holder` (`SET NX PX`), e.g. a signer's nonce
    /// across replicas. `Ok(false)` while someone else holds it.
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Ends the lease if `holder` still holds it (compare-and-delete).
    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// `"redis"` or `"memory"`, for `/health`.
    fn kind(&self) -> &'static str;
}

fn encode(record: &SettlementRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError(format!("cannot encode record: {e}")))
}

fn decode(raw: &str) -> Result<SettlementRecord, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError(format!("corrupt settlement record: {e}")))
}
