//! A Chainlink price feed read on chain (Chainlink `AggregatorV3Interface`: `latestRoundData`,
//! `decimals`), e.g. ETH / USD.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alloy::primitives::Address;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use x402_chain::EvmChain;

use super::{NativePrice, PriceError, PriceSource, unix_now};

alloy::sol! {
    /// Chainlink `AggregatorV3Interface` (the read side of every Chainlink data feed).
    interface AggregatorV3Interface {
        function decimals() external view returns (uint8);
        function latestRoundData() external view returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    }
}

/// USD price of the native token from a Chainlink feed (`answer / 10^decimals()` USD).
///
/// Refused answers: `answer ≤ 0`, `updatedAt == 0` (round not complete), `answeredInRound <
/// roundId` (carried-over answer), and `updatedAt` more than `max_age` seconds before now
/// ([`PriceError::Stale`]; set `max_age` to the feed's heartbeat plus a margin).
/// `decimals()` is read once and remembered.
pub struct ChainlinkPriceSource {
    chain: Arc<dyn EvmChain>,
    feed: Address,
    max_age: Duration,
    name: String,
    decimals: OnceLock<u8>,
}

impl ChainlinkPriceSource {
    /// A source reading feed contract `feed` on `chain`; prices older than `max_age` are stale.
    /// Its name is `chainlink:<feed address>`.
    pub fn new(chain: Arc<dyn EvmChain>, feed: Address, max_age: Duration) -> Self {
        ChainlinkPriceSource {
            chain,
            feed,
            max_age,
            name: format!("chainlink:{}", feed.to_checksum(None)),
            decimals: OnceLock::new(),
        }
    }

    async fn read<C: SolCall>(&self, call: C) -> Result<C::Return, PriceError> {
        let tx = TransactionRequest::default()
            .to(self.feed)
            .input(call.abi_encode().into());
        let out = self
            .chain
            .call(&tx)
            .await
            .map_err(|e| PriceError::Unavailable(format!("{}: {e}", C::SIGNATURE)))?;
        C::abi_decode_returns(&out)
            .map_err(|e| PriceError::Invalid(format!("{}: undecodable answer: {e}", C::SIGNATURE)))
    }

    async fn decimals(&self) -> Result<u8, PriceError> {
        if let Some(d) = self.decimals.get() {
            return Ok(*d);
        }
        let d = self.read(AggregatorV3Interface::decimalsCall {}).await?;
        if d > crate::decimal::MAX_DECIMALS {
            return Err(PriceError::Invalid(format!("feed decimals {d} too large")));
        }
        Ok(*self.decimals.get_or_init(|| d))
    }
}

#[async_trait]
impl PriceSource for ChainlinkPriceSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn price(&self) -> Result<NativePrice, PriceError> {
        let decimals = self.decimals().await?;
        let round = self
            .read(AggregatorV3Interface::latestRoundDataCall {})
            .await?;
        if round.answer.is_negative() || round.answer.is_zero() {
            return Err(PriceError::Invalid(format!(
                "feed answer {} is not positive",
                round.answer
            )));
        }
        let mantissa = u128::try_from(round.answer.into_raw())
            .map_err(|_| PriceError::Invalid(format!("feed answer {} too large", round.answer)))?;
        if round.updatedAt.is_zero() {
            return Err(PriceError::Invalid(
                "round not complete (updatedAt = 0)".into(),
            ));
        }
        if round.answeredInRound < round.roundId {
            return Err(PriceError::Invalid(format!(
                "answer carried over from round {} into round {}",
                round.answeredInRound, round.roundId
            )));
        }
        let updated_at = u64::try_from(round.updatedAt).unwrap_or(u64::MAX);
        let max_age_seconds = self.max_age.as_secs();
        let age_seconds = unix_now().saturating_sub(updated_at);
        if age_seconds > max_age_seconds {
            return Err(PriceError::Stale {
                observed_at: updated_at,
                age_seconds,
                max_age_seconds,
            });
        }
        Ok(NativePrice {
            usd_mantissa: mantissa,
            usd_decimals: decimals,
            observed_at: updated_at,
            source: self.name.clone(),
        })
    }
}
