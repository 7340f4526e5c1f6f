//! Settlement: every side effect of a payment lives here.
//!
//! - [`record`]: the settlement record and its states (`reserved → broadcast → confirmed →
//!   delivered | failed | expired`), with a state diagram.
//! - [`replay`]: the replay store (Redis, or in-memory for one process) holding one record per
//!   payment under its replay key ([`replay::keys`]), moved by compare-and-swap.
//! - [`engine`]: the one state machine for every chain family (request path, pure decision,
//!   advance, reconcile, status queries: one file each); [`family`]: what a chain family plugs
//!   in ([`evm`]: EIP-3009 `transferWithAuthorization`; [`svm`]: Solana `TransferChecked`).
//! - [`reconciler`]: the background task that resolves broadcast records from the chain.
//! - [`status`]: the read-only view of a record for `GET /settlements/…`.
//! - [`clock`]: the one injected clock every settlement decision reads.
//! - [`outbox`]: the settlement webhooks' events, written atomically with the final states.
//! - [`redis_conn`]: the Redis connection of every deployment (single node, Sentinel, Cluster).
//!
//! Invariants: a payment is signed at most once per reservation and never re-signed once
//! recorded `broadcast` (the signed transaction is recorded before it is sent); a payment that
//! may still land is never answered as a plain failure (`settlement_pending` instead); one
//! payment gets one `success: true`, ever.

pub mod clock;
pub mod debits;
pub mod engine;
pub mod evm;
pub mod family;
pub mod nonces;
pub mod outbox;
pub mod reconciler;
pub mod record;
pub mod redis_conn;
pub mod replay;
pub mod status;
mod store_error;
pub mod svm;

use std::sync::{Arc, OnceLock};

use x402_proto::ParseError;

/// Settlement could not be carried out. Every variant but [`SettleError::Internal`] means
/// nothing was broadcast by this request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SettleError {
    /// Malformed request (HTTP 400 naming the field).
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// The replay store cannot be reached: settlement refuses rather than run unguarded.
    #[error("replay store unavailable: {0}")]
    StoreUnavailable(String),
    /// A stored record does not decode, or the settlement reached a state that cannot happen:
    /// a bug or tampering that retrying does not fix, not an outage (HTTP 500, logged at
    /// ERROR). The payment's state is unknown to this request: a transaction may have been
    /// broadcast before.
    #[error("internal error: {0}")]
    Internal(String),
    /// The chain cannot be reached before broadcast (its cause kept as the source).
    #[error("chain unavailable: {0}")]
    ChainUnavailable(#[source] x402_chain::ChainUnavailable),
    /// No signer could be had within the configured wait.
    #[error("signer busy: {0}")]
    SignerBusy(String),
    /// Every signer's native balance is below the configured floor.
    #[error("no funded signer: {0}")]
    NoFundedSigner(String),
    /// The request's answer id (`payment-identifier` or `Idempotency-Key`) is bound to another
    /// payment (HTTP 409); nothing was done.
    #[error("{0}")]
    AnswerIdConflict(String),
}

/// An unreachable store is [`SettleError::StoreUnavailable`] (503); a corrupt value is
/// [`SettleError::Internal`] (500), its decoding error logged here at ERROR and kept out of the
/// error's text (it may quote the record).
impl From<replay::StoreError> for SettleError {
    fn from(e: replay::StoreError) -> Self {
        match e {
            replay::StoreError::Unavailable(m) => SettleError::StoreUnavailable(m),
            corrupt @ replay::StoreError::Corrupt { .. } => {
                tracing::error!(error = %corrupt.detail(), "corrupt value in the replay store");
                SettleError::Internal(corrupt.to_string())
            }
        }
    }
}

impl From<x402_verify::VerifyError> for SettleError {
    fn from(e: x402_verify::VerifyError) -> Self {
        match e {
            x402_verify::VerifyError::Malformed(p) => SettleError::Malformed(p),
            x402_verify::VerifyError::ChainUnavailable(e) => SettleError::ChainUnavailable(e),
        }
    }
}

/// Receives the settlement engine's events (metrics); every method defaults to nothing.
pub trait SettleObserver: Send + Sync {
    /// A lapsed reservation was taken over.
    fn takeover(&self) {}
    /// A recorded transaction was re-sent.
    fn resend(&self) {}
    /// A stuck transaction was replaced with higher fees.
    fn replacement(&self) {}
    /// A sender nonce gap was filled with a no-op transaction ([`evm::gaps`]).
    fn nonce_gap_filled(&self) {}
    /// A record reached a resolved state (`confirmed`, `delivered`, `failed`, `expired`).
    fn resolved(&self, _state: &'static str) {}
    /// After a reconciler pass: unresolved records, and the age of the oldest, seconds.
    fn open_records(&self, _count: usize, _oldest_age_seconds: u64) {}
    /// A verified payment was refused before broadcast with `reason` (e.g. its payer's balance
    /// does not cover its settlements in flight): nothing was signed.
    fn refused_before_broadcast(&self, _reason: &'static str) {}
    /// A settlement failed on chain after passing every check (recorded `failed`): its
    /// network, reason, and the gas (EVM, wei) or fee (Solana, lamports) it cost for nothing.
    fn reverted(&self, _network: &str, _reason: &str, _gas_wei: u128, _fee_lamports: u64) {}
    /// A payer's settlements on `network` are now refused for reverting too often.
    fn payer_blocked(&self, _network: &str) {}
    /// A settlement on `network` was answered success at a flashblock pre-confirmation
    /// ([`family::Lookup::Preconfirmed`]), before its block.
    fn preconfirmed(&self, _network: &str) {}
}

struct NoEvents;
impl SettleObserver for NoEvents {}

/// A shared [`SettleObserver`].
#[derive(Clone)]
pub struct SettleEvents(Arc<dyn SettleObserver>);

impl Default for SettleEvents {
    fn default() -> Self {
        SettleEvents(Arc::new(NoEvents))
    }
}

impl SettleEvents {
    /// Events delivered to `observer`.
    pub fn new(observer: Arc<dyn SettleObserver>) -> Self {
        SettleEvents(observer)
    }
    fn takeover(&self) {
        self.0.takeover()
    }
    fn resend(&self) {
        self.0.resend()
    }
    fn replacement(&self) {
        self.0.replacement()
    }
    fn nonce_gap_filled(&self) {
        self.0.nonce_gap_filled()
    }
    fn resolved(&self, state: &'static str) {
        self.0.resolved(state)
    }
    fn open_records(&self, count: usize, oldest_age_seconds: u64) {
        self.0.open_records(count, oldest_age_seconds)
    }
    fn refused_before_broadcast(&self, reason: &'static str) {
        self.0.refused_before_broadcast(reason)
    }
    fn reverted(&self, network: &str, reason: &str, gas_wei: u128, fee_lamports: u64) {
        self.0.reverted(network, reason, gas_wei, fee_lamports)
    }
    fn payer_blocked(&self, network: &str) {
        self.0.payer_blocked(network)
    }
    fn preconfirmed(&self, network: &str) {
        self.0.preconfirmed(network)
    }
}

/// This process's instance id (`hostname:pid:random`), the owner named in reservations.
pub fn instance_id() -> String {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(clock::unix_ms());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}:{:08x}", std::process::id(), h.finish() as u32)
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A chain failure stays the source of the verify and settle errors built on it, so that a
    /// log can walk the causes; the text names no URL (the chain error has none).
    #[test]
    fn a_chain_failure_is_kept_as_the_source() {
        let cause = x402_chain::ChainError::Unsupported("eth_getBlockReceipts");
        let verify = x402_verify::VerifyError::ChainUnavailable(cause.clone().into());
        let settle = SettleError::from(verify.clone());
        assert_eq!(
            settle.to_string(),
            "chain unavailable: eth_getBlockReceipts not supported"
        );
        let source = settle.source().expect("a source");
        assert_eq!(source.to_string(), cause.to_string());
        assert!(verify.source().is_some());
    }
}
