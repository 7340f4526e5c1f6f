//! Gas oracle: prices the gas of one settlement (EVM and Solana) in atomic USDC so that quotes
//! include it.
//!
//! Pipeline for an EVM network (all money in integers: wei as `u128`, USDC in atomic units of
//! 6 decimals, prices as exact decimals; every rounding up, in the facilitator's favour):
//!
//! 1. [`cost::evm::EvmCostModel`]: gas units of `transferWithAuthorization` (`eth_estimateGas` of
//!    a representative call + a documented allowance, cached per asset) × fee per gas (EIP-1559:
//!    next base fee from `eth_feeHistory` with headroom + a tip percentile), plus the OP-stack
//!    L1 data fee ([`cost::l1_fee::OpStackL1Fee`], `GasPriceOracle.getL1Fee`) where configured.
//! 2. [`price`]: USD per native token from pluggable sources — Chainlink
//!    `AggregatorV3Interface` on chain, a fixed price, an HTTP API — tried in order by
//!    [`price::FallbackPriceSource`]; with no price there is no quote.
//! 3. [`convert::UsdcConversion`]: wei → atomic USDC with markup and minimum.
//! 4. [`quote`]: [`quote::EvmQuoter`] computes a [`quote::Quote`]; [`quote::QuoteRefresher`]
//!    refreshes quoters in the background into a [`quote::QuoteCache`], whose `get` never does
//!    I/O and refuses expired quotes.
//!
//! For Solana (all money in integers: lamports as `u64`, 9 decimals):
//!
//! 1. [`cost::svm::SvmCostModel`]: `signatures × 5000` lamports + `ceil(compute unit price ×
//!    compute unit limit / 10^6)`, the price a percentile of `getRecentPrioritizationFees` for
//!    the mint with headroom, between a floor and the verifier's cap; plus, for a `payTo` whose
//!    associated token account is missing and which the facilitator may create, the
//!    token account's rent-exemption minimum (cached).
//! 2. [`price`]: USD per SOL, from the same kinds of sources.
//! 3. [`convert::UsdcConversion`]: lamports → atomic USDC ([`convert::SOL_DECIMALS`]).
//! 4. [`quote::SvmQuoter`]: the base quote (fee, no rent) for the same cache and refresher;
//!    [`quote::svm_quote_for_pay_to`] / [`quote::quote_with_rent`] add a `payTo`'s rent to a
//!    cached base quote at request time.
//!
//! ```no_run
//! # async fn demo(chain: std::sync::Arc<dyn x402_chain::EvmChain>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use x402_gas_oracle::{cost::evm::*, price::*, quote::*, convert::UsdcConversion};
//! let feed = "0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70".parse()?; // Base ETH/USD
//! let price: Arc<dyn PriceSource> = Arc::new(FallbackPriceSource::new(vec![
//!     Arc::new(ChainlinkPriceSource::new(chain.clone(), feed, Duration::from_secs(3600))),
//!     Arc::new(HttpPriceSource::coinbase("https://api.coinbase.com", "ETH-USD", Duration::from_secs(2))?),
//! ]));
//! let cost = Arc::new(EvmCostModel::new(chain, EvmCostConfig::default()));
//! let usdc = EvmAsset::new("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".parse()?, "USD Coin", "2");
//! let quoter: Arc<dyn Quoter> = Arc::new(EvmQuoter::new(cost, usdc, price, UsdcConversion::new(1000, 1)));
//! let cache = Arc::new(QuoteCache::new(Duration::from_secs(120)));
//! let _refresher = QuoteRefresher::spawn(cache.clone(), vec![quoter], Duration::from_secs(15));
//! let quote = cache.get("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # async fn demo(quoters: &mut Vec<std::sync::Arc<dyn x402_gas_oracle::Quoter>>, cache: &x402_gas_oracle::QuoteCache, pay_to: solana_address::Address) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use x402_gas_oracle::{cost::svm::*, price::*, quote::*, convert::UsdcConversion};
//! let chain: Arc<dyn x402_chain::SvmChain> =
//!     Arc::new(x402_chain::RpcSvmChain::new("https://api.mainnet-beta.solana.com", Duration::from_secs(5)));
//! let model = Arc::new(SvmCostModel::new(chain, SvmCostParams::default()));
//! let usdc = SvmAsset::spl_token("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v".parse()?);
//! let sol_usd: Arc<dyn PriceSource> = Arc::new(HttpPriceSource::coinbase("https://api.coinbase.com", "SOL-USD", Duration::from_secs(2))?);
//! let quoter = SvmQuoter::new(x402_proto::network::SOLANA_MAINNET, model.clone(), usdc, sol_usd, UsdcConversion::new(1000, 1));
//! quoters.push(Arc::new(quoter)); // refreshed into `cache` by a QuoteRefresher
//! // At request time: the cached base quote, plus rent if payTo's token account is missing and
//! // the operator lets the facilitator create it (one getAccountInfo).
//! let base = cache.get(x402_proto::network::SOLANA_MAINNET, "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")?;
//! let quote = svm_quote_for_pay_to(&base, &model, &usdc, &pay_to, true).await?;
//! # Ok(()) }
//! ```

pub mod convert;
pub mod cost;
pub mod decimal;
pub mod price;
pub mod quote;

pub use convert::UsdcConversion;
pub use cost::CostError;
pub use cost::evm::{
    EvmAsset, EvmCostConfig, EvmCostModel, EvmGasCost, GasSamples, SettlementKind,
};
pub use cost::l1_fee::OpStackL1Fee;
pub use cost::svm::{SvmAsset, SvmCost, SvmCostModel, SvmCostParams};
pub use price::{NativePrice, PriceError, PriceSource};
pub use quote::{
    EvmQuoter, Quote, QuoteCache, QuoteError, QuoteRefresher, QuoteUnavailable, Quoter,
    SvmQuoteDetails, SvmQuoter, quote_with_rent, svm_quote_for_pay_to,
};
