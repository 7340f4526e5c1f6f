//! Settlement: every side effect of a payment lives here.
//!
//! - [`replay`]: the replay store (Redis, or in-memory for one process) holding one
//!   [`replay::SettlementRecord`] per payment under its replay key ([`replay::keys`]).
//! - [`evm`]: EVM `exact` settlement: re-verify, reserve, sign, record, broadcast, confirm.
//! - [`svm`]: Solana `exact` settlement: re-verify, reserve, co-sign, record, send, confirm or
//!   expire.
//!
//! Invariants: a payment is broadcast at most once (the reservation is an atomic `SET NX`); the
//! signed transaction is recorded before it is sent, so a retry or another replica finds its hash;
//! a payment that was broadcast is never answered as a plain failure while it may still land
//! (`settlement_pending` instead).

pub mod evm;
pub mod replay;
pub mod svm;

use x402_proto::ParseError;

/// Settlement could not be carried out; nothing was broadcast.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SettleError {
    /// Malformed request (HTTP 400 naming the field).
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// The replay store cannot be reached: settlement refuses rather than run unguarded.
    #[error("replay store unavailable: {0}")]
    StoreUnavailable(String),
    /// The chain cannot be reached before broadcast.
    #[error("chain unavailable: {0}")]
    ChainUnavailable(String),
}

impl From<replay::StoreError> for SettleError {
    fn from(e: replay::StoreError) -> Self {
        SettleError::StoreUnavailable(e.to_string())
    }
}

impl From<x402_verify::VerifyError> for SettleError {
    fn from(e: x402_verify::VerifyError) -> Self {
        match e {
            x402_verify::VerifyError::Malformed(p) => SettleError::Malformed(p),
            x402_verify::VerifyError::ChainUnavailable(m) => SettleError::ChainUnavailable(m),
        }
    }
}
