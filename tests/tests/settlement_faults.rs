//! The hard path of EVM settlement, on anvil with Circle's FiatTokenV2_2, a private Redis and
//! (for crashes) the real `x402-facilitator` binary killed with SIGKILL:
//! - a crash of one of two replicas mid-burst loses no payment, and settles none twice;
//! - a crash right after broadcast is finished by the reconciler alone;
//! - a stalled RPC gets answers within the deadlines;
//! - a transaction a node dropped is re-sent;
//! - a paused Redis makes `/settle` refuse (503) and work resumes when it returns;
//! - x402-conformance F3 (one success across replicas), F7 (pending → success → duplicate),
//!   F10/F13/F14 (replays under other requirements never succeed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use serde_json::{Value, json};
use x402_settle::record::SettlementRecord;
use x402_tests::eip3009::{Authorization, ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::process::FacilitatorProcess;
use x402_tests::stall_proxy::StallProxy;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

/// Short deadlines so that faults resolve within a test's time.
const FAST_SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 5
poll_interval_ms = 50
rpc_timeout_seconds = 2
redis_timeout_ms = 500
lease_seconds = 2
resend_after_seconds = 2
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
signer_wait_seconds = 5
"#;

/// A facilitator configuration for `anvil` at `rpc_url` with signer key `signer_key`, Redis at
/// `redis_url`, and the `[settle]` table `settle`.
fn config(anvil: &Anvil, rpc_url: &str, signer_key: &str, redis_url: &str, settle: &str) -> String {
    TestFacilitator::config_toml_custom(anvil, rpc_url, signer_key, Some(redis_url), settle)
}

/// anvil + USDC with the payer (account 2) funded; the payee is account 3.
async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::spawn().await.expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 100_000_000u64)
        .await
        .expect("mint");
    (anvil, usdc)
}

/// `n` different payments of [`AMOUNT`] from account 2 to account 3.
fn payments(anvil: &Anvil, n: usize) -> Vec<(Authorization, Value)> {
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    (0..n)
        .map(|_| {
            let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
            let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
            (auth, body)
        })
        .collect()
}

/// Every settlement record in Redis by state name.
async fn record_states(redis: &RedisServer) -> HashMap<String, usize> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:replay:evm:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut states = HashMap::new();
    for key in keys {
        let raw: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(raw) = raw {
            let record: SettlementRecord = serde_json::from_str(&raw).unwrap();
            *states.entry(record.state_name().to_string()).or_default() += 1;
        }
    }
    states
}

/// Transactions sent by the accounts `signers` in every block: (to the USDC contract, 0-value
/// transfers to the sender itself).
async fn signer_transactions(anvil: &Anvil, signers: &[usize]) -> (u64, u64) {
    use alloy::consensus::Transaction as _;
    let provider = anvil.provider();
    let from: Vec<_> = signers.iter().map(|i| anvil.address(*i)).collect();
    let usdc = x402_tests::BASE_USDC;
    let (mut settlements, mut fills) = (0, 0);
    for n in 0..=provider.get_block_number().await.unwrap() {
        let block = provider
            .get_block_by_number(n.into())
            .full()
            .await
            .unwrap()
            .unwrap();
        for tx in block.transactions.into_transactions() {
            let sender = tx.inner.signer();
            if !from.contains(&sender) {
                continue;
            }
            match tx.to() {
                Some(to) if to == usdc => settlements += 1,
                Some(to) if to == sender && tx.value().is_zero() => fills += 1,
                other => panic!("unexpected signer transaction to {other:?}"),
            }
        }
    }
    (settlements, fills)
}

async fn tx_count(anvil: &Anvil, index: usize) -> u64 {
    anvil
        .provider()
        .get_transaction_count(anvil.address(index))
        .await
        .unwrap()
}

/// kill -9 of one of two replicas (each with its own signer, sharing Redis) during a burst of
/// 50 different payments, then a restart: the reconciler alone resolves every broadcast record;
/// retries (within the lease time plus a few seconds) finish the rest; every payment is settled
/// exactly once (payee balance = the sum, every authorization used, one transaction each) and
/// no payment gets two successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_kill9_of_a_replica_mid_burst_settles_every_payment_exactly_once() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml_a = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    );
    let toml_b = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[4],
        &redis.url(),
        FAST_SETTLE,
    );
    let mut a = FacilitatorProcess::start("crash-a", &toml_a).await.unwrap();
    let b = FacilitatorProcess::start("crash-b", &toml_b).await.unwrap();
    let payments = payments(&anvil, 50);

    let urls = [a.url().to_string(), b.url().to_string()];
    let burst: Vec<_> = payments
        .iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let url = format!("{}/settle", urls[i % 2]);
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
    // Kill A mid-burst: once its signer has sent a few transactions, the rest of its requests
    // hold reservations (waiting for the signer) or a broadcast transaction.
    let start = Instant::now();
    while tx_count(&anvil, 1).await < 3 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill9();
    let at_crash = record_states(&redis).await;
    eprintln!("records at the crash: {at_crash:?}");
    assert!(
        at_crash.get("reserved").copied().unwrap_or(0)
            + at_crash.get("broadcast").copied().unwrap_or(0)
            > 0,
        "the crash left no payment in flight: {at_crash:?}"
    );
    let mut successes = vec![0usize; payments.len()];
    for (i, task) in burst.into_iter().enumerate() {
        if let Some(answer) = task.await.unwrap()
            && answer["success"] == true
        {
            successes[i] += 1;
        }
    }
    let answered_before = successes.iter().sum::<usize>();
    eprintln!("successes before restart: {answered_before}");
    eprintln!("records after the crash: {:?}", record_states(&redis).await);

    let a = FacilitatorProcess::start("crash-a2", &toml_a)
        .await
        .unwrap();
    // No retries: the reconciler alone resolves every broadcast record.
    let start = Instant::now();
    loop {
        let states = record_states(&redis).await;
        if !states.contains_key("broadcast") {
            eprintln!("records resolved by the reconciler: {states:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "broadcast records left unresolved: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Retries finish the rest (lapsed reservations are taken over).
    let replicas = [&a, &b];
    let mut done: Vec<bool> = successes.iter().map(|s| *s > 0).collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut round = 0;
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "payments never settled: {:?}; records {:?}",
            done.iter()
                .enumerate()
                .filter(|(_, d)| !**d)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            record_states(&redis).await
        );
        for (i, (_, body)) in payments.iter().enumerate() {
            if done[i] {
                continue;
            }
            let Ok((_, answer)) = replicas[(i + round) % 2].post("/settle", body).await else {
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
                // Its success went to a request whose answer died with the replica.
                done[i] = true;
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    assert!(
        successes.iter().all(|s| *s <= 1),
        "a payment got two successes: {successes:?}"
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 50),
        "payee balance is the sum of the 50 payments"
    );
    for (auth, _) in &payments {
        assert!(
            usdc.authorization_state(auth.from, auth.nonce)
                .await
                .unwrap()
        );
    }
    // Every signer transaction is a settlement (to USDC) or a nonce gap fill (a 0-value transfer
    // to itself, for a nonce the killed replica took and never sent).
    let (settlements, fills) = signer_transactions(&anvil, &[1, 4]).await;
    assert_eq!(settlements, 50, "one settlement transaction per payment");
    assert_eq!(
        tx_count(&anvil, 1).await + tx_count(&anvil, 4).await,
        50 + fills,
        "no other transaction"
    );
    eprintln!("nonce gaps filled after the crash: {fills}");
    let states = record_states(&redis).await;
    assert_eq!(
        states.get("delivered").copied().unwrap_or(0),
        50,
        "{states:?}"
    );
    // Every in-flight debit was released, those of the killed replica's reservations too
    // (taken over, or resolved by the reconciler).
    assert_eq!(
        redis.debits_left().await,
        vec![],
        "debits left after every payment resolved"
    );
}

/// kill -9 right after broadcast with automine off; restart; mine: the reconciler records the
/// receipt and the status API shows `settled`; the first `/settle` retry gets the one success
/// (x402-conformance F7), the next `duplicate_settlement` with the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f7_kill9_after_broadcast_is_finished_by_the_reconciler() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let settle = FAST_SETTLE.replace(
        "receipt_timeout_seconds = 5",
        "receipt_timeout_seconds = 60",
    );
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        &settle,
    );
    let mut a = FacilitatorProcess::start("after-broadcast", &toml)
        .await
        .unwrap();
    let provider = anvil.provider();
    anvil.set_automine(false).await.unwrap();
    let (auth, body) = payments(&anvil, 1).remove(0);

    let url = format!("{}/settle", a.url());
    let request = {
        let body = body.clone();
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
    };
    let start = Instant::now();
    while !record_states(&redis).await.contains_key("broadcast") {
        assert!(start.elapsed() < Duration::from_secs(10), "never broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    assert!(
        request.await.unwrap().is_err(),
        "the killed request had no answer"
    );

    let a = FacilitatorProcess::start("after-broadcast-2", &toml)
        .await
        .unwrap();
    let (status, lookup) = a.post("/settlements/lookup", &body).await.unwrap();
    assert_eq!(status, 200, "{lookup}");
    assert_eq!(lookup["state"], "pending", "{lookup}");
    let tx = lookup["transaction"].as_str().unwrap().to_string();
    assert_eq!(tx.len(), 66, "{lookup}");

    // The chain goes on producing blocks (if the kill came between recording and sending, the
    // reconciler re-sends the recorded bytes first).
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
        let status: Value = http
            .get(format!("{}/settlements/{tx}", a.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["state"] == "settled" {
            assert_eq!(status["recordState"], "confirmed", "{status}");
            assert_eq!(status["amount"], AMOUNT.to_string());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the reconciler never recorded the receipt: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, first) = a.post("/settle", &body).await.unwrap();
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(first["transaction"], tx.as_str());
    let (_, second) = a.post("/settle", &body).await.unwrap();
    assert_eq!(second["success"], false, "{second}");
    assert_eq!(second["errorReason"], "duplicate_settlement", "{second}");
    assert_eq!(second["transaction"], tx.as_str());
    assert!(
        usdc.authorization_state(auth.from, auth.nonce)
            .await
            .unwrap()
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await, 1);
}

/// An RPC that accepts connections and never answers: `/verify` and `/settle` answer within
/// their deadlines (503, nothing broadcast); when the RPC answers again, the same payment
/// settles once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rpc_gets_answers_within_the_deadlines() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let proxy = StallProxy::start(&format!("127.0.0.1:{}", anvil.port()))
        .await
        .unwrap();
    let toml = config(
        &anvil,
        proxy.url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let (status, ok) = fac.post("/verify", &body).await.unwrap();
    assert_eq!((status, &ok["isValid"]), (200, &json!(true)), "{ok}");

    proxy.set_stalled(true);
    let t = Instant::now();
    let (status, verify) = fac.post("/verify", &body).await.unwrap();
    let verify_time = t.elapsed();
    assert_eq!(status, 503, "{verify}");
    assert_eq!(
        verify["invalidReason"], "unexpected_verify_error",
        "{verify}"
    );
    assert!(
        verify_time < Duration::from_secs(6),
        "verify took {verify_time:?}"
    );

    let t = Instant::now();
    let (status, settle) = fac.post("/settle", &body).await.unwrap();
    let settle_time = t.elapsed();
    assert_eq!(status, 503, "{settle}");
    assert_eq!(settle["transaction"], "", "nothing broadcast: {settle}");
    assert!(
        settle_time < Duration::from_secs(10),
        "settle took {settle_time:?}"
    );
    eprintln!("stalled RPC: /verify {verify_time:?}, /settle {settle_time:?}");

    proxy.set_stalled(false);
    let (_, settled) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(settled["success"], true, "{settled}");
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await, 1);
}

/// A node drops the broadcast transaction (`anvil_dropTransaction`): the reconciler re-sends
/// the same signed bytes, and the payment lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transaction_is_resent_and_lands_once() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let settle = FAST_SETTLE.replace("receipt_timeout_seconds = 5", "receipt_timeout_seconds = 1");
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        &settle,
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let provider = anvil.provider();
    anvil.set_automine(false).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let (_, pending) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let tx: B256 = pending["transaction"].as_str().unwrap().parse().unwrap();

    let _: Value = provider
        .raw_request("anvil_dropTransaction".into(), (tx,))
        .await
        .unwrap();
    assert!(
        provider
            .get_transaction_by_hash(tx)
            .await
            .unwrap()
            .is_none(),
        "dropped"
    );
    let start = Instant::now();
    while provider
        .get_transaction_by_hash(tx)
        .await
        .unwrap()
        .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(15), "never re-sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let (_, done) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(done["transaction"], format!("{tx:#x}"));
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await, 1);
    let metrics = fac.get("/metrics").await.unwrap().1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("x402_settle_resends_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Redis hangs mid-burst: every `/settle` answers 503 within the Redis deadline and nothing
/// is broadcast unguarded; when Redis answers again, the same payments settle once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_paused_mid_burst_refuses_then_resumes() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let payments = payments(&anvil, 10);
    for (_, body) in &payments[..3] {
        let (_, a) = fac.post("/settle", body).await.unwrap();
        assert_eq!(a["success"], true, "{a}");
    }

    redis.pause().unwrap();
    let before = tx_count(&anvil, 1).await;
    let t = Instant::now();
    let answers =
        futures::future::join_all(payments[3..].iter().map(|(_, b)| fac.post("/settle", b))).await;
    for a in &answers {
        let (status, a) = a.as_ref().unwrap();
        assert_eq!(*status, 503, "{a}");
        assert_eq!(a["transaction"], "", "{a}");
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        tx_count(&anvil, 1).await,
        before,
        "nothing broadcast without Redis"
    );
    redis.resume().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    for (_, body) in &payments[3..] {
        loop {
            let (status, a) = fac.post("/settle", body).await.unwrap();
            if a["success"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "never resumed: {status} {a}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 10)
    );
    assert_eq!(tx_count(&anvil, 1).await, 10);
}

/// x402-conformance F3: 30 concurrent settles of one payment across two replicas sharing Redis
/// (and one signer key) give exactly one success; the rest are `duplicate_settlement` or
/// `settlement_pending`; one transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_thirty_concurrent_settles_across_two_replicas_succeed_once() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    );
    let a = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let b = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let replicas = [&a, &b];
    let answers =
        futures::future::join_all((0..30).map(|i| replicas[i % 2].post("/settle", &body))).await;
    let answers: Vec<Value> = answers.into_iter().map(|a| a.unwrap().1).collect();
    assert_eq!(
        answers.iter().filter(|a| a["success"] == true).count(),
        1,
        "{answers:#?}"
    );
    for a in &answers {
        if a["success"] != true {
            let reason = a["errorReason"].as_str().unwrap_or_default();
            assert!(
                matches!(reason, "duplicate_settlement" | "settlement_pending"),
                "{a}"
            );
        }
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await, 1);
}

/// x402-conformance F10, F13, F14: a settled payment replayed with another `payTo`, amount,
/// asset or network is never a success, and moves nothing.
#[tokio::test]
async fn f10_f13_f14_replays_under_other_requirements_never_succeed() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let (_, first) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(first["success"], true, "{first}");

    let edit = |field: &str, value: Value| {
        let mut b = body.clone();
        b["paymentRequirements"][field] = value.clone();
        b["paymentPayload"]["accepted"][field] = value;
        b
    };
    let cases = [
        (
            "F10 payTo",
            edit("payTo", json!(anvil.address(5).to_checksum(None))),
        ),
        (
            "F10 amount",
            edit("amount", json!((AMOUNT * 2).to_string())),
        ),
        (
            "F13 asset",
            edit("asset", json!("0x036CbD53842c5426634e7929541eC2318f3dCF7e")),
        ),
        ("F14 network", edit("network", json!("eip155:84532"))),
    ];
    for (case, replay) in cases {
        let (status, answer) = fac.post("/settle", &replay).await.unwrap();
        assert_eq!(status, 200, "{case}: {answer}");
        assert_eq!(answer["success"], false, "{case}: {answer}");
        eprintln!("{case}: {}", answer["errorReason"]);
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await, 1);
}

/// RPC failover: with a second URL configured, a stalled first endpoint costs one RPC timeout,
/// then verifications and settlements go through the second; `/health` and
/// `x402_rpc_failovers_total` say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rpc_fails_over_to_the_second_url() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let proxy = StallProxy::start(&format!("127.0.0.1:{}", anvil.port()))
        .await
        .unwrap();
    let toml = config(
        &anvil,
        proxy.url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    )
    .replace(
        &format!("rpc_url = \"{}\"", proxy.url()),
        &format!("rpc_urls = [\"{}\", \"{}\"]", proxy.url(), anvil.rpc_url()),
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let payments = payments(&anvil, 2);
    proxy.set_stalled(true);

    let t = Instant::now();
    let (_, verify) = fac.post("/verify", &payments[0].1).await.unwrap();
    assert_eq!(verify["isValid"], true, "{verify}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    for (_, body) in &payments {
        let (_, settle) = fac.post("/settle", body).await.unwrap();
        assert_eq!(settle["success"], true, "{settle}");
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 2)
    );
    // `/health` answers the last background check: polled until one ran after the failover.
    let (_, health) = fac
        .get_until("/health", Duration::from_secs(20), |_, body| {
            let h: Value = serde_json::from_str(body).unwrap_or_default();
            let e = &h["networks"][0]["rpcEndpoints"];
            e[0]["healthy"] == false && e[1]["current"] == true
        })
        .await
        .unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    let endpoints = &health["networks"][0]["rpcEndpoints"];
    assert_eq!(endpoints[0]["healthy"], false, "{health}");
    assert_eq!(endpoints[1]["current"], true, "{health}");
    let metrics = fac.get("/metrics").await.unwrap().1;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("x402_rpc_failovers_total{network=\"eip155:8453\"} ")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// A broadcast transaction priced below a risen base fee stays in the pool unmined: the
/// reconciler replaces it (same nonce, fees raised per EIP-1559 replacement rules), records
/// both, and the payment lands exactly once, answered with the transaction that landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underpriced_transaction_is_replaced_with_higher_fees_and_lands_once() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let settle = FAST_SETTLE
        .replace("receipt_timeout_seconds = 5", "receipt_timeout_seconds = 1")
        .replace(
            "resend_after_seconds = 2",
            "resend_after_seconds = 2\nreplace_after_seconds = 2",
        );
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        &settle,
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let provider = anvil.provider();
    anvil.set_automine(false).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let (_, pending) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let first: B256 = pending["transaction"].as_str().unwrap().parse().unwrap();
    let sent = provider
        .get_transaction_by_hash(first)
        .await
        .unwrap()
        .unwrap();
    let max_fee = alloy::consensus::Transaction::max_fee_per_gas(&sent);

    // The base fee jumps far above what the transaction offers: it cannot be mined.
    let _: Value = provider
        .raw_request(
            "anvil_setNextBlockBaseFeePerGas".into(),
            (U256::from(max_fee * 4),),
        )
        .await
        .unwrap();
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    assert!(
        provider
            .get_transaction_receipt(first)
            .await
            .unwrap()
            .is_none()
    );

    let start = Instant::now();
    let replacement = loop {
        let (_, status) = fac.post("/settlements/lookup", &body).await.unwrap();
        let current = status["transaction"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !current.is_empty() && current != format!("{first:#x}") {
            break current;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never replaced: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let start = Instant::now();
    let done = loop {
        let (_, answer) = fac.post("/settle", &body).await.unwrap();
        if answer["errorReason"] != "settlement_pending" {
            break answer;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{answer}");
        let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    };
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(done["transaction"], replacement.as_str(), "{done}");
    assert!(
        provider
            .get_transaction_receipt(first)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await, 1, "one nonce used");
    let metrics = fac.get("/metrics").await.unwrap().1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("x402_settle_replacements_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Every signer below the balance floor: `/settle` answers 503 before reserving anything (no
/// record), and `/verify` still works.
#[tokio::test]
async fn no_funded_signer_refuses_settle_before_reserving() {
    let (anvil, _usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let _: Value = anvil
        .provider()
        .raw_request(
            "anvil_setBalance".into(),
            (anvil.address(1), U256::from(1_000u64)),
        )
        .await
        .unwrap();
    let toml = config(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        &redis.url(),
        FAST_SETTLE,
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let (status, answer) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["transaction"], "", "{answer}");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("no funded signer"),
        "{answer}"
    );
    assert!(record_states(&redis).await.is_empty(), "nothing reserved");
    let (_, verify) = fac.post("/verify", &body).await.unwrap();
    assert_eq!(verify["isValid"], true, "{verify}");
}
