//! A configured, fixed USD price of the native token.

use async_trait::async_trait;

use super::{NativePrice, PriceError, PriceSource, unix_now};

/// Always the same price (e.g. a last-resort or test price); observed "now" on every read, so it
/// is never stale. Name: `fixed`.
#[derive(Debug, Clone)]
pub struct FixedPriceSource {
    usd_mantissa: u128,
    usd_decimals: u8,
}

impl FixedPriceSource {
    /// A fixed price given as plain decimal USD text, e.g. `"3000.12"`; zero is refused.
    pub fn new(usd: &str) -> Result<Self, PriceError> {
        let p = NativePrice::from_decimal_str(usd, 0, "fixed")?;
        Ok(FixedPriceSource {
            usd_mantissa: p.usd_mantissa,
            usd_decimals: p.usd_decimals,
        })
    }
}

#[async_trait]
impl PriceSource for FixedPriceSource {
    fn name(&self) -> &str {
        "fixed"
    }

    async fn price(&self) -> Result<NativePrice, PriceError> {
        Ok(NativePrice {
            usd_mantissa: self.usd_mantissa,
            usd_decimals: self.usd_decimals,
            observed_at: unix_now(),
            source: "fixed".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_price_is_exact_and_fresh() {
        let src = FixedPriceSource::new("2500.5").unwrap();
        let p = src.price().await.unwrap();
        assert_eq!((p.usd_mantissa, p.usd_decimals), (25005, 1));
        assert!(p.observed_at + 5 >= unix_now());
        assert!(FixedPriceSource::new("0").is_err());
        assert!(FixedPriceSource::new("3e3").is_err());
    }
}
