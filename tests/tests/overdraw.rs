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
    assert_eq!(redis.debits_left().await, vec![], "every debit released");
    // A refused payment is not held: once the payer can cover it, it settles.
    usdc.mint(anvil.address(2), AMOUNT).await.unwrap();
    let again_body = answers
        .iter()
        .position(|a| a["errorReason"] == "invalid_exact_evm_insufficient_balance")
        .unwrap();
    let again = settle_until_done(&facs[0], &bodies[again_body], Duration::from_secs(30)).await;
    assert_eq!(again["success"], true, "{again}");
    assert_eq!(redis.debits_left().await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payer_cannot_make_the_facilitator_send_transactions_that_revert() {
    overdraw(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nor_across_two_replicas_sharing_redis() {
    overdraw(2).await;
}

/// The value of the metric line starting with `prefix` (name and the start of its labels).
async fn metric(fac: &TestFacilitator, prefix: &str) -> f64 {
    let text = fac.get("/metrics").await.unwrap().1;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A payer emptied between the checks and the block (it moves its USDC with a higher tip while
/// the settlement waits in the pool) makes one settlement revert; with `revert_limit = 1` its
/// next payment, funded again, is refused before broadcast, and the wasted gas is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payer_emptied_between_verify_and_settle_reverts_once_then_is_refused() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), HELD).await.expect("mint");
    let redis = RedisServer::spawn().await.unwrap();
    let toml = TestFacilitator::config_toml_custom(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
        &format!(
            "{SETTLE}revert_limit = 1\nrevert_window_seconds = 600\nrevert_block_seconds = 600\n"
        ),
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let bodies = payments(&anvil, 2);
    let (_, verify) = fac.post("/verify", &bodies[0]).await.unwrap();
    assert_eq!(verify["isValid"], true, "{verify}");

    anvil.set_automine(false).await.unwrap();
    let provider = anvil.provider();
    let signer = anvil.address(1);
    let settle = fac.post("/settle", &bodies[0]);
    let front_run = async {
        // The settlement is in the pool: the payer moves everything away with a higher tip.
        let deadline = Instant::now() + Duration::from_secs(10);
        while provider
            .get_transaction_count(signer)
            .pending()
            .await
            .unwrap()
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "the settlement never reached the pool"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let payer = usdc.contract_with(anvil.wallet_provider(anvil.signer(2)));
        let _pending = payer
            .transfer(anvil.address(4), U256::from(HELD))
            .gas(100_000) // no estimate: against the pending state it would fail
            .max_priority_fee_per_gas(100_000_000_000)
            .max_fee_per_gas(1_000_000_000_000)
            .send()
            .await
            .unwrap();
        let _: Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    };
    let (settled, ()) = tokio::join!(settle, front_run);
    let (_, answer) = settled.unwrap();
    anvil.set_automine(true).await.unwrap();
    let answer = if answer["errorReason"] == "settlement_pending" {
        settle_until_done(&fac, &bodies[0], Duration::from_secs(20)).await
    } else {
        answer
    };
    assert_eq!(
        answer["errorReason"], "invalid_exact_evm_transaction_failed",
        "{answer}"
    );
    let tx = answer["transaction"].as_str().unwrap();
    let receipt = provider
        .get_transaction_receipt(tx.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!receipt.status(), "the settlement reverted");
    let wasted = u128::from(receipt.gas_used) * receipt.effective_gas_price;

    // Funded again, the payer's next payment is refused before broadcast.
    usdc.mint(anvil.address(2), HELD).await.unwrap();
    let (_, refused) = fac.post("/settle", &bodies[1]).await.unwrap();
    assert_eq!(
        refused["errorReason"], "invalid_exact_evm_transaction_simulation_failed",
        "{refused}"
    );
    assert_eq!(refused["transaction"], "", "{refused}");
    assert_eq!(
        provider.get_transaction_count(signer).await.unwrap(),
        1,
        "nothing sent for the blocked payer"
    );
    let network = format!("eip155:{}", anvil.chain_id());
    let reverted = metric(
        &fac,
        &format!(
            "x402_settle_reverted_total{{network=\"{network}\",reason=\"invalid_exact_evm_transaction_failed\"}}"
        ),
    )
    .await;
    let gas = metric(
        &fac,
        &format!("x402_settle_gas_wasted_wei_total{{network=\"{network}\"}}"),
    )
    .await;
    let blocked = metric(
        &fac,
        &format!("x402_settle_payers_blocked_total{{network=\"{network}\"}}"),
    )
    .await;
    println!(
        "reverted {reverted}, gas wasted {gas} wei (receipt: {wasted}), payers blocked {blocked}"
    );
    assert_eq!(reverted, 1.0);
    assert_eq!(gas, wasted as f64);
    assert_eq!(blocked, 1.0);
    assert_eq!(redis.debits_left().await, vec![], "every debit released");
}
