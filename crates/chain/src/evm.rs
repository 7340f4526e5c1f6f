//! The [`EvmChain`] trait: the chain operations the EVM `exact` scheme needs.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{FeeHistory, TransactionReceipt, TransactionRequest};
use async_trait::async_trait;

/// A failure talking to an EVM chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The node executed the call or estimate and it reverted (or was rejected by the node as
    /// invalid); `data` is the revert data, if any.
    #[error("execution reverted: {message}")]
    Reverted {
        /// The node's message.
        message: String,
        /// ABI-encoded revert data, if the node returned it.
        data: Option<Bytes>,
    },
    /// The node answered with a JSON-RPC error that is not a revert (e.g. nonce too low).
    #[error("node refused: {0}")]
    Rejected(String),
    /// Transport failure, timeout or undecodable answer: the outcome is unknown.
    #[error("rpc unavailable: {0}")]
    Unavailable(String),
    /// No signing key for this address is configured.
    #[error("no signer configured for {0}")]
    UnknownSigner(Address),
}

/// A signed transaction, ready to broadcast. Its hash is known before it is sent, so a
/// settlement can be recorded before broadcast and re-sent after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// Transaction hash.
    pub hash: B256,
    /// EIP-2718 encoded signed transaction (what `eth_sendRawTransaction` takes).
    pub raw: Bytes,
    /// Sender nonce used.
    pub nonce: u64,
}

/// A block's hash and its parent's hash (`eth_getBlockByNumber`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHashes {
    /// `hash`.
    pub hash: B256,
    /// `parentHash`.
    pub parent: B256,
}

/// EVM chain access for one network (one EIP-155 chain id).
#[async_trait]
pub trait EvmChain: Send + Sync {
    /// EIP-155 chain id.
    fn chain_id(&self) -> u64;

    /// Addresses of the facilitator's signing keys on this chain (they pay gas).
    fn signers(&self) -> &[Address];

    /// `eth_call` at the latest block. A revert is [`ChainError::Reverted`].
    async fn call(&self, tx: &TransactionRequest) -> Result<Bytes, ChainError>;

    /// `eth_estimateGas` at the latest block: gas units. A revert is [`ChainError::Reverted`].
    async fn estimate_gas(&self, tx: &TransactionRequest) -> Result<u64, ChainError>;

    /// `eth_feeHistory` over the last `block_count` blocks with the given reward percentiles
    /// (0–100). Its `base_fee_per_gas` has one more entry than blocks: the next block's base fee
    /// (wei).
    async fn fee_history(
        &self,
        block_count: u64,
        reward_percentiles: &[f64],
    ) -> Result<FeeHistory, ChainError>;

    /// `eth_getCode` at the latest block (empty for an EOA).
    async fn code_at(&self, address: Address) -> Result<Bytes, ChainError>;

    /// `eth_getTransactionCount(address, "pending")`: the next nonce to use.
    async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError>;

    /// `eth_getBalance` at the latest block, wei.
    async fn balance(&self, address: Address) -> Result<U256, ChainError>;

    /// Fills gas limit and EIP-1559 fees when not set (by `eth_estimateGas`, which reverts if
    /// the call would, and the node's fee estimate) and signs with the key of `tx.from`.
    /// `tx.nonce` must be set. Nothing is sent.
    async fn sign(&self, tx: TransactionRequest) -> Result<SignedTx, ChainError>;

    /// `eth_sendRawTransaction`. Re-sending an already known transaction is not an error.
    async fn send_raw(&self, raw: &Bytes) -> Result<B256, ChainError>;

    /// `eth_getTransactionByHash` is not null: the node knows the transaction (pending or
    /// mined). False after a node dropped it from its mempool.
    async fn transaction_known(&self, hash: B256) -> Result<bool, ChainError>;

    /// `eth_getTransactionReceipt`: `None` while the transaction is not mined.
    async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError>;

    /// `eth_getTransactionCount(address, "latest")`: the sender's mined transaction count (every
    /// nonce below it is used on chain). Default: [`ChainError::Unavailable`] (not supported).
    async fn mined_nonce(&self, _address: Address) -> Result<u64, ChainError> {
        Err(ChainError::Unavailable(
            "eth_getTransactionCount(latest) not supported".into(),
        ))
    }

    /// `eth_blockNumber`: the latest block's number. Default: [`ChainError::Unavailable`].
    async fn block_number(&self) -> Result<u64, ChainError> {
        Err(ChainError::Unavailable(
            "eth_blockNumber not supported".into(),
        ))
    }

    /// `eth_getBlockByNumber(number, false)`: the block's hash and its parent's hash, `None`
    /// while the node has no such block. Used to notice a reorg of blocks already read.
    /// Default: [`ChainError::Unavailable`].
    async fn block_hashes(&self, _number: u64) -> Result<Option<BlockHashes>, ChainError> {
        Err(ChainError::Unavailable(
            "eth_getBlockByNumber not supported".into(),
        ))
    }

    /// `eth_getBlockReceipts(number)`: every receipt of block `number`, `None` while the node
    /// has no such block. Default: [`ChainError::Unavailable`] (callers fall back to
    /// [`EvmChain::receipt`] per transaction).
    async fn block_receipts(
        &self,
        _number: u64,
    ) -> Result<Option<Vec<TransactionReceipt>>, ChainError> {
        Err(ChainError::Unavailable(
            "eth_getBlockReceipts not supported".into(),
        ))
    }
}
