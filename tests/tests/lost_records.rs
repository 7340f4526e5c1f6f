//! Settlement records lost with Redis (a failover that drops the last writes, or a node that
//! restarts empty) are rebuilt from the chain: a payment whose EIP-3009 authorization one of our
//! signers used is answered `duplicate_settlement` with that transaction (status API included),
//! never `invalid_exact_evm_nonce_already_used`. On anvil with Circle's FiatTokenV2_2, a private
//! `redis-server` and the real `x402-facilitator` binary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use serde_json::Value;
use x402_tests::eip3009::{Authorization, ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

const FAST_SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 10
poll_interval_ms = 50
rpc_timeout_seconds = 2
redis_timeout_ms = 500
lease_seconds = 2
resend_after_seconds = 2
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
signer_wait_seconds = 5
"#;

/// The answers that would refuse a buyer who paid.
const WRONG_FOR_A_PAID_PAYMENT: [&str; 2] = [
    "invalid_exact_evm_nonce_already_used",
    "invalid_exact_evm_transaction_failed",
];

async fn chain(anvil: &Anvil) -> Usdc {
    let usdc = Usdc::deploy(anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 100_000_000u64)
        .await
        .expect("mint");
    usdc
}

fn config(anvil: &Anvil, signer_key: &str, redis: &RedisServer) -> String {
    TestFacilitator::config_toml_custom(
        anvil,
        anvil.rpc_url(),
        signer_key,
        Some(&redis.url()),
        FAST_SETTLE,
    )
}

/// `n` different payments of [`AMOUNT`] from account 2 to account 3.
fn payments(anvil: &Anvil, n: usize) -> Vec<(Authorization, Value)> {
    let mut req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    // Long enough for every retry after the outage (the burst takes up to a minute here).
    req.max_timeout_seconds = 300;
    (0..n)
        .map(|_| {
            let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
            let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
            (auth, body)
        })
        .collect()
}

/// `GET /settlements/{tx}` as JSON.
async fn status_of(base: &str, tx: &str) -> Value {
    reqwest::get(format!("{base}/settlements/{tx}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Redis loses everything after a payment settled: its retry is answered
/// `duplicate_settlement` with the settlement transaction (not `nonce_already_used`), the status
/// API finds the transaction again, later retries get the same answer, and nothing more is sent.
/// A payment whose authorization the payer used with a transaction of its own stays refused
/// with `invalid_exact_evm_nonce_already_used`: it was not this facilitator's settlement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_lost_with_redis_is_rebuilt_from_the_chain() {
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = chain(&anvil).await;
    let mut redis = RedisServer::spawn().await.unwrap();
    let fac =
        FacilitatorProcess::start("lost-record", &config(&anvil, DEV_PRIVATE_KEYS[1], &redis))
            .await
            .unwrap();
    let mut list = payments(&anvil, 2);
    let (own_auth, own_body) = list.pop().unwrap();
    let (_, body) = list.pop().unwrap();

    let (status, first) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["success"], true, "{first}");
    let tx = first["transaction"].as_str().unwrap().to_string();

    // The payer spends its second authorization itself (account 5 submits it).
    let own_sig = own_body["paymentPayload"]["payload"]["signature"]
        .as_str()
        .unwrap();
    let own_sig: alloy::primitives::Bytes = own_sig.parse().unwrap();
    let receipt = usdc
        .contract_with(anvil.wallet_provider(anvil.signer(5)))
        .transferWithAuthorization_1(
            own_auth.from,
            own_auth.to,
            own_auth.value,
            U256::from(own_auth.valid_after),
            U256::from(own_auth.valid_before),
            own_auth.nonce,
            own_sig,
        )
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status(), "the payer's own transfer landed");

    redis.stop().await.unwrap();
    redis.restart().await.unwrap();
    let sent_before = anvil
        .provider()
        .get_transaction_count(anvil.address(1))
        .await
        .unwrap();

    // The facilitator reconnects; the retry finds no record and the authorization used.
    let deadline = Instant::now() + Duration::from_secs(15);
    let retry = loop {
        let (status, answer) = fac.post("/settle", &body).await.unwrap();
        if status == 200 {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after Redis returned: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if retry["errorReason"] != "duplicate_settlement" {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("{}", fac.log_text());
    }
    assert_eq!(retry["success"], false, "{retry}");
    assert_eq!(retry["errorReason"], "duplicate_settlement", "{retry}");
    assert_eq!(retry["transaction"], tx.as_str(), "{retry}");
    assert_eq!(
        retry["payer"],
        anvil.address(2).to_checksum(None),
        "{retry}"
    );

    let status = status_of(fac.url(), &tx).await;
    assert_eq!(status["state"], "settled", "{status}");
    assert_eq!(status["recordState"], "delivered", "{status}");
    assert_eq!(status["amount"], AMOUNT.to_string(), "{status}");

    let (_, again) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], tx.as_str(), "{again}");

    let (_, theirs) = fac.post("/settle", &own_body).await.unwrap();
    assert_eq!(theirs["success"], false, "{theirs}");
    assert_eq!(
        theirs["errorReason"], "invalid_exact_evm_nonce_already_used",
        "{theirs}"
    );

    assert_eq!(
        anvil
            .provider()
            .get_transaction_count(anvil.address(1))
            .await
            .unwrap(),
        sent_before,
        "nothing was sent for the retries"
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(2 * AMOUNT),
        "each payment paid once"
    );
}

/// The issue's measurement: two replicas (one signer each) sharing one Redis, 2 s blocks, a
/// burst of payments; Redis is killed mid-burst and restarts empty a second later. Every paid
/// payment is then answered with its transaction (`success` once, or `duplicate_settlement`),
/// none with `nonce_already_used` or a failure; each lands exactly once and the status API
/// finds every transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_empty_mid_burst_answers_every_paid_payment_with_its_transaction() {
    const N: usize = 40;
    let anvil = Anvil::builder()
        .arg("--block-time")
        .arg("2")
        .spawn()
        .await
        .unwrap();
    let usdc = chain(&anvil).await;
    let mut redis = RedisServer::spawn().await.unwrap();
    let a = FacilitatorProcess::start("empty-a", &config(&anvil, DEV_PRIVATE_KEYS[1], &redis))
        .await
        .unwrap();
    let b = FacilitatorProcess::start("empty-b", &config(&anvil, DEV_PRIVATE_KEYS[4], &redis))
        .await
        .unwrap();
    let replicas = [&a, &b];
    let payments = payments(&anvil, N);
    let burst: Vec<_> = payments
        .iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let url = format!("{}/settle", replicas[i % 2].url());
            let body = body.clone();
            tokio::spawn(async move {
                let resp = reqwest::Client::new().post(url).json(&body).send().await;
                match resp {
                    Ok(r) => r.json::<Value>().await.ok(),
                    Err(_) => None,
                }
            })
        })
        .collect();
    // Kill Redis once settlements are in the mempool, before their block.
    let provider = anvil.provider();
    let start = Instant::now();
    loop {
        let pending = provider
            .get_transaction_count(anvil.address(1))
            .pending()
            .await
            .unwrap()
            + provider
                .get_transaction_count(anvil.address(4))
                .pending()
                .await
                .unwrap();
        if pending >= 6 || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await.unwrap();

    let mut successes = vec![0usize; N];
    let mut transactions: HashMap<usize, String> = HashMap::new();
    let mut wrong = Vec::new();
    let mut judge = |i: usize, answer: &Value, successes: &mut Vec<usize>| -> bool {
        if answer["success"] == true {
            successes[i] += 1;
            transactions.insert(i, answer["transaction"].as_str().unwrap().to_string());
            return true;
        }
        let reason = answer["errorReason"].as_str().unwrap_or_default();
        if reason == "duplicate_settlement"
            && let Some(tx) = answer["transaction"].as_str().filter(|t| !t.is_empty())
        {
            transactions.insert(i, tx.to_string());
            return true;
        }
        if WRONG_FOR_A_PAID_PAYMENT.contains(&reason) {
            wrong.push((i, answer.clone()));
        }
        false
    };
    let mut done = [false; N];
    let mut last: Vec<Vec<Value>> = vec![Vec::new(); N];
    for (i, task) in burst.into_iter().enumerate() {
        if let Some(answer) = task.await.unwrap() {
            done[i] = judge(i, &answer, &mut successes);
            last[i].push(answer);
        }
    }
    // Let every transaction sent before the loss land (nothing pending for either signer).
    let start = Instant::now();
    for signer in [1, 4] {
        loop {
            let address = anvil.address(signer);
            let pending = provider
                .get_transaction_count(address)
                .pending()
                .await
                .unwrap();
            let mined = provider.get_transaction_count(address).await.unwrap();
            if pending == mined {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "transactions never mined"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "payments never answered with their transaction: {:?}",
            (0..N)
                .filter(|i| !done[*i])
                .map(|i| (i, &last[i]))
                .collect::<Vec<_>>()
        );
        // One round retries every unanswered payment at once (a settle may wait for its
        // block: one after the other, a round of 30 would outlast the deadline).
        let payments = &payments;
        let retries = futures::future::join_all((0..N).filter(|i| !done[*i]).map(|i| async move {
            let body = &payments[i].1;
            (i, replicas[(i + round) % 2].post("/settle", body).await)
        }))
        .await;
        for (i, answer) in retries {
            if let Ok((_, answer)) = answer {
                done[i] = judge(i, &answer, &mut successes);
                last[i].push(answer);
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(wrong.is_empty(), "paid payments refused: {wrong:?}");
    assert!(
        successes.iter().all(|s| *s <= 1),
        "a payment got two successes: {successes:?}"
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * N as u64),
        "every payment paid exactly once"
    );
    for (auth, _) in &payments {
        assert!(
            usdc.authorization_state(auth.from, auth.nonce)
                .await
                .unwrap()
        );
    }
    for (i, tx) in &transactions {
        let status = status_of(replicas[i % 2].url(), tx).await;
        if status["state"] != "settled" {
            for r in replicas {
                for line in r.log_text().lines().filter(|l| l.contains(tx.as_str())) {
                    eprintln!("{line}");
                }
            }
            eprintln!("answers: {:?}", last[*i]);
        }
        assert_eq!(status["state"], "settled", "payment {i}: {status}");
    }
    eprintln!(
        "successes {}, duplicate_settlement {}",
        successes.iter().sum::<usize>(),
        N - successes.iter().sum::<usize>()
    );
}
