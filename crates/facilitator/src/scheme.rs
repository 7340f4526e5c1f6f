//! The seam where a payment scheme on a chain family plugs in: [`SchemeHandler`], one
//! implementation per (scheme, chain family) in its own module ([`crate::evm`]: `exact` on EVM
//! chains, [`crate::svm`]: `exact` on Solana), each instance serving one network. The
//! [`crate::registry::Registry`] maps `(x402Version, scheme, network)` to the instance; routes
//! never look at a scheme name.
//!
//! Also here: what a handler's builder gets from the start-up ([`Shared`]) and the two errors
//! every handler speaks ([`StartError`] at start, [`QuoteLookupError`] on `/quote` and
//! `/requirements`).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use x402_gas_oracle::{Quote, QuoteCache, QuoteUnavailable};
use x402_proto::{Network, ParseError, PaymentRequest, SettleResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_settle::SettleEvents;
use x402_settle::engine::Caller;
use x402_settle::engine::SettleTiming;
use x402_settle::reconciler::Reconcile;
use x402_settle::replay::ReplayStore;
use x402_settle::status::SettlementStatus;
use x402_verify::VerifyError;

use crate::config::ValidConfig;
use crate::metrics::Metrics;
use crate::requirements::{RequirementsRequest, RequirementsResponse};

/// One payment scheme on one network: what `/supported` lists for it, and the answers of
/// `/verify`, `/settle`, `/settlements/lookup`, `/quote` and `/requirements` for its payments.
///
/// The registry calls [`verify`](SchemeHandler::verify) and [`settle`](SchemeHandler::settle)
/// only with requests whose `(x402Version, scheme, network)` this handler serves, so a handler
/// checks its own payload and nothing of the dispatch. The optional parts default to "not
/// offered": no settlement lookup, no pricing, no background reconciliation.
#[async_trait]
pub trait SchemeHandler: Send + Sync {
    /// The scheme name on the wire (`paymentRequirements.scheme`, e.g. `"exact"`).
    fn scheme(&self) -> &str;

    /// The network served, CAIP-2 (v1 requests name it by its v1 name; both reach this handler).
    fn network(&self) -> &Network;

    /// The x402 protocol versions served (default: 1 and 2). `/supported` lists a v1 kind only
    /// for networks that have a v1 name.
    fn versions(&self) -> &[u8] {
        &[1, 2]
    }

    /// The `extra` of this handler's `/supported` kinds (Solana `exact`: `{"feePayer": …}`);
    /// default none.
    fn extra(&self) -> Option<Value> {
        None
    }

    /// Extensions this handler takes, listed in `/supported` `extensions` (EVM with Permit2:
    /// `eip2612GasSponsoring`). Default none.
    fn extensions(&self) -> Vec<String> {
        Vec::new()
    }

    /// Addresses that sign or pay fees for this handler, listed in `/supported` under
    /// `signers["<namespace>:*"]` (EVM: 0x checksummed; Solana: base58). Default none.
    fn signers(&self) -> Vec<String> {
        Vec::new()
    }

    /// `POST /verify` of a payment of this kind: `isValid` with the payer or a reason string.
    /// Errors: a malformed field (HTTP 400) or the chain unreachable (HTTP 503).
    async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError>;

    /// `POST /settle` of a payment of this kind (one `success: true` per payment, ever) by
    /// `caller`: the API key named `caller.key`, if any (recorded with the settlement; its
    /// webhook gets the final state), and the ids it gets a lost answer back with
    /// (`payment-identifier`, `Idempotency-Key`: the same answer again for the same id and
    /// payment, [`SettleError::AnswerIdConflict`] for the id with another payment). Errors:
    /// HTTP 400 for a malformed field, 409 for an id conflict, 500 for
    /// [`SettleError::Internal`] (a corrupt record), else 503 (nothing was broadcast).
    async fn settle(
        &self,
        req: &PaymentRequest,
        caller: &Caller<'_>,
    ) -> Result<SettleResponse, SettleError>;

    /// `POST /settlements/lookup`: the settlement of this payment, acting on nothing; default
    /// `None` (no record kept).
    async fn settlement_status(
        &self,
        _req: &PaymentRequest,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        Ok(None)
    }

    /// `GET /quote`: the cached settlement cost of one payment in `asset` (default: the
    /// network's first), atomic USDC. Memory only: never waits on a chain or price API.
    /// Without pricing: [`QuoteLookupError::NotOffered`] (HTTP 404).
    fn quote(&self, _asset: Option<&str>) -> Result<Quote, QuoteLookupError> {
        Err(self.no_pricing())
    }

    /// `POST /requirements`: requirements whose amount is the service price plus the quoted
    /// settlement cost, with this scheme's `extra`.
    async fn requirements(
        &self,
        _req: &RequirementsRequest,
    ) -> Result<RequirementsResponse, QuoteLookupError> {
        Err(self.no_pricing())
    }

    /// The settlement engines the background reconciler drives for this handler (one per
    /// transfer method; each owns its own replay key space). Default none.
    fn reconcilers(&self) -> Vec<Arc<dyn Reconcile>> {
        Vec::new()
    }

    /// The error of a handler that offers no pricing ([`QuoteLookupError::NotOffered`]).
    fn no_pricing(&self) -> QuoteLookupError {
        QuoteLookupError::NotOffered(format!(
            "scheme {:?} on {} has no pricing",
            self.scheme(),
            self.network()
        ))
    }
}

/// What every handler builder gets from the start-up: the configuration, the replay store and
/// its key prefix, the settlement engine's timing and event sink, the metrics and the one quote
/// cache.
pub struct Shared<'a> {
    /// The whole configuration, validated once at start.
    pub config: &'a ValidConfig,
    /// The replay store.
    pub store: &'a Arc<dyn ReplayStore>,
    /// The EVM signers' shared sender nonce counters.
    pub nonces: &'a Arc<dyn x402_settle::nonces::NonceStore>,
    /// Which API keys get webhook events of their payments' final states.
    pub notify: &'a x402_settle::outbox::Notify,
    /// Its key prefix.
    pub prefix: &'a str,
    /// The settlement engine's timing.
    pub timing: &'a SettleTiming,
    /// The settlement engine's event sink (metrics).
    pub events: &'a SettleEvents,
    /// The facilitator's metrics.
    pub metrics: &'a Metrics,
    /// The quote cache every quoter writes and `/quote` reads.
    pub quotes: &'a Arc<QuoteCache>,
}

/// Why `/quote` or `/requirements` has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QuoteLookupError {
    /// A request field is wrong (HTTP 400 naming it).
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// The network or asset is served without pricing (HTTP 404): no quote will ever come.
    #[error("{0}")]
    NotOffered(String),
    /// No fresh quote of a priced asset (HTTP 503): not computed yet, or expired.
    #[error(transparent)]
    Unavailable(#[from] QuoteUnavailable),
    /// A chain read the answer needs failed (HTTP 503).
    #[error("{0}")]
    Chain(String),
}

/// Why the facilitator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration (names the key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Redis configured but not reachable.
    #[error("redis.url: cannot reach Redis: {0}")]
    Redis(String),
    /// A Solana RPC read needed at start failed, or a mint is not an SPL mint.
    #[error("svm network {network}: {message}")]
    SvmRpc {
        /// CAIP-2 network.
        network: String,
        /// What failed.
        message: String,
    },
    /// An RPC endpoint is unreachable or serves another chain.
    #[error("evm chain {chain_id}: {message}")]
    Rpc {
        /// Chain id of the network.
        chain_id: u64,
        /// What failed.
        message: String,
    },
    /// Two handlers claim the same `(x402Version, scheme, network)`.
    #[error("x402Version {version}, scheme {scheme:?}, network {network}: registered twice")]
    Duplicate {
        /// Protocol version.
        version: u8,
        /// Scheme name.
        scheme: String,
        /// CAIP-2 network.
        network: String,
    },
}

/// The `/verify` answer of a verdict whose valid side is the payer: `isValid` with the payer,
/// or the reason, message and payer of the failed check.
pub fn verify_response(verdict: x402_verify::Verdict<String>) -> x402_proto::VerifyResponse {
    match verdict {
        x402_verify::Verdict::Valid(payer) => x402_proto::VerifyResponse::valid(payer),
        x402_verify::Verdict::Invalid(inv) => {
            x402_proto::VerifyResponse::invalid(inv.reason, inv.message, inv.payer)
        }
    }
}
