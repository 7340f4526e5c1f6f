//! Chain access behind small traits, so that `verify` and `settle` run unchanged against a
//! production RPC node or a local test chain.
//!
//! - [`EvmChain`]: what the EVM `exact` scheme needs (`eth_call`, code, nonces, signing, raw
//!   send, receipts); [`AlloyEvmChain`] implements it over an alloy HTTP provider.
//! - [`SvmChain`]: what the Solana `exact` scheme needs (simulate, send, signature statuses,
//!   blockhash validity, accounts, rent, priority fees); [`RpcSvmChain`] implements it over the
//!   agave JSON-RPC client.
//!
//! Errors ([`ChainError`], [`SvmChainError`]) are classified once, where the node's answer is
//! read, and never carry upstream transport text: a transport failure names the [`Endpoint`]
//! (index and `scheme://host:port`) and a generic [`Unreachable`] kind, as RPC URLs hold API
//! keys; the detail goes to the logs with the URL cut out.
//!
//! And the chain facts every layer shares, so that no crate reads them from another's
//! internals: [`eip3009`] (token ABI), [`eip712`] (`TransferWithAuthorization` typed data and
//! digest), [`spl`] (Solana program ids, account sizes, fee formula), [`presets`] (known
//! networks and their USDC), and the one wall [`clock`].

pub mod clock;
pub mod eip3009;
pub mod eip712;
pub mod permit2;
pub mod presets;
pub mod spl;

mod endpoint;
mod evm;
mod evm_alloy;
mod evm_failover;
mod heads;
mod svm;
mod svm_failover;
mod svm_rpc;
mod unavailable;

pub use endpoint::{Endpoint, Unreachable, redacted_detail, redacted_url, scrub};
pub use evm::{BlockHashes, ChainError, EvmChain, SignedTx};
pub use evm_alloy::{AlloyEvmChain, GAS_LIMIT_HEADROOM_PERCENT};
pub use evm_failover::{CallObserver, EndpointHealth, FailoverEvmChain, FailoverObserver};
pub use heads::NewHeads;
pub use svm::{SvmAccount, SvmChain, SvmChainError, SvmSimulation, SvmTxStatus};
pub use svm_failover::FailoverSvmChain;
pub use svm_rpc::RpcSvmChain;
pub use unavailable::ChainUnavailable;
