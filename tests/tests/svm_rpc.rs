//! Solana `exact` end to end through real HTTP and the production RPC chain (`RpcSvmChain` over
//! agave's RPC client) against a local surfpool JSON-RPC server ([`SvmRpcFixture`]): verify and
//! settle (v2 and v1), exactly-once settlement under 20 concurrent `/settle` calls, `/supported`,
//! the Redis replay record, and a never-valid blockhash refused at verify.
//!
//! Needs `.tools/bin/x402-surfnet` (scripts/install-surfnet.sh) and `redis-server`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use solana_signer::Signer;
use x402_tests::svm_fixture::{
    COMPUTE_UNIT_LIMIT, COMPUTE_UNIT_PRICE, FEE_PAYER_LAMPORTS, PAYER_FUNDS, PAYER_LAMPORTS,
    SOLANA_DEVNET, SOLANA_DEVNET_V1, SvmRpcFixture, random_blockhash, to_base64,
};

/// Atomic USDC per payment (0.25 USDC).
const AMOUNT: u64 = 250_000;

/// Lamports the fee payer pays for one payment transaction: two signatures at 5,000 lamports
/// plus the priority fee `ceil(limit × price / 10^6)`.
fn expected_fee() -> u64 {
    let priority = (u64::from(COMPUTE_UNIT_LIMIT) * COMPUTE_UNIT_PRICE).div_ceil(1_000_000);
    2 * 5_000 + priority
}

/// Checks a settlement receipt and the chain: success, base58 64-byte signature confirmed
/// without error, payer/network/amount echoed. Returns the signature.
async fn assert_settled(fx: &SvmRpcFixture, settle: &Value, network: &str) -> String {
    assert_eq!(settle["success"], true, "{settle}");
    assert_eq!(settle["payer"], fx.payer.pubkey().to_string(), "{settle}");
    assert_eq!(settle["network"], network, "{settle}");
    assert_eq!(settle["amount"], AMOUNT.to_string(), "{settle}");
    assert!(
        settle.get("errorReason").is_none_or(Value::is_null),
        "{settle}"
    );
    let tx = settle["transaction"]
        .as_str()
        .unwrap_or_else(|| panic!("no transaction in {settle}"))
        .to_string();
    let raw = bs58::decode(&tx)
        .into_vec()
        .unwrap_or_else(|e| panic!("transaction {tx:?} is not base58: {e}"));
    assert_eq!(
        raw.len(),
        64,
        "transaction {tx:?} is not a 64-byte signature"
    );
    let status = fx.signature_status(&tx).await.unwrap();
    assert!(
        matches!(
            status["confirmationStatus"].as_str(),
            Some("confirmed" | "finalized")
        ),
        "settle answered success but the signature is not confirmed: {status}"
    );
    assert!(status["err"].is_null(), "{status}");
    tx
}

#[tokio::test]
async fn v2_payment_verifies_and_settles_through_rpc() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);

    let t = Instant::now();
    let (status, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    eprintln!("verify in {:?}: {verify}", t.elapsed());
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["isValid"], true, "{verify}");
    assert_eq!(verify["payer"], fx.payer.pubkey().to_string(), "{verify}");
    // Verify moves nothing.
    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS);
    assert_eq!(fx.pay_to_balance().await.unwrap(), 0);

    let t = Instant::now();
    let (status, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    eprintln!("settle in {:?}: {settle}", t.elapsed());
    assert_eq!(status, 200, "{settle}");
    let tx = assert_settled(&fx, &settle, SOLANA_DEVNET).await;

    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
    // The fee payer paid the fee; the payer paid no SOL.
    assert_eq!(
        fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap(),
        FEE_PAYER_LAMPORTS - expected_fee()
    );
    assert_eq!(
        fx.surfnet.balance(&fx.payer.pubkey()).await.unwrap(),
        PAYER_LAMPORTS
    );

    // (d) the replay record, kept at least 120 s.
    let key = fx.replay_key(&tx);
    let ttl = fx.redis_ttl(&key).await.unwrap();
    let keys = fx.redis_keys("*").await.unwrap();
    assert!(ttl >= 120, "TTL of {key} is {ttl}; keys: {keys:?}");

    // A retry (x402-conformance F3) is no second success and moves nothing more.
    let (status, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], settle["transaction"], "{again}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
}

#[tokio::test]
async fn v1_payment_verifies_and_settles_with_v1_network_name() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v1(&tx_b64, AMOUNT);

    let (status, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["isValid"], true, "{verify}");
    assert_eq!(verify["payer"], fx.payer.pubkey().to_string(), "{verify}");

    let (status, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    let tx = assert_settled(&fx, &settle, SOLANA_DEVNET_V1).await;
    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
    // v1 and v2 share the replay key space (CAIP-2 network).
    assert!(fx.redis_ttl(&fx.replay_key(&tx)).await.unwrap() >= 120);
    // A v1 retry: `duplicate_settlement` with the signature, v1 network name included.
    let (status, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], settle["transaction"], "{again}");
    assert_eq!(again["network"], SOLANA_DEVNET_V1, "{again}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
}

/// Sends 20 concurrent `/settle` calls of one payment and checks: every answer is HTTP 200 and
/// either the one success receipt, `duplicate_settlement` (nothing broadcast yet, `transaction:
/// ""`) or `settlement_pending` with the one signature; exactly one transfer landed; a later retry
/// returns the receipt. Returns the answers.
async fn twenty_concurrent_settles(fx: &SvmRpcFixture) -> Vec<Value> {
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);
    let signature = fx.payment_signature(&tx_b64).unwrap();

    let t = Instant::now();
    let answers = futures::future::join_all((0..20).map(|_| fx.facilitator.post("/settle", &body)))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>();
    eprintln!("20 concurrent settles in {:?}", t.elapsed());

    let mut receipt: Option<Value> = None;
    let mut reasons = HashMap::<String, usize>::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["network"], SOLANA_DEVNET, "{answer}");
        if answer["success"] == true {
            assert_eq!(answer["transaction"], signature, "{answer}");
            match &receipt {
                Some(first) => assert_eq!(answer, first, "two different success receipts"),
                None => receipt = Some(answer.clone()),
            }
            *reasons.entry("success".into()).or_default() += 1;
            continue;
        }
        let reason = answer["errorReason"].as_str().unwrap_or_default();
        match reason {
            "duplicate_settlement" => assert!(
                answer["transaction"] == "" || answer["transaction"] == signature,
                "{answer}"
            ),
            "settlement_pending" => assert_eq!(answer["transaction"], signature, "{answer}"),
            _ => panic!("plain failure for a payment being settled: {answer}"),
        }
        *reasons.entry(reason.into()).or_default() += 1;
    }
    eprintln!("answers: {reasons:?}");

    // Exactly one transaction: the fee payer's signature is deterministic, so any second
    // broadcast would be a second payment transaction with another signature and another fee.
    let status = fx
        .wait_confirmed(&signature, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(status["err"].is_null(), "{status}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
    assert_eq!(
        fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap(),
        FEE_PAYER_LAMPORTS - expected_fee(),
        "the fee payer paid for more than one transaction"
    );
    let keys = fx.redis_keys("x402:replay:svm:*").await.unwrap();
    assert_eq!(keys, vec![fx.replay_key(&signature)]);

    // A later retry: the one success if none of the 20 got it, else `duplicate_settlement`
    // with the signature (x402-conformance F3, F7).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{again}");
    if receipt.is_some() {
        assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
        assert_eq!(again["transaction"], signature, "{again}");
    } else {
        assert_settled(fx, &again, SOLANA_DEVNET).await;
    }
    assert!(
        reasons.get("success").copied().unwrap_or(0) <= 1,
        "more than one success: {reasons:?}"
    );
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
    answers.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test]
async fn twenty_concurrent_settles_of_one_payment_transfer_once() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let answers = twenty_concurrent_settles(&fx).await;
    assert!(
        answers.iter().any(|a| a["success"] == true),
        "a 30 s confirmation timeout and no success: {answers:#?}"
    );
}

/// With a zero confirmation timeout every request that finds the payment broadcast answers
/// `settlement_pending` with the signature (the answer `@x402/core` retries once); still one
/// transfer, and the retry gets the receipt.
#[tokio::test]
async fn twenty_concurrent_settles_with_zero_confirm_timeout_pend_then_return_the_receipt() {
    let fx = SvmRpcFixture::start_with_timeout(0).await.unwrap();
    let answers = twenty_concurrent_settles(&fx).await;
    assert!(
        answers
            .iter()
            .any(|a| a["errorReason"] == "settlement_pending"),
        "no settlement_pending with a zero timeout: {answers:#?}"
    );
}

/// The replay record is gone (Redis flushed, failed over or evicted) while the payment already
/// landed: settle must reconcile with the chain (the fee payer's signature, the transaction id,
/// is deterministic) and answer the receipt, not a plain failure.
#[tokio::test]
async fn settle_of_a_landed_payment_without_its_record_returns_the_receipt() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);
    let (_, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    let tx = assert_settled(&fx, &settle, SOLANA_DEVNET).await;
    let key = fx.replay_key(&tx);
    let client = redis::Client::open(fx.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    // Its success was answered before the record was lost: no second success, but no plain
    // failure either: `duplicate_settlement` naming the landed transaction.
    let (status, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["errorReason"], "duplicate_settlement",
        "plain failure for a landed payment: {again}"
    );
    assert_eq!(again["transaction"], tx, "{again}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
    // The recovered answer is recorded again: a third settle reads it from Redis.
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 1, "record not restored");
    let (_, third) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(third, again);
}

#[tokio::test]
async fn supported_lists_solana_kinds_with_fee_payer_and_signer() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let (status, text) = fx.facilitator.get("/supported").await.unwrap();
    assert_eq!(status, 200, "{text}");
    let supported: Value = serde_json::from_str(&text).unwrap();
    let fee_payer = fx.fee_payer.pubkey().to_string();
    let kinds = supported["kinds"].as_array().expect("kinds array");
    let has = |version: u64, network: &str| {
        kinds.iter().any(|k| {
            k["x402Version"] == version
                && k["scheme"] == "exact"
                && k["network"] == network
                && k["extra"]["feePayer"] == fee_payer.as_str()
        })
    };
    assert!(has(2, SOLANA_DEVNET), "{supported}");
    assert!(has(1, SOLANA_DEVNET_V1), "{supported}");
    let signers = supported["signers"]["solana:*"]
        .as_array()
        .unwrap_or_else(|| panic!("no signers[\"solana:*\"] in {supported}"));
    assert!(
        signers.iter().any(|s| s == fee_payer.as_str()),
        "{supported}"
    );
    // No EVM network configured: no EVM kinds or signers.
    assert!(
        kinds
            .iter()
            .all(|k| !k["network"].as_str().unwrap_or("").starts_with("eip155")),
        "{supported}"
    );
}

#[tokio::test]
async fn never_valid_blockhash_is_refused_at_verify_and_nothing_moves() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let tx = fx.payment_tx(AMOUNT, random_blockhash()).unwrap();
    let body = fx.body_v2(&to_base64(&tx), AMOUNT);

    let (status, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    eprintln!("verify of a never-valid blockhash: {verify}");
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["isValid"], false, "{verify}");
    assert_eq!(
        verify["invalidReason"], "invalid_exact_svm_transaction_simulation_failed",
        "{verify}"
    );
    assert_eq!(verify["payer"], fx.payer.pubkey().to_string(), "{verify}");

    let (status, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    assert_eq!(settle["success"], false, "{settle}");
    assert_eq!(
        settle["errorReason"], "invalid_exact_svm_transaction_simulation_failed",
        "{settle}"
    );
    assert_eq!(settle["transaction"], "", "{settle}");
    assert_eq!(settle["network"], SOLANA_DEVNET, "{settle}");

    // Nothing moved, nothing was sent, nothing is held.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS);
    assert_eq!(fx.pay_to_balance().await.unwrap(), 0);
    assert_eq!(
        fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap(),
        FEE_PAYER_LAMPORTS
    );
    assert_eq!(
        fx.redis_keys("x402:replay:svm:*").await.unwrap(),
        Vec::<String>::new()
    );
}

/// x402-conformance F4 over real HTTP on surfnet: `extra.memo` is the resource server's
/// one-purchase nonce; a second, different transaction carrying a memo already settled for the
/// same `payTo` gets `duplicate_settlement`, nothing is broadcast, and the payer pays once.
#[tokio::test]
async fn f4_memo_settled_for_a_pay_to_cannot_settle_again_in_a_new_transaction() {
    use x402_tests::svm_payment::{SvmPaymentBuilder, v2_request_json};
    let fx = SvmRpcFixture::start().await.unwrap();
    let blockhash = fx.surfnet.latest_blockhash().await.unwrap();
    let build = |price: u64| {
        to_base64(
            &SvmPaymentBuilder::new(
                fx.payer.clone(),
                fx.fee_payer.pubkey(),
                fx.mint,
                fx.pay_to,
                AMOUNT,
                blockhash,
            )
            .token_program(fx.token_program)
            .compute_unit_price(price)
            .memo("order-7")
            .build(),
        )
    };
    let extra = serde_json::json!({
        "feePayer": fx.fee_payer.pubkey().to_string(),
        "memo": "order-7",
    });
    let (first_tx, second_tx) = (build(COMPUTE_UNIT_PRICE), build(COMPUTE_UNIT_PRICE + 1));
    assert_ne!(first_tx, second_tx);

    let first = v2_request_json(&first_tx, &fx.mint, &fx.pay_to, AMOUNT, &extra);
    let (status, settled) = fx.facilitator.post("/settle", &first).await.unwrap();
    assert_eq!(status, 200, "{settled}");
    assert_eq!(settled["success"], true, "{settled}");

    let second = v2_request_json(&second_tx, &fx.mint, &fx.pay_to, AMOUNT, &extra);
    let (status, replay) = fx.facilitator.post("/settle", &second).await.unwrap();
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["success"], false, "memo settled twice: {replay}");
    assert_eq!(replay["errorReason"], "duplicate_settlement", "{replay}");
    assert_eq!(replay["transaction"], "", "nothing broadcast: {replay}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
}

/// Solana RPC failover: with `rpc_urls = [stalled, surfnet]`, a payment still verifies and
/// settles (through the second endpoint) within a few RPC timeouts.
#[tokio::test]
async fn stalled_first_rpc_endpoint_fails_over_to_the_second() {
    use x402_tests::facilitator::TestFacilitator;
    use x402_tests::stall_proxy::StallProxy;
    let fx = SvmRpcFixture::start().await.unwrap();
    let surfnet = fx.surfnet.rpc_url();
    let target = surfnet.trim_start_matches("http://").trim_end_matches('/');
    let proxy = StallProxy::start(target).await.unwrap();
    let toml = SvmRpcFixture::config_toml(&surfnet, &fx.fee_payer, &fx.mint, &fx.redis.url(), 30)
        .replace(
            &format!("rpc_url = \"{surfnet}\""),
            &format!(
                "rpc_urls = [\"{}\", \"{surfnet}\"]\nrpc_timeout_seconds = 2",
                proxy.url()
            ),
        );
    assert!(toml.contains("rpc_urls"), "{toml}");
    let replica = TestFacilitator::start_with_toml(&toml).await.unwrap();
    proxy.set_stalled(true);

    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);
    let t = Instant::now();
    let (status, settle) = replica.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    assert_eq!(settle["success"], true, "{settle}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
}

/// A payment whose fee payer holds less than `[health] min_svm_fee_payer_lamports` is refused
/// with 503 before anything is reserved or sent.
#[tokio::test]
async fn fee_payer_below_the_floor_refuses_settle_before_reserving() {
    let fx = SvmRpcFixture::start_custom(
        30,
        "",
        &format!(
            "\n[health]\nmin_svm_fee_payer_lamports = {}\n",
            FEE_PAYER_LAMPORTS * 2
        ),
    )
    .await
    .unwrap();
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);
    let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["transaction"], "", "{answer}");
    let keys = fx.redis_keys("x402:replay:svm:*").await.unwrap();
    assert!(keys.is_empty(), "nothing reserved: {keys:?}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), 0);
}

/// The floor is the network's: `[[svm]] min_fee_payer_balance_lamports` refuses the payment
/// even where the deprecated `[health]` key would let it through (the network's value wins).
#[tokio::test]
async fn fee_payer_below_its_networks_floor_refuses_settle_before_reserving() {
    let fx = SvmRpcFixture::start_custom(
        30,
        &format!(
            "min_fee_payer_balance_lamports = {}",
            FEE_PAYER_LAMPORTS * 2
        ),
        "\n[health]\nmin_svm_fee_payer_lamports = 1\n",
    )
    .await
    .unwrap();
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);
    let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["transaction"], "", "{answer}");
    let keys = fx.redis_keys("x402:replay:svm:*").await.unwrap();
    assert!(keys.is_empty(), "nothing reserved: {keys:?}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), 0);
}

/// Redis down: a Solana `/settle` answers 503 and sends nothing (fail closed); once Redis is
/// back (paused, then resumed with its data), the same payment settles once.
#[tokio::test]
async fn redis_down_refuses_solana_settle_and_sends_nothing() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let tx_b64 = fx.payment_b64(AMOUNT).await.unwrap();
    let body = fx.body_v2(&tx_b64, AMOUNT);
    let signature = fx.payment_signature(&tx_b64).unwrap();

    fx.redis.pause().unwrap();
    let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
    fx.redis.resume().unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["transaction"], "", "{answer}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), 0);
    let status = fx.signature_status(&signature).await.unwrap();
    assert!(status.is_null(), "sent without Redis: {status}");

    let (_, settled) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(settled["success"], true, "{settled}");
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT);
}

/// kill -9 of the real facilitator binary during a burst of 16 different Solana payments, then
/// a restart on the same Redis: retries (and the reconciler) finish every payment; each is
/// settled exactly once (payee balance = the sum) and none gets two successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_mid_burst_settles_every_solana_payment_exactly_once() {
    use x402_tests::process::FacilitatorProcess;
    use x402_tests::svm_payment::{SvmPaymentBuilder, v2_request_json};
    const N: u64 = 16;
    let fx = SvmRpcFixture::start().await.unwrap();
    let settle = "[settle]\nreceipt_timeout_seconds = 5\npoll_interval_ms = 50\nlease_seconds = 2\n\
                  reconcile_interval_seconds = 1\nreserved_wait_seconds = 1\n";
    let toml = SvmRpcFixture::config_toml(
        &fx.surfnet.rpc_url(),
        &fx.fee_payer,
        &fx.mint,
        &fx.redis.url(),
        5,
    )
    .replace(
        "[settle]\nreceipt_timeout_seconds = 5\npoll_interval_ms = 50\n",
        settle,
    );
    assert!(toml.contains("lease_seconds"), "{toml}");
    let mut first = FacilitatorProcess::start("svm-crash", &toml).await.unwrap();
    let blockhash = fx.surfnet.latest_blockhash().await.unwrap();
    let bodies: Vec<Value> = (0..N)
        .map(|i| {
            let tx = SvmPaymentBuilder::new(
                fx.payer.clone(),
                fx.fee_payer.pubkey(),
                fx.mint,
                fx.pay_to,
                AMOUNT / 4,
                blockhash,
            )
            .token_program(fx.token_program)
            .compute_unit_price(COMPUTE_UNIT_PRICE + i)
            .build();
            v2_request_json(
                &to_base64(&tx),
                &fx.mint,
                &fx.pay_to,
                AMOUNT / 4,
                &fx.extra(),
            )
        })
        .collect();

    let url = format!("{}/settle", first.url());
    let burst: Vec<_> = bodies
        .iter()
        .map(|body| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move {
                let resp = reqwest::Client::new().post(url).json(&body).send().await;
                match resp {
                    Ok(r) => r.json::<Value>().await.ok(),
                    Err(_) => None,
                }
            })
        })
        .collect();
    let start = Instant::now();
    while fx.pay_to_balance().await.unwrap() == 0 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill9();
    let mut successes = vec![0usize; bodies.len()];
    for (i, task) in burst.into_iter().enumerate() {
        if task.await.unwrap().is_some_and(|a| a["success"] == true) {
            successes[i] += 1;
        }
    }
    eprintln!(
        "successes before the restart: {}",
        successes.iter().sum::<usize>()
    );

    let second = FacilitatorProcess::start("svm-crash-2", &toml)
        .await
        .unwrap();
    let mut done: Vec<bool> = successes.iter().map(|s| *s > 0).collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "payments never settled: {done:?}"
        );
        for (i, body) in bodies.iter().enumerate() {
            if done[i] {
                continue;
            }
            let Ok((_, answer)) = second.post("/settle", body).await else {
                continue;
            };
            if answer["success"] == true {
                successes[i] += 1;
                done[i] = true;
            } else if answer["errorReason"] == "duplicate_settlement"
                && answer["transaction"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            {
                done[i] = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        successes.iter().all(|s| *s <= 1),
        "a payment got two successes: {successes:?}"
    );
    assert_eq!(fx.pay_to_balance().await.unwrap(), N * (AMOUNT / 4));
    assert_eq!(
        fx.payer_balance().await.unwrap(),
        PAYER_FUNDS - N * (AMOUNT / 4)
    );
}
