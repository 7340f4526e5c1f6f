//! `[[evm]] preconfirmations` (flashblock pre-confirmations, crates/settle/src/evm/preconfirm.rs)
//! against a real anvil mining a block every 3 s, reached through
//! [`FlashblocksProxy`](x402_tests::flashblocks_proxy), the harness's mock of Base's
//! flashblocks RPC (a pre-confirmation receipt ~200 ms after a transaction's arrival, built by
//! replaying anvil's pending block).
//!
//! - With the option on, `/settle` answers success before the block (below the block time, while
//!   anvil has no receipt yet), marked as pre-confirmed in the status API and counted in
//!   `x402_settle_preconfirmed_total`; the same transaction then lands in the block.
//! - With it off, through the same proxy, `/settle` answers only once the block holds it.
//! - A pre-confirmed transaction the sequencer drops (`anvil_dropTransaction` after the success
//!   was answered) is sent again from its record (in memory, and in Redis) by nonce repair and
//!   lands.
//! - A payment whose transaction reverts in the block being built (its payer's funds moved by a
//!   transaction ordered before it) is pre-confirmed as reverted and never answered success.
//!
//! The p50 settle latencies with and without the option are printed, not asserted beyond
//! "below the block time".

use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use serde_json::Value;
use x402_tests::Anvil;
use x402_tests::eip3009::v2_evm_payment_json;
use x402_tests::facilitator::EvmFixture;
use x402_tests::flashblocks_proxy::FlashblocksProxy;

/// Anvil's block time in these tests.
const BLOCK_TIME: Duration = Duration::from_secs(3);

/// Payments measured per mode.
const PAYMENTS: usize = 5;

/// anvil (automine while USDC is deployed, then a block every [`BLOCK_TIME`]), the flashblocks
/// proxy in front of it, and the facilitator on the proxy (`[[evm]] rpc_url` = the proxy) with
/// `preconfirmations` on or off.
async fn start(preconfirmations: bool) -> (EvmFixture, FlashblocksProxy) {
    start_with_store(preconfirmations, None).await
}

/// [`start`] with the replay store in Redis at `redis_url` (`None`: in memory).
async fn start_with_store(
    preconfirmations: bool,
    redis_url: Option<&str>,
) -> (EvmFixture, FlashblocksProxy) {
    let anvil = Anvil::spawn().await.unwrap();
    let proxy = FlashblocksProxy::start(anvil.rpc_url()).await.unwrap();
    let (anvil_url, proxy_url) = (anvil.rpc_url().to_string(), proxy.url().to_string());
    let fx = EvmFixture::start_edited(anvil, redis_url, 15, |toml| {
        let option = if preconfirmations {
            "\npreconfirmations = true\npreconfirmation_poll_ms = 200"
        } else {
            ""
        };
        toml.replace(
            &format!("rpc_url = \"{anvil_url}\""),
            &format!("rpc_url = \"{proxy_url}\"{option}"),
        )
    })
    .await
    .unwrap();
    let _: () = fx
        .anvil
        .provider()
        .raw_request("evm_setIntervalMining".into(), (BLOCK_TIME.as_secs(),))
        .await
        .unwrap();
    (fx, proxy)
}

/// Waits until anvil mines its next block (so that a settle started now has a whole block
/// time before the next one).
async fn next_block(fx: &EvmFixture) -> u64 {
    let provider = fx.anvil.provider();
    let first = provider.get_block_number().await.unwrap();
    let start = Instant::now();
    loop {
        let now = provider.get_block_number().await.unwrap();
        if now > first {
            return now;
        }
        assert!(start.elapsed() < BLOCK_TIME * 3, "anvil mines no block");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether anvil has a block receipt of `tx`, and its status.
async fn mined(fx: &EvmFixture, tx: &str) -> Option<bool> {
    let hash: B256 = tx.parse().unwrap();
    fx.anvil
        .provider()
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .map(|r| r.status())
}

/// Waits (at most two block times) until `tx` is in a block; its status.
async fn until_mined(fx: &EvmFixture, tx: &str) -> bool {
    until_mined_within(fx, tx, BLOCK_TIME * 2).await
}

/// Waits (at most `within`) until `tx` is in a block; its status.
async fn until_mined_within(fx: &EvmFixture, tx: &str, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Some(status) = mined(fx, tx).await {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "{tx} is not mined {within:?} later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh `/settle` body for `amount` atomic USDC from the fixture's payer.
fn payment(fx: &EvmFixture, amount: u64) -> Value {
    let req = fx.requirements(amount);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    v2_evm_payment_json(&req.v2_json(), &sig, &auth)
}

/// The value of the counter `x402_settle_preconfirmed_total{network="eip155:8453"}` (0 when
/// it is not exported).
async fn preconfirmed_total(fx: &EvmFixture) -> u64 {
    metric(
        fx,
        "x402_settle_preconfirmed_total{network=\"eip155:8453\"}",
    )
    .await
}

/// The value of the metric line starting with `series` (0 when it is not exported).
async fn metric(fx: &EvmFixture, series: &str) -> u64 {
    let (_, metrics) = fx.facilitator.get("/metrics").await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

fn p50(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(latencies: &[Duration]) -> Vec<u128> {
    latencies.iter().map(Duration::as_millis).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_preconfirmations_settle_answers_before_the_block_and_the_transaction_lands() {
    let (fx, proxy) = start(true).await;
    assert_eq!(preconfirmed_total(&fx).await, 0);
    let mut latencies = Vec::new();
    for i in 0..PAYMENTS {
        let body = payment(&fx, 1_000 + i as u64);
        let block = next_block(&fx).await;
        let started = Instant::now();
        let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
        let latency = started.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["success"], true, "{answer}");
        let tx = answer["transaction"].as_str().unwrap().to_string();
        // Answered before any block holds it: from the pre-confirmation.
        assert_eq!(
            mined(&fx, &tx).await,
            None,
            "{tx} answered after {latency:?}: already in a block (block {block} + 1 came first)"
        );
        assert!(
            latency < BLOCK_TIME,
            "pre-confirmed settle took {latency:?}, not below the {BLOCK_TIME:?} block time"
        );
        let (_, view) = fx
            .facilitator
            .get(&format!("/settlements/{tx}"))
            .await
            .unwrap();
        let view: Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["state"], "settled", "{view}");
        assert_eq!(view["preconfirmed"], true, "{view}");
        // The same transaction then lands in a block, successfully.
        assert!(until_mined(&fx, &tx).await, "{tx} reverted in its block");
        latencies.push(latency);
    }
    let paid: u64 = (0..PAYMENTS as u64).map(|i| 1_000 + i).sum();
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(paid));
    assert_eq!(preconfirmed_total(&fx).await, PAYMENTS as u64);
    assert!(proxy.served().0 >= PAYMENTS as u64, "{:?}", proxy.served());
    println!(
        "preconfirmations on: {PAYMENTS} settles, p50 {} ms (each {:?} ms), block time {} ms",
        p50(&latencies).as_millis(),
        ms(&latencies),
        BLOCK_TIME.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preconfirmations_the_same_settle_waits_for_the_block() {
    let (fx, proxy) = start(false).await;
    let mut latencies = Vec::new();
    for i in 0..PAYMENTS {
        let body = payment(&fx, 1_000 + i as u64);
        next_block(&fx).await;
        let started = Instant::now();
        let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
        let latency = started.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["success"], true, "{answer}");
        let tx = answer["transaction"].as_str().unwrap().to_string();
        // Answered only once the block holds it (the proxy serves pre-confirmations all along).
        assert_eq!(mined(&fx, &tx).await, Some(true), "{tx} not mined yet");
        let (_, view) = fx
            .facilitator
            .get(&format!("/settlements/{tx}"))
            .await
            .unwrap();
        let view: Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["state"], "settled", "{view}");
        assert!(view.get("preconfirmed").is_none(), "{view}");
        latencies.push(latency);
    }
    assert_eq!(preconfirmed_total(&fx).await, 0);
    println!(
        "preconfirmations off: {PAYMENTS} settles, p50 {} ms (each {:?} ms), block time {} ms; pre-confirmation receipts served (ok, reverted): {:?}",
        p50(&latencies).as_millis(),
        ms(&latencies),
        BLOCK_TIME.as_millis(),
        proxy.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_pre_confirmed_as_reverted_is_never_answered_success() {
    let (fx, proxy) = start(true).await;
    // Pre-confirmations only after 1 s: time for the payer's transfer below to be in the pool.
    proxy.set_delay(Duration::from_secs(1));
    let amount = 7_000u64;
    let body = payment(&fx, amount);
    next_block(&fx).await;
    let started = Instant::now();
    let settle = {
        let url = fx.facilitator.url().to_string();
        let body = body.clone();
        tokio::spawn(async move {
            x402_tests::facilitator::post_json(&url, "/settle", &body)
                .await
                .unwrap()
        })
    };
    // As soon as the settlement transaction is in the pool, the payer moves all its USDC away
    // with a far higher tip: anvil orders it first in the block being built, and the
    // settlement reverts there.
    let tx = loop {
        if let Some(tx) = proxy.sent().first() {
            break tx.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(2), "nothing sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let payer = fx.anvil.wallet_provider(fx.payer.clone());
    let balance = fx.usdc.balance_of(fx.payer.address()).await.unwrap();
    let _drain = fx
        .usdc
        .contract_with(payer)
        .transfer(fx.anvil.address(4), balance)
        // No estimate: at the pending state the settlement has moved part of the balance.
        .gas(100_000)
        .max_fee_per_gas(200_000_000_000)
        .max_priority_fee_per_gas(100_000_000_000)
        .send()
        .await
        .unwrap();
    let (status, answer) = settle.await.unwrap();
    let latency = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["transaction"], tx.as_str(), "{answer}");
    // The precondition: the settlement did revert in its block.
    assert!(
        !until_mined(&fx, &tx).await,
        "the settlement did not revert: the payer's transfer was not ordered first"
    );
    let (ok, reverted) = proxy.served();
    assert!(
        reverted >= 1,
        "the proxy served no reverted pre-confirmation ({ok} successful)"
    );
    assert_eq!(answer["success"], false, "{answer}");
    assert_ne!(answer["errorReason"], "settlement_pending", "{answer}");
    // Asked at `preconfirmation_poll_ms` (200), not at the engine's 50 ms look at the chain.
    assert!(
        reverted <= latency.as_millis() as u64 / 150 + 2,
        "{reverted} pre-confirmations asked for in {latency:?}"
    );
    assert_eq!(preconfirmed_total(&fx).await, 0);
    assert_eq!(fx.payee_balance().await.unwrap(), U256::ZERO);
    println!(
        "reverted pre-confirmation: answered {} after {} ms (at the block), pre-confirmations served: {ok} ok, {reverted} reverted",
        answer["errorReason"],
        latency.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_confirmed_transaction_the_sequencer_drops_is_sent_again_and_lands() {
    dropped_pre_confirmation_lands(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pre_confirmation_is_sent_again_from_its_redis_record() {
    let redis = x402_tests::RedisServer::spawn().await.unwrap();
    dropped_pre_confirmation_lands(Some(&redis.url())).await;
}

/// A pre-confirmed settlement (records in Redis at `redis_url`, or in memory) whose
/// transaction is then dropped from the pool is sent again by nonce repair and lands.
async fn dropped_pre_confirmation_lands(redis_url: Option<&str>) {
    let (fx, _proxy) = start_with_store(true, redis_url).await;
    let amount = 9_000u64;
    let body = payment(&fx, amount);
    next_block(&fx).await;
    let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    let tx = answer["transaction"].as_str().unwrap().to_string();
    // The sequencer loses it: gone from the pool before any block holds it.
    let provider = fx.anvil.provider();
    let _: Value = provider
        .raw_request("anvil_dropTransaction".into(), (tx.clone(),))
        .await
        .unwrap();
    assert_eq!(
        mined(&fx, &tx).await,
        None,
        "{tx} was mined before the drop"
    );
    let hash: B256 = tx.parse().unwrap();
    assert!(
        provider
            .get_transaction_by_hash(hash)
            .await
            .unwrap()
            .is_none(),
        "{tx} is still in the pool"
    );
    let dropped = Instant::now();
    // Nonce repair finds the signer stuck at its nonce, and the record of the pre-confirmed
    // settlement gives the same bytes to send again: the same transaction lands.
    assert!(
        until_mined_within(&fx, &tx, Duration::from_secs(20)).await,
        "{tx} reverted"
    );
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(amount));
    assert!(metric(&fx, "x402_settle_resends_total").await >= 1);
    assert_eq!(metric(&fx, "x402_settle_nonce_gap_fills_total").await, 0);
    println!(
        "dropped pre-confirmation: {tx} sent again and mined {} ms after the drop",
        dropped.elapsed().as_millis()
    );
}
