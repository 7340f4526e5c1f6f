//! Quotes: the gas of one settlement in atomic USDC, per (network, asset), computed in the
//! background and served from memory.
//!
//! A [`Quoter`] computes a fresh [`Quote`] (chain reads, price API); [`QuoteRefresher`] runs every
//! quoter on a timer and stores the results in a [`QuoteCache`]; [`QuoteCache::get`] never does
//! I/O and refuses a quote older than its max age, so a request never waits on a price API and
//! never gets a stale price.
//!
//! Solana: [`SvmQuoter`] quotes the fee of one settlement without rent (`Quote::svm` holds the
//! lamport breakdown and the rent a missing payee token account would add). The rent depends on
//! `payTo`, so it is added at request time to the cached base quote: [`svm_quote_for_pay_to`]
//! (one `getAccountInfo` when the operator lets the facilitator create `payTo`'s account, no RPC
//! otherwise) or, with a rent already known, [`quote_with_rent`] (no I/O).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use solana_address::Address;

use crate::convert::{ConvertError, ETH_DECIMALS, SOL_DECIMALS, UsdcConversion};
use crate::cost::CostError;
use crate::cost::evm::{EvmAsset, EvmCostModel};
use crate::cost::svm::{SvmAsset, SvmCost, SvmCostModel};
use crate::price::{NativePrice, PriceError, PriceSource, unix_now};

/// Gas of one settlement priced in atomic USDC. JSON: camelCase, 128-bit amounts as decimal
/// strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// CAIP-2 network, e.g. `eip155:8453`.
    pub network: String,
    /// Token contract (EIP-55 checksummed on EVM).
    pub asset: String,
    /// The charge: atomic USDC (6 decimals), markup and minimum applied, rounded up. On Solana:
    /// the fee's charge plus [`SvmQuoteDetails::rent_usdc_atomic`].
    #[serde(with = "u128_string")]
    pub gas_usdc_atomic: u128,
    /// Gas units of one settlement (measured estimate + allowance). EVM; 0 on Solana.
    pub gas_units: u64,
    /// Fee per gas, wei (next base fee with headroom + tip, EIP-1559). EVM; 0 on Solana.
    #[serde(with = "u128_string")]
    pub fee_per_gas_wei: u128,
    /// L1 data fee with headroom (OP-stack), wei; 0 where not configured and on Solana.
    #[serde(with = "u128_string")]
    pub l1_fee_wei: u128,
    /// `gas_units × fee_per_gas_wei + l1_fee_wei`, wei. EVM; 0 on Solana (see
    /// [`SvmCost::total_lamports`]).
    #[serde(with = "u128_string")]
    pub total_wei: u128,
    /// USD per whole native token used, plain decimal text (e.g. `"3000.12345678"`).
    pub native_usd: String,
    /// Which price source gave `native_usd`.
    pub price_source: String,
    /// When that price was observed, Unix seconds.
    pub price_observed_at: u64,
    /// Markup applied, basis points.
    pub markup_bps: u32,
    /// When the quote was computed, Unix seconds.
    pub quoted_at: u64,
    /// Solana breakdown in lamports; absent on EVM quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svm: Option<SvmQuoteDetails>,
    /// EVM: the settlement call quoted when it is not EIP-3009's: `"permit2"` (`exact` over
    /// Permit2) or `"upto"` ([`crate::cost::evm::SettlementKind`]); absent otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// The Solana part of a [`Quote`]: the cost in lamports ([`SvmCost`], flattened into this
/// object in JSON), what creating the payee's token account would add, and the USDC of the rent
/// included. JSON: camelCase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SvmQuoteDetails {
    /// Fee and included rent, lamports.
    #[serde(flatten)]
    pub cost: SvmCost,
    /// Rent-exemption minimum of the asset's token account (165 bytes, 170 under Token-2022):
    /// what a settlement that creates `payTo`'s account adds, lamports. Included in `cost` only
    /// when `cost.rent_lamports` is non-zero.
    pub ata_rent_lamports: u64,
    /// The part of [`Quote::gas_usdc_atomic`] paying `cost.rent_lamports`: converted at the
    /// quote's price with its markup (no minimum), rounded up; 0 without rent.
    #[serde(with = "u128_string")]
    pub rent_usdc_atomic: u128,
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a quote could not be computed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuoteError {
    /// The gas cost could not be computed.
    #[error("cost: {0}")]
    Cost(#[from] CostError),
    /// No native-token price.
    #[error("price: {0}")]
    Price(#[from] PriceError),
    /// The conversion overflowed.
    #[error("{0}")]
    Convert(#[from] ConvertError),
    /// The refresh did not finish in time (seconds).
    #[error("refresh timed out after {0} s")]
    Timeout(u64),
}

/// Why [`QuoteCache::get`] has no quote to serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteUnavailable {
    /// No quoter for this (network, asset) has run, or none exists.
    #[error("no quote for {network} {asset}")]
    Unknown {
        /// CAIP-2 network asked.
        network: String,
        /// Asset asked.
        asset: String,
    },
    /// Every refresh so far failed.
    #[error("no quote yet: {last_error}")]
    Failed {
        /// The last refresh error.
        last_error: String,
    },
    /// The last good quote is older than the cache's max age (seconds); `last_error` tells why
    /// refreshes failed since.
    #[error("quote expired ({age_seconds} s old, max {max_age_seconds} s): {last_error}")]
    Expired {
        /// Age of the last good quote, seconds.
        age_seconds: u64,
        /// The max age, seconds.
        max_age_seconds: u64,
        /// The last refresh error, or empty.
        last_error: String,
    },
}

/// Computes fresh quotes for one (network, asset).
#[async_trait]
pub trait Quoter: Send + Sync {
    /// CAIP-2 network quoted.
    fn network(&self) -> &str;
    /// Asset quoted (as in [`Quote::asset`]).
    fn asset(&self) -> &str;
    /// A fresh quote (chain reads, price sources).
    async fn quote(&self) -> Result<Quote, QuoteError>;
    /// The settlement call quoted ([`Quote::kind`]); default `""`.
    fn kind(&self) -> &str {
        ""
    }
}

/// Quotes EVM settlement gas of one asset: [`EvmCostModel::cost`] in wei, converted at the
/// price of `price` with `conversion`.
pub struct EvmQuoter {
    cost: Arc<EvmCostModel>,
    asset: EvmAsset,
    price: Arc<dyn PriceSource>,
    conversion: UsdcConversion,
    network: String,
    asset_text: String,
}

impl EvmQuoter {
    /// A quoter for `asset` on `cost`'s chain (network `eip155:<chain id>`).
    pub fn new(
        cost: Arc<EvmCostModel>,
        asset: EvmAsset,
        price: Arc<dyn PriceSource>,
        conversion: UsdcConversion,
    ) -> Self {
        let network = format!("eip155:{}", cost.chain().chain_id());
        let asset_text = asset.address.to_checksum(None);
        EvmQuoter {
            cost,
            asset,
            price,
            conversion,
            network,
            asset_text,
        }
    }
}

#[async_trait]
impl Quoter for EvmQuoter {
    fn network(&self) -> &str {
        &self.network
    }

    fn asset(&self) -> &str {
        &self.asset_text
    }

    fn kind(&self) -> &str {
        self.asset.kind.as_str()
    }

    async fn quote(&self) -> Result<Quote, QuoteError> {
        let (cost, price) = tokio::join!(self.cost.cost(&self.asset), self.price.price());
        let (cost, price) = (cost?, price?);
        let gas_usdc_atomic =
            self.conversion
                .charge_atomic(cost.total_wei, ETH_DECIMALS, &price)?;
        Ok(Quote {
            network: self.network.clone(),
            asset: self.asset_text.clone(),
            gas_usdc_atomic,
            gas_units: cost.gas_units,
            fee_per_gas_wei: cost.fee_per_gas_wei,
            l1_fee_wei: cost.l1_fee_wei,
            total_wei: cost.total_wei,
            native_usd: price.usd_string(),
            price_source: price.source,
            price_observed_at: price.observed_at,
            markup_bps: self.conversion.markup_bps,
            quoted_at: unix_now(),
            svm: None,
            kind: self.asset.kind.as_str().to_string(),
        })
    }
}

/// Quotes Solana settlement fees of one SPL asset: [`SvmCostModel::cost`] in lamports (no
/// rent), converted at the SOL price of `price` with `conversion`. The quote's
/// [`SvmQuoteDetails::ata_rent_lamports`] carries the (cached) token-account rent so that
/// [`svm_quote_for_pay_to`] / [`quote_with_rent`] can add it at request time without reading it.
pub struct SvmQuoter {
    cost: Arc<SvmCostModel>,
    asset: SvmAsset,
    price: Arc<dyn PriceSource>,
    conversion: UsdcConversion,
    network: String,
    asset_text: String,
}

impl SvmQuoter {
    /// A quoter for `asset` on `cost`'s cluster, named `network` (CAIP-2, e.g.
    /// `x402_proto::network::SOLANA_MAINNET`); `price` gives USD per SOL.
    pub fn new(
        network: impl Into<String>,
        cost: Arc<SvmCostModel>,
        asset: SvmAsset,
        price: Arc<dyn PriceSource>,
        conversion: UsdcConversion,
    ) -> Self {
        SvmQuoter {
            asset_text: asset.mint.to_string(),
            cost,
            asset,
            price,
            conversion,
            network: network.into(),
        }
    }

    /// The cost model.
    pub fn cost_model(&self) -> &Arc<SvmCostModel> {
        &self.cost
    }

    /// The asset quoted.
    pub fn svm_asset(&self) -> &SvmAsset {
        &self.asset
    }

    /// A fresh quote for a settlement to `pay_to`: [`Quoter::quote`], then
    /// [`svm_quote_for_pay_to`].
    pub async fn quote_for_pay_to(
        &self,
        pay_to: &Address,
        create_ata: bool,
    ) -> Result<Quote, QuoteError> {
        let base = self.quote().await?;
        svm_quote_for_pay_to(&base, &self.cost, &self.asset, pay_to, create_ata).await
    }
}

#[async_trait]
impl Quoter for SvmQuoter {
    fn network(&self) -> &str {
        &self.network
    }

    fn asset(&self) -> &str {
        &self.asset_text
    }

    async fn quote(&self) -> Result<Quote, QuoteError> {
        let (cost, rent, price) = tokio::join!(
            self.cost.cost(&self.asset),
            self.cost.token_account_rent(&self.asset),
            self.price.price()
        );
        let (cost, ata_rent_lamports, price) = (cost?, rent?, price?);
        let gas_usdc_atomic =
            self.conversion
                .charge_atomic(u128::from(cost.total_lamports), SOL_DECIMALS, &price)?;
        Ok(Quote {
            network: self.network.clone(),
            asset: self.asset_text.clone(),
            gas_usdc_atomic,
            gas_units: 0,
            fee_per_gas_wei: 0,
            l1_fee_wei: 0,
            total_wei: 0,
            native_usd: price.usd_string(),
            price_source: price.source,
            price_observed_at: price.observed_at,
            markup_bps: self.conversion.markup_bps,
            quoted_at: unix_now(),
            svm: Some(SvmQuoteDetails {
                cost,
                ata_rent_lamports,
                rent_usdc_atomic: 0,
            }),
            kind: String::new(),
        })
    }
}

/// `base` (a Solana quote, e.g. from the [`QuoteCache`]) with `rent_lamports` of rent instead of
/// its current rent: the fee's charge stays, the rent is converted at the quote's own price
/// (`native_usd`) with its markup (`markup_bps`), without a minimum, rounded up, and added. The
/// charge of a fee plus rent is therefore exactly the fee's charge plus the rent's. No I/O;
/// `quoted_at` and the price stay the base's. An error for an EVM quote.
pub fn quote_with_rent(base: &Quote, rent_lamports: u64) -> Result<Quote, QuoteError> {
    let svm = base.svm.ok_or_else(|| {
        QuoteError::Cost(CostError::Unsupported(format!(
            "{} {}: not a Solana quote",
            base.network, base.asset
        )))
    })?;
    let price = NativePrice::from_decimal_str(
        &base.native_usd,
        base.price_observed_at,
        base.price_source.clone(),
    )?;
    let rent_usdc_atomic = UsdcConversion::new(base.markup_bps, 0).marked_up_atomic(
        u128::from(rent_lamports),
        SOL_DECIMALS,
        &price,
    )?;
    let overflow = || {
        ConvertError(format!(
            "{} + rent {rent_usdc_atomic}",
            base.gas_usdc_atomic
        ))
    };
    let gas_usdc_atomic = base
        .gas_usdc_atomic
        .checked_sub(svm.rent_usdc_atomic)
        .and_then(|fee| fee.checked_add(rent_usdc_atomic))
        .ok_or_else(overflow)?;
    Ok(Quote {
        gas_usdc_atomic,
        svm: Some(SvmQuoteDetails {
            cost: svm.cost.with_rent(rent_lamports)?,
            rent_usdc_atomic,
            ..svm
        }),
        ..base.clone()
    })
}

/// The quote of a settlement to `pay_to` from a Solana base quote: with the token-account rent
/// ([`SvmQuoteDetails::ata_rent_lamports`]) when `create_ata` (the operator lets the
/// facilitator create `pay_to`'s account) and `pay_to`'s associated token account for `asset`
/// is missing ([`SvmCostModel::ata_exists`], one `getAccountInfo`); else `base` without rent
/// (and no RPC when `!create_ata`).
pub async fn svm_quote_for_pay_to(
    base: &Quote,
    model: &SvmCostModel,
    asset: &SvmAsset,
    pay_to: &Address,
    create_ata: bool,
) -> Result<Quote, QuoteError> {
    let svm = base.svm.ok_or_else(|| {
        QuoteError::Cost(CostError::Unsupported(format!(
            "{} {}: not a Solana quote",
            base.network, base.asset
        )))
    })?;
    let missing = create_ata && !model.ata_exists(pay_to, asset).await?;
    quote_with_rent(base, if missing { svm.ata_rent_lamports } else { 0 })
}

/// Cache key: network, asset and kind; EVM (`0x…`) assets compare case-insensitively.
fn key(network: &str, asset: &str, kind: &str) -> (String, String, String) {
    let asset = if asset.starts_with("0x") || asset.starts_with("0X") {
        asset.to_ascii_lowercase()
    } else {
        asset.to_owned()
    };
    (network.to_owned(), asset, kind.to_owned())
}

#[derive(Default)]
struct Entry {
    good: Option<(Quote, Instant)>,
    last_error: Option<String>,
}

/// The latest quote per (network, asset, [`Quote::kind`]). Reads never do I/O.
pub struct QuoteCache {
    max_age: Duration,
    entries: RwLock<HashMap<(String, String, String), Entry>>,
}

impl QuoteCache {
    /// A cache that serves a quote for at most `max_age` after it was computed.
    pub fn new(max_age: Duration) -> Self {
        QuoteCache {
            max_age,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The latest quote for `network` (CAIP-2) and `asset`, if it is younger than the max age.
    /// Memory only.
    pub fn get(&self, network: &str, asset: &str) -> Result<Quote, QuoteUnavailable> {
        self.get_kind(network, asset, "")
    }

    /// The latest quote of the settlement call `kind` ([`Quote::kind`]: `""` EIP-3009 or
    /// Solana, `"permit2"`, `"upto"`) for `network` and `asset`, if younger than the max age.
    /// Memory only.
    pub fn get_kind(
        &self,
        network: &str,
        asset: &str,
        kind: &str,
    ) -> Result<Quote, QuoteUnavailable> {
        let entries = self.entries.read().expect("quote cache lock");
        let Some(entry) = entries.get(&key(network, asset, kind)) else {
            return Err(QuoteUnavailable::Unknown {
                network: network.to_owned(),
                asset: asset.to_owned(),
            });
        };
        let last_error = entry.last_error.clone().unwrap_or_default();
        match &entry.good {
            Some((quote, at)) if at.elapsed() <= self.max_age => Ok(quote.clone()),
            Some((_, at)) => Err(QuoteUnavailable::Expired {
                age_seconds: at.elapsed().as_secs(),
                max_age_seconds: self.max_age.as_secs(),
                last_error,
            }),
            None => Err(QuoteUnavailable::Failed { last_error }),
        }
    }

    /// Stores a fresh quote (its age counts from now) and clears the last error.
    pub fn put(&self, quote: Quote) {
        let mut entries = self.entries.write().expect("quote cache lock");
        let entry = entries
            .entry(key(&quote.network, &quote.asset, &quote.kind))
            .or_default();
        entry.good = Some((quote, Instant::now()));
        entry.last_error = None;
    }

    /// Records a failed refresh of the `kind` quote; the last good quote stays until it
    /// expires.
    pub fn put_error(&self, network: &str, asset: &str, kind: &str, error: &QuoteError) {
        let mut entries = self.entries.write().expect("quote cache lock");
        entries
            .entry(key(network, asset, kind))
            .or_default()
            .last_error = Some(error.to_string());
    }

    /// Runs `quoter` once (bounded by `timeout`) and stores the quote or the error.
    pub async fn refresh(&self, quoter: &dyn Quoter, timeout: Duration) -> Result<(), QuoteError> {
        let outcome = match tokio::time::timeout(timeout, quoter.quote()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(QuoteError::Timeout(timeout.as_secs())),
        };
        match outcome {
            Ok(quote) => {
                self.put(quote);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    network = quoter.network(),
                    asset = quoter.asset(),
                    error = %e,
                    "gas quote refresh failed"
                );
                self.put_error(quoter.network(), quoter.asset(), quoter.kind(), &e);
                Err(e)
            }
        }
    }
}

/// Smallest time allowed for one refresh of one quoter.
pub const MIN_REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// A background task refreshing quoters into a cache; stopped when dropped.
pub struct QuoteRefresher {
    task: tokio::task::JoinHandle<()>,
}

impl QuoteRefresher {
    /// Spawns a tokio task that refreshes every quoter at once right away and then every
    /// `interval`, each refresh bounded by `max(interval, MIN_REFRESH_TIMEOUT)`. Failures are
    /// logged and recorded in the cache; the last good quote stays until it expires.
    pub fn spawn(
        cache: Arc<QuoteCache>,
        quoters: Vec<Arc<dyn Quoter>>,
        interval: Duration,
    ) -> Self {
        let timeout = interval.max(MIN_REFRESH_TIMEOUT);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let runs = quoters.iter().map(|q| cache.refresh(q.as_ref(), timeout));
                futures::future::join_all(runs).await;
            }
        });
        QuoteRefresher { task }
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for QuoteRefresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(asset: &str, usdc: u128) -> Quote {
        Quote {
            network: "eip155:8453".into(),
            asset: asset.into(),
            gas_usdc_atomic: usdc,
            gas_units: 80_000,
            fee_per_gas_wei: 1_000_000_000,
            l1_fee_wei: 0,
            total_wei: 80_000_000_000_000,
            native_usd: "3000.00".into(),
            price_source: "fixed".into(),
            price_observed_at: 1,
            markup_bps: 1000,
            quoted_at: 2,
            svm: None,
            kind: String::new(),
        }
    }

    const USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";

    #[test]
    fn json_is_camel_case_with_string_amounts() {
        let v = serde_json::to_value(quote(USDC, 264_000)).unwrap();
        assert_eq!(v["gasUsdcAtomic"], "264000");
        assert_eq!(v["gasUnits"], 80_000);
        assert_eq!(v["feePerGasWei"], "1000000000");
        assert_eq!(v["nativeUsd"], "3000.00");
        assert_eq!(v["markupBps"], 1000);
        let back: Quote = serde_json::from_value(v).unwrap();
        assert_eq!(back, quote(USDC, 264_000));
    }

    #[test]
    fn cache_serves_fresh_refuses_expired_and_unknown() {
        let cache = QuoteCache::new(Duration::from_millis(200));
        assert!(matches!(
            cache.get("eip155:8453", USDC),
            Err(QuoteUnavailable::Unknown { .. })
        ));
        cache.put(quote(USDC, 5));
        assert_eq!(
            cache
                .get("eip155:8453", &USDC.to_lowercase())
                .unwrap()
                .gas_usdc_atomic,
            5
        );
        assert!(cache.get("eip155:1", USDC).is_err());
        cache.put_error(
            "eip155:8453",
            USDC,
            "",
            &QuoteError::Price(PriceError::NoPrice(vec![])),
        );
        assert!(
            cache.get("eip155:8453", USDC).is_ok(),
            "last good quote still fresh"
        );
        std::thread::sleep(Duration::from_millis(250));
        match cache.get("eip155:8453", USDC) {
            Err(QuoteUnavailable::Expired { last_error, .. }) => {
                assert!(last_error.contains("no price"), "{last_error}")
            }
            other => panic!("expected Expired, got {other:?}"),
        }
        let other = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
        cache.put_error("eip155:8453", other, "", &QuoteError::Timeout(3));
        assert!(matches!(
            cache.get("eip155:8453", other),
            Err(QuoteUnavailable::Failed { .. })
        ));
        // Each settlement call of an asset has its own quote.
        let mut upto = quote(USDC, 9);
        upto.kind = "upto".into();
        cache.put(upto);
        assert_eq!(
            cache
                .get_kind("eip155:8453", USDC, "upto")
                .unwrap()
                .gas_usdc_atomic,
            9
        );
        assert!(cache.get_kind("eip155:8453", USDC, "permit2").is_err());
        assert!(matches!(
            cache.get("eip155:8453", USDC),
            Err(QuoteUnavailable::Expired { .. })
        ));
    }

    fn svm_base() -> Quote {
        // 10 005 lamports at $150 = $0.00150075 → 1 501 atomic; +10 % = 1 651.1 → 1 652.
        Quote {
            network: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp".into(),
            asset: "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v".into(),
            gas_usdc_atomic: 1_652,
            gas_units: 0,
            fee_per_gas_wei: 0,
            l1_fee_wei: 0,
            total_wei: 0,
            native_usd: "150".into(),
            price_source: "fixed".into(),
            price_observed_at: 1,
            markup_bps: 1000,
            quoted_at: 2,
            svm: Some(SvmQuoteDetails {
                cost: SvmCost::compute(2, 20_000, 250, 0).unwrap(),
                ata_rent_lamports: 2_039_280,
                rent_usdc_atomic: 0,
            }),
            kind: String::new(),
        }
    }

    #[test]
    fn rent_is_added_at_the_quotes_price_and_markup() {
        let base = svm_base();
        let with_rent = quote_with_rent(&base, 2_039_280).unwrap();
        // 2 039 280 lamports at $150 = $0.305892 = 305 892 atomic; +10 % = 336 481.2 → 336 482.
        let svm = with_rent.svm.unwrap();
        assert_eq!(svm.rent_usdc_atomic, 336_482);
        assert_eq!(with_rent.gas_usdc_atomic, 1_652 + 336_482);
        assert_eq!(svm.cost.rent_lamports, 2_039_280);
        assert_eq!(svm.cost.total_lamports, 10_005 + 2_039_280);
        assert_eq!(svm.cost.fee_lamports(), 10_005);
        assert_eq!(
            (with_rent.quoted_at, &with_rent.native_usd),
            (2, &base.native_usd)
        );
        // Setting the rent, not stacking it: back to zero gives the base again.
        assert_eq!(quote_with_rent(&with_rent, 0).unwrap(), base);
        assert_eq!(quote_with_rent(&with_rent, 2_039_280).unwrap(), with_rent);
        assert_eq!(quote_with_rent(&base, 0).unwrap(), base);
        // Not a Solana quote.
        assert!(quote_with_rent(&quote(USDC, 1), 5).is_err());
    }

    #[test]
    fn svm_json_flattens_the_breakdown() {
        let q = quote_with_rent(&svm_base(), 2_039_280).unwrap();
        let v = serde_json::to_value(&q).unwrap();
        let svm = &v["svm"];
        assert_eq!(svm["signatures"], 2);
        assert_eq!(svm["lamportsPerSignature"], 5000);
        assert_eq!(svm["computeUnitLimit"], 20_000);
        assert_eq!(svm["computeUnitPriceMicroLamports"], 250);
        assert_eq!(svm["priorityFeeLamports"], 5);
        assert_eq!(svm["rentLamports"], 2_039_280);
        assert_eq!(svm["totalLamports"], 2_049_285);
        assert_eq!(svm["ataRentLamports"], 2_039_280);
        assert_eq!(svm["rentUsdcAtomic"], "336482");
        assert_eq!(v["gasUsdcAtomic"], "338134");
        let back: Quote = serde_json::from_value(v).unwrap();
        assert_eq!(back, q);
        // EVM quotes carry no `svm` key, and old JSON without it still parses.
        let evm = serde_json::to_value(quote(USDC, 1)).unwrap();
        assert!(evm.get("svm").is_none());
        assert_eq!(
            serde_json::from_value::<Quote>(evm).unwrap(),
            quote(USDC, 1)
        );
    }

    #[tokio::test]
    async fn svm_quoter_prices_fee_and_rent_for_missing_ata() {
        use crate::cost::svm::stub::{Stub, USDC as MINT};
        use crate::cost::svm::{SvmCostModel, SvmCostParams};
        use crate::price::FixedPriceSource;

        let with_ata = Address::from_str_const("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM");
        let without_ata = Address::from_str_const("7nYBbXwTC5gPs5ZMjfmLvVnEfTfoY6w2MYAZPJ2CmHfk");
        let asset = SvmAsset::spl_token(MINT);
        // In-crate stub chain (arithmetic only, see cost::svm::stub): fees 0 100 200 300.
        let chain = Arc::new(Stub::new(vec![0, 100, 200, 300]).with_ata(&with_ata, &asset));
        let model = Arc::new(SvmCostModel::new(chain, SvmCostParams::default()));
        let quoter = SvmQuoter::new(
            "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
            model.clone(),
            asset,
            Arc::new(FixedPriceSource::new("150").unwrap()),
            UsdcConversion::new(1000, 1),
        );
        assert_eq!(
            quoter.asset(),
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
        );
        let base = quoter.quote().await.unwrap();
        // p75 = 200 → × 1.25 = 250 µlamports → 5 lamports; + 10 000; see svm_base().
        let mut expected = svm_base();
        expected.price_observed_at = base.price_observed_at;
        expected.quoted_at = base.quoted_at;
        assert_eq!(base, expected);

        let missing = quoter.quote_for_pay_to(&without_ata, true).await.unwrap();
        assert_eq!(missing.gas_usdc_atomic, 1_652 + 336_482);
        assert_eq!(missing.svm.unwrap().cost.rent_lamports, 2_039_280);
        let present = quoter.quote_for_pay_to(&with_ata, true).await.unwrap();
        assert_eq!(present.gas_usdc_atomic, 1_652);
        let not_created = quoter.quote_for_pay_to(&without_ata, false).await.unwrap();
        assert_eq!(not_created.gas_usdc_atomic, 1_652);

        // From the cache, as a request would: the base quote is served and the rent added.
        let cache = QuoteCache::new(Duration::from_secs(60));
        cache
            .refresh(&quoter, Duration::from_secs(5))
            .await
            .unwrap();
        let cached = cache.get(quoter.network(), quoter.asset()).unwrap();
        let q = svm_quote_for_pay_to(&cached, &model, &asset, &without_ata, true)
            .await
            .unwrap();
        assert_eq!(q.gas_usdc_atomic, 1_652 + 336_482);

        // A minimum applies to the fee, not to the rent on top.
        let floor = SvmQuoter::new(
            "solana:x",
            model,
            asset,
            Arc::new(FixedPriceSource::new("150").unwrap()),
            UsdcConversion::new(1000, 10_000),
        );
        let q = floor.quote_for_pay_to(&without_ata, true).await.unwrap();
        assert_eq!(q.gas_usdc_atomic, 10_000 + 336_482);
    }
}
