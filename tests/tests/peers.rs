//! Acceptance against the official x402 SDKs (peers we did not write): node `@x402/*` 2.27
//! (`HTTPFacilitatorClient`, `@x402/express` + `@x402/fetch`), PyPI `x402` 2.25
//! (`HTTPFacilitatorClientSync`) and `x402-conformance` 1.6 (`x402conf live`), each run as a
//! child process against our facilitator over real HTTP, settling on anvil with Circle's real
//! USDC. Every payment is checked on chain: successful receipt, `Transfer` and
//! `AuthorizationUsed` logs, the EIP-3009 nonce used, the payee's balance up by exactly the price.
//!
//! One fresh [`EvmFixture`] per test (own anvil, own facilitator, own replay store).

use std::str::FromStr;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use serde_json::{Value, json};
use x402_tests::facilitator::EvmFixture;
use x402_tests::peers::{Peer, PeerOutput};
use x402_tests::usdc::FiatToken;
use x402_tests::{BASE_USDC, DEV_PRIVATE_KEYS, RedisServer};

/// Atomic USDC paid by the verify/settle clients (`AMOUNT`).
const AMOUNT: u64 = 1_000;
/// Atomic USDC of the express route's price `$0.001`.
const EXPRESS_PRICE_ATOMIC: u64 = 1_000;

/// A peer configured for `fixture`: facilitator URL, payer key (account 2), payee (account 3).
fn peer_for(peer: Peer, fx: &EvmFixture) -> Peer {
    peer.env("FACILITATOR_URL", fx.facilitator.url())
        .env("PAYER_KEY", DEV_PRIVATE_KEYS[2])
        .env("PAY_TO", fx.pay_to.to_checksum(None))
}

/// `value[key]`, failing with the peer output when absent.
fn field<'a>(value: &'a Value, key: &str, out: &PeerOutput) -> &'a Value {
    match value.get(key) {
        Some(v) if !v.is_null() => v,
        _ => panic!("peer answer lacks `{key}`\n{out}"),
    }
}

fn str_field<'a>(value: &'a Value, key: &str, out: &PeerOutput) -> &'a str {
    field(value, key, out)
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {value}\n{out}"))
}

/// Parses a `0x` + 64 hex transaction hash.
fn tx_hash(tx: &str, out: &PeerOutput) -> B256 {
    assert!(
        tx.len() == 66 && tx.starts_with("0x") && tx[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "settle.transaction {tx:?} is not a 0x-prefixed 32-byte hash\n{out}"
    );
    B256::from_str(tx).expect("checked hex")
}

fn addr(s: &str, what: &str, out: &PeerOutput) -> Address {
    Address::from_str(s).unwrap_or_else(|e| panic!("{what} {s:?} is not an address: {e}\n{out}"))
}

/// The authorization nonce of an `exact` EVM payment payload (v1 and v2 carry it the same way).
fn authorization_nonce(payload: &Value, out: &PeerOutput) -> B256 {
    let nonce = payload
        .pointer("/payload/authorization/nonce")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("paymentPayload without payload.authorization.nonce\n{out}"));
    B256::from_str(nonce).unwrap_or_else(|e| panic!("bad nonce {nonce:?}: {e}\n{out}"))
}

/// Checks that `tx` is mined on the fixture's anvil with a successful receipt, sent by the
/// facilitator's signer to USDC, moving exactly `amount` from the payer to the payee with
/// authorization `nonce`; returns the receipt.
async fn assert_settled_on_chain(
    fx: &EvmFixture,
    tx: B256,
    amount: u64,
    nonce: Option<B256>,
    out: &PeerOutput,
) -> TransactionReceipt {
    let receipt = fx
        .anvil
        .provider()
        .get_transaction_receipt(tx)
        .await
        .expect("eth_getTransactionReceipt")
        .unwrap_or_else(|| panic!("no receipt on anvil for settle.transaction {tx}\n{out}"));
    assert!(
        receipt.status(),
        "transaction {tx} reverted: {receipt:?}\n{out}"
    );
    assert_eq!(
        receipt.to,
        Some(BASE_USDC),
        "settlement not sent to USDC\n{out}"
    );
    assert_eq!(
        receipt.from, fx.facilitator_signer,
        "settlement not sent by the facilitator's signer\n{out}"
    );
    let transfers: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == BASE_USDC)
        .filter_map(|l| l.log_decode::<FiatToken::Transfer>().ok())
        .map(|l| l.inner.data)
        .collect();
    assert_eq!(
        transfers.len(),
        1,
        "expected one USDC Transfer in {tx}: {transfers:?}\n{out}"
    );
    let t = &transfers[0];
    assert_eq!(
        (t.from, t.to, t.value),
        (fx.payer.address(), fx.pay_to, U256::from(amount)),
        "Transfer log of {tx}\n{out}"
    );
    if let Some(nonce) = nonce {
        let used: Vec<_> = receipt
            .inner
            .logs()
            .iter()
            .filter_map(|l| l.log_decode::<FiatToken::AuthorizationUsed>().ok())
            .map(|l| (l.inner.data.authorizer, l.inner.data.nonce))
            .collect();
        assert_eq!(
            used,
            vec![(fx.payer.address(), nonce)],
            "AuthorizationUsed log of {tx}\n{out}"
        );
        assert!(
            fx.usdc
                .authorization_state(fx.payer.address(), nonce)
                .await
                .expect("authorizationState"),
            "authorization nonce {nonce} not used on chain after settlement\n{out}"
        );
    }
    receipt
}

/// Balances of the payer and the payee.
async fn balances(fx: &EvmFixture) -> (U256, U256) {
    (
        fx.usdc
            .balance_of(fx.payer.address())
            .await
            .expect("payer balance"),
        fx.payee_balance().await.expect("payee balance"),
    )
}

async fn assert_paid_once(fx: &EvmFixture, before: (U256, U256), amount: u64, out: &PeerOutput) {
    let after = balances(fx).await;
    let amount = U256::from(amount);
    assert_eq!(
        after.1,
        before.1 + amount,
        "payee balance must rise by exactly {amount} (before {}, after {})\n{out}",
        before.1,
        after.1
    );
    assert_eq!(
        after.0,
        before.0 - amount,
        "payer balance must fall by exactly {amount} (before {}, after {})\n{out}",
        before.0,
        after.0
    );
}

/// The verify/settle answer of `client_verify_settle.mjs` / `py_client_verify_settle.py`:
/// valid, settled on `network` with a mined transaction moving `AMOUNT`; returns the JSON and
/// the transaction hash.
async fn check_verify_settle(
    fx: &EvmFixture,
    out: &PeerOutput,
    before: (U256, U256),
    network: &str,
) -> (Value, B256) {
    eprintln!("{out}");
    let answer = out.json().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        answer.get("setupError").is_none(),
        "peer setup error\n{out}"
    );
    let verify = field(&answer, "verify", out);
    assert_eq!(verify["isValid"], json!(true), "verify.isValid\n{out}");
    if let Some(payer) = verify.get("payer").and_then(Value::as_str) {
        assert_eq!(
            addr(payer, "verify.payer", out),
            fx.payer.address(),
            "verify.payer\n{out}"
        );
    }
    let settle = field(&answer, "settle", out);
    assert_eq!(settle["success"], json!(true), "settle.success\n{out}");
    assert_eq!(settle["network"], json!(network), "settle.network\n{out}");
    let payer = str_field(settle, "payer", out);
    assert_eq!(
        addr(payer, "settle.payer", out),
        fx.payer.address(),
        "settle.payer\n{out}"
    );
    let tx = tx_hash(str_field(settle, "transaction", out), out);
    assert!(out.success(), "peer exit status\n{out}");
    let nonce = authorization_nonce(field(&answer, "paymentPayload", out), out);
    assert_settled_on_chain(fx, tx, AMOUNT, Some(nonce), out).await;
    assert_paid_once(fx, before, AMOUNT, out).await;
    (answer, tx)
}

/// The official client `peer` signs a v`x402_version` payment and drives our facilitator through
/// the official facilitator client; `network` is what the settlement must report.
async fn client_verify_settle(peer: Peer, x402_version: u32, network: &str) {
    let fx = EvmFixture::start(None).await.expect("fixture");
    let before = balances(&fx).await;
    let out = peer_for(peer, &fx)
        .env("X402_VERSION", x402_version.to_string())
        .env("AMOUNT", AMOUNT.to_string())
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (answer, _) = check_verify_settle(&fx, &out, before, network).await;
    assert_eq!(
        answer["paymentPayload"]["x402Version"],
        json!(x402_version),
        "the client built a v{x402_version} payload\n{out}"
    );
}

#[tokio::test]
async fn node_client_v2_verifies_and_settles() {
    client_verify_settle(Peer::node("client_verify_settle.mjs"), 2, "eip155:8453").await;
}

#[tokio::test]
async fn node_client_v1_verifies_and_settles() {
    client_verify_settle(Peer::node("client_verify_settle.mjs"), 1, "base").await;
}

#[tokio::test]
async fn python_client_v2_verifies_and_settles() {
    client_verify_settle(Peer::python("py_client_verify_settle.py"), 2, "eip155:8453").await;
}

#[tokio::test]
async fn python_client_v1_verifies_and_settles() {
    client_verify_settle(Peer::python("py_client_verify_settle.py"), 1, "base").await;
}

#[tokio::test]
async fn express_middleware_and_fetch_client_pay_through_facilitator() {
    let fx = EvmFixture::start(None).await.expect("fixture");
    let before = balances(&fx).await;
    let out = peer_for(Peer::node("express_e2e.mjs"), &fx)
        .env("PRICE", "$0.001")
        .env("NETWORK", "eip155:8453")
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{out}");
    let answer = out.json().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        answer.get("setupError").is_none(),
        "peer setup error\n{out}"
    );
    assert_eq!(answer["status402"], json!(402), "unpaid request\n{out}");
    let accepts = &answer["paymentRequired"]["accepts"][0];
    assert_eq!(accepts["network"], json!("eip155:8453"), "{out}");
    assert_eq!(
        accepts["amount"],
        json!(EXPRESS_PRICE_ATOMIC.to_string()),
        "{out}"
    );
    assert_eq!(answer["status200"], json!(200), "paid request\n{out}");
    let receipt = field(&answer, "paymentResponse", &out);
    assert_eq!(
        receipt["success"],
        json!(true),
        "PAYMENT-RESPONSE.success\n{out}"
    );
    assert_eq!(
        receipt["network"],
        json!("eip155:8453"),
        "PAYMENT-RESPONSE.network\n{out}"
    );
    let payer = str_field(receipt, "payer", &out);
    assert_eq!(
        addr(payer, "PAYMENT-RESPONSE.payer", &out),
        fx.payer.address(),
        "PAYMENT-RESPONSE.payer\n{out}"
    );
    let tx = tx_hash(str_field(receipt, "transaction", &out), &out);
    assert_eq!(
        answer["body"]["report"]["weather"],
        json!("sunny"),
        "the paid resource\n{out}"
    );
    assert!(out.success(), "peer exit status\n{out}");
    assert_settled_on_chain(&fx, tx, EXPRESS_PRICE_ATOMIC, None, &out).await;
    assert_paid_once(&fx, before, EXPRESS_PRICE_ATOMIC, &out).await;
    eprintln!("express e2e: {:?}", out.elapsed);
}

#[tokio::test]
async fn x402conf_live_passes_against_supported() {
    let fx = EvmFixture::start(None).await.expect("fixture");
    let evidence = std::env::temp_dir().join(format!(
        "x402conf-live-{}-{}",
        std::process::id(),
        fx.anvil.port()
    ));
    let out = Peer::venv_tool("x402conf")
        .arg("live")
        .arg("--evidence")
        .arg(evidence.to_string_lossy())
        .arg(fx.facilitator.url())
        .arg("--fail-on-error")
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let run_json = std::fs::read_to_string(evidence.join("run.json")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&evidence);
    assert!(
        out.success(),
        "x402conf live --fail-on-error must exit 0\n{out}\n--- run.json ---\n{run_json}"
    );
    eprintln!(
        "x402conf live: {:?}\n{}",
        out.elapsed,
        out.stdout.trim_end()
    );
}

/// x402-conformance F3 through the official client: the node client settles one payload
/// twice, then the printed payload and requirements are POSTed to /settle a third time: the
/// first answer is the one success, every later one `duplicate_settlement` naming the settled
/// transaction, and the payment lands once.
async fn replay_through_node_client(fx: EvmFixture) {
    let before = balances(&fx).await;
    let out = peer_for(Peer::node("client_verify_settle.mjs"), &fx)
        .env("X402_VERSION", "2")
        .env("AMOUNT", AMOUNT.to_string())
        .env("SETTLE_AGAIN", "1")
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (answer, tx) = check_verify_settle(&fx, &out, before, "eip155:8453").await;
    let first = &answer["settle"];
    let again = field(&answer, "settleAgain", &out);
    assert_ne!(
        again["success"],
        json!(true),
        "a replayed settle must not succeed again\n{out}"
    );
    assert_eq!(
        again["errorReason"],
        json!("duplicate_settlement"),
        "replayed settle\n{out}"
    );
    assert_eq!(
        again["transaction"], first["transaction"],
        "the replayed settle names the settled transaction\n{out}"
    );

    // Third time, raw: the exact body HTTPFacilitatorClient sends.
    let body = json!({
        "x402Version": answer["paymentPayload"]["x402Version"],
        "paymentPayload": answer["paymentPayload"],
        "paymentRequirements": answer["paymentRequirements"],
    });
    let (status, third) = fx
        .facilitator
        .post("/settle", &body)
        .await
        .expect("POST /settle");
    assert_eq!(status, 200, "third /settle: {third}\n{out}");
    assert_eq!(
        third["success"],
        json!(false),
        "third /settle: {third}\n{out}"
    );
    assert_eq!(
        third["errorReason"],
        json!("duplicate_settlement"),
        "{third}"
    );
    assert_eq!(
        third["transaction"],
        json!(format!("{tx:#x}")),
        "third /settle must name the first transaction: {third}\n{out}"
    );
    // Only one payment landed.
    assert_paid_once(&fx, before, AMOUNT, &out).await;
    let signer_nonce = fx
        .anvil
        .provider()
        .get_transaction_count(fx.facilitator_signer)
        .await
        .expect("nonce");
    assert_eq!(
        signer_nonce, 1,
        "the facilitator's signer must have sent exactly one transaction\n{out}"
    );
}

#[tokio::test]
async fn f3_node_client_replay_succeeds_once_in_memory() {
    replay_through_node_client(EvmFixture::start(None).await.expect("fixture")).await;
}

#[tokio::test]
async fn f3_node_client_replay_succeeds_once_redis() {
    let redis = RedisServer::spawn().await.expect("redis-server");
    replay_through_node_client(
        EvmFixture::start(Some(&redis.url()))
            .await
            .expect("fixture"),
    )
    .await;
}

/// `@x402/extensions` 2.27 `payment-identifier` through the official client: the 402 declares
/// the extension, the client appends its id, `HTTPFacilitatorClient` settles the payload, then
/// the identical payload again (a resource server that lost the answer): the same success
/// again, with `EXTENSION-RESPONSES` read by the SDK into `extensionResponses`; the payload
/// without the extension (a replay of the payment without the id): `duplicate_settlement`.
/// One payment lands.
#[tokio::test]
async fn node_client_payment_identifier_gets_its_success_again() {
    let redis = RedisServer::spawn().await.expect("redis-server");
    let fx = EvmFixture::start(Some(&redis.url()))
        .await
        .expect("fixture");
    let before = balances(&fx).await;
    let out = peer_for(Peer::node("client_verify_settle.mjs"), &fx)
        .env("X402_VERSION", "2")
        .env("AMOUNT", AMOUNT.to_string())
        .env("SETTLE_AGAIN", "1")
        .env("PAYMENT_IDENTIFIER", "1")
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (answer, tx) = check_verify_settle(&fx, &out, before, "eip155:8453").await;
    assert!(
        answer["supported"]["extensions"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("payment-identifier"))),
        "/supported advertises payment-identifier\n{out}"
    );
    let id = str_field(&answer, "paymentId", &out);
    assert!(id.len() >= 16, "{id}");
    let first = &answer["settle"];
    let again = field(&answer, "settleAgain", &out);
    assert_eq!(
        again["success"],
        json!(true),
        "the same id: success again\n{out}"
    );
    assert_eq!(again["transaction"], json!(format!("{tx:#x}")), "{out}");
    assert_eq!(again["payer"], first["payer"], "{out}");
    for settled in [first, again] {
        assert_eq!(
            settled["extensionResponses"],
            json!({"payment-identifier": {"status": "success"}}),
            "{out}"
        );
    }
    let without = field(&answer, "settleWithoutId", &out);
    assert_eq!(
        without["errorReason"],
        json!("duplicate_settlement"),
        "without the id\n{out}"
    );
    assert_eq!(without["transaction"], json!(format!("{tx:#x}")), "{out}");
    assert_paid_once(&fx, before, AMOUNT, &out).await;
}

/// A block slower than the official SDK's 30 s facilitator timeout: `@x402/core` 2.27's
/// `settleWithPendingRetry` over `HTTPFacilitatorClient` gets `settlement_pending` with the
/// transaction after `answer_within_seconds` (default 20, under the SDK's 30 s), retries once,
/// and the retry gets the success when the block comes (mined here ~5 s after the first answer).
#[tokio::test]
async fn node_client_pending_then_success_on_the_sdk_retry() {
    let fx = EvmFixture::start_with_timeout(None, 30)
        .await
        .expect("fixture");
    fx.anvil.set_automine(false).await.expect("automine off");
    let before = balances(&fx).await;
    let peer = peer_for(Peer::node("client_verify_settle.mjs"), &fx)
        .env("X402_VERSION", "2")
        .env("AMOUNT", AMOUNT.to_string())
        .env("PENDING_RETRY", "1")
        .timeout(std::time::Duration::from_secs(120));
    let run = tokio::spawn(peer.run());
    // The settlement is in the pool: let the first answer come (20 s) and mine ~5 s after it
    // (before the SDK's 30 s).
    let provider = fx.anvil.provider();
    let started = std::time::Instant::now();
    while provider
        .get_transaction_count(fx.facilitator_signer)
        .pending()
        .await
        .unwrap()
        == 0
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(25)).await;
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let out = run.await.unwrap().unwrap_or_else(|e| panic!("{e:#}"));
    let (answer, tx) = check_verify_settle(&fx, &out, before, "eip155:8453").await;
    let attempts = field(&answer, "settleAttempts", &out).as_array().unwrap();
    assert_eq!(attempts.len(), 2, "one pending answer, one retry\n{out}");
    assert_eq!(
        attempts[0]["errorReason"],
        json!("settlement_pending"),
        "{out}"
    );
    assert_eq!(
        attempts[0]["transaction"],
        json!(format!("{tx:#x}")),
        "{out}"
    );
    let first_ms = attempts[0]["elapsedMs"].as_u64().unwrap();
    assert!(
        (19_000..30_000).contains(&first_ms),
        "pending within answer_within_seconds, before the SDK's 30 s: {first_ms} ms\n{out}"
    );
    assert_eq!(attempts[1]["success"], json!(true), "{out}");
    assert_eq!(
        attempts[1]["transaction"],
        json!(format!("{tx:#x}")),
        "{out}"
    );
}

/// The runner itself: a child that outlives its time limit is killed and reported.
#[tokio::test]
async fn peer_runner_kills_at_time_limit() {
    let started = std::time::Instant::now();
    let err = Peer::new("sleep")
        .arg("30")
        .timeout(std::time::Duration::from_millis(300))
        .run()
        .await
        .expect_err("sleep 30 must hit the time limit");
    assert!(
        format!("{err:#}").contains("timed out"),
        "unexpected error: {err:#}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
