//! The `exact` scheme on Solana (SPL `TransferChecked`, the facilitator pays the fee): one
//! [`ExactSvmHandler`] per configured `[[svm]]` cluster, with its verifier (which co-signs), its
//! settlement engine, `/supported` kinds with `extra.feePayer` and fee-payer signers, and, with
//! `[svm.gas]`, fee and rent pricing in USDC (`/quote`, `/requirements`, settlement accounting).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use solana_address::Address;
use x402_chain::clock::unix_now;
use x402_chain::spl::is_token_program;
use x402_chain::{FailoverSvmChain, SvmChain};
use x402_gas_oracle::convert::SOL_DECIMALS;
use x402_gas_oracle::{
    Quote, QuoteCache, Quoter, SvmAsset, SvmCostModel, SvmCostParams, SvmQuoter, UsdcConversion,
    quote_with_rent, svm_quote_for_pay_to,
};
use x402_proto::{Network, ParseError, PaymentRequest, SettleResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_settle::engine::Caller;
use x402_settle::reconciler::Reconcile;
use x402_settle::replay::GasInUsdc;
use x402_settle::status::SettlementStatus;
use x402_settle::svm::{SvmFamily, SvmFeeObserver, SvmFeePricer, SvmSettler};
use x402_verify::VerifyError;
use x402_verify::svm::ExactSvmVerifier;
use x402_verify::svm::PriceCeiling;

use crate::config::svm::SvmNetwork;
use crate::gas;
use crate::metrics::Metrics;
use crate::requirements::{self, RequirementsRequest, RequirementsResponse};
use crate::scheme::{QuoteLookupError, SchemeHandler, Shared, StartError, verify_response};

/// The scheme name this module serves.
const SCHEME: &str = "exact";

/// `exact` on one Solana cluster.
pub struct ExactSvmHandler {
    network: Network,
    /// Checks payments and co-signs them.
    verifier: Arc<ExactSvmVerifier>,
    /// Sends and confirms them.
    settler: Arc<SvmSettler>,
    /// Mints with their decimals.
    assets: Vec<(Address, u8)>,
    /// Fee pricing, with `[svm.gas]`.
    pricing: Option<SvmPricing>,
    quotes: Arc<QuoteCache>,
}

/// What `/requirements` needs at request time: the cost model (for the payee-account check)
/// and each mint with its token program.
struct SvmPricing {
    model: Arc<SvmCostModel>,
    assets: Vec<SvmAsset>,
}

impl ExactSvmHandler {
    /// Connects `net` (the `index`-th `[[svm]]`) over the agave RPC client, recording as
    /// `shared` says and counting landed settlements' fees in its metrics; with `[svm.gas]` it
    /// adds its quoters to `quoters`. Errors: a mint that cannot be read or is not an SPL mint
    /// (only with `[svm.gas]`), a price source that cannot be built.
    pub async fn connect(
        shared: &Shared<'_>,
        net: &SvmNetwork,
        index: usize,
        quoters: &mut Vec<Arc<dyn Quoter>>,
    ) -> Result<Self, StartError> {
        let config = shared.config;
        shared.metrics.engine.touch_network(
            net.network.as_str(),
            x402_proto::Reason::SvmTransactionFailed.as_str(),
            true,
        );
        let chain: Arc<dyn SvmChain> = Arc::new(
            FailoverSvmChain::new(&net.rpc_urls, net.rpc_timeout)
                .map_err(|message| StartError::SvmRpc {
                    network: net.network.to_string(),
                    message,
                })?
                .with_call_observer(shared.metrics.rpc_call_observer(net.network.as_str())),
        );
        let pricing = pricing(chain.clone(), net, index).await?;
        let mints: Vec<String> = net.assets.iter().map(|(m, _)| m.to_string()).collect();
        let mut verifier = ExactSvmVerifier::new(
            chain.clone(),
            net.network.clone(),
            net.fee_payers.clone(),
            net.assets.iter().map(|(m, _)| *m).collect(),
            net.policy.clone(),
        );
        if pricing.is_some() {
            verifier = verifier.with_price_ceiling(price_ceiling(
                shared.quotes.clone(),
                net.network.to_string(),
                mints.clone(),
            ));
        }
        let verifier = Arc::new(verifier);
        let mut family = SvmFamily::new(
            verifier.clone(),
            shared.prefix,
            Duration::from_secs(config.settle().svm_record_ttl_seconds),
        )
        .with_fee_payer_floor(net.min_fee_payer_balance_lamports)
        .with_fee_observer(fee_metrics(shared.metrics, &net.network));
        let pricing = match pricing {
            Some((pricing, net_quoters)) => {
                family = family.with_fee_pricer(fee_pricer(
                    shared.quotes.clone(),
                    net.network.to_string(),
                    mints,
                ));
                quoters.extend(net_quoters);
                Some(pricing)
            }
            None => None,
        };
        let settler = Arc::new(
            x402_settle::svm::settler(
                family,
                shared.store.clone(),
                shared.timing.clone(),
                shared.events.clone(),
            )
            .with_notify(shared.notify.clone())
            .with_payer_policy(shared.config.settle().payer_policy()),
        );
        Ok(ExactSvmHandler {
            network: net.network.clone(),
            verifier,
            settler,
            assets: net.assets.clone(),
            pricing,
            quotes: shared.quotes.clone(),
        })
    }
}

/// The cost model and quoters of `net`, when it has `[svm.gas]`: each mint's token program is
/// read from the chain once.
async fn pricing(
    chain: Arc<dyn SvmChain>,
    net: &SvmNetwork,
    index: usize,
) -> Result<Option<(SvmPricing, Vec<Arc<dyn Quoter>>)>, StartError> {
    let Some(gas) = &net.gas else {
        return Ok(None);
    };
    let start_err = |message: String| StartError::SvmRpc {
        network: net.network.to_string(),
        message,
    };
    let price = gas::price_source(None, gas, &format!("svm[{index}].gas")).map_err(start_err)?;
    let params = SvmCostParams {
        signatures: u64::from(net.policy.max_signers),
        priority_fee_percentile: gas.tip_percentile,
        headroom_bps: gas.headroom_bps,
        max_compute_unit_price: net.policy.max_compute_unit_price,
        ..SvmCostParams::default()
    };
    let model = Arc::new(SvmCostModel::new(chain.clone(), params));
    let conversion = UsdcConversion::new(gas.markup_bps, u128::from(gas.minimum_usdc_atomic));
    let mut assets = Vec::new();
    let mut quoters: Vec<Arc<dyn Quoter>> = Vec::new();
    for (mint, _) in &net.assets {
        let account = chain
            .account(mint)
            .await
            .map_err(|e| start_err(format!("cannot read mint {mint}: {e}")))?
            .ok_or_else(|| start_err(format!("mint {mint} does not exist")))?;
        if !is_token_program(&account.owner) {
            return Err(start_err(format!(
                "{mint} is owned by {}, not SPL Token or Token-2022",
                account.owner
            )));
        }
        let asset = SvmAsset::new(*mint, account.owner);
        quoters.push(Arc::new(SvmQuoter::new(
            net.network.to_string(),
            model.clone(),
            asset,
            price.clone(),
            conversion,
        )));
        assets.push(asset);
    }
    Ok(Some((SvmPricing { model, assets }, quoters)))
}

impl ExactSvmHandler {
    /// The (mint, decimals) of `asset` (base58), default the first configured.
    fn asset(&self, asset: Option<&str>) -> Result<(Address, u8), ParseError> {
        match asset {
            None => self.assets.first().copied(),
            Some(a) => {
                let wanted = Address::from_str(a)
                    .map_err(|_| ParseError::new("asset", "not a base58 mint address"))?;
                self.assets.iter().find(|(m, _)| *m == wanted).copied()
            }
        }
        .ok_or_else(|| ParseError::new("asset", format!("not settled on {}", self.network)))
    }
}

#[async_trait]
impl SchemeHandler for ExactSvmHandler {
    fn scheme(&self) -> &str {
        SCHEME
    }

    fn network(&self) -> &Network {
        &self.network
    }

    /// `{"feePayer": <the first fee payer>}`.
    fn extra(&self) -> Option<Value> {
        let fee_payer = self.verifier.fee_payer_addresses()[0].to_string();
        Some(serde_json::json!({ "feePayer": fee_payer }))
    }

    fn signers(&self) -> Vec<String> {
        let mut signers: Vec<String> = Vec::new();
        for key in self.verifier.fee_payer_addresses() {
            let key = key.to_string();
            if !signers.contains(&key) {
                signers.push(key);
            }
        }
        signers
    }

    async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        Ok(verify_response(
            self.verifier
                .verify(req, true)
                .await?
                .map(|p| p.payer_string()),
        ))
    }

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

    /// The cached fee quote of `asset` (no rent: the payee's account is assumed to exist).
    fn quote(&self, asset: Option<&str>) -> Result<Quote, QuoteLookupError> {
        let (mint, _) = self.asset(asset)?;
        if self.pricing.is_none() {
            return Err(self.no_pricing());
        }
        Ok(self.quotes.get(self.network.as_str(), &mint.to_string())?)
    }

    /// Service price plus the cached fee quote, plus the rent of `payTo`'s token account when
    /// the operator lets payments create it and it is missing (one `getAccountInfo`, only
    /// then); `extra.feePayer` filled in.
    async fn requirements(
        &self,
        req: &RequirementsRequest,
    ) -> Result<RequirementsResponse, QuoteLookupError> {
        let network = &self.network;
        let (mint, decimals) = self.asset(req.asset.as_deref())?;
        let pay_to = Address::from_str(&req.pay_to)
            .map_err(|_| ParseError::new("payTo", "not a base58 Solana address"))?;
        let service: u128 = req.price.parse().map_err(|_| {
            ParseError::new("price", "expected atomic units as a decimal integer string")
        })?;
        if self.pricing.is_none() {
            return Err(self.no_pricing());
        }
        let Some(asset) = self
            .pricing
            .as_ref()
            .and_then(|p| p.assets.iter().find(|a| a.mint == mint).map(|a| (p, a)))
        else {
            return Err(QuoteLookupError::NotOffered(format!(
                "no fee pricing for {mint} on {network}"
            )));
        };
        let base = self.quotes.get(network.as_str(), &mint.to_string())?;
        let create = self
            .verifier
            .policy()
            .create_destination_for
            .contains(&pay_to);
        let quote = svm_quote_for_pay_to(&base, &asset.0.model, asset.1, &pay_to, create)
            .await
            .map_err(|e| QuoteLookupError::Chain(e.to_string()))?;
        let gas = requirements::usdc_to_asset_units(quote.gas_usdc_atomic, decimals);
        let amounts = requirements::Amounts { service, gas };
        let total = amounts
            .total()
            .ok_or_else(|| ParseError::new("price", "too large"))?;
        let fee_payer = self.verifier.fee_payer_addresses()[0].to_string();
        let mut scheme_extra = serde_json::Map::new();
        scheme_extra.insert("feePayer".into(), fee_payer.into());
        let mint = mint.to_string();
        let asset = requirements::Asset {
            address: &mint,
            decimals,
            scheme_extra,
        };
        Ok(requirements::build(
            req, SCHEME, network, asset, amounts, total,
        ))
    }

    fn reconcilers(&self) -> Vec<Arc<dyn Reconcile>> {
        vec![self.settler.clone()]
    }
}

/// The highest compute unit price the cached fee quotes of `network`'s `mints` assume,
/// micro-lamports per compute unit (the highest among the mints; `None` without a fresh
/// quote): a payer offering more is refused at verify, so a settlement never costs the fee
/// payer more priority fee per compute unit than the payer was charged for.
fn price_ceiling(cache: Arc<QuoteCache>, network: String, mints: Vec<String>) -> PriceCeiling {
    Arc::new(move || {
        mints
            .iter()
            .filter_map(|m| cache.get(&network, m).ok())
            .filter_map(|q| q.svm.map(|d| d.cost.compute_unit_price_micro_lamports))
            .max()
    })
}

/// Prices landed settlements on `network` with the cached quote of any of its `mints`: fee plus
/// rent at the quote's SOL price (no markup), next to what the quote charges for that fee and
/// rent.
fn fee_pricer(cache: Arc<QuoteCache>, network: String, mints: Vec<String>) -> SvmFeePricer {
    Arc::new(move |paid| {
        let quote = mints.iter().find_map(|m| cache.get(&network, m).ok())?;
        let lamports = u128::from(paid.fee_lamports) + u128::from(paid.rent_lamports);
        let quoted = quote_with_rent(&quote, paid.rent_lamports).ok()?;
        Some(GasInUsdc {
            actual: gas::at_quote_price(&quote, lamports, SOL_DECIMALS)?,
            quoted: u64::try_from(quoted.gas_usdc_atomic).ok()?,
        })
    })
}

/// Counts the fees and rent of landed settlements on `network`.
fn fee_metrics(metrics: &Metrics, network: &Network) -> SvmFeeObserver {
    let label = [network.as_str()];
    let fee = metrics.svm_fee_lamports_total.with_label_values(&label);
    let rent = metrics.svm_rent_lamports_total.with_label_values(&label);
    let usdc = metrics.gas_usdc_total.with_label_values(&label);
    let quoted = metrics.gas_quoted_usdc_total.with_label_values(&label);
    let accounting = metrics.gas_accounting(network.as_str());
    Arc::new(move |paid| {
        accounting(paid.usdc);
        fee.inc_by(paid.fee_lamports);
        rent.inc_by(paid.rent_lamports);
        if let Some(in_usdc) = paid.usdc {
            usdc.inc_by(in_usdc.actual);
            quoted.inc_by(in_usdc.quoted);
        }
    })
}
