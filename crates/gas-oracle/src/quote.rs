//! Quotes: the gas of one settlement in atomic USDC, per (network, asset), computed in the
//! background and served from memory.
//!
//! A [`Quoter`] computes a fresh [`Quote`] (chain reads, price API); [`QuoteRefresher`] runs every
//! quoter on a timer and stores the results in a [`QuoteCache`]; [`QuoteCache::get`] never does
//! I/O and refuses a quote older than its max age, so a request never waits on a price API and
//! never gets a stale price.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::convert::{ConvertError, ETH_DECIMALS, UsdcConversion};
use crate::cost::CostError;
use crate::cost::evm::{EvmAsset, EvmCostModel};
use crate::price::{PriceError, PriceSource, unix_now};

/// Gas of one settlement priced in atomic USDC. JSON: camelCase, 128-bit amounts as decimal
/// strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// CAIP-2 network, e.g. `eip155:8453`.
    pub network: String,
    /// Token contract (EIP-55 checksummed on EVM).
    pub asset: String,
    /// The charge: atomic USDC (6 decimals), markup and minimum applied, rounded up.
    #[serde(with = "u128_string")]
    pub gas_usdc_atomic: u128,
    /// Gas units of one settlement (measured estimate + allowance).
    pub gas_units: u64,
    /// Fee per gas, wei (next base fee with headroom + tip, EIP-1559).
    #[serde(with = "u128_string")]
    pub fee_per_gas_wei: u128,
    /// L1 data fee with headroom (OP-stack), wei; 0 where not configured.
    #[serde(with = "u128_string")]
    pub l1_fee_wei: u128,
    /// `gas_units × fee_per_gas_wei + l1_fee_wei`, wei.
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
        })
    }
}

/// Cache key: network and asset; EVM (`0x…`) assets compare case-insensitively.
fn key(network: &str, asset: &str) -> (String, String) {
    let asset = if asset.starts_with("0x") || asset.starts_with("0X") {
        asset.to_ascii_lowercase()
    } else {
        asset.to_owned()
    };
    (network.to_owned(), asset)
}

#[derive(Default)]
struct Entry {
    good: Option<(Quote, Instant)>,
    last_error: Option<String>,
}

/// The latest quote per (network, asset). Reads never do I/O.
pub struct QuoteCache {
    max_age: Duration,
    entries: RwLock<HashMap<(String, String), Entry>>,
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
        let entries = self.entries.read().expect("quote cache lock");
        let Some(entry) = entries.get(&key(network, asset)) else {
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
            .entry(key(&quote.network, &quote.asset))
            .or_default();
        entry.good = Some((quote, Instant::now()));
        entry.last_error = None;
    }

    /// Records a failed refresh; the last good quote stays until it expires.
    pub fn put_error(&self, network: &str, asset: &str, error: &QuoteError) {
        let mut entries = self.entries.write().expect("quote cache lock");
        entries.entry(key(network, asset)).or_default().last_error = Some(error.to_string());
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
                self.put_error(quoter.network(), quoter.asset(), &e);
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
        cache.put_error("eip155:8453", other, &QuoteError::Timeout(3));
        assert!(matches!(
            cache.get("eip155:8453", other),
            Err(QuoteUnavailable::Failed { .. })
        ));
    }
}
