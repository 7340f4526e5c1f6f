//! x402 wire types shared by the facilitator, resource servers and clients.
//!
//! This crate does no I/O and has no chain, HTTP or async dependencies. It holds:
//! - [`v1`] and [`v2`]: the `PaymentRequirements` / `PaymentPayload` shapes of x402 protocol
//!   versions 1 and 2 (x402 specification v2 §5, transports v1/v2);
//! - [`request`]: the `/verify` and `/settle` body, parsed with the path of any bad field, and
//!   normalized to one view over both versions;
//! - [`response`]: `VerifyResponse`, `SettleResponse`, `SupportedResponse`;
//! - [`network`]: CAIP-2 identifiers and the v1 network names;
//! - [`reason`]: the reason strings of the TypeScript reference (`@x402/evm`, `@x402/core` 2.27);
//! - [`header`]: base64 codecs of the `PAYMENT-*` / `X-PAYMENT*` headers;
//! - [`evm`]: the `exact` EVM (EIP-3009) scheme payload.
//! - [`svm`]: the `exact` Solana (SPL `TransferChecked`) scheme payload.

pub mod evm;
pub mod header;
pub mod network;
pub mod payment_identifier;
pub mod reason;
pub mod request;
pub mod response;
pub mod svm;
pub mod v1;
pub mod v2;

mod serde_util;

pub use network::Network;
pub use reason::Reason;
pub use request::{ParseError, PaymentRequest, X402Version};
pub use response::{SettleResponse, SupportedKind, SupportedResponse, VerifyResponse};
