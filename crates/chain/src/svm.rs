//! The [`SvmChain`] trait: the Solana JSON-RPC operations the SVM `exact` scheme needs.
//!
//! Signing stays out of it: fee-payer keypairs live with the verifier and settler, so that a
//! test chain (an in-process SVM) and the production RPC client implement only the reads and the
//! broadcast.

use async_trait::async_trait;
use solana_address::Address;
use solana_hash::Hash;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;

use crate::endpoint::{Endpoint, Unreachable};

/// A failure talking to a Solana RPC node. As [`crate::ChainError`], no variant holds upstream
/// transport text (it may hold the RPC URL and its API key): a transport failure names the
/// endpoint and a generic kind, and its detail goes to the logs only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SvmChainError {
    /// The node refused the request or the transaction definitively (it was not accepted): the
    /// node's JSON-RPC error, or the transaction or signing error.
    #[error("node refused: {0}")]
    Rejected(String),
    /// No answer from `endpoint` within the RPC timeout: the outcome is unknown.
    #[error("rpc timeout ({endpoint})")]
    Timeout {
        /// The endpoint asked.
        endpoint: Endpoint,
    },
    /// No usable answer from `endpoint` (connection failed, HTTP error, undecodable answer,
    /// node unhealthy): the outcome is unknown.
    #[error("rpc unavailable: {kind} ({endpoint})")]
    Unavailable {
        /// The endpoint asked.
        endpoint: Endpoint,
        /// What went wrong, generically.
        kind: Unreachable,
    },
}

impl SvmChainError {
    /// No usable answer came ([`SvmChainError::Timeout`], [`SvmChainError::Unavailable`]): the
    /// outcome is unknown, and another endpoint may answer.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            SvmChainError::Timeout { .. } | SvmChainError::Unavailable { .. }
        )
    }
}

/// Result of `simulateTransaction` (signatures verified, blockhash not replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmSimulation {
    /// The transaction error, as the node renders it; `None` when it would succeed.
    pub err: Option<String>,
    /// Program logs.
    pub logs: Vec<String>,
    /// Compute units consumed, when reported.
    pub units_consumed: Option<u64>,
}

/// Where a sent transaction stands (`getSignatureStatuses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmTxStatus {
    /// Slot of the block that holds it.
    pub slot: u64,
    /// Reached `confirmed` (or `finalized`) commitment.
    pub confirmed: bool,
    /// The execution error; `None` when it succeeded. A failed transaction still landed and
    /// paid its fee, but moved no tokens.
    pub err: Option<String>,
}

/// An account as read from the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmAccount {
    /// Owning program.
    pub owner: Address,
    /// Balance, lamports.
    pub lamports: u64,
    /// Account data.
    pub data: Vec<u8>,
}

/// Solana chain access for one cluster (reads at `confirmed` commitment).
#[async_trait]
pub trait SvmChain: Send + Sync {
    /// `simulateTransaction` with `sigVerify: true`, `replaceRecentBlockhash: false`.
    async fn simulate(&self, tx: &VersionedTransaction) -> Result<SvmSimulation, SvmChainError>;
    /// `sendTransaction` without preflight (the caller simulated already). Returns the
    /// transaction's first signature. [`SvmChainError::Rejected`] means it was not accepted;
    /// [`SvmChainError::Unavailable`] means it may or may not have been.
    async fn send(&self, tx: &VersionedTransaction) -> Result<Signature, SvmChainError>;
    /// `getSignatureStatuses` (with history search); `None` when the cluster has not seen it.
    async fn signature_status(&self, sig: &Signature)
    -> Result<Option<SvmTxStatus>, SvmChainError>;
    /// `isBlockhashValid` at `confirmed`: false once the cluster's block height passed the
    /// blockhash's last valid block height, after which a transaction using it can never land.
    async fn is_blockhash_valid(&self, blockhash: &Hash) -> Result<bool, SvmChainError>;
    /// `getAccountInfo`; `None` when the account does not exist.
    async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError>;
    /// `getMinimumBalanceForRentExemption(data_len)`, lamports.
    async fn minimum_balance_for_rent_exemption(
        &self,
        data_len: usize,
    ) -> Result<u64, SvmChainError>;
    /// `getRecentPrioritizationFees` for transactions writing `accounts`: one fee per recent slot,
    /// micro-lamports per compute unit.
    async fn recent_prioritization_fees(
        &self,
        accounts: &[Address],
    ) -> Result<Vec<u64>, SvmChainError>;
}
