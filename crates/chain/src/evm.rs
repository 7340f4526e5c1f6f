//! The [`EvmChain`] trait: the chain operations the EVM `exact` scheme needs.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{
    FeeHistory, Filter, Log, Transaction, TransactionReceipt, TransactionRequest,
};
use async_trait::async_trait;

use crate::endpoint::{Endpoint, Unreachable};

/// A failure talking to an EVM chain, classified once where the node's answer is read
/// ([`ChainError::from_rpc_error`] for JSON-RPC error answers; transport failures by their
/// kind). No variant holds upstream transport text: a hosted RPC URL carries its API key and
/// the HTTP client's error text carries the URL (see [`crate::Endpoint`]).
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
    /// The transaction's sender nonce is below the account's: the nonce is used on chain
    /// (geth/reth/anvil/Erigon "nonce too low", Nethermind "OldNonce"). The node's message.
    #[error("nonce too low: {0}")]
    NonceTooLow(String),
    /// The transaction's fees are too low for the node: a replacement without the required bump
    /// ("replacement transaction underpriced"), under the pool's minimum ("transaction
    /// underpriced"), or a fee cap under the base fee ("max fee per gas less than block base
    /// fee"). The node's message.
    #[error("underpriced: {0}")]
    Underpriced(String),
    /// The node has this very transaction already (geth/reth/Erigon "already known", anvil
    /// "transaction already imported"): a re-send, not a failure. The node's message.
    #[error("already known: {0}")]
    AlreadyKnown(String),
    /// Any other JSON-RPC error answer (e.g. "insufficient funds for gas * price + value").
    #[error("node refused: {0}")]
    Rejected(String),
    /// No answer from `endpoint` within the configured RPC timeout: the outcome is unknown.
    #[error("rpc timeout ({endpoint})")]
    Timeout {
        /// The endpoint asked.
        endpoint: Endpoint,
    },
    /// No usable answer from `endpoint` (connection failed, HTTP error, undecodable answer,
    /// rate limited): the outcome is unknown.
    #[error("rpc unavailable: {kind} ({endpoint})")]
    Unavailable {
        /// The endpoint asked.
        endpoint: Endpoint,
        /// What went wrong, generically.
        kind: Unreachable,
    },
    /// The chain implementation does not offer this JSON-RPC method (a test chain).
    #[error("{0} not supported")]
    Unsupported(&'static str),
    /// No signing key for this address is configured.
    #[error("no signer configured for {0}")]
    UnknownSigner(Address),
}

impl ChainError {
    /// Classifies one JSON-RPC error answer (`code`, `message`, revert `data`) of any EVM node:
    /// a revert (code 3, revert data, or "revert" in the message) first, as a contract's revert
    /// reason may read like anything; then the transaction-pool answers of geth, reth, anvil,
    /// Nethermind and Erigon (matched case-insensitively, so Erigon's `ALREADY_EXISTS:` /
    /// `FEE_TOO_LOW:` prefixes and Nethermind's older `OldNonce` / `FeeTooLow` codes count);
    /// then a rate limit (code `-32005` / 429, "rate limit", "too many requests"), which is
    /// [`ChainError::Unavailable`] so that failover moves on; anything else is
    /// [`ChainError::Rejected`].
    pub fn from_rpc_error(
        code: i64,
        message: &str,
        data: Option<Bytes>,
        endpoint: &Endpoint,
    ) -> ChainError {
        let m = message.to_ascii_lowercase();
        let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
        let message = message.to_string();
        if code == 3 || data.is_some() || m.contains("revert") {
            ChainError::Reverted { message, data }
        } else if any(&[
            "already known",
            "alreadyknown",
            "already imported",
            "already_exists",
            "existing txn with same hash",
            "existing tx with same hash",
        ]) {
            ChainError::AlreadyKnown(message)
        } else if any(&["nonce too low", "oldnonce", "nonce is too low"]) {
            ChainError::NonceTooLow(message)
        } else if any(&[
            "underpriced",
            "max fee per gas less than block base fee",
            "fee too low",
            "feetoolow",
            "fee_too_low",
            "replacementnotallowed",
            "could not replace existing tx",
            "gas price is too low",
            "gas price supplied is too low",
        ]) {
            ChainError::Underpriced(message)
        } else if code == -32005 || code == 429 || any(&["rate limit", "too many requests"]) {
            ChainError::Unavailable {
                endpoint: endpoint.clone(),
                kind: Unreachable::RateLimited,
            }
        } else {
            ChainError::Rejected(message)
        }
    }

    /// No usable answer came ([`ChainError::Timeout`], [`ChainError::Unavailable`]): the
    /// outcome is unknown, and another endpoint may answer.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ChainError::Timeout { .. } | ChainError::Unavailable { .. }
        )
    }

    /// The node answered and refused (a revert or any JSON-RPC error answer): its message.
    pub fn node_message(&self) -> Option<&str> {
        match self {
            ChainError::Reverted { message, .. }
            | ChainError::NonceTooLow(message)
            | ChainError::Underpriced(message)
            | ChainError::AlreadyKnown(message)
            | ChainError::Rejected(message) => Some(message),
            _ => None,
        }
    }
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

    /// `eth_sendRawTransaction`. A node that has the transaction already answers
    /// [`ChainError::AlreadyKnown`] (the caller decides: for a re-send it is success).
    async fn send_raw(&self, raw: &Bytes) -> Result<B256, ChainError>;

    /// `eth_getTransactionByHash` is not null: the node knows the transaction (pending or
    /// mined). False after a node dropped it from its mempool.
    async fn transaction_known(&self, hash: B256) -> Result<bool, ChainError>;

    /// `eth_getTransactionReceipt`: `None` while the transaction is not mined.
    async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError>;

    /// `eth_getTransactionCount(address, "latest")`: the sender's mined transaction count (every
    /// nonce below it is used on chain). Default: [`ChainError::Unsupported`].
    async fn mined_nonce(&self, _address: Address) -> Result<u64, ChainError> {
        Err(ChainError::Unsupported("eth_getTransactionCount(latest)"))
    }

    /// `eth_blockNumber`: the latest block's number. Default: [`ChainError::Unsupported`].
    async fn block_number(&self) -> Result<u64, ChainError> {
        Err(ChainError::Unsupported("eth_blockNumber"))
    }

    /// `eth_getBlockByNumber(number, false)`: the block's hash and its parent's hash, `None`
    /// while the node has no such block. Used to notice a reorg of blocks already read.
    /// Default: [`ChainError::Unsupported`].
    async fn block_hashes(&self, _number: u64) -> Result<Option<BlockHashes>, ChainError> {
        Err(ChainError::Unsupported("eth_getBlockByNumber"))
    }

    /// `eth_getBlockReceipts(number)`: every receipt of block `number`, `None` while the node
    /// has no such block. Default: [`ChainError::Unsupported`] (callers fall back to
    /// [`EvmChain::receipt`] per transaction).
    async fn block_receipts(
        &self,
        _number: u64,
    ) -> Result<Option<Vec<TransactionReceipt>>, ChainError> {
        Err(ChainError::Unsupported("eth_getBlockReceipts"))
    }

    /// `eth_getLogs` with `filter` (address, topics, block range). Used to find where a lost
    /// payment landed (EIP-3009 `AuthorizationUsed`). Default: [`ChainError::Unsupported`].
    async fn logs(&self, _filter: &Filter) -> Result<Vec<Log>, ChainError> {
        Err(ChainError::Unsupported("eth_getLogs"))
    }

    /// `eth_getTransactionByHash`: the transaction (sender, input), `None` if the node does
    /// not know it. Default: [`ChainError::Unsupported`].
    async fn transaction(&self, _hash: B256) -> Result<Option<Transaction>, ChainError> {
        Err(ChainError::Unsupported("eth_getTransactionByHash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(code: i64, message: &str) -> ChainError {
        ChainError::from_rpc_error(code, message, None, &Endpoint::new(1, "http://n:1/KEY"))
    }

    /// The nodes' own strings (geth core/txpool, reth RpcPoolError / RpcInvalidTransactionError,
    /// anvil's pool errors, Nethermind's AcceptTxResult before and after its geth-compatible
    /// messages, Erigon's DiscardReason behind its `ImportResult` prefix).
    #[test]
    fn nonce_too_low() {
        for (code, message) in [
            (-32000, "nonce too low"),                                  // geth, anvil
            (-32000, "nonce too low: next nonce 7, tx nonce 5"),        // geth txpool, reth
            (-32000, "nonce too low: address 0x9Bc5…, tx: 5 state: 7"), // geth core
            (-32003, "nonce too low"),                                  // anvil
            (
                -32010,
                "OldNonce, Current nonce: 7, nonce of rejected tx: 5",
            ), // Nethermind < 1.31
            (-32010, "OldNonce"),                                       // Nethermind
            (-32010, "nonce too low"),                                  // Nethermind, geth phrases
            (-32000, "INTERNAL_ERROR: nonce too low"),                  // Erigon
            (
                -32010,
                "Transaction nonce is too low. Try incrementing the nonce.",
            ), // OpenEthereum
        ] {
            assert!(
                matches!(classify(code, message), ChainError::NonceTooLow(m) if m == message),
                "{message}"
            );
        }
    }

    #[test]
    fn underpriced() {
        for message in [
            "replacement transaction underpriced", // geth, reth, anvil
            "transaction underpriced",             // geth, reth, Nethermind
            "transaction underpriced: tip needed 2, tip permitted 1", // geth txpool
            "transaction underpriced: gas tip cap 1, minimum needed 2", // geth ≥ 1.14
            "max fee per gas less than block base fee", // reth, anvil
            "max fee per gas less than block base fee: address 0x9Bc5…, maxFeePerGas: 1, baseFee: 7", // geth
            "FEE_TOO_LOW: replacement transaction underpriced", // Erigon
            "FEE_TOO_LOW: underpriced",                         // Erigon
            "FEE_TOO_LOW: fee too low",                         // Erigon
            "INTERNAL_ERROR: could not replace existing tx",    // Erigon
            "FeeTooLow, MaxFeePerGas too low. MaxFeePerGas: 1, BaseFee: 7", // Nethermind < 1.31
            "FeeTooLowToCompete",                               // Nethermind < 1.31
            "ReplacementNotAllowed",                            // Nethermind < 1.31
            "Transaction gas price is too low. There is another transaction with same nonce in the queue.", // OpenEthereum
        ] {
            assert!(
                matches!(classify(-32000, message), ChainError::Underpriced(m) if m == message),
                "{message}"
            );
        }
    }

    #[test]
    fn already_known() {
        for message in [
            "already known",                               // geth, reth, Nethermind ≥ 1.31
            "transaction already imported",                // anvil
            "ALREADY_EXISTS: already known",               // Erigon
            "INTERNAL_ERROR: existing txn with same hash", // Erigon (DuplicateHash)
            "INTERNAL_ERROR: existing tx with same hash",  // older Erigon
            "AlreadyKnown",                                // Nethermind < 1.31
            "Transaction with the same hash was already imported.", // OpenEthereum
        ] {
            assert!(
                matches!(classify(-32000, message), ChainError::AlreadyKnown(m) if m == message),
                "{message}"
            );
        }
    }

    #[test]
    fn reverts_win_over_pool_words() {
        // A contract's revert reason may read like a pool answer: a revert stays a revert.
        let data = Some(Bytes::from_static(&[0x08, 0xc3, 0x79, 0xa0]));
        let e = ChainError::from_rpc_error(
            3,
            "execution reverted: nonce too low",
            data.clone(),
            &Endpoint::new(0, "http://n:1"),
        );
        assert!(matches!(e, ChainError::Reverted { data: d, .. } if d == data));
        assert!(matches!(
            classify(
                -32000,
                "execution reverted: FiatTokenV2: authorization is used or canceled"
            ),
            ChainError::Reverted { .. }
        ));
        assert!(matches!(
            classify(3, "execution reverted"),
            ChainError::Reverted { .. }
        ));
        assert!(matches!(
            classify(-32015, "VM execution error. Reverted 0x"),
            ChainError::Reverted { .. }
        ));
    }

    #[test]
    fn rate_limits_are_unavailable_and_the_rest_rejected() {
        for (code, message) in [
            (-32005, "daily request count exceeded, request rate limited"), // Infura
            (
                429,
                "Your app has exceeded its compute units per second capacity",
            ), // Alchemy
            (-32000, "Too Many Requests"),
        ] {
            let e = classify(code, message);
            assert!(
                matches!(
                    &e,
                    ChainError::Unavailable { kind: Unreachable::RateLimited, endpoint }
                        if endpoint.index == 1
                ),
                "{message}: {e:?}"
            );
            assert!(e.is_unavailable());
            assert_eq!(e.to_string(), "rpc unavailable: rate limited (endpoint 1)");
        }
        for message in [
            "insufficient funds for gas * price + value: address 0x9Bc5… have 0 want 1",
            "intrinsic gas too low",
            "nonce too high",
            "exceeds block gas limit",
            "unknown transaction type", // not "known transaction"
            "the method eth_getBlockReceipts does not exist/is not available",
        ] {
            let e = classify(-32000, message);
            assert!(
                matches!(&e, ChainError::Rejected(m) if m == message),
                "{e:?}"
            );
            assert!(!e.is_unavailable());
            assert_eq!(e.node_message(), Some(message));
        }
    }

    #[test]
    fn transport_errors_name_the_endpoint_only() {
        let endpoint = Endpoint::new(0, "https://rpc.example/v3/SECRET?apikey=SECRET");
        let timeout = ChainError::Timeout {
            endpoint: endpoint.clone(),
        };
        assert_eq!(timeout.to_string(), "rpc timeout (endpoint 0)");
        let refused = ChainError::Unavailable {
            endpoint,
            kind: Unreachable::Connect,
        };
        assert_eq!(
            refused.to_string(),
            "rpc unavailable: connection failed (endpoint 0)"
        );
        assert!(timeout.is_unavailable() && refused.is_unavailable());
        assert_eq!(timeout.node_message(), None);
    }
}
