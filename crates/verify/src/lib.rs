//! Payment verification per scheme. Verification never writes: no Redis, no broadcast; the only
//! chain traffic is read-only (`eth_call`, `eth_getCode`, `simulateTransaction`, `getAccountInfo`).
//!
//! - [`evm`]: the `exact` scheme on EVM chains (EIP-3009 `transferWithAuthorization`, EIP-712).
//! - [`svm`]: the `exact` scheme on Solana (SPL `TransferChecked`, facilitator as fee payer).

pub mod evm;
pub mod svm;

use x402_proto::{ParseError, Reason};

/// Outcome of a verification that ran to completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<T> {
    /// The payment passes every check; `T` carries what settlement needs.
    Valid(T),
    /// The payment fails a check.
    Invalid(Invalid),
}

impl<T> Verdict<T> {
    /// The valid payment as `Ok`, the failure as `Err`.
    pub fn into_result(self) -> Result<T, Invalid> {
        match self {
            Verdict::Valid(t) => Ok(t),
            Verdict::Invalid(inv) => Err(inv),
        }
    }

    /// Maps the valid payment, keeping a failure as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verdict<U> {
        match self {
            Verdict::Valid(t) => Verdict::Valid(f(t)),
            Verdict::Invalid(inv) => Verdict::Invalid(inv),
        }
    }
}

/// A failed check: the reference reason string, a human message, and the payer when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The reason (wire string via [`Reason::as_str`]).
    pub reason: Reason,
    /// Human-readable detail.
    pub message: Option<String>,
    /// The payer, when the payload named one.
    pub payer: Option<String>,
}

impl Invalid {
    /// The same failure, naming `payer`.
    pub fn with_payer(self, payer: Option<String>) -> Self {
        Invalid { payer, ..self }
    }

    /// A failed check with a message.
    pub fn new(reason: Reason, message: impl Into<String>, payer: Option<String>) -> Self {
        Invalid {
            reason,
            message: Some(message.into()),
            payer,
        }
    }
}

/// Verification could not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// The request is malformed (answered as HTTP 400 naming the field).
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// The chain could not be asked (RPC down): the facilitator's fault, not the payer's.
    #[error("chain unavailable: {0}")]
    ChainUnavailable(#[source] x402_chain::ChainUnavailable),
}
