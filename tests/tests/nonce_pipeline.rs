//! The EVM settle pipeline's sender nonces (crates/settle/src/nonces, evm/gaps.rs), on anvil with
//! Circle's FiatTokenV2_2 and a private Redis:
//! - one signer settles many payments within one block (nonces from the shared counter, no lock
//!   held across RPC calls), and two replicas sharing that signer never take one nonce twice
//!   (x402-conformance F3: one success per payment);
//! - a nonce taken and never sent (a replica that died between taking it and recording) is
//!   filled, and the settlements queued behind it land;
//! - a nonce used by a transaction outside the facilitator makes the next settlement re-sign at
//!   a new nonce; it lands once;
//! - a gap fill that fees have outgrown is sent again with higher fees, so the settlements
//!   queued behind it land (the wallet does not wedge).

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use serde_json::Value;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

/// Short deadlines; gaps are filled after 1 s.
const FAST_SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 10
poll_interval_ms = 50
rpc_timeout_seconds = 2
redis_timeout_ms = 500
lease_seconds = 2
resend_after_seconds = 2
replace_after_seconds = 600
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
nonce_gap_fill_seconds = 1
"#;

async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::spawn().await.expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 100_000_000u64)
        .await
        .expect("mint");
    (anvil, usdc)
}

/// `n` different payments of [`AMOUNT`] from account 2 to account 3 (v2 bodies).
fn payments(anvil: &Anvil, n: usize) -> Vec<Value> {
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    (0..n)
        .map(|_| {
            let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
            v2_evm_payment_json(&req.v2_json(), &sig, &auth)
        })
        .collect()
}

async fn start(anvil: &Anvil, redis: &RedisServer) -> TestFacilitator {
    start_with(anvil, redis, FAST_SETTLE).await
}

/// A facilitator signing with account 1, with `settle` as its `[settle]` table.
async fn start_with(anvil: &Anvil, redis: &RedisServer, settle: &str) -> TestFacilitator {
    let toml = TestFacilitator::config_toml_custom(
        anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
        settle,
    );
    TestFacilitator::start_with_toml(&toml).await.unwrap()
}

/// POSTs `/settle` until the answer is no longer `settlement_pending` (at most `within`).
async fn settle_until_done(fac: &TestFacilitator, body: &Value, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (_, answer) = fac.post("/settle", body).await.unwrap();
        if answer["errorReason"] != "settlement_pending" || start.elapsed() > within {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the metric line starting with `name` (with its labels) in `/metrics`.
async fn metric(fac: &TestFacilitator, name: &str) -> f64 {
    let text = fac.get("/metrics").await.unwrap().1;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis nonce counter key of the facilitator signer (account 1) on the anvil chain.
fn counter_key(anvil: &Anvil) -> String {
    x402_settle::replay::keys::evm_nonce_keys("x402", anvil.chain_id(), anvil.address(1)).next
}

/// A nonce a dead replica took from the shared counter and never sent: the counter is raised
/// by one by hand. Returns the counter after it.
async fn leak_nonce(anvil: &Anvil, redis: &RedisServer) -> u64 {
    let mut conn = redis_conn(redis).await;
    redis::cmd("INCR")
        .arg(counter_key(anvil))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// One signer, blocks every 2 s, 40 payments sent at once through two replicas sharing the
/// signer key and Redis: every payment succeeds once, the signer uses 40 consecutive nonces, and
/// the settlements share blocks (they were signed in parallel, not one per lock round).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_one_signer_two_replicas_sign_in_parallel_and_each_payment_lands_once() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let a = start(&anvil, &redis).await;
    let b = start(&anvil, &redis).await;
    let provider = anvil.provider();
    let _: () = provider
        .raw_request("evm_setIntervalMining".into(), (2u64,))
        .await
        .unwrap();
    let first_block = provider.get_block_number().await.unwrap();
    let bodies = payments(&anvil, 40);
    let replicas = [&a, &b];
    let answers = futures::future::join_all(
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| settle_until_done(replicas[i % 2], body, Duration::from_secs(30))),
    )
    .await;
    let mut transactions = std::collections::HashSet::new();
    for answer in &answers {
        assert_eq!(answer["success"], true, "{answer}");
        transactions.insert(answer["transaction"].as_str().unwrap().to_string());
    }
    assert_eq!(transactions.len(), 40, "one transaction per payment");
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 40)
    );
    assert_eq!(
        provider
            .get_transaction_count(anvil.address(1))
            .await
            .unwrap(),
        40,
        "40 nonces, no gap and no second transaction"
    );
    let mut blocks = std::collections::HashSet::new();
    for tx in &transactions {
        let receipt = provider
            .get_transaction_receipt(tx.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        blocks.insert(receipt.block_number.unwrap());
    }
    let last_block = provider.get_block_number().await.unwrap();
    assert!(
        blocks.len() <= 6,
        "40 settlements of one signer spread over {} blocks ({first_block}..{last_block}): \
         signing is serialised",
        blocks.len()
    );
    // Retries answer duplicate_settlement with the same transaction (one success ever).
    let (_, again) = a.post("/settle", &bodies[0]).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], answers[0]["transaction"], "{again}");
}

/// A replica that took a nonce and died before recording leaves a hole in the signer's nonce
/// sequence (simulated by raising the shared counter in Redis): the next settlement is held back
/// by the node until gap repair fills the hole with a 0-value transfer; then it lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_nonce_is_filled_and_the_settlement_queued_behind_it_lands() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let fac = start(&anvil, &redis).await;
    let bodies = payments(&anvil, 2);
    let first = settle_until_done(&fac, &bodies[0], Duration::from_secs(20)).await;
    assert_eq!(first["success"], true, "{first}");

    // The dead replica's nonce: taken from the counter, never sent.
    let taken = leak_nonce(&anvil, &redis).await;
    assert_eq!(taken, 2, "the counter was at 1 after one settlement");

    let start = Instant::now();
    let second = settle_until_done(&fac, &bodies[1], Duration::from_secs(30)).await;
    assert_eq!(second["success"], true, "{second}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 2)
    );
    let provider = anvil.provider();
    assert_eq!(
        provider
            .get_transaction_count(anvil.address(1))
            .await
            .unwrap(),
        3,
        "settlement, fill, settlement"
    );
    let receipt = provider
        .get_transaction_receipt(second["transaction"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let tx = provider
        .get_transaction_by_hash(receipt.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alloy::consensus::Transaction::nonce(&tx), 2);
    assert_eq!(metric(&fac, "x402_settle_nonce_gap_fills_total").await, 1.0);
}

/// A leaked nonce is filled while no block includes the fill (mining held back: a node that
/// keeps an underpriced transaction in its pool behaves the same; anvil would drop it at the
/// next block, so blocks are held instead of fees raised). The mined nonce does not move past
/// the fill for the fill delay, so gap repair sends the fill again at the same nonce with higher
/// fees; the node takes the replacement. Then blocks resume: the fill and the settlement behind
/// it land, the payment succeeds once, and the raise is not counted as a second fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_gap_fill_is_raised_and_the_settlement_behind_it_lands() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let settle = FAST_SETTLE.replace(
        "receipt_timeout_seconds = 10",
        "receipt_timeout_seconds = 1",
    );
    let fac = start_with(&anvil, &redis, &settle).await;
    let bodies = payments(&anvil, 2);
    let first = settle_until_done(&fac, &bodies[0], Duration::from_secs(20)).await;
    assert_eq!(first["success"], true, "{first}");

    let provider = anvil.provider();
    anvil.set_automine(false).await.unwrap();
    let taken = leak_nonce(&anvil, &redis).await;
    assert_eq!(taken, 2, "nonce 1 leaked");
    let (_, pending) = fac.post("/settle", &bodies[1]).await.unwrap();
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");

    // The fill of nonce 1 reaches the pool, then is replaced by one offering more.
    let signer = anvil.address(1);
    let start = Instant::now();
    let first_fill = loop {
        if let Some(fee) = pooled_max_fee(&anvil, signer, 1).await {
            break fee;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no gap fill sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(metric(&fac, "x402_settle_nonce_gap_fills_total").await, 1.0);
    let start = Instant::now();
    loop {
        let fee = pooled_max_fee(&anvil, signer, 1).await.unwrap_or(0);
        if fee > first_fill {
            assert!(fee >= first_fill + first_fill / 10, "{fee} vs {first_fill}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the stuck fill was never raised"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    anvil.set_automine(true).await.unwrap();
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let second = settle_until_done(&fac, &bodies[1], Duration::from_secs(30)).await;
    assert_eq!(second["success"], true, "{second}");
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 2)
    );
    assert_eq!(
        provider.get_transaction_count(signer).await.unwrap(),
        3,
        "settlement, fill, settlement"
    );
    let (_, again) = fac.post("/settle", &bodies[1]).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(metric(&fac, "x402_settle_nonce_gap_fills_total").await, 1.0);
}

/// `maxFeePerGas` (wei) of the transaction of `sender` at `nonce` in anvil's pool
/// (`txpool_content`), if there is one.
async fn pooled_max_fee(
    anvil: &Anvil,
    sender: alloy::primitives::Address,
    nonce: u64,
) -> Option<u128> {
    let content: Value = anvil
        .provider()
        .raw_request("txpool_content".into(), ())
        .await
        .unwrap();
    let sender = format!("{sender:#x}");
    ["pending", "queued"].iter().find_map(|part| {
        let by_sender = content[part].as_object()?;
        let txs = by_sender
            .iter()
            .find(|(k, _)| k.to_lowercase() == sender)?
            .1;
        let fee = txs[nonce.to_string()]["maxFeePerGas"].as_str()?;
        u128::from_str_radix(fee.trim_start_matches("0x"), 16).ok()
    })
}

/// The signer key is used outside the facilitator (its next nonce taken by a plain transfer):
/// the next settlement's transaction is refused (nonce too low), the counter is raised to the
/// chain's, and the payment is re-signed at a new nonce and lands once; the first transaction
/// never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_used_outside_the_facilitator_is_re_signed_at_a_new_nonce() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let fac = start(&anvil, &redis).await;
    let bodies = payments(&anvil, 2);
    let first = settle_until_done(&fac, &bodies[0], Duration::from_secs(20)).await;
    assert_eq!(first["success"], true, "{first}");

    // An operator sends from the signer key by hand: nonce 1 is used on chain.
    let wallet = anvil.wallet_provider(anvil.signer(1));
    let tx = TransactionRequest::default()
        .with_to(anvil.address(5))
        .with_value(U256::from(1u64));
    wallet
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    let second = settle_until_done(&fac, &bodies[1], Duration::from_secs(40)).await;
    assert_eq!(second["success"], true, "{second}");
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 2)
    );
    let provider = anvil.provider();
    let landed = provider
        .get_transaction_by_hash(second["transaction"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alloy::consensus::Transaction::nonce(&landed), 2);
    assert_eq!(
        provider
            .get_transaction_count(anvil.address(1))
            .await
            .unwrap(),
        3
    );
    let mut conn = redis_conn(&redis).await;
    let next: u64 = redis::cmd("GET")
        .arg(counter_key(&anvil))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next, 3, "the counter follows the chain");
}
