//! EIP-1559 fees of settlement transactions from a per-network cache, so that signing does not
//! wait for the node: `eth_feeHistory` over the last
//! [`EIP1559_FEE_ESTIMATION_PAST_BLOCKS`] blocks, priced by alloy's default estimator
//! (`maxFeePerGas` = 2 × the next block's base fee + the median tip at the
//! [`EIP1559_FEE_ESTIMATION_REWARD_PERCENTILE`]th percentile; the same figures
//! `eth_estimate…`-style wallets use). A value older than the refresh interval is still used
//! while a background task fetches the next one; one older than the maximum age is fetched
//! inline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use alloy::providers::utils::{
    EIP1559_FEE_ESTIMATION_PAST_BLOCKS, EIP1559_FEE_ESTIMATION_REWARD_PERCENTILE, Eip1559Estimator,
};
use x402_chain::{ChainError, EvmChain};

/// EIP-1559 fee caps, wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// `maxFeePerGas`, wei.
    pub max_fee_per_gas: u128,
    /// `maxPriorityFeePerGas`, wei.
    pub max_priority_fee_per_gas: u128,
}

impl Fees {
    /// The fees of a transaction replacing one that offered `self` at the same nonce: both caps
    /// up by at least 12.5 % (nodes ask for 10 %), and at least `now` (what the node would ask
    /// of a new transaction); the tip never above the cap.
    pub fn replacement(self, now: Fees) -> Fees {
        let bump = |fee: u128| fee + fee / 8 + 1;
        let max_fee_per_gas = bump(self.max_fee_per_gas).max(now.max_fee_per_gas);
        Fees {
            max_fee_per_gas,
            max_priority_fee_per_gas: bump(self.max_priority_fee_per_gas)
                .max(now.max_priority_fee_per_gas)
                .min(max_fee_per_gas),
        }
    }
}

/// The fee cache of one network.
pub struct FeeCache {
    chain: Arc<dyn EvmChain>,
    refresh_after: Duration,
    max_age: Duration,
    last: Mutex<Option<(Fees, Instant)>>,
    refreshing: AtomicBool,
    /// One inline fetch at a time: a burst with nothing fresh waits for it.
    fetching: tokio::sync::Mutex<()>,
}

impl FeeCache {
    /// Fees for `chain`, re-fetched in the background once older than `refresh_after` and
    /// inline once older than `max_age`.
    pub fn new(chain: Arc<dyn EvmChain>, refresh_after: Duration, max_age: Duration) -> Arc<Self> {
        Arc::new(FeeCache {
            chain,
            refresh_after,
            max_age,
            last: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Current fees. Errors: the node's, when nothing fresh enough is cached; a chain without
    /// EIP-1559 base fees is [`ChainError::Rejected`].
    pub async fn current(self: &Arc<Self>) -> Result<Fees, ChainError> {
        if let Some(fees) = self.fresh_enough() {
            return Ok(fees);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(fees) = self.fresh_enough() {
            return Ok(fees);
        }
        self.fetch().await
    }

    /// The cached fees if younger than the maximum age (starting a background refresh once
    /// older than the refresh interval).
    fn fresh_enough(self: &Arc<Self>) -> Option<Fees> {
        let cached = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((fees, at)) = cached {
            let age = at.elapsed();
            if age < self.refresh_after {
                return Some(fees);
            }
            if age < self.max_age {
                if !self.refreshing.swap(true, Ordering::AcqRel) {
                    let cache = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = cache.fetch().await {
                            tracing::warn!(error = %e, "fee refresh failed; the cached fees stay");
                        }
                        cache.refreshing.store(false, Ordering::Release);
                    });
                }
                return Some(fees);
            }
        }
        None
    }

    /// Fetches and caches the fees now.
    pub async fn fetch(&self) -> Result<Fees, ChainError> {
        let history = self
            .chain
            .fee_history(
                EIP1559_FEE_ESTIMATION_PAST_BLOCKS,
                &[EIP1559_FEE_ESTIMATION_REWARD_PERCENTILE],
            )
            .await?;
        let base = history
            .latest_block_base_fee()
            .filter(|b| *b != 0)
            .ok_or_else(|| ChainError::Rejected("no EIP-1559 base fee in eth_feeHistory".into()))?;
        let est = Eip1559Estimator::default().estimate(base, &history.reward.unwrap_or_default());
        let fees = Fees {
            max_fee_per_gas: est.max_fee_per_gas,
            max_priority_fee_per_gas: est.max_priority_fee_per_gas,
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((fees, Instant::now()));
        Ok(fees)
    }
}

#[cfg(test)]
mod tests {
    use super::Fees;

    #[test]
    fn replacement_raises_both_caps_by_an_eighth_and_follows_the_market() {
        let offered = Fees {
            max_fee_per_gas: 800,
            max_priority_fee_per_gas: 80,
        };
        let calm = Fees {
            max_fee_per_gas: 100,
            max_priority_fee_per_gas: 10,
        };
        assert_eq!(
            offered.replacement(calm),
            Fees {
                max_fee_per_gas: 901,
                max_priority_fee_per_gas: 91,
            }
        );
        // Fees rose past the bump: the current ones, the tip never above the cap.
        let spike = Fees {
            max_fee_per_gas: 5_000,
            max_priority_fee_per_gas: 9_000,
        };
        assert_eq!(
            offered.replacement(spike),
            Fees {
                max_fee_per_gas: 5_000,
                max_priority_fee_per_gas: 5_000,
            }
        );
    }
}
