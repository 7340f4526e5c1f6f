//! Replay protection with a real Redis: concurrent settles of one payment broadcast once, and a
//! stopped Redis makes `/settle` refuse (fail closed) without broadcasting.

use std::time::Duration;

use alloy::primitives::U256;
use serde_json::Value;
use x402_tests::RedisServer;
use x402_tests::eip3009::v2_evm_payment_json;
use x402_tests::facilitator::EvmFixture;

const AMOUNT: u64 = 25_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_fifty_concurrent_settles_of_one_payment_transfer_once_with_one_success() {
    let redis = RedisServer::spawn().await.unwrap();
    let fx = EvmFixture::start(Some(&redis.url())).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let signer_nonce_before = fx.signer_tx_count().await.unwrap();

    let answers: Vec<(u16, Value)> =
        futures::future::join_all((0..50).map(|_| fx.facilitator.post("/settle", &body)))
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();

    let successes: Vec<&Value> = answers
        .iter()
        .filter(|(_, a)| a["success"] == true)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(successes.len(), 1, "one success per payment: {answers:?}");
    let tx = successes[0]["transaction"].as_str().unwrap();
    for (status, a) in &answers {
        assert_eq!(*status, 200, "{a}");
        if a["success"] == true {
            assert_eq!(a["transaction"], tx, "two different receipts: {a}");
        } else {
            let reason = a["errorReason"].as_str().unwrap();
            assert!(
                matches!(reason, "duplicate_settlement" | "settlement_pending"),
                "unexpected answer {a}"
            );
            assert!(a["transaction"] == "" || a["transaction"] == tx, "{a}");
        }
    }
    // Exactly one transaction from the facilitator, one transfer.
    let signer_nonce_after = fx.signer_tx_count().await.unwrap();
    assert_eq!(signer_nonce_after, signer_nonce_before + 1);
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(AMOUNT));
}

#[tokio::test]
async fn redis_down_means_settle_refuses_and_broadcasts_nothing() {
    let mut redis = RedisServer::spawn().await.unwrap();
    let fx = EvmFixture::start(Some(&redis.url())).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (_, health) = fx.facilitator.get("/health").await.unwrap();
    assert!(health.contains("\"redis\""), "{health}");

    redis.stop().await.unwrap();
    let signer_nonce_before = fx.signer_tx_count().await.unwrap();
    let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["success"], false);
    assert_eq!(answer["errorReason"], "unexpected_settle_error");
    assert_eq!(answer["transaction"], "");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("replay store"),
        "{answer}"
    );
    // Readiness follows at the next background check.
    let (status, _) = fx
        .facilitator
        .get_until("/health", Duration::from_secs(20), |s, _| s == 503)
        .await
        .unwrap();
    assert_eq!(status, 503);

    assert_eq!(fx.signer_tx_count().await.unwrap(), signer_nonce_before);
    assert!(
        !fx.usdc
            .authorization_state(auth.from, auth.nonce)
            .await
            .unwrap()
    );
    assert_eq!(fx.payee_balance().await.unwrap(), U256::ZERO);
    // Verification needs no Redis and still works.
    let (status, v) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(
        (status, v["isValid"].clone()),
        (200, Value::Bool(true)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_redis_and_a_signer_key_settle_everything_once() {
    use x402_tests::facilitator::TestFacilitator;
    let redis = RedisServer::spawn().await.unwrap();
    let fx = EvmFixture::start(Some(&redis.url())).await.unwrap();
    let toml = TestFacilitator::config_toml(
        &fx.anvil,
        x402_tests::DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
    );
    let replica = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let replicas = [&fx.facilitator, &replica];
    let signer_nonce_before = fx.signer_tx_count().await.unwrap();

    // 12 different payments, alternating replicas, all at once: one signer key, no nonce clash.
    let req = fx.requirements(AMOUNT);
    let bodies: Vec<Value> = (0..12)
        .map(|_| {
            let (auth, sig) = req.authorize(&fx.payer).unwrap();
            v2_evm_payment_json(&req.v2_json(), &sig, &auth)
        })
        .collect();
    let answers = futures::future::join_all(
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| replicas[i % 2].post("/settle", b)),
    )
    .await;
    for a in &answers {
        let (status, a) = a.as_ref().unwrap();
        assert_eq!((*status, &a["success"]), (200, &Value::Bool(true)), "{a}");
    }
    // One payment sent to both replicas 10 times each: one transfer.
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let one = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let answers =
        futures::future::join_all((0..20).map(|i| replicas[i % 2].post("/settle", &one))).await;
    let successes: Vec<Value> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().1.clone())
        .filter(|a| a["success"] == true)
        .collect();
    assert_eq!(
        successes.len(),
        1,
        "one success across replicas: {answers:?}"
    );

    let signer_nonce_after = fx.signer_tx_count().await.unwrap();
    assert_eq!(signer_nonce_after, signer_nonce_before + 13);
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(AMOUNT * 13));
}
