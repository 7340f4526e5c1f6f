//! Chain access behind small traits, so that `verify` and `settle` run unchanged against a
//! production RPC node or a local test chain.
//!
//! - [`EvmChain`]: what the EVM `exact` scheme needs (`eth_call`, code, nonces, signing, raw
//!   send, receipts); [`AlloyEvmChain`] implements it over an alloy HTTP provider.

mod evm;
mod evm_alloy;

pub use evm::{ChainError, EvmChain, SignedTx};
pub use evm_alloy::AlloyEvmChain;
