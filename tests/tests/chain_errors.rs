//! What the facilitator says when a chain or a record fails, through the real in-process
//! facilitator over HTTP, anvil with Circle's FiatTokenV2_2 and a private Redis:
//! - no RPC URL ever reaches an answer: the RPC URL holds a token (as hosted RPC URLs hold API
//!   keys) and a relay in front of anvil stalls, stalls only `eth_sendRawTransaction`, or
//!   refuses connections; `/verify`, `/settle`, `/health/ready` (EVM and Solana networks) and
//!   the "broadcast outcome unknown" answer name the endpoint by index only;
//! - the node's own answers are classified (anvil's "transaction already imported",
//!   "nonce too low", "replacement transaction underpriced", "max fee per gas less than block
//!   base fee");
//! - a corrupt settlement record is 500 (not 503: Redis is up), also to the settlement lookup;
//! - a network without pricing is 404 on `/quote` and `/requirements`.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use serde_json::{Value, json};
use solana_keypair::Keypair;
use solana_signer::Signer;
use x402_chain::{AlloyEvmChain, ChainError, EvmChain};
use x402_proto::network::SOLANA_DEVNET;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::{EvmFixture, TestFacilitator};
use x402_tests::rpc_relay::{RelayMode, RpcRelay};
use x402_tests::svm_payment::{DEVNET_USDC, SvmPaymentBuilder, to_base64, v2_request_json};
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const TOKEN: &str = "SECRET-TOKEN-123";
const AMOUNT: u64 = 10_000;

/// The hosted-style path and query every RPC URL of these tests carries.
fn secret_path() -> String {
    format!("/v3/{TOKEN}?apikey={TOKEN}")
}

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

[health]
check_timeout_ms = 5000
refresh_seconds = 1
"#;

/// Whether a `/health/ready` body says the EVM network's RPC (the first network) is down.
fn evm_rpc_down(body: &str) -> bool {
    let report: Value = serde_json::from_str(body).unwrap_or_default();
    report["networks"][0]["rpcOk"] == false
}

/// Asserts that no part of the secret URL is in `answer` and returns it as text.
fn clean(what: &str, answer: &str) -> String {
    assert!(
        !answer.contains(TOKEN),
        "{what} leaks the RPC URL's token: {answer}"
    );
    assert!(
        !answer.contains("/v3/"),
        "{what} leaks the RPC URL's path: {answer}"
    );
    answer.to_string()
}

/// A fresh payment of [`AMOUNT`] from account 2 to account 3.
fn payment(anvil: &Anvil) -> Value {
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
    v2_evm_payment_json(&req.v2_json(), &sig, &auth)
}

/// A Solana devnet payment body for a fee payer `fee_payer` (never sent anywhere real).
fn svm_payment(fee_payer: &Keypair) -> Value {
    let payer = std::sync::Arc::new(Keypair::new());
    let pay_to = Keypair::new().pubkey();
    let tx = SvmPaymentBuilder::new(
        payer,
        fee_payer.pubkey(),
        DEVNET_USDC,
        pay_to,
        AMOUNT,
        solana_hash::Hash::new_unique(),
    )
    .build();
    let extra = json!({"feePayer": fee_payer.pubkey().to_string()});
    v2_request_json(&to_base64(&tx), &DEVNET_USDC, &pay_to, AMOUNT, &extra)
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers; its port.
async fn silent_listener() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    port
}

/// `/verify`, `/settle` (EVM and Solana) and `/health/ready` with the RPC stalled, then with it
/// refusing connections, and a settlement whose broadcast times out: every answer names the
/// endpoint (`endpoint 0`) and a generic cause, never the URL. Fails on a facilitator that
/// answers with the HTTP client's error text ("error sending request for url (…)").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rpc_url_reaches_an_answer() {
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    usdc.mint(anvil.address(2), 100_000_000u64).await.unwrap();
    let redis = RedisServer::spawn().await.unwrap();
    let relay = RpcRelay::start(anvil.rpc_url()).await.unwrap();
    let svm_port = silent_listener().await;
    let fee_payer = Keypair::new();
    let toml = TestFacilitator::config_toml_custom(
        &anvil,
        &relay.url(&secret_path()),
        DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
        FAST_SETTLE,
    ) + &format!(
        r#"
[[svm]]
network = "{SOLANA_DEVNET}"
rpc_url = "http://127.0.0.1:{svm_port}{path}"
fee_payer_keys = ["{key}"]

[[svm.assets]]
mint = "{DEVNET_USDC}"
decimals = 6
"#,
        path = secret_path(),
        key = fee_payer.to_base58_string(),
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (status, ok) = fac.post("/verify", &payment(&anvil)).await.unwrap();
    assert_eq!((status, &ok["isValid"]), (200, &json!(true)), "{ok}");

    // The Solana network's RPC never answers, from the start.
    let body = svm_payment(&fee_payer);
    for path in ["/verify", "/settle"] {
        let (status, answer) = fac.post(path, &body).await.unwrap();
        let text = clean(&format!("solana {path}"), &answer.to_string());
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("rpc timeout (endpoint 0)"), "{text}");
    }

    // The EVM RPC stalls: accepts, reads, never answers.
    relay.set_mode(RelayMode::Stall);
    let body = payment(&anvil);
    for path in ["/verify", "/settle"] {
        let (status, answer) = fac.post(path, &body).await.unwrap();
        let text = clean(&format!("stalled {path}"), &answer.to_string());
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("chain unavailable: rpc timeout (endpoint 0)"),
            "{text}"
        );
    }
    // `/health/ready` answers the last background check: polled until one saw the EVM RPC
    // stalled (every answer on the way is checked for the URL too).
    let (status, health) = fac
        .get_until("/health/ready", Duration::from_secs(40), |status, body| {
            clean("stalled /health/ready", body);
            status == 503 && evm_rpc_down(body)
        })
        .await
        .unwrap();
    let health = clean("stalled /health/ready", &health);
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("rpc timeout (endpoint 0)"), "{health}");

    // Only the broadcast stalls: the settlement is recorded and sent, and its outcome unknown.
    relay.set_mode(RelayMode::StallMethods(vec![
        "eth_sendRawTransaction".into(),
    ]));
    let (status, pending) = fac.post("/settle", &body).await.unwrap();
    let text = clean("/settle with a stalled broadcast", &pending.to_string());
    assert_eq!(status, 200, "{text}");
    assert_eq!(pending["errorReason"], "settlement_pending", "{text}");
    assert!(
        text.contains("broadcast outcome unknown (rpc timeout (endpoint 0))"),
        "{text}"
    );
    let transaction = pending["transaction"].as_str().unwrap().to_string();
    let (status, lookup) = fac
        .get(&format!("/settlements/{transaction}"))
        .await
        .unwrap();
    clean("settlement lookup", &lookup);
    assert_eq!(status, 200, "{lookup}");

    // It lands once the node answers again (re-sent by the reconciler or the next /settle).
    relay.set_mode(RelayMode::Forward);
    let mut settled = Value::Null;
    for _ in 0..40 {
        let (_, answer) = fac.post("/settle", &body).await.unwrap();
        settled = answer;
        if settled["success"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(settled["success"], true, "{settled}");
    assert_eq!(settled["transaction"], transaction.as_str(), "{settled}");

    // The RPC refuses connections.
    relay.close();
    let body = payment(&anvil);
    for path in ["/verify", "/settle"] {
        let (status, answer) = fac.post(path, &body).await.unwrap();
        let text = clean(&format!("refused {path}"), &answer.to_string());
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("chain unavailable: rpc unavailable: connection failed (endpoint 0)"),
            "{text}"
        );
    }
    let (status, health) = fac
        .get_until("/health/ready", Duration::from_secs(40), |status, body| {
            clean("refused /health/ready", body);
            status == 503 && evm_rpc_down(body) && body.contains("connection failed")
        })
        .await
        .unwrap();
    let health = clean("refused /health/ready", &health);
    assert_eq!(status, 503, "{health}");
    assert!(
        health.contains("connection failed (endpoint 0)"),
        "{health}"
    );
    let (_, health) = fac.get("/health").await.unwrap();
    clean("refused /health", &health);
}

/// anvil's own pool answers, through the production chain client: the same bytes again are
/// `AlreadyKnown`; another transaction at a pending nonce without the fee bump is
/// `Underpriced`; a fee cap under the base fee is `Underpriced`; a mined nonce is `NonceTooLow`.
#[tokio::test]
async fn anvil_pool_answers_are_classified() {
    let anvil = Anvil::spawn().await.unwrap();
    anvil.set_automine(false).await.unwrap();
    let key = anvil.signer(1);
    let from = key.address();
    let chain = AlloyEvmChain::new(
        anvil.rpc_url(),
        anvil.chain_id(),
        vec![key],
        Duration::from_secs(5),
    )
    .unwrap();
    let provider = anvil.provider();
    let base_fee = provider
        .get_block_by_number(Default::default())
        .await
        .unwrap()
        .unwrap()
        .header
        .base_fee_per_gas
        .unwrap_or(1) as u128;
    let tx = |nonce: u64, to: Address, max_fee: u128| {
        TransactionRequest::default()
            .from(from)
            .to(to)
            .value(U256::from(1))
            .nonce(nonce)
            .gas_limit(21_000)
            .max_fee_per_gas(max_fee)
            .max_priority_fee_per_gas(1)
    };
    let nonce = chain.pending_nonce(from).await.unwrap();
    let first = chain
        .sign(tx(nonce, anvil.address(3), base_fee * 4))
        .await
        .unwrap();
    chain.send_raw(&first.raw).await.unwrap();

    let again = chain.send_raw(&first.raw).await.unwrap_err();
    assert!(matches!(again, ChainError::AlreadyKnown(_)), "{again:?}");

    let rival = chain
        .sign(tx(nonce, anvil.address(4), base_fee * 4))
        .await
        .unwrap();
    let e = chain.send_raw(&rival.raw).await.unwrap_err();
    assert!(matches!(e, ChainError::Underpriced(_)), "{e:?}");

    let cheap = chain
        .sign(tx(nonce + 1, anvil.address(3), base_fee / 2))
        .await
        .unwrap();
    match chain.send_raw(&cheap.raw).await {
        Err(ChainError::Underpriced(_)) => {}
        // Some anvil versions queue it until the base fee falls.
        Ok(_) => eprintln!("anvil accepted a fee cap under the base fee"),
        Err(e) => panic!("{e:?}"),
    }

    // Mining the pool uses the nonce.
    anvil.set_automine(true).await.unwrap();
    provider
        .raw_request::<_, Value>("evm_mine".into(), Vec::<Value>::new())
        .await
        .unwrap();
    assert!(chain.mined_nonce(from).await.unwrap() > nonce);
    let stale = chain
        .sign(tx(nonce, anvil.address(5), base_fee * 8))
        .await
        .unwrap();
    let e = chain.send_raw(&stale.raw).await.unwrap_err();
    assert!(matches!(e, ChainError::NonceTooLow(_)), "{e:?}");
}

/// A settlement record that does not decode: `/settle` of that payment and its settlement
/// lookup answer 500 with the x402 shape (Redis is up: not 503), and other payments settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_500_not_503() {
    let redis = RedisServer::spawn().await.unwrap();
    let fx = EvmFixture::start(Some(&redis.url())).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (_, settled) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(settled["success"], true, "{settled}");

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:replay:evm:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("{\"state\":\"broadcast\",\"garbage\":")
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();

    let (status, answer) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["errorReason"], "unexpected_settle_error", "{answer}");
    assert_eq!(answer["network"], "eip155:8453", "{answer}");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("corrupt settlement record"),
        "{answer}"
    );
    let (status, lookup) = fx
        .facilitator
        .post("/settlements/lookup", &body)
        .await
        .unwrap();
    assert_eq!(status, 500, "{lookup}");
    let (status, health) = fx.facilitator.get("/health/ready").await.unwrap();
    assert_eq!(status, 200, "Redis is up: {health}");

    // Another payment is not held up by the corrupt one.
    let req = fx.requirements(AMOUNT + 1);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let other = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (status, settled) = fx.facilitator.post("/settle", &other).await.unwrap();
    assert_eq!(
        (status, &settled["success"]),
        (200, &json!(true)),
        "{settled}"
    );
    let (_, metrics) = fx.facilitator.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("x402_request_errors_total{endpoint=\"settle\",kind=\"internal\"} 1"),
        "{metrics}"
    );
}

/// A configured network without `[evm.gas]`: `/quote` and `/requirements` answer 404 (not
/// offered), not 503 (a price source down); an unknown asset is still 400.
#[tokio::test]
async fn a_network_without_pricing_is_404() {
    let fx = EvmFixture::start(None).await.unwrap();
    let (status, body) = fx
        .facilitator
        .get("/quote?network=eip155:8453")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("has no pricing"), "{body}");
    let (status, body) = fx
        .facilitator
        .post(
            "/requirements",
            &json!({"network": "base", "payTo": fx.pay_to.to_checksum(None), "price": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = fx
        .facilitator
        .get(&format!(
            "/quote?network=eip155:8453&asset={}",
            Address::repeat_byte(7)
        ))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}
