//! In-flight debits on anvil with Circle's FiatTokenV2_2 and a private Redis (issue 18): a payer
//! holding 1 USDC signs 10 EIP-3009 payments of 0.4 USDC (distinct nonces), all settled at once
//! on a chain with 2 s blocks. Each passes `/verify` and the settlement-time simulation (both
//! read the latest block, where the payer still holds 1 USDC); without in-flight debits all 10
//! were broadcast and 8 reverted at the facilitator's expense. Now 2 settle, 8 are refused
//! before broadcast with `invalid_exact_evm_insufficient_balance`, the facilitator sends 2
//! transactions and none reverts, with one facilitator or two sharing Redis, and every debit is
//! released once its record resolves.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use serde_json::Value;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const HELD: u64 = 1_000_000; // 1 USDC
const AMOUNT: u64 = 400_000; // 0.4 USDC

const SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 20
poll_interval_ms = 50
rpc_timeout_seconds = 2
redis_timeout_ms = 500
reconcile_interval_seconds = 1
"#;

/// Anvil mining a block every 2 s, USDC, the payer (account 2) holding [`HELD`].
async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::spawn().await.expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), HELD).await.expect("mint");
    let _: () = anvil
        .provider()
        .raw_request("evm_setIntervalMining".into(), (2u64,))
        .await
        .unwrap();
    (anvil, usdc)
}

/// A facilitator signing with account `signer`.
async fn start(anvil: &Anvil, redis: &RedisServer, signer: usize) -> TestFacilitator {
    let toml = TestFacilitator::config_toml_custom(
        anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[signer],
        Some(&redis.url()),
        SETTLE,
    );
    TestFacilitator::start_with_toml(&toml).await.unwrap()
}

/// `n` payments of [`AMOUNT`] from account 2 to account 3, distinct nonces (v2 bodies).
fn payments(anvil: &Anvil, n: usize) -> Vec<Value> {
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    (0..n)
        .map(|_| {
            let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
            v2_evm_payment_json(&req.v2_json(), &sig, &auth)
        })
        .collect()
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

/// Every in-flight debit field left in Redis (`x402:debits:*` hashes), by hash.
async fn debits_left(redis: &RedisServer) -> Vec<(String, u64)> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:debits:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut left = Vec::new();
    for k in keys.into_iter().filter(|k| !k.ends_with(":seq")) {
        let n: u64 = redis::cmd("HLEN")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        if n > 0 {
            left.push((k, n));
        }
    }
    left
}

/// 10 payments at once through `replicas` (signers `signers`): 2 settle, 8 refused before
/// broadcast, 2 transactions sent and none reverted, debits released.
async fn overdraw(replicas: usize) {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let signers: Vec<usize> = (0..replicas).map(|i| 1 + i * 4).collect();
    let mut facs = Vec::new();
    for s in &signers {
        facs.push(start(&anvil, &redis, *s).await);
    }
    let bodies = payments(&anvil, 10);
    let started = Instant::now();
    let answers =
        futures::future::join_all(bodies.iter().enumerate().map(|(i, body)| {
            settle_until_done(&facs[i % replicas], body, Duration::from_secs(30))
        }))
        .await;
    let elapsed = started.elapsed();
    let settled: Vec<&Value> = answers.iter().filter(|a| a["success"] == true).collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a["errorReason"] == "invalid_exact_evm_insufficient_balance")
        .collect();
    println!(
        "{replicas} replica(s): {} settled, {} refused before broadcast, in {elapsed:?}",
        settled.len(),
        refused.len()
    );
    assert_eq!(settled.len(), 2, "{answers:#?}");
    assert_eq!(refused.len(), 8, "{answers:#?}");
    for a in &refused {
        assert_eq!(a["transaction"], "", "refused before broadcast: {a}");
    }
    // What the facilitator's signers sent: exactly the 2 settlements, none reverted.
    let provider = anvil.provider();
    let mut sent = 0;
    for s in &signers {
        sent += provider
            .get_transaction_count(anvil.address(*s))
            .await
            .unwrap();
    }
    assert_eq!(sent, 2, "the signers sent only the settlements that pay");
    let mut reverted = 0;
    for a in &settled {
        let receipt = provider
            .get_transaction_receipt(a["transaction"].as_str().unwrap().parse().unwrap())
            .await
            .unwrap()
            .expect("a receipt");
        reverted += usize::from(!receipt.status());
    }
    println!("{replicas} replica(s): {sent} transactions sent, {reverted} reverted");
    assert_eq!(reverted, 0);
    assert_eq!(
        usdc.balance_of(anvil.address(2)).await.unwrap(),
        U256::from(HELD - 2 * AMOUNT)
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(2 * AMOUNT)
    );
    assert_eq!(debits_left(&redis).await, vec![], "every debit released");
    // A refused payment is not held: once the payer can cover it, it settles.
    usdc.mint(anvil.address(2), AMOUNT).await.unwrap();
    let again_body = answers
        .iter()
        .position(|a| a["errorReason"] == "invalid_exact_evm_insufficient_balance")
        .unwrap();
    let again = settle_until_done(&facs[0], &bodies[again_body], Duration::from_secs(30)).await;
    assert_eq!(again["success"], true, "{again}");
    assert_eq!(debits_left(&redis).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payer_cannot_make_the_facilitator_send_transactions_that_revert() {
    overdraw(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nor_across_two_replicas_sharing_redis() {
    overdraw(2).await;
}
