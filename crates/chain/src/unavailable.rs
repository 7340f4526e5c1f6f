//! [`ChainUnavailable`]: why a chain could not be asked, kept as the error source of the
//! verify and settle errors (`#[source]`), so that a log can walk the chain of causes.

use crate::{ChainError, SvmChainError};

/// A chain could not be asked (the facilitator's fault or its node's, never the payer's). Its
/// text names the endpoint by index and a generic kind, never an RPC URL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainUnavailable {
    /// An EVM JSON-RPC call failed.
    #[error(transparent)]
    Evm(#[from] ChainError),
    /// A Solana JSON-RPC call failed.
    #[error(transparent)]
    Svm(#[from] SvmChainError),
    /// Something else kept the chain from being used (e.g. a transaction that cannot be
    /// serialized).
    #[error("{0}")]
    Other(String),
}
