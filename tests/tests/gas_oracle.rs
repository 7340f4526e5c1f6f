//! Gas oracle on real components: anvil with a set base fee, Circle's USDC, Chainlink's
//! `MockV3Aggregator`, the OP-stack `GasPriceOracle` predeploy, a real HTTP price server on
//! 127.0.0.1 and the facilitator settling a real payment.
//!
//! Units: wei, gas units, atomic USDC (6 decimals), Unix seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEnvelope};
use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use x402_chain::{AlloyEvmChain, EvmChain};
use x402_gas_oracle::cost::evm::{
    CALLDATA_VALUE_ALLOWANCE_GAS, REPRESENTATIVE_VALID_AFTER, REPRESENTATIVE_VALID_BEFORE,
    STORAGE_WRITE_ALLOWANCE_GAS, l1_fee_data,
};
use x402_gas_oracle::price::{
    ChainlinkPriceSource, FallbackPriceSource, FixedPriceSource, HttpPriceSource,
};
use x402_gas_oracle::{
    EvmAsset, EvmCostConfig, EvmCostModel, EvmQuoter, OpStackL1Fee, PriceError, PriceSource,
    QuoteCache, QuoteError, QuoteRefresher, QuoteUnavailable, Quoter, UsdcConversion,
};
use x402_tests::eip3009::{
    Authorization, ExactEvmRequirements, sign_authorization_sig, unix_now, v2_evm_payment_json,
};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::price_feed::{L1Attributes, MockAggregator, OpL1FeeOracle, PriceServer};
use x402_tests::{Anvil, BASE_USDC, DEV_PRIVATE_KEYS, Usdc};

const GWEI: u128 = 1_000_000_000;
/// ETH/USD answer of the feed: $3000.12345678 with 8 decimals (Chainlink's ETH/USD format).
const FEED_ANSWER: i128 = 300_012_345_678;
const FEED_DECIMALS: u8 = 8;
const MARKUP_BPS: u32 = 1000;
const NETWORK: &str = "eip155:8453";

fn usdc_asset() -> EvmAsset {
    EvmAsset::new(BASE_USDC, "USD Coin", "2")
}

/// The facilitator's view of the chain: signer = dev account 1 (as in the test facilitator).
fn chain(anvil: &Anvil) -> Arc<dyn EvmChain> {
    Arc::new(
        AlloyEvmChain::new(
            anvil.rpc_url(),
            anvil.chain_id(),
            vec![anvil.signer(1)],
            std::time::Duration::from_secs(10),
        )
        .unwrap(),
    )
}

fn chainlink(chain: &Arc<dyn EvmChain>, feed: &MockAggregator) -> Arc<dyn PriceSource> {
    Arc::new(ChainlinkPriceSource::new(
        chain.clone(),
        feed.address(),
        Duration::from_secs(3600),
    ))
}

fn ceil_div(a: U256, b: U256) -> U256 {
    (a + b - U256::from(1)) / b
}

/// anvil (first block base fee 2 gwei) + USDC + a funded payer (account 2) + the feed.
async fn chain_with_usdc_and_feed() -> (Anvil, Usdc, MockAggregator) {
    let anvil = Anvil::builder()
        .block_base_fee_per_gas(2 * GWEI)
        .spawn()
        .await
        .unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    usdc.mint(anvil.address(2), 100_000_000u64).await.unwrap();
    let feed = MockAggregator::deploy(&anvil, anvil.signer(0), FEED_DECIMALS, FEED_ANSWER)
        .await
        .unwrap();
    (anvil, usdc, feed)
}

/// Sets the base fee of the next block to 8 gwei and mines it empty, so the block after it has
/// a base fee of exactly 8 − 8/8 = 7 gwei (EIP-1559, no gas used).
async fn set_next_base_fee_to_7_gwei(anvil: &Anvil) {
    let p = anvil.provider();
    p.raw_request::<_, ()>(
        "anvil_setNextBlockBaseFeePerGas".into(),
        (U256::from(8 * GWEI),),
    )
    .await
    .unwrap();
    p.raw_request::<_, String>("evm_mine".into(), ())
        .await
        .unwrap();
}

/// Independent gas measurement: a value-0 authorization signed by a random key whose random
/// fields have no zero byte and whose `v` is 28, with the representative's fixed times,
/// estimated from `from`.
async fn independent_estimate(usdc: &Usdc, from: Address) -> u64 {
    loop {
        let payer = PrivateKeySigner::random();
        let payee = PrivateKeySigner::random().address();
        let mut auth = Authorization::new(payer.address(), payee, 0u64, 60);
        auth.valid_after = REPRESENTATIVE_VALID_AFTER;
        auth.valid_before = REPRESENTATIVE_VALID_BEFORE;
        let sig = sign_authorization_sig(&payer, "USD Coin", "2", 8453, BASE_USDC, &auth).unwrap();
        let (r, s) = (B256::from(sig.r()), B256::from(sig.s()));
        let fields = [
            auth.from.as_slice(),
            auth.to.as_slice(),
            auth.nonce.as_slice(),
            r.as_slice(),
            s.as_slice(),
        ];
        if sig.v_byte() != 28 || fields.iter().any(|f| f.contains(&0)) {
            continue;
        }
        let call = usdc.contract().transferWithAuthorization_0(
            auth.from,
            auth.to,
            auth.value,
            U256::from(auth.valid_after),
            U256::from(auth.valid_before),
            auth.nonce,
            sig.v_byte(),
            r,
            s,
        );
        return call.from(from).estimate_gas().await.unwrap();
    }
}

/// Settles `amount` from account 2 to account 3 through the facilitator; returns the tx hash.
async fn settle_through_facilitator(facilitator: &TestFacilitator, anvil: &Anvil) -> B256 {
    let req = ExactEvmRequirements::base_usdc(10_000u64, anvil.address(3));
    let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (status, answer) = facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    answer["transaction"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn quote_equals_hand_computation_and_covers_a_real_settlement() {
    let (anvil, usdc, feed) = chain_with_usdc_and_feed().await;
    let facilitator = TestFacilitator::start_with_toml(&TestFacilitator::config_toml(
        &anvil,
        DEV_PRIVATE_KEYS[1],
        None,
    ))
    .await
    .unwrap();
    set_next_base_fee_to_7_gwei(&anvil).await;

    let chain = chain(&anvil);
    let cost = Arc::new(EvmCostModel::new(chain.clone(), EvmCostConfig::default()));
    let price = Arc::new(FallbackPriceSource::new(vec![chainlink(&chain, &feed)]));
    let quoter = EvmQuoter::new(
        cost,
        usdc_asset(),
        price,
        UsdcConversion::new(MARKUP_BPS, 1),
    );
    let quote = quoter.quote().await.unwrap();

    // By hand, from the node's own answers (nothing is mined in between).
    let p = anvil.provider();
    let history = p
        .get_fee_history(10, BlockNumberOrTag::Latest, &[50.0])
        .await
        .unwrap();
    let next_base_fee = *history.base_fee_per_gas.last().unwrap();
    assert_eq!(
        next_base_fee,
        7 * GWEI,
        "8 gwei block with no gas used → 7 gwei"
    );
    let tip = history
        .reward
        .unwrap()
        .iter()
        .map(|r| r[0])
        .max()
        .unwrap()
        .max(1);
    // 7 gwei × 1.25 (default 2500 bps headroom) = 8.75 gwei, + tip.
    let fee_per_gas = 8_750_000_000 + tip;
    let estimate = independent_estimate(&usdc, anvil.address(1)).await;
    let gas_units = estimate + STORAGE_WRITE_ALLOWANCE_GAS + CALLDATA_VALUE_ALLOWANCE_GAS;
    let total_wei = u128::from(gas_units) * fee_per_gas;
    // total_wei × $3000.12345678 in atomic USDC, rounded up, then +10 %, rounded up.
    let base_usdc = ceil_div(
        U256::from(total_wei) * U256::from(FEED_ANSWER) * U256::from(1_000_000u64),
        U256::from(10u128.pow(18)) * U256::from(10u128.pow(8)),
    );
    let charged = ceil_div(base_usdc * U256::from(11_000u64), U256::from(10_000u64));
    eprintln!(
        "estimate {estimate} gas, quoted {gas_units} gas × {fee_per_gas} wei = {total_wei} wei = {charged} atomic USDC"
    );

    assert_eq!(quote.network, NETWORK);
    assert_eq!(quote.asset, BASE_USDC.to_checksum(None));
    assert_eq!(quote.gas_units, gas_units);
    assert_eq!(quote.fee_per_gas_wei, fee_per_gas);
    assert_eq!(quote.l1_fee_wei, 0);
    assert_eq!(quote.total_wei, total_wei);
    assert_eq!(U256::from(quote.gas_usdc_atomic), charged);
    assert_eq!(quote.native_usd, "3000.12345678");
    assert_eq!(quote.price_source, format!("chainlink:{}", feed.address()));
    assert_eq!(quote.markup_bps, MARKUP_BPS);
    assert!(quote.quoted_at.abs_diff(unix_now()) < 60);

    // A real settlement (payer balance non-zero → non-zero, payee zero → non-zero) in the very
    // next block, under the same conditions, costs no more than quoted.
    let tx = settle_through_facilitator(&facilitator, &anvil).await;
    let receipt = p.get_transaction_receipt(tx).await.unwrap().unwrap();
    let block = p
        .get_block_by_number(receipt.block_number.unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block.header.base_fee_per_gas, Some(7_000_000_000));
    let paid = u128::from(receipt.gas_used) * receipt.effective_gas_price;
    eprintln!(
        "settled: {} gas × {} wei = {paid} wei (quoted {} gas, {} wei)",
        receipt.gas_used, receipt.effective_gas_price, quote.gas_units, quote.total_wei
    );
    assert!(receipt.gas_used <= quote.gas_units);
    assert!(receipt.effective_gas_price <= quote.fee_per_gas_wei);
    assert!(paid <= quote.total_wei);
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(10_000u64)
    );
}

#[tokio::test]
async fn stale_or_invalid_feed_falls_back_to_http_and_no_price_is_refused() {
    let (anvil, _usdc, feed) = chain_with_usdc_and_feed().await;
    let server = PriceServer::start("2500.50").await.unwrap();
    let chain = chain(&anvil);
    let feed_source = chainlink(&chain, &feed);
    let http: Arc<dyn PriceSource> = Arc::new(
        HttpPriceSource::coinbase(server.url(), "ETH-USD", Duration::from_secs(2)).unwrap(),
    );
    let fallback = Arc::new(FallbackPriceSource::new(vec![
        feed_source.clone(),
        http.clone(),
    ]));

    // Fresh feed: the feed wins, the HTTP API is not asked.
    let p = fallback.price().await.unwrap();
    assert_eq!((p.usd_mantissa, p.usd_decimals), (300_012_345_678, 8));
    assert_eq!(p.source, feed_source.name());
    assert_eq!(server.requests(), 0);

    // Feed updated two hours ago (max age one hour): stale → the HTTP price.
    let two_hours_ago = unix_now() - 7200;
    feed.update_round_data(7, FEED_ANSWER, two_hours_ago, two_hours_ago)
        .await
        .unwrap();
    match feed_source.price().await {
        Err(PriceError::Stale {
            observed_at,
            max_age_seconds,
            ..
        }) => assert_eq!((observed_at, max_age_seconds), (two_hours_ago, 3600)),
        other => panic!("expected Stale, got {other:?}"),
    }
    let p = fallback.price().await.unwrap();
    assert_eq!((p.usd_mantissa, p.usd_decimals), (250_050, 2));
    assert_eq!(p.usd_string(), "2500.50");
    assert_eq!(p.source, http.name());
    assert_eq!(server.requests(), 1);

    // Fresh but non-positive answers are refused too.
    for bad in [0, -1] {
        feed.update_answer(bad).await.unwrap();
        assert!(
            matches!(feed_source.price().await, Err(PriceError::Invalid(_))),
            "answer {bad}"
        );
        assert_eq!(fallback.price().await.unwrap().source, http.name());
    }

    // HTTP API failing as well: no price, each failure listed, and the quote is refused.
    server.set_amount(None);
    match fallback.price().await {
        Err(PriceError::NoPrice(failures)) => {
            assert_eq!(failures.len(), 2);
            assert!(matches!(failures[0].1, PriceError::Invalid(_)));
            assert!(matches!(&failures[1].1, PriceError::Unavailable(m) if m.contains("500")));
        }
        other => panic!("expected NoPrice, got {other:?}"),
    }
    let cost = Arc::new(EvmCostModel::new(chain.clone(), EvmCostConfig::default()));
    let quoter = EvmQuoter::new(
        cost,
        usdc_asset(),
        fallback.clone(),
        UsdcConversion::new(MARKUP_BPS, 1),
    );
    assert!(matches!(
        quoter.quote().await,
        Err(QuoteError::Price(PriceError::NoPrice(_)))
    ));
    let cache = QuoteCache::new(Duration::from_secs(60));
    assert!(
        cache
            .refresh(&quoter, Duration::from_secs(10))
            .await
            .is_err()
    );
    match cache.get(NETWORK, &BASE_USDC.to_string()) {
        Err(QuoteUnavailable::Failed { last_error }) => {
            assert!(last_error.contains("no price"), "{last_error}")
        }
        other => panic!("expected refusal, got {other:?}"),
    }

    // A fresh feed round brings quotes back.
    feed.update_answer(FEED_ANSWER).await.unwrap();
    cache
        .refresh(&quoter, Duration::from_secs(10))
        .await
        .unwrap();
    let quote = cache.get(NETWORK, &BASE_USDC.to_string()).unwrap();
    assert_eq!(quote.native_usd, "3000.12345678");
}

#[tokio::test]
async fn http_source_timeout_is_honoured_and_falls_back() {
    let server = PriceServer::start("3000").await.unwrap();
    server.set_delay(Duration::from_secs(5));
    let http: Arc<dyn PriceSource> = Arc::new(
        HttpPriceSource::coinbase(server.url(), "ETH-USD", Duration::from_millis(300)).unwrap(),
    );
    let started = Instant::now();
    let err = http.price().await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, PriceError::Unavailable(m) if m.contains("timeout")),
        "{err}"
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(
        took < Duration::from_secs(2),
        "timeout not honoured: {took:?}"
    );
    assert_eq!(server.requests(), 1);

    let fallback = FallbackPriceSource::new(vec![
        http,
        Arc::new(FixedPriceSource::new("2999.99").unwrap()),
    ]);
    let started = Instant::now();
    let p = fallback.price().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        (p.source.as_str(), p.usd_string().as_str()),
        ("fixed", "2999.99")
    );
}

#[tokio::test]
async fn background_refresh_serves_from_memory_and_refuses_expired_quotes() {
    let (anvil, _usdc, _feed) = chain_with_usdc_and_feed().await;
    let server = PriceServer::start("3000").await.unwrap();
    let chain = chain(&anvil);
    let http = Arc::new(
        HttpPriceSource::coinbase(server.url(), "ETH-USD", Duration::from_millis(500)).unwrap(),
    );
    let cost = Arc::new(EvmCostModel::new(chain, EvmCostConfig::default()));
    let quoter: Arc<dyn Quoter> = Arc::new(EvmQuoter::new(
        cost,
        usdc_asset(),
        http,
        UsdcConversion::new(MARKUP_BPS, 1),
    ));
    let cache = Arc::new(QuoteCache::new(Duration::from_secs(3)));
    let refresher = QuoteRefresher::spawn(cache.clone(), vec![quoter], Duration::from_millis(200));
    let asset = BASE_USDC.to_checksum(None);

    let wait_for = |want: &'static str| {
        let cache = cache.clone();
        let asset = asset.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(q) = cache.get(NETWORK, &asset)
                    && q.native_usd == want
                {
                    return q;
                }
                assert!(Instant::now() < deadline, "no quote at {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let first = wait_for("3000").await;
    assert!(first.gas_usdc_atomic > 0);
    server.set_amount(Some("3500"));
    let second = wait_for("3500").await;
    // Same gas and fee (nothing mined), 3500/3000 of the price, up to rounding.
    assert_eq!(second.total_wei, first.total_wei);
    assert!(second.gas_usdc_atomic > first.gas_usdc_atomic);

    // The price API turns slow (answers after 3 s, timeout 0.5 s): requests still get the last
    // good quote at once, from memory.
    server.set_delay(Duration::from_secs(3));
    let slow_since = Instant::now();
    while slow_since.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        let q = cache.get(NETWORK, &asset).unwrap();
        assert!(t.elapsed() < Duration::from_millis(50), "get waited");
        assert_eq!(q.native_usd, "3500");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …until the quote is older than the max age (3 s): then it is refused, not served stale.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        match cache.get(NETWORK, &asset) {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "expired quote still served");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    match refusal {
        QuoteUnavailable::Expired { last_error, .. } => {
            assert!(last_error.contains("timeout"), "{last_error}")
        }
        other => panic!("expected Expired, got {other:?}"),
    }

    // get() itself never calls the price API.
    drop(refresher);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = server.requests();
    for _ in 0..100 {
        let _ = cache.get(NETWORK, &asset);
    }
    assert_eq!(server.requests(), before);
}

/// Unsigned EIP-2718 encoding of a mined EIP-1559 transaction (what `getL1Fee` takes).
async fn unsigned_encoding(anvil: &Anvil, hash: B256) -> alloy::primitives::Bytes {
    let tx = anvil
        .provider()
        .get_transaction_by_hash(hash)
        .await
        .unwrap()
        .unwrap();
    match tx.inner.into_inner() {
        TxEnvelope::Eip1559(signed) => signed.tx().encoded_for_signing().into(),
        other => panic!("settlement is not EIP-1559: {other:?}"),
    }
}

#[tokio::test]
async fn op_stack_l1_fee_is_added_and_covers_the_real_transaction() {
    let (anvil, _usdc, feed) = chain_with_usdc_and_feed().await;
    // Base-like L1 attributes: 20 gwei L1 base fee, 3 gwei blob base fee, Base's scalars.
    let attrs = L1Attributes {
        l1_base_fee_wei: 20 * GWEI,
        blob_base_fee_wei: 3 * GWEI,
        base_fee_scalar: 2269,
        blob_base_fee_scalar: 1_055_762,
    };
    let oracle = OpL1FeeOracle::install(&anvil, attrs).await.unwrap();
    let facilitator = TestFacilitator::start_with_toml(&TestFacilitator::config_toml(
        &anvil,
        DEV_PRIVATE_KEYS[1],
        None,
    ))
    .await
    .unwrap();
    let chain = chain(&anvil);
    let model = Arc::new(
        EvmCostModel::new(chain.clone(), EvmCostConfig::default())
            .with_l1_fee(OpStackL1Fee::default()),
    );

    // Ecotone by hand: (calldata gas + 68 × 16) × (16 × baseFeeScalar × l1BaseFee +
    // blobBaseFeeScalar × blobBaseFee) / (16 × 10^6), then +25 % headroom rounded up.
    let data = l1_fee_data(8453, BASE_USDC);
    let calldata_gas: u128 = data.iter().map(|b| if *b == 0 { 4 } else { 16 }).sum();
    let scaled = 16 * 2269 * 20 * GWEI + 1_055_762 * 3 * GWEI;
    let raw = (calldata_gas + 68 * 16) * scaled / 16_000_000;
    assert_eq!(U256::from(raw), oracle.l1_fee(data.clone()).await.unwrap());
    let with_headroom = (raw * 12_500).div_ceil(10_000);
    let cost = model.cost(&usdc_asset()).await.unwrap();
    assert_eq!(cost.l1_fee_wei, with_headroom);
    assert_eq!(
        cost.total_wei,
        u128::from(cost.gas_units) * cost.fee_per_gas_wei + with_headroom
    );

    // The quote carries it into USDC.
    let quoter = EvmQuoter::new(
        model.clone(),
        usdc_asset(),
        chainlink(&chain, &feed),
        UsdcConversion::new(0, 0),
    );
    let quote = quoter.quote().await.unwrap();
    assert_eq!(quote.l1_fee_wei, with_headroom);
    assert_eq!(quote.total_wei, cost.total_wei);

    // The real settlement's L1 fee is below the quoted one (worst-case bytes), under Ecotone
    // and under Fjord (FastLZ size: the quoted bytes do not compress).
    let tx = settle_through_facilitator(&facilitator, &anvil).await;
    let real = unsigned_encoding(&anvil, tx).await;
    let real_ecotone = oracle.l1_fee(real.clone()).await.unwrap();
    eprintln!("L1 fee Ecotone: settlement {real_ecotone} wei, quoted {raw} wei before headroom");
    assert!(real_ecotone <= U256::from(raw));
    oracle.activate_fjord().await.unwrap();
    let fjord_quoted = model.l1_fee_wei(BASE_USDC).await.unwrap();
    let real_fjord = oracle.l1_fee(real).await.unwrap();
    let fjord_raw = oracle.l1_fee(data).await.unwrap();
    eprintln!("L1 fee Fjord: settlement {real_fjord} wei, quoted {fjord_raw} wei before headroom");
    assert!(real_fjord <= fjord_raw);
    assert_eq!(
        U256::from(fjord_quoted),
        ceil_div(fjord_raw * U256::from(12_500u64), U256::from(10_000u64))
    );
}

#[tokio::test]
async fn gas_measurement_is_cached_per_asset_until_its_refresh_time() {
    let (anvil, _usdc, _feed) = chain_with_usdc_and_feed().await;
    let chain = chain(&anvil);
    let cached = EvmCostModel::new(chain.clone(), EvmCostConfig::default());
    let uncached = EvmCostModel::new(
        chain,
        EvmCostConfig {
            gas_refresh: Duration::ZERO,
            ..EvmCostConfig::default()
        },
    );
    let asset = usdc_asset();
    let first = cached.gas_units(&asset).await.unwrap();
    assert_eq!(uncached.gas_units(&asset).await.unwrap(), first);

    // Remove the token's code: a new estimate is a plain call to an account without code.
    anvil
        .provider()
        .raw_request::<_, ()>(
            "anvil_setCode".into(),
            (BASE_USDC, alloy::primitives::Bytes::new()),
        )
        .await
        .unwrap();
    assert_eq!(
        cached.gas_units(&asset).await.unwrap(),
        first,
        "remembered for gas_refresh (600 s)"
    );
    let remeasured = uncached.gas_units(&asset).await.unwrap();
    assert!(remeasured < first - 40_000, "{remeasured} vs {first}");
    // An explicit measurement always asks the node.
    assert_eq!(cached.measure_gas(&asset).await.unwrap(), remeasured);
    assert_eq!(cached.gas_units(&asset).await.unwrap(), remeasured);
}

#[tokio::test]
async fn http_source_reads_the_decimal_answer_and_refuses_other_currencies() {
    let server = PriceServer::start("3123.456789").await.unwrap();
    let timeout = Duration::from_secs(2);
    let usd = HttpPriceSource::coinbase(server.url(), "ETH-USD", timeout).unwrap();
    let p = usd.price().await.unwrap();
    assert_eq!((p.usd_mantissa, p.usd_decimals), (3_123_456_789, 6));
    assert!(p.observed_at.abs_diff(unix_now()) < 60);
    let eur = HttpPriceSource::coinbase(server.url(), "ETH-EUR", timeout).unwrap();
    assert!(matches!(eur.price().await, Err(PriceError::Invalid(m)) if m.contains("EUR")));
    server.set_amount(Some("1e3"));
    assert!(matches!(usd.price().await, Err(PriceError::Invalid(_))));
    // A generic JSON pointer source on the same answer.
    server.set_amount(Some("42.5"));
    let url = format!("{}/v2/prices/ETH-USD/spot", server.url());
    let generic = HttpPriceSource::new(&url, "/data/amount", timeout).unwrap();
    assert_eq!(generic.price().await.unwrap().usd_string(), "42.5");
    let missing = HttpPriceSource::new(&url, "/data/price", timeout).unwrap();
    assert!(matches!(missing.price().await, Err(PriceError::Invalid(_))));
}
