//! Gas pricing wiring: quoters per configured EVM asset (from `[evm.gas]`), one quote cache
//! refreshed in the background, and the hooks that price mined settlements in USDC.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use x402_chain::EvmChain;
use x402_gas_oracle::convert::{ETH_DECIMALS, native_to_usdc_atomic};
use x402_gas_oracle::price::{
    ChainlinkPriceSource, FallbackPriceSource, FixedPriceSource, HttpPriceSource,
};
use x402_gas_oracle::{
    EvmAsset, EvmCostConfig, EvmCostModel, EvmQuoter, GasSamples, NativePrice, OpStackL1Fee,
    PriceSource, Quote, QuoteCache, Quoter, SettlementKind, UsdcConversion,
};
use x402_settle::evm::GasPricer;
use x402_settle::replay::GasInUsdc;

use crate::config::evm::{EvmAsset as EvmAssetConfig, EvmNetwork, EvmTransferMethod};
use crate::config::{GasConfig, PriceSourceConfig};

/// Quoters for every settlement call of every asset of `net` (EIP-3009 for an asset taking
/// it; `exact` over Permit2 and `upto` for one taking Permit2, as `schemes` offers them:
/// [`settlement_kinds`]), or none when it has no `[evm.gas]`. Quotes are served for
/// `refresh` (the cache's refresh interval: the quote's horizon before it is used); unless
/// `fixed_headroom`, gas units come from `samples` (the network's landed settlements).
/// Errors: a price source that cannot be built (names the key).
pub fn quoters(
    chain: Arc<dyn EvmChain>,
    net: &EvmNetwork,
    index: usize,
    refresh: Duration,
    samples: Arc<GasSamples>,
) -> Result<Vec<Arc<dyn Quoter>>, String> {
    let Some(gas) = &net.gas else {
        return Ok(vec![]);
    };
    let price = price_source(Some(chain.clone()), gas, &format!("evm[{index}].gas"))?;
    let config = EvmCostConfig {
        headroom_bps: gas.headroom_bps,
        tip_percentile: gas.tip_percentile,
        horizon: (!gas.fixed_headroom).then_some(refresh),
        landing_blocks: gas.landing_blocks,
        ..EvmCostConfig::default()
    };
    let mut cost = EvmCostModel::new(chain, config);
    if !gas.fixed_headroom {
        cost = cost.with_gas_samples(samples);
    }
    if let Some(oracle) = &gas.l1_fee_oracle {
        let oracle: Address = oracle
            .parse()
            .map_err(|_| format!("evm[{index}].gas.l1_fee_oracle: bad address"))?;
        cost = cost.with_l1_fee(OpStackL1Fee::new(oracle));
    }
    let cost = Arc::new(cost);
    let conversion = UsdcConversion::new(gas.markup_bps, u128::from(gas.minimum_usdc_atomic));
    Ok(net
        .assets
        .iter()
        .flat_map(|a| {
            settlement_kinds(net, a).into_iter().map(|kind| {
                let asset =
                    EvmAsset::new(a.address, a.name.clone(), a.version.clone()).with_kind(kind);
                Arc::new(EvmQuoter::new(
                    cost.clone(),
                    asset,
                    price.clone(),
                    conversion,
                )) as Arc<dyn Quoter>
            })
        })
        .collect())
}

/// The settlement calls `asset` of `net` is paid with: EIP-3009 when it takes it, `exact` over
/// Permit2 when it takes Permit2 and `exact` is offered, `upto` when it takes Permit2 and `upto`
/// is offered.
pub fn settlement_kinds(net: &EvmNetwork, asset: &EvmAssetConfig) -> Vec<SettlementKind> {
    let mut kinds = Vec::new();
    if asset.takes(EvmTransferMethod::Eip3009) {
        kinds.push(SettlementKind::Eip3009);
    }
    if asset.takes(EvmTransferMethod::Permit2) {
        if net.exact {
            kinds.push(SettlementKind::Permit2Exact);
        }
        if net.upto {
            kinds.push(SettlementKind::Permit2Upto);
        }
    }
    kinds
}

/// The settlement call an `exact` payment in `asset` is quoted for: EIP-3009 when the asset
/// takes it (its requirements carry the EIP-712 domain), else Permit2.
pub fn exact_kind(asset: &EvmAssetConfig) -> SettlementKind {
    if asset.takes(EvmTransferMethod::Eip3009) {
        SettlementKind::Eip3009
    } else {
        SettlementKind::Permit2Exact
    }
}

/// The fallback chain of `gas.price_sources` (config key `at`); Chainlink feeds read `chain`, so
/// they need an EVM chain. Errors name the key.
pub fn price_source(
    chain: Option<Arc<dyn EvmChain>>,
    gas: &GasConfig,
    at: &str,
) -> Result<Arc<dyn PriceSource>, String> {
    let sources = gas
        .price_sources
        .iter()
        .enumerate()
        .map(|(i, source)| {
            let key = format!("{at}.price_sources[{i}]");
            let built: Arc<dyn PriceSource> = match source {
                PriceSourceConfig::Chainlink {
                    address,
                    max_age_seconds,
                } => Arc::new(ChainlinkPriceSource::new(
                    chain.clone().ok_or_else(|| {
                        format!("{key}: chainlink feeds are read on EVM chains only")
                    })?,
                    address
                        .parse()
                        .map_err(|_| format!("{key}.address: bad address"))?,
                    Duration::from_secs(*max_age_seconds),
                )),
                PriceSourceConfig::Coinbase {
                    base_url,
                    pair,
                    timeout_ms,
                } => Arc::new(
                    HttpPriceSource::coinbase(base_url, pair, Duration::from_millis(*timeout_ms))
                        .map_err(|e| format!("{key}: {e}"))?,
                ),
                PriceSourceConfig::Http {
                    url,
                    json_pointer,
                    timeout_ms,
                } => Arc::new(
                    HttpPriceSource::new(url, json_pointer, Duration::from_millis(*timeout_ms))
                        .map_err(|e| format!("{key}: {e}"))?,
                ),
                PriceSourceConfig::Fixed { usd } => {
                    Arc::new(FixedPriceSource::new(usd).map_err(|e| format!("{key}.usd: {e}"))?)
                }
            };
            Ok(built)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(FallbackPriceSource::new(sources)))
}

/// Prices mined settlements on `network` with the cached quote of the payment's asset and
/// settlement call ([`x402_settle::record::PaymentFacts::kind`]), else of any of its `assets`
/// (the native price is the network's): the fee at the quote's native price (no markup) next to
/// the quote's gas charge.
pub fn pricer(cache: Arc<QuoteCache>, network: String, assets: Vec<String>) -> GasPricer {
    Arc::new(move |payment, gas| {
        let kind = payment.kind.as_deref().unwrap_or("");
        let quote = cache
            .get_kind(&network, &payment.asset, kind)
            .ok()
            .or_else(|| assets.iter().find_map(|a| cache.get(&network, a).ok()))?;
        Some(GasInUsdc {
            actual: at_quote_price(&quote, gas.fee_wei, ETH_DECIMALS)?,
            quoted: u64::try_from(quote.gas_usdc_atomic).ok()?,
        })
    })
}

/// `native_atomic` (with `native_decimals`: wei 18, lamports 9) in atomic USDC at the native
/// price of `quote`, without markup, rounded up; `None` when it does not convert or fit.
pub fn at_quote_price(quote: &Quote, native_atomic: u128, native_decimals: u8) -> Option<u64> {
    let price = NativePrice::from_decimal_str(
        &quote.native_usd,
        quote.price_observed_at,
        quote.price_source.clone(),
    )
    .ok()?;
    let actual = native_to_usdc_atomic(native_atomic, native_decimals, &price).ok()?;
    u64::try_from(actual).ok()
}
