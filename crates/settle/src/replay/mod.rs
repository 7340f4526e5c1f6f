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
    /// Solana: signed by the fee payer and (about to be) broadcast; it may land until its
    /// blockhash expires.
    SvmBroadcast {
        /// The payment's identity (the transaction signature, base58).
        fingerprint: String,
        /// Transaction signature, base58.
        transaction: String,
        /// The signed `VersionedTransaction`, base64, to re-send until it lands or expires.
        raw: String,
        /// Its recent blockhash, base58.
        blockhash: String,
        /// Fee the transaction costs the fee payer, lamports (signatures + priority fee).
        fee_lamports: u64,
        /// Rent the fee payer deposits for a destination account it creates, lamports.
        rent_lamports: u64,
        /// The answer to give once confirmed.
        receipt: SettleResponse,
        /// Unix seconds of the first broadcast.
        at: u64,
    },
    /// Final: confirmed success, or a terminal failure (reverted on chain, Solana blockhash
    /// expired).
    Done {
        /// Fingerprint of the exact payment, 0x-hex.
        fingerprint: String,
        /// The final answer.
        response: SettleResponse,
        /// What the mined transaction cost the facilitator (absent for old records).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gas: Option<GasPaid>,
        /// What a landed Solana settlement cost the fee payer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        svm_fee: Option<SvmFeePaid>,
    },
}

/// What a landed Solana settlement transaction cost the fee payer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvmFeePaid {
    /// Transaction signature, base58.
    pub transaction: String,
    /// Transaction fee, lamports (signatures + priority fee).
    pub fee_lamports: u64,
    /// Rent deposited for a created destination token account, lamports (0 when none).
    pub rent_lamports: u64,
    /// Fee plus rent in atomic USDC at the quote's SOL price, next to the quoted charge (absent
    /// when gas pricing is not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usdc: Option<GasInUsdc>,
}

/// The gas a mined settlement transaction cost the facilitator, from its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GasPaid {
    /// Transaction hash, 0x-hex.
    pub transaction: String,
    /// Receipt `gasUsed`, gas units.
    pub gas_used: u64,
    /// Receipt `effectiveGasPrice`, wei per gas (a decimal string in JSON).
    #[serde(with = "u128_decimal")]
    pub effective_gas_price_wei: u128,
    /// `gas_used × effective_gas_price_wei`, wei (L2 data fees not included; a decimal string in
    /// JSON).
    #[serde(with = "u128_decimal")]
    pub fee_wei: u128,
    /// The same fee in atomic USDC at the native price of the quote current at settlement, next
    /// to what that quote charges for gas (absent when gas pricing is not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usdc: Option<GasInUsdc>,
}

/// Actual versus quoted settlement gas, in atomic USDC (6 decimals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GasInUsdc {
    /// `fee_wei` converted at the quote's native price, without markup, rounded up.
    pub actual: u64,
    /// Gas charge of the quote (with markup and minimum).
    pub quoted: u64,
}

/// `u128` as a decimal string: the records are internally tagged enums, whose buffered
/// deserialization has no 128-bit integers.
mod u128_decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl SettlementRecord {
    /// The payment fingerprint stored in every state.
    pub fn fingerprint(&self) -> &str {
        match self {
            SettlementRecord::Reserved { fingerprint, .. }
            | SettlementRecord::Broadcast { fingerprint, .. }
            | SettlementRecord::SvmBroadcast { fingerprint, .. }
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
    /// Replaces a record that is not yet `done` with the final `done` record, keeping its expiry.
    /// `Ok(true)` when this call finished it, `Ok(false)` when another request already had.
    async fn finish(&self, key: &str, done: &SettlementRecord) -> Result<bool, StoreError>;
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

/// Re-reads `key` every `poll` while its record is `reserved` (another request holds the payment
/// and has not signed it yet), for at most `wait`. `Ok(None)`: the reservation was released (that
/// request failed before broadcast); `Ok(Some(record))`: the record now, still `reserved` if
/// `wait` ran out.
pub async fn wait_while_reserved(
    store: &dyn ReplayStore,
    key: &str,
    mut record: SettlementRecord,
    wait: Duration,
    poll: Duration,
) -> Result<Option<SettlementRecord>, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    while matches!(record, SettlementRecord::Reserved { .. })
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(poll).await;
        match store.get(key).await? {
            Some(r) => record = r,
            None => return Ok(None),
        }
    }
    Ok(Some(record))
}

/// Deletes the reservation of a payment that was not broadcast; a failure is logged (the key
/// expires by itself).
pub async fn release_or_expire(store: &dyn ReplayStore, key: &str) {
    if let Err(e) = store.release(key).await {
        tracing::warn!(key, error = %e, "could not release reservation; it expires by itself");
    }
}

fn encode(record: &SettlementRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError(format!("cannot encode record: {e}")))
}

fn decode(raw: &str) -> Result<SettlementRecord, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError(format!("corrupt settlement record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_records_start_with_their_state_tag() {
        // RedisStore::finish relies on this prefix.
        let done = SettlementRecord::Done {
            fingerprint: "0x01".into(),
            response: SettleResponse::settled(
                "0xab".into(),
                "eip155:8453".into(),
                "0xa".into(),
                "1".into(),
            ),
            gas: Some(GasPaid {
                transaction: "0xab".into(),
                gas_used: 95_617,
                effective_gas_price_wei: u128::MAX,
                fee_wei: 1,
                usdc: Some(GasInUsdc {
                    actual: 3,
                    quoted: 4,
                }),
            }),
            svm_fee: None,
        };
        assert!(encode(&done).unwrap().starts_with(r#"{"state":"done","#));
        let reserved = SettlementRecord::Reserved {
            fingerprint: "0x01".into(),
            at: 1,
        };
        assert!(
            !encode(&reserved)
                .unwrap()
                .starts_with(r#"{"state":"done","#)
        );
        assert_eq!(decode(&encode(&done).unwrap()).unwrap(), done);
    }
}
