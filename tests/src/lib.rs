//! Test harness for the x402 facilitator: a private anvil with Circle's real USDC
//! (`FiatTokenV2_2`) at the Base address, an independent EIP-3009 signer and x402 request
//! builders, and a private Redis server. No mocks: every helper drives the real tool, except
//! [`flashblocks_proxy`], a mock of Base's flashblocks RPC (no flashblocks node runs here).
//!
//! Units: token amounts are atomic USDC (6 decimals), gas prices and fees in wei, times in
//! seconds since the Unix epoch.

pub mod anvil;
pub mod artifacts;
pub mod bench;
pub mod eip3009;
pub mod facilitator;
pub mod flashblocks_proxy;
pub mod http_sink;
#[cfg(feature = "litesvm")]
pub mod litesvm_chain;
pub mod net;
pub mod peers;
pub mod permit2;
pub mod price_feed;
pub mod process;
pub mod redis_group;
pub mod redis_server;
pub mod rpc_relay;
pub mod solc;
pub mod stall_proxy;
pub mod surfnet;
#[cfg(feature = "litesvm")]
pub mod svm_fixture;
#[cfg(feature = "litesvm")]
pub mod svm_payment;
pub mod tools;
pub mod usdc;

pub use anvil::{Anvil, AnvilBuilder, DEV_PRIVATE_KEYS, dev_signer};
pub use eip3009::Authorization;
pub use redis_server::RedisServer;
pub use surfnet::Surfnet;
pub use usdc::{BASE_SEPOLIA_USDC, BASE_USDC, Usdc};
