//! The hard path of `exact` over Permit2 (issue 17 item 7), on anvil with Permit2's canonical
//! bytecode, this project's proxy, a plain ERC-20 and a private Redis:
//! - a kill -9 right after broadcast is finished by the reconciler of a new process, which
//!   routes the record to the Permit2 method by its key (F7), while an EIP-3009 record
//!   written under the key layout of earlier releases is reconciled by the EIP-3009 method;
//! - F3 across two replicas sharing Redis and one signer: one success per payment;
//! - F10/F13/F14: a settled Permit2 payment replayed under other requirements never succeeds;
//! - `upto` (issue 17 item 4): a kill -9 right after the broadcast of a smaller charge is
//!   finished by a new process, which answers that charge once (record, status API); F3 across
//!   two replicas and F10/F13/F14 replays of a settled charge never succeed again.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use serde_json::{Value, json};
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::permit2::{
    Permit2Auth, Plain, approve_permit2, body, install_contracts, nonce_used, requirements,
    upto_requirements, upto_settle_body, with_upto,
};
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, RedisServer, Usdc};

const AMOUNT: u64 = 30_000;

const FAST_SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 60
poll_interval_ms = 50
redis_timeout_ms = 500
lease_seconds = 2
resend_after_seconds = 2
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
"#;

struct Chain {
    anvil: Anvil,
    usdc: Usdc,
    plain: Plain,
}

/// anvil + Permit2 + proxy + USDC + the plain token; the payer (account 2) funded with both
/// and both approved to Permit2.
async fn chain() -> Chain {
    let anvil = Anvil::spawn().await.unwrap();
    install_contracts(&anvil).await.unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    let plain = Plain::deploy(&anvil).await.unwrap();
    let payer = anvil.signer(2);
    usdc.mint(payer.address(), 100_000_000u64).await.unwrap();
    plain
        .mint(&anvil, payer.address(), U256::from(100_000_000u64))
        .await
        .unwrap();
    approve_permit2(&anvil, &payer, plain.address, U256::MAX)
        .await
        .unwrap();
    Chain { anvil, usdc, plain }
}

fn toml(c: &Chain, redis: &RedisServer) -> String {
    x402_tests::permit2::Permit2Fixture::config_toml(&c.anvil, c.plain.address, Some(&redis.url()))
        .replace(
            "[settle]\nreceipt_timeout_seconds = 10\npoll_interval_ms = 50\n",
            FAST_SETTLE,
        )
}

/// A Permit2 payment of the plain token from account 2 to account 3.
fn permit2_payment(c: &Chain) -> (Permit2Auth, Value) {
    let req = requirements(
        c.anvil.chain_id(),
        c.plain.address,
        U256::from(AMOUNT),
        c.anvil.address(3),
    );
    let auth = Permit2Auth::new(
        c.anvil.address(2),
        c.plain.address,
        U256::from(AMOUNT),
        c.anvil.address(3),
        300,
    );
    let sig = auth.sign(&c.anvil.signer(2), c.anvil.chain_id()).unwrap();
    let b = body(&req, &sig, &auth);
    (auth, b)
}

/// An `upto` payment of the plain token from account 2 to account 3 of at most `max`, naming
/// the facilitator's signer (account 1): its authorization and the `/settle` body charging
/// `charge`.
fn upto_payment(c: &Chain, max: u64, charge: u64) -> (Permit2Auth, Value) {
    let facilitator = c.anvil.address(1);
    let req = upto_requirements(
        c.anvil.chain_id(),
        c.plain.address,
        U256::from(max),
        c.anvil.address(3),
        facilitator,
    );
    let auth = Permit2Auth::upto(
        c.anvil.address(2),
        c.plain.address,
        U256::from(max),
        c.anvil.address(3),
        facilitator,
        300,
    );
    let sig = auth.sign(&c.anvil.signer(2), c.anvil.chain_id()).unwrap();
    let settle = upto_settle_body(&body(&req, &sig, &auth), charge);
    (auth, settle)
}

/// The replay keys in Redis.
async fn replay_keys(redis: &RedisServer) -> Vec<(String, String)> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:replay:evm:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let raw: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(raw) = raw {
            let record: x402_settle::record::SettlementRecord = serde_json::from_str(&raw).unwrap();
            out.push((key, record.state_name().to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_broadcast_of_both_kinds_is_finished_by_each_method() {
    let c = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = toml(&c, &redis);
    let mut a = FacilitatorProcess::start("p2-after-broadcast", &toml)
        .await
        .unwrap();
    c.anvil.set_automine(false).await.unwrap();
    let (auth, p2body) = permit2_payment(&c);
    let req = ExactEvmRequirements::base_usdc(AMOUNT, c.anvil.address(3));
    let (eauth, sig) = req.authorize(&c.anvil.signer(2)).unwrap();
    let ebody = v2_evm_payment_json(&req.v2_json(), &sig, &eauth);

    let spawn = |body: Value| {
        let url = format!("{}/settle", a.url());
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
    };
    let requests = [spawn(p2body.clone()), spawn(ebody.clone())];
    let start = Instant::now();
    loop {
        let keys = replay_keys(&redis).await;
        if keys.len() == 2 && keys.iter().all(|(_, s)| s == "broadcast") {
            // One record per method, each under its own key space; the EIP-3009 one in the
            // layout of earlier releases (asset address right after the chain id).
            assert!(
                keys.iter()
                    .any(|(k, _)| k.starts_with("x402:replay:evm:8453:permit2:")),
                "{keys:?}"
            );
            assert!(
                keys.iter().any(|(k, _)| k.starts_with(
                    "x402:replay:evm:8453:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913:"
                )),
                "{keys:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never broadcast: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    for r in requests {
        assert!(
            r.await.unwrap().is_err(),
            "the killed request had no answer"
        );
    }

    let b = FacilitatorProcess::start("p2-after-broadcast-2", &toml)
        .await
        .unwrap();
    let provider = c.anvil.provider();
    let start = Instant::now();
    loop {
        let _: String = alloy::providers::Provider::raw_request(&provider, "evm_mine".into(), ())
            .await
            .unwrap();
        let keys = replay_keys(&redis).await;
        if keys.iter().all(|(_, s)| s == "confirmed") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the reconciler did not finish both records: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for body in [&p2body, &ebody] {
        let (_, first) = b.post("/settle", body).await.unwrap();
        assert_eq!(first["success"], true, "{first}");
        let (_, second) = b.post("/settle", body).await.unwrap();
        assert_eq!(second["errorReason"], "duplicate_settlement", "{second}");
    }
    assert!(nonce_used(&c.anvil, auth.from, auth.nonce).await.unwrap());
    assert!(
        c.usdc
            .authorization_state(eauth.from, eauth.nonce)
            .await
            .unwrap()
    );
    assert_eq!(
        c.plain
            .balance_of(&c.anvil, c.anvil.address(3))
            .await
            .unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(
        c.usdc.balance_of(c.anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_concurrent_settles_across_two_replicas_succeed_once() {
    let c = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = toml(&c, &redis);
    let a = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let b = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let payments: Vec<_> = (0..4).map(|_| permit2_payment(&c)).collect();
    let mut calls = Vec::new();
    for (_, body) in &payments {
        for i in 0..6 {
            let fac = if i % 2 == 0 { &a } else { &b };
            calls.push(fac.post("/settle", body));
        }
    }
    let answers = futures::future::join_all(calls).await;
    for (p, chunk) in answers.chunks(6).enumerate() {
        let successes = chunk
            .iter()
            .filter(|r| r.as_ref().unwrap().1["success"] == true)
            .count();
        assert!(successes <= 1, "payment {p}: {chunk:?}");
    }
    // Retries finish what was pending; then every payment has exactly one success, ever.
    for (auth, body) in &payments {
        let start = Instant::now();
        loop {
            let (_, answer) = a.post("/settle", body).await.unwrap();
            if answer["errorReason"] == "duplicate_settlement" || answer["success"] == true {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{answer}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(nonce_used(&c.anvil, auth.from, auth.nonce).await.unwrap());
    }
    assert_eq!(
        c.plain
            .balance_of(&c.anvil, c.anvil.address(3))
            .await
            .unwrap(),
        U256::from(4 * AMOUNT)
    );
}

#[tokio::test]
async fn f10_f13_f14_permit2_replays_under_other_requirements_never_succeed() {
    let c = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let fac = TestFacilitator::start_with_toml(&toml(&c, &redis))
        .await
        .unwrap();
    let (_, body) = permit2_payment(&c);
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
            edit("payTo", json!(c.anvil.address(5).to_checksum(None))),
        ),
        (
            "F10 amount",
            edit("amount", json!((AMOUNT * 2).to_string())),
        ),
        (
            "F13 asset",
            edit("asset", json!(x402_tests::BASE_USDC.to_checksum(None))),
        ),
        ("F14 network", edit("network", json!("eip155:84532"))),
    ];
    for (case, replay) in cases {
        let (status, answer) = fac.post("/settle", &replay).await.unwrap();
        assert_eq!(status, 200, "{case}: {answer}");
        assert_eq!(answer["success"], false, "{case}: {answer}");
    }
    assert_eq!(
        c.plain
            .balance_of(&c.anvil, c.anvil.address(3))
            .await
            .unwrap(),
        U256::from(AMOUNT)
    );
}

/// A Permit2 settlement that a node keeps losing until its `deadline` passed is resolved
/// `expired` by the reconciler (Permit2's nonce bit still unset: nothing moved), and the same
/// payment never succeeds afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit2_settlement_lost_past_its_deadline_expires_and_moves_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = toml(&c, &redis).replace(
        "receipt_timeout_seconds = 60",
        "receipt_timeout_seconds = 2",
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    c.anvil.set_automine(false).await.unwrap();
    let req = requirements(
        c.anvil.chain_id(),
        c.plain.address,
        U256::from(AMOUNT),
        c.anvil.address(3),
    );
    let auth = Permit2Auth::new(
        c.anvil.address(2),
        c.plain.address,
        U256::from(AMOUNT),
        c.anvil.address(3),
        9,
    );
    let b = body(
        &req,
        &auth.sign(&c.anvil.signer(2), c.anvil.chain_id()).unwrap(),
        &auth,
    );
    let (_, pending) = fac.post("/settle", &b).await.unwrap();
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let hash: alloy::primitives::B256 = pending["transaction"].as_str().unwrap().parse().unwrap();
    let dropping = Arc::new(AtomicBool::new(true));
    let dropper = tokio::spawn({
        let (provider, dropping) = (c.anvil.provider(), dropping.clone());
        async move {
            while dropping.load(Ordering::SeqCst) {
                let _: Result<Value, _> = alloy::providers::Provider::raw_request(
                    &provider,
                    "anvil_dropTransaction".into(),
                    (hash,),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let start = Instant::now();
    let lookup = loop {
        let (_, lookup) = fac.post("/settlements/lookup", &b).await.unwrap();
        if lookup["state"] == "expired" {
            break lookup;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "never expired: {lookup}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    dropping.store(false, Ordering::SeqCst);
    dropper.await.unwrap();
    c.anvil.set_automine(true).await.unwrap();
    assert_eq!(lookup["transaction"], pending["transaction"], "{lookup}");
    assert!(!nonce_used(&c.anvil, auth.from, auth.nonce).await.unwrap());
    let (_, again) = fac.post("/settle", &b).await.unwrap();
    assert_ne!(again["success"], true, "{again}");
    assert_eq!(
        c.plain
            .balance_of(&c.anvil, c.anvil.address(3))
            .await
            .unwrap(),
        U256::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_an_upto_broadcast_is_finished_with_its_charge() {
    const MAX: u64 = 40_000;
    const CHARGE: u64 = 11_000;
    let c = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = with_upto(toml(&c, &redis));
    let mut a = FacilitatorProcess::start("upto-after-broadcast", &toml)
        .await
        .unwrap();
    c.anvil.set_automine(false).await.unwrap();
    let (auth, settle_body) = upto_payment(&c, MAX, CHARGE);
    let url = format!("{}/settle", a.url());
    let sent = settle_body.clone();
    let request =
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&sent).send().await });
    let start = Instant::now();
    while !replay_keys(&redis)
        .await
        .iter()
        .any(|(_, s)| s == "broadcast")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    assert!(
        request.await.unwrap().is_err(),
        "the killed request had no answer"
    );

    let b = FacilitatorProcess::start("upto-after-broadcast-2", &toml)
        .await
        .unwrap();
    let provider = c.anvil.provider();
    let start = Instant::now();
    loop {
        let _: String = alloy::providers::Provider::raw_request(&provider, "evm_mine".into(), ())
            .await
            .unwrap();
        if replay_keys(&redis)
            .await
            .iter()
            .all(|(_, s)| s == "confirmed")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the reconciler did not finish the upto record"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, first) = b.post("/settle", &settle_body).await.unwrap();
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(first["amount"], CHARGE.to_string(), "{first}");
    let (_, status) = b.post("/settlements/lookup", &settle_body).await.unwrap();
    assert_eq!(status["amount"], CHARGE.to_string(), "{status}");
    assert_eq!(status["transaction"], first["transaction"], "{status}");
    let (_, second) = b.post("/settle", &settle_body).await.unwrap();
    assert_eq!(second["errorReason"], "duplicate_settlement", "{second}");
    assert_eq!(
        c.plain
            .balance_of(&c.anvil, c.anvil.address(3))
            .await
            .unwrap(),
        U256::from(CHARGE)
    );
    assert!(nonce_used(&c.anvil, auth.from, auth.nonce).await.unwrap());
}

/// F3/F10/F13/F14 for `upto`: once a charge of an authorization settled, neither the same
/// request, another charge, nor the payload under another `payTo`, asset or network ever gets a
/// success, on two replicas sharing Redis; the payee got the one charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_f10_f13_f14_upto_replays_never_succeed_again() {
    const MAX: u64 = 40_000;
    const CHARGE: u64 = 9_000;
    let c = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = with_upto(toml(&c, &redis));
    let a = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let b = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = upto_payment(&c, MAX, CHARGE);
    // F3: six concurrent settles across the two replicas, one success.
    let answers = futures::future::join_all(
        (0..6).map(|i| if i % 2 == 0 { &a } else { &b }.post("/settle", &body)),
    )
    .await;
    let successes = answers
        .iter()
        .filter(|r| r.as_ref().unwrap().1["success"] == true)
        .count();
    assert!(successes <= 1, "{answers:?}");
    let start = Instant::now();
    loop {
        let (_, answer) = a.post("/settle", &body).await.unwrap();
        if answer["errorReason"] == "duplicate_settlement" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let edit = |field: &str, value: Value| {
        let mut r = body.clone();
        r["paymentRequirements"][field] = value.clone();
        r["paymentPayload"]["accepted"][field] = value;
        r
    };
    let cases = [
        ("F3 another charge", {
            let mut r = body.clone();
            r["paymentRequirements"]["amount"] = json!((CHARGE + 1).to_string());
            r
        }),
        (
            "F10 payTo",
            edit("payTo", json!(c.anvil.address(5).to_checksum(None))),
        ),
        (
            "F13 asset",
            edit("asset", json!(x402_tests::BASE_USDC.to_checksum(None))),
        ),
        ("F14 network", edit("network", json!("eip155:84532"))),
    ];
    for (case, replay) in cases {
        for fac in [&a, &b] {
            let (status, answer) = fac.post("/settle", &replay).await.unwrap();
            assert_eq!(status, 200, "{case}: {answer}");
            assert_eq!(answer["success"], false, "{case}: {answer}");
        }
    }
    assert_eq!(
        c.plain
            .balance_of(&c.anvil, c.anvil.address(3))
            .await
            .unwrap(),
        U256::from(CHARGE)
    );
}
