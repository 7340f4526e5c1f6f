//! `[evm.gas]` and `[svm.gas]`: how the settlement cost of one payment is priced in USDC (see
//! the `x402-gas-oracle` crate), the same table for both families.

use alloy::primitives::Address;
use serde::Deserialize;

use super::error::{ConfigError, err};

/// `[evm.gas]` / `[svm.gas]`: how settlement gas is priced in USDC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GasConfig {
    /// Safety markup on the converted gas cost, basis points (default 2000 = +20 %).
    #[serde(default = "default_markup_bps")]
    pub markup_bps: u32,
    /// Smallest gas charge, atomic USDC (default 0).
    #[serde(default)]
    pub minimum_usdc_atomic: u64,
    /// Headroom on the L1 data fee (OP-stack) and on Solana's priority fee, basis points
    /// (default 2500); on the next block's base fee only with `fixed_headroom = true`.
    #[serde(default = "default_headroom_bps")]
    pub headroom_bps: u32,
    /// EVM: `true` prices the base fee with the fixed `headroom_bps` and gas units with
    /// `eth_estimateGas` plus a worst-case allowance (the model before issue 18). Default
    /// `false`: the headroom is the base fee's observed movement over the quote's horizon
    /// (`[quotes] refresh_seconds` + `landing_blocks`), at least 12.5 %, and gas units the 95th
    /// percentile of recent settlements' `gasUsed` (see `docs/gas-pricing.md`).
    #[serde(default)]
    pub fixed_headroom: bool,
    /// EVM: blocks from a quote's use to its settlement's landing, part of the horizon
    /// (default 2).
    #[serde(default = "default_landing_blocks")]
    pub landing_blocks: u64,
    /// Priority-fee percentile of `eth_feeHistory` (default 50).
    #[serde(default = "default_tip_percentile")]
    pub tip_percentile: u8,
    /// OP-stack `GasPriceOracle` predeploy for the L1 data fee (Base:
    /// `0x420000000000000000000000000000000000000F`); absent → no L1 fee. EVM only.
    #[serde(default)]
    pub l1_fee_oracle: Option<String>,
    /// USD price sources of the native token, tried in order.
    pub price_sources: Vec<PriceSourceConfig>,
}

/// One `[[evm.gas.price_sources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceSourceConfig {
    /// Chainlink `AggregatorV3Interface` feed on this chain (Base ETH/USD:
    /// `0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70`); older than `max_age_seconds` = stale.
    Chainlink {
        /// Feed address.
        address: String,
        /// Oldest accepted `updatedAt`, seconds (default 3600).
        #[serde(default = "default_feed_age")]
        max_age_seconds: u64,
    },
    /// Coinbase-style spot API: `GET {base_url}/v2/prices/{pair}/spot`.
    Coinbase {
        /// API base URL.
        base_url: String,
        /// Pair, e.g. `ETH-USD`.
        pair: String,
        /// Request timeout, milliseconds (default 2000).
        #[serde(default = "default_http_timeout_ms")]
        timeout_ms: u64,
    },
    /// Any JSON API: `GET url`, price at an RFC 6901 pointer (decimal string or integer).
    Http {
        /// URL.
        url: String,
        /// JSON pointer, e.g. `/data/amount`.
        json_pointer: String,
        /// Request timeout, milliseconds (default 2000).
        #[serde(default = "default_http_timeout_ms")]
        timeout_ms: u64,
    },
    /// A fixed price in USD, e.g. `"3000.00"` (a last resort, or for test chains).
    Fixed {
        /// USD per whole native token, decimal string.
        usd: String,
    },
}

fn default_markup_bps() -> u32 {
    2000
}
fn default_landing_blocks() -> u64 {
    2
}
fn default_headroom_bps() -> u32 {
    2500
}
fn default_tip_percentile() -> u8 {
    50
}
fn default_feed_age() -> u64 {
    3600
}
fn default_http_timeout_ms() -> u64 {
    2000
}

/// Checks the gas table at key `at` (`evm[0].gas`); errors name the key.
pub(super) fn validate(gas: &GasConfig, at: &str) -> Result<(), ConfigError> {
    if gas.tip_percentile > 100 {
        return Err(err(format!("{at}.tip_percentile"), "must be 0..=100"));
    }
    if let Some(oracle) = &gas.l1_fee_oracle {
        oracle
            .parse::<Address>()
            .map_err(|_| err(format!("{at}.l1_fee_oracle"), "not a 0x 20-byte address"))?;
    }
    if gas.price_sources.is_empty() {
        return Err(err(
            format!("{at}.price_sources"),
            "list at least one price source",
        ));
    }
    for (i, source) in gas.price_sources.iter().enumerate() {
        let key = format!("{at}.price_sources[{i}]");
        match source {
            PriceSourceConfig::Chainlink { address, .. } => {
                address
                    .parse::<Address>()
                    .map_err(|_| err(format!("{key}.address"), "not a 0x 20-byte address"))?;
            }
            PriceSourceConfig::Coinbase { base_url: url, .. }
            | PriceSourceConfig::Http { url, .. } => {
                url.parse::<alloy::transports::http::reqwest::Url>()
                    .map_err(|e| err(format!("{key}.url"), e.to_string()))?;
            }
            PriceSourceConfig::Fixed { usd } => {
                x402_gas_oracle::NativePrice::from_decimal_str(usd, 0, "fixed")
                    .map_err(|e| err(format!("{key}.usd"), e.to_string()))?;
            }
        }
    }
    Ok(())
}
