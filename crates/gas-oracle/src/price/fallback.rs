//! Tries price sources in order and returns the first good price.

use std::sync::Arc;

use async_trait::async_trait;

use super::{NativePrice, PriceError, PriceSource};

/// Sources in order of preference: the first one that answers with a (fresh, valid) price wins;
/// a stale or failing source falls through to the next. When every source fails the answer is
/// [`PriceError::NoPrice`] listing each failure: there is no guessed price. Name: `fallback`.
pub struct FallbackPriceSource {
    sources: Vec<Arc<dyn PriceSource>>,
}

impl FallbackPriceSource {
    /// Sources in order of preference (an empty list never has a price).
    pub fn new(sources: Vec<Arc<dyn PriceSource>>) -> Self {
        FallbackPriceSource { sources }
    }
}

#[async_trait]
impl PriceSource for FallbackPriceSource {
    fn name(&self) -> &str {
        "fallback"
    }

    async fn price(&self) -> Result<NativePrice, PriceError> {
        let mut failures = Vec::new();
        for source in &self.sources {
            match source.price().await {
                Ok(price) => {
                    if !failures.is_empty() {
                        tracing::warn!(
                            used = source.name(),
                            failed = %PriceError::NoPrice(failures),
                            "native price from a fallback source"
                        );
                    }
                    return Ok(price);
                }
                Err(e) => failures.push((source.name().to_owned(), e)),
            }
        }
        Err(PriceError::NoPrice(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::FixedPriceSource;

    struct Failing(PriceError);

    #[async_trait]
    impl PriceSource for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        async fn price(&self) -> Result<NativePrice, PriceError> {
            Err(self.0.clone())
        }
    }

    #[tokio::test]
    async fn first_good_source_wins_and_all_failing_is_no_price() {
        let stale = Arc::new(Failing(PriceError::Stale {
            observed_at: 1,
            age_seconds: 99,
            max_age_seconds: 10,
        }));
        let fixed = Arc::new(FixedPriceSource::new("3000").unwrap());
        let chain = FallbackPriceSource::new(vec![stale.clone(), fixed]);
        assert_eq!(chain.price().await.unwrap().source, "fixed");

        let none = FallbackPriceSource::new(vec![
            stale,
            Arc::new(Failing(PriceError::Unavailable("down".into()))),
        ]);
        match none.price().await {
            Err(PriceError::NoPrice(f)) => {
                assert_eq!(f.len(), 2);
                assert!(matches!(f[0].1, PriceError::Stale { .. }));
                assert!(matches!(f[1].1, PriceError::Unavailable(_)));
            }
            other => panic!("expected NoPrice, got {other:?}"),
        }
        assert!(matches!(
            FallbackPriceSource::new(vec![]).price().await,
            Err(PriceError::NoPrice(f)) if f.is_empty()
        ));
    }
}
