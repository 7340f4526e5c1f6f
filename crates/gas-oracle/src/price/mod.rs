//! USD price of a chain's native token (ETH on Ethereum, Base and other OP-stack chains), from
//! pluggable [`PriceSource`]s:
//!
//! - [`ChainlinkPriceSource`]: a Chainlink `AggregatorV3Interface` feed read on chain
//!   (`latestRoundData` + `decimals`), with staleness and sign checks;
//! - [`FixedPriceSource`]: a configured price;
//! - [`HttpPriceSource`]: an HTTP JSON price API with a timeout (Coinbase-style by default);
//! - [`FallbackPriceSource`]: tries sources in order and returns the first good price; when all
//!   fail there is no price, and quotes are refused rather than guessed.

mod chainlink;
mod fallback;
mod fixed;
mod http;

use async_trait::async_trait;

pub use chainlink::{AggregatorV3Interface, ChainlinkPriceSource};
pub use fallback::FallbackPriceSource;
pub use fixed::FixedPriceSource;
pub use http::HttpPriceSource;

use crate::decimal::{format_decimal, parse_decimal};

/// A USD price of one whole native token (1 ETH = 10^18 wei): `usd_mantissa / 10^usd_decimals`
/// US dollars. Exact: never a float.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativePrice {
    /// Price digits, e.g. `300012345678` with `usd_decimals = 8` for $3000.12345678.
    pub usd_mantissa: u128,
    /// Decimal places of `usd_mantissa` (a Chainlink feed's `decimals()`, 8 for ETH/USD).
    pub usd_decimals: u8,
    /// When the price was observed, Unix seconds (a feed's `updatedAt`, the time of an HTTP
    /// answer, the time a fixed price was read).
    pub observed_at: u64,
    /// Name of the source that gave it (e.g. `chainlink:0x…`, `http:…`, `fixed`).
    pub source: String,
}

impl NativePrice {
    /// A price from plain decimal text in USD (e.g. `"3000.12"`); rejects zero and anything
    /// [`parse_decimal`] rejects.
    pub fn from_decimal_str(
        usd: &str,
        observed_at: u64,
        source: impl Into<String>,
    ) -> Result<Self, PriceError> {
        let (usd_mantissa, usd_decimals) = parse_decimal(usd).map_err(PriceError::Invalid)?;
        if usd_mantissa == 0 {
            return Err(PriceError::Invalid(format!("price is zero: {usd:?}")));
        }
        Ok(NativePrice {
            usd_mantissa,
            usd_decimals,
            observed_at,
            source: source.into(),
        })
    }

    /// The price as plain decimal text in USD, with `usd_decimals` fractional digits.
    pub fn usd_string(&self) -> String {
        format_decimal(self.usd_mantissa, self.usd_decimals)
    }
}

/// Why a source gave no price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The source's latest price is older than allowed (ages in seconds).
    #[error("stale: observed at {observed_at}, {age_seconds} s old, max {max_age_seconds} s")]
    Stale {
        /// When the price was observed, Unix seconds.
        observed_at: u64,
        /// Its age, seconds.
        age_seconds: u64,
        /// The allowed age, seconds.
        max_age_seconds: u64,
    },
    /// The source answered with something that is not a usable price (≤ 0, malformed, an
    /// incomplete round).
    #[error("invalid price: {0}")]
    Invalid(String),
    /// The source could not be reached or did not answer in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Every source of a [`FallbackPriceSource`] failed: `(source name, why)` in order.
    #[error("no price: {}", list_failures(.0))]
    NoPrice(Vec<(String, PriceError)>),
}

fn list_failures(failures: &[(String, PriceError)]) -> String {
    if failures.is_empty() {
        return "no price source configured".into();
    }
    failures
        .iter()
        .map(|(name, e)| format!("{name}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A source of the native token's USD price.
#[async_trait]
pub trait PriceSource: Send + Sync {
    /// Short name for logs, errors and [`NativePrice::source`].
    fn name(&self) -> &str;

    /// The current price, or why there is none. A source that keeps its own notion of age
    /// (a Chainlink feed) answers [`PriceError::Stale`] rather than an old price.
    async fn price(&self) -> Result<NativePrice, PriceError>;
}

pub(crate) use x402_chain::clock::unix_now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_price_round_trips() {
        let p = NativePrice::from_decimal_str("3000.12", 7, "fixed").unwrap();
        assert_eq!((p.usd_mantissa, p.usd_decimals), (300012, 2));
        assert_eq!(p.usd_string(), "3000.12");
        assert!(NativePrice::from_decimal_str("0.00", 7, "fixed").is_err());
        assert!(NativePrice::from_decimal_str("-1", 7, "fixed").is_err());
    }

    #[test]
    fn no_price_lists_every_failure() {
        let e = PriceError::NoPrice(vec![
            ("a".into(), PriceError::Unavailable("timeout".into())),
            ("b".into(), PriceError::Invalid("zero".into())),
        ]);
        assert_eq!(
            e.to_string(),
            "no price: a: unavailable: timeout; b: invalid price: zero"
        );
    }
}
