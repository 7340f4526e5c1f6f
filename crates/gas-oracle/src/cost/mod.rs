//! What one settlement costs the facilitator in the chain's native token.
//!
//! - [`evm`]: EVM chains: gas units of `transferWithAuthorization` × EIP-1559 fee per gas, plus
//!   an optional L1 data fee ([`l1_fee`], OP-stack `GasPriceOracle`).
//! - [`svm`]: Solana: signatures × 5000 lamports + compute unit limit × a prioritization-fee
//!   percentile, plus the rent of the payee's token account when the facilitator creates it.

pub mod evm;
pub mod l1_fee;
pub mod svm;

use x402_chain::{ChainError, SvmChainError};

/// Why a cost could not be computed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CostError {
    /// A chain read failed; `what` names the read (`eth_estimateGas`, `eth_feeHistory`, …).
    #[error("{what}: {source}")]
    Chain {
        /// The read that failed.
        what: &'static str,
        /// The chain error.
        source: ChainError,
    },
    /// A Solana RPC read failed; `what` names the read (`getRecentPrioritizationFees`, …).
    #[error("{what}: {source}")]
    SvmChain {
        /// The read that failed.
        what: &'static str,
        /// The chain error.
        source: SvmChainError,
    },
    /// The chain answered without what the model needs (e.g. no base fee: not EIP-1559).
    #[error("{0}")]
    Unsupported(String),
    /// A product did not fit in 128 bits (absurd fees only).
    #[error("overflow: {0}")]
    Overflow(String),
}
