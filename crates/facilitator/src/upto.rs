//! The `upto` scheme on EVM chains (specs/schemes/upto/scheme_upto_evm.md; x402 v2 only): the
//! payer signs a Permit2 authorization of a maximum through `x402UptoPermit2Proxy`, and the
//! resource server settles what the work cost (`paymentRequirements.amount` of `/settle`, at
//! most the maximum; 0 sends nothing).
//!
//! One [`UptoEvmHandler`] per `[[evm]]` network with `"upto"` in `schemes`, built by
//! [`crate::evm::ExactEvmHandler::upto_handler`]: it shares the network's Permit2 verifier and
//! settlement engine with `exact` over Permit2 (Permit2's nonces are the same for both, so one
//! replay key space and one engine), and its signers. Its `/supported` kind carries
//! `extra.facilitatorAddress`: the signer clients name in `witness.facilitator`, the first
//! configured one (the same on every replica and restart); settlements are sent by the signer
//! the witness names.

use std::sync::Arc;

use alloy::primitives::Address;
use async_trait::async_trait;
use serde_json::{Value, json};
use x402_chain::clock::unix_now;
use x402_gas_oracle::{Quote, QuoteCache, SettlementKind};
use x402_proto::{Network, ParseError, PaymentRequest, SettleResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_settle::engine::Caller;
use x402_settle::evm::Permit2Settler;
use x402_settle::reconciler::Reconcile;
use x402_settle::status::SettlementStatus;
use x402_verify::VerifyError;
use x402_verify::evm::permit2::{Permit2Verifier, Stage};

use crate::config::evm::{EvmAsset, EvmTransferMethod};
use crate::requirements::{RequirementsRequest, RequirementsResponse};
use crate::scheme::{QuoteLookupError, SchemeHandler, verify_response};

/// The scheme name this module serves.
pub const SCHEME: &str = "upto";

/// The settlement call `upto` quotes price.
const UPTO_KIND: SettlementKind = SettlementKind::Permit2Upto;

/// `upto` on one EVM network (see the module docs).
pub struct UptoEvmHandler {
    pub(crate) network: Network,
    pub(crate) verifier: Arc<Permit2Verifier>,
    pub(crate) settler: Arc<Permit2Settler>,
    /// `extra.facilitatorAddress`.
    pub(crate) facilitator: Address,
    /// Every signer of the network, checksummed (`/supported` `signers`).
    pub(crate) signers: Vec<String>,
    /// The network's assets that take Permit2.
    pub(crate) assets: Vec<EvmAsset>,
    pub(crate) quotes: Arc<QuoteCache>,
    pub(crate) priced: bool,
    /// Engines reconciled through this handler (the network's, when `exact` is not offered).
    pub(crate) reconcile: Vec<Arc<dyn Reconcile>>,
}

impl UptoEvmHandler {
    /// The Permit2 asset `asset` (0x address; default the first). Errors name `asset`.
    fn asset(&self, asset: Option<&str>) -> Result<&EvmAsset, ParseError> {
        let found = match asset {
            None => self.assets.first(),
            Some(a) => {
                let wanted: Address = a
                    .parse()
                    .map_err(|_| ParseError::new("asset", "not a 0x 20-byte address"))?;
                self.assets.iter().find(|asset| asset.address == wanted)
            }
        };
        found.ok_or_else(|| {
            ParseError::new(
                "asset",
                format!("not settled through Permit2 (upto) on {}", self.network),
            )
        })
    }
}

#[async_trait]
impl SchemeHandler for UptoEvmHandler {
    fn scheme(&self) -> &str {
        SCHEME
    }

    fn network(&self) -> &Network {
        &self.network
    }

    /// x402 v2 only (the `upto` specification has no v1 form).
    fn versions(&self) -> &[u8] {
        &[2]
    }

    /// `{"facilitatorAddress": …}`: the signer clients name in `witness.facilitator`.
    fn extra(&self) -> Option<Value> {
        Some(json!({ "facilitatorAddress": self.facilitator.to_checksum(None) }))
    }

    /// `eip2612GasSponsoring`: `settleWithPermit` with the payer's EIP-2612 permit.
    fn extensions(&self) -> Vec<String> {
        vec![x402_proto::evm::EIP2612_GAS_SPONSORING.to_string()]
    }

    fn signers(&self) -> Vec<String> {
        self.signers.clone()
    }

    /// The Permit2 checks in the reference order with `upto`'s reasons; the proxy's `settle`
    /// of the whole maximum is simulated, sent by `witness.facilitator`.
    async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        Ok(verify_response(
            self.verifier
                .verify(req, unix_now(), Stage::Verify)
                .await?
                .map(|p| p.payer_string()),
        ))
    }

    /// Settles `paymentRequirements.amount` (the charge, at most `permitted.amount`; above it
    /// `invalid_upto_evm_payload_settlement_exceeds_amount`, 0: success with transaction
    /// `""`); the answer carries `amount`.
    async fn settle(
        &self,
        req: &PaymentRequest,
        caller: &Caller<'_>,
    ) -> Result<SettleResponse, SettleError> {
        self.settler.settle_for(req, unix_now(), caller).await
    }

    async fn settlement_status(
        &self,
        req: &PaymentRequest,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        self.settler.status(req, unix_now()).await
    }

    /// The cached settlement cost of one `upto` payment in `asset` (the upto proxy's call:
    /// `kind: "upto"`), atomic USDC.
    fn quote(&self, asset: Option<&str>) -> Result<Quote, QuoteLookupError> {
        let address = self.asset(asset)?.address;
        if !self.priced {
            return Err(self.no_pricing());
        }
        Ok(self.quotes.get_kind(
            self.network.as_str(),
            &address.to_checksum(None),
            UPTO_KIND.as_str(),
        )?)
    }

    /// The maximum a client authorizes: the service price (itself a maximum) plus the quoted
    /// settlement cost; `extra` carries `assetTransferMethod: "permit2"`,
    /// `facilitatorAddress` and, for a token with an EIP-712 domain, its `name` and `version`.
    async fn requirements(
        &self,
        req: &RequirementsRequest,
    ) -> Result<RequirementsResponse, QuoteLookupError> {
        let asset = self.asset(req.asset.as_deref())?;
        if !self.priced {
            return Err(self.no_pricing());
        }
        let mut scheme_extra = serde_json::Map::new();
        if asset.takes(EvmTransferMethod::Eip3009) {
            scheme_extra.insert("name".into(), Value::from(asset.name.clone()));
            scheme_extra.insert("version".into(), Value::from(asset.version.clone()));
        }
        scheme_extra.insert("assetTransferMethod".into(), Value::from("permit2"));
        scheme_extra.insert(
            "facilitatorAddress".into(),
            Value::from(self.facilitator.to_checksum(None)),
        );
        let mut built = crate::evm::priced_requirements(
            req,
            &self.quotes,
            (&self.network, SCHEME),
            asset,
            UPTO_KIND,
            scheme_extra,
        )?;
        built.v1 = None;
        Ok(built)
    }

    fn reconcilers(&self) -> Vec<Arc<dyn Reconcile>> {
        self.reconcile.clone()
    }
}
