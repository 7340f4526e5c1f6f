//! A resource server that loses `/settle`'s answer gets it back (issue 19), on anvil with
//! Circle's FiatTokenV2_2 and a private Redis: with the payload's `payment-identifier` id or
//! with an `Idempotency-Key` header, the retry of a payment is answered its success (once
//! landed), as often as it asks; a replay of the same payment without the id, or with another
//! id, still gets `duplicate_settlement` (x402-conformance F3); the same id with another
//! payment is a 409; `required: true` without an id is a 400. Also after a kill -9 of the
//! real binary mid-burst.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use base64::Engine as _;
use serde_json::{Value, json};
use x402_tests::eip3009::{Authorization, ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

const SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 10
poll_interval_ms = 50
lease_seconds = 2
resend_after_seconds = 2
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
"#;

/// How a test sends its answer id.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// `paymentPayload.extensions["payment-identifier"].info.id`.
    Extension,
    /// The `Idempotency-Key` header.
    Header,
}

async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::spawn().await.expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 100_000_000u64)
        .await
        .expect("mint");
    (anvil, usdc)
}

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

/// `body` with the `payment-identifier` extension as `@x402/extensions` 2.27 appends it.
fn with_payment_id(body: &Value, id: Option<&str>, required: bool) -> Value {
    let mut body = body.clone();
    let mut info = json!({"required": required});
    if let Some(id) = id {
        info["id"] = json!(id);
    }
    body["paymentPayload"]["extensions"] = json!({"payment-identifier": {
        "info": info,
        "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {"required": {"type": "boolean"},
                "id": {"type": "string", "minLength": 16, "maxLength": 128}},
            "required": ["required"]}}});
    body
}

/// One `/settle` answer: status, `EXTENSION-RESPONSES` decoded, body.
struct Answer {
    status: u16,
    extensions: Option<Value>,
    body: Value,
}

/// POSTs `/settle` with `id` sent `via` (none: neither); `give_up`: the client's timeout.
async fn settle(
    base: &str,
    body: &Value,
    id: Option<(&str, Via)>,
    give_up: Option<Duration>,
) -> reqwest::Result<Answer> {
    let mut builder = reqwest::Client::builder();
    if let Some(t) = give_up {
        builder = builder.timeout(t);
    }
    let client = builder.build().unwrap();
    let body = match id {
        Some((id, Via::Extension)) => with_payment_id(body, Some(id), false),
        _ => body.clone(),
    };
    let mut request = client.post(format!("{base}/settle")).json(&body);
    if let Some((id, Via::Header)) = id {
        request = request.header("Idempotency-Key", id);
    }
    let resp = request.send().await?;
    let status = resp.status().as_u16();
    let extensions = resp.headers().get("extension-responses").map(|v| {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.as_bytes())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    });
    Ok(Answer {
        status,
        extensions,
        body: resp.json().await?,
    })
}

fn id_of(via: Via, i: usize) -> String {
    match via {
        Via::Extension => format!("pay_lost_answer_{i:04}"),
        Via::Header => format!("order-{i}-7d5d747be160"),
    }
}

/// Retries payment `i` with its id until it is no longer pending: the final answer.
async fn retry_until_final(base: &str, body: &Value, id: &str, via: Via) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let a = settle(base, body, Some((id, via)), None).await.unwrap();
        if a.body["errorReason"] != "settlement_pending" || Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 30 settles whose HTTP client gives up after 0.25 s, then each retried with its id: every
/// retry gets its payment's success (again on a second retry); without the id or with another
/// id: `duplicate_settlement` with the transaction.
async fn client_timeouts_then_retries(via: Via) {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let toml = TestFacilitator::config_toml_custom(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
        SETTLE,
    );
    let fx = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let base = fx.url().to_string();
    let payments = payments(&anvil, 30);
    let burst: Vec<_> = payments
        .iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let (base, body, id) = (base.clone(), body.clone(), id_of(via, i));
            tokio::spawn(async move {
                settle(
                    &base,
                    &body,
                    Some((&id, via)),
                    Some(Duration::from_millis(250)),
                )
                .await
                .ok()
                .map(|a| a.body)
            })
        })
        .collect();
    let mut lost = 0;
    for task in burst {
        if task.await.unwrap().is_none() {
            lost += 1;
        }
    }
    let mut landed_before_retry = 0;
    for (auth, _) in &payments {
        if usdc
            .authorization_state(auth.from, auth.nonce)
            .await
            .unwrap()
        {
            landed_before_retry += 1;
        }
    }
    eprintln!(
        "{via:?}: {lost} of 30 answers lost to the client timeout; {landed_before_retry} landed before the retries"
    );
    assert!(lost > 0, "no client gave up: the test proves nothing");

    for (i, (_, body)) in payments.iter().enumerate() {
        let id = id_of(via, i);
        let retry = retry_until_final(&base, body, &id, via).await;
        assert_eq!(retry.status, 200);
        assert_eq!(retry.body["success"], true, "payment {i}: {}", retry.body);
        let tx = retry.body["transaction"].as_str().unwrap().to_string();
        if via == Via::Extension {
            assert_eq!(
                retry.extensions,
                Some(json!({"payment-identifier": {"status": "success"}}))
            );
        }
        let again = settle(&base, body, Some((&id, via)), None).await.unwrap();
        assert_eq!(again.body, retry.body, "the same answer again");
        // A replay of the payment without the id, or with another id: never the success.
        for other in [None, Some(("pay_someone_else_0000", via))] {
            let replay = settle(&base, body, other, None).await.unwrap();
            assert_eq!(replay.status, 200);
            assert_eq!(
                replay.body["errorReason"], "duplicate_settlement",
                "payment {i}, {other:?}: {}",
                replay.body
            );
            assert_eq!(replay.body["transaction"], tx.as_str());
        }
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 30)
    );

    // The same id with another payment: 409, nothing done.
    let fresh = payments_from(&anvil, 1).pop().unwrap();
    let conflict = settle(&base, &fresh.1, Some((&id_of(via, 0), via)), None)
        .await
        .unwrap();
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["success"], false);
    assert!(
        conflict.body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("another payment"),
        "{}",
        conflict.body
    );
    if via == Via::Extension {
        assert_eq!(
            conflict.extensions.unwrap()["payment-identifier"]["status"],
            "rejected"
        );
    }
    assert!(
        !usdc
            .authorization_state(fresh.0.from, fresh.0.nonce)
            .await
            .unwrap()
    );
}

fn payments_from(anvil: &Anvil, n: usize) -> Vec<(Authorization, Value)> {
    payments(anvil, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_timeouts_then_retries_with_the_payment_identifier_get_their_success() {
    client_timeouts_then_retries(Via::Extension).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_timeouts_then_retries_with_the_idempotency_key_get_their_success() {
    client_timeouts_then_retries(Via::Header).await;
}

/// `required: true` without an id: 400 naming the field; a malformed id or header: 400;
/// `/supported` advertises the extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_without_an_id_and_malformed_ids_are_400() {
    let (anvil, _usdc) = chain().await;
    let toml = TestFacilitator::config_toml(&anvil, DEV_PRIVATE_KEYS[1], None);
    let fx = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = payments(&anvil, 1).pop().unwrap();
    let required = with_payment_id(&body, None, true);
    let (status, answer) = fx.post("/settle", &required).await.unwrap();
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["field"],
        "paymentPayload.extensions.payment-identifier.info.id"
    );
    let (status, _) = fx.post("/verify", &required).await.unwrap();
    assert_eq!(status, 400, "/verify too");
    let (status, _) = fx
        .post("/settle", &with_payment_id(&body, Some("short"), false))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let resp = reqwest::Client::new()
        .post(format!("{}/settle", fx.url()))
        .header("Idempotency-Key", "has a space")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (_, supported) = fx.get("/supported").await.unwrap();
    let supported: Value = serde_json::from_str(&supported).unwrap();
    assert_eq!(supported["extensions"], json!(["payment-identifier"]));
    // Nothing was settled by any of them.
    let (_, ok) = fx
        .post("/settle", &with_payment_id(&body, None, false))
        .await
        .unwrap();
    assert_eq!(ok["success"], true, "{ok}");
}

/// kill -9 of one of two replicas (sharing Redis) mid-burst of 30 payments sent with ids (half
/// in the payload, half in the header), then a restart: every caller retrying with its id gets
/// its success; replays without the id get `duplicate_settlement`; each payment settles once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_mid_burst_then_retries_with_ids_get_every_success() {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let config = |key: &str| {
        TestFacilitator::config_toml_custom(
            &anvil,
            anvil.rpc_url(),
            key,
            Some(&redis.url()),
            SETTLE,
        )
    };
    let (toml_a, toml_b) = (config(DEV_PRIVATE_KEYS[1]), config(DEV_PRIVATE_KEYS[4]));
    let mut a = FacilitatorProcess::start("ids-crash-a", &toml_a)
        .await
        .unwrap();
    let b = FacilitatorProcess::start("ids-crash-b", &toml_b)
        .await
        .unwrap();
    let payments = payments(&anvil, 30);
    let via = |i: usize| {
        if i.is_multiple_of(2) {
            Via::Extension
        } else {
            Via::Header
        }
    };
    let urls = [a.url().to_string(), b.url().to_string()];
    let burst: Vec<_> = payments
        .iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let (url, body, id) = (urls[i % 2].clone(), body.clone(), id_of(via(i), i));
            tokio::spawn(async move {
                settle(&url, &body, Some((&id, via(i))), None)
                    .await
                    .ok()
                    .map(|a| a.body)
            })
        })
        .collect();
    let start = Instant::now();
    while anvil_tx_count(&anvil, 1).await < 3 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill9();
    let mut lost = 0;
    for task in burst {
        if task.await.unwrap().is_none() {
            lost += 1;
        }
    }
    eprintln!("answers lost with the killed replica: {lost} of 30");
    let a = FacilitatorProcess::start("ids-crash-a2", &toml_a)
        .await
        .unwrap();
    let replicas = [a.url().to_string(), b.url().to_string()];
    for (i, (_, body)) in payments.iter().enumerate() {
        let id = id_of(via(i), i);
        let retry = retry_until_final(&replicas[(i + 1) % 2], body, &id, via(i)).await;
        assert_eq!(retry.body["success"], true, "payment {i}: {}", retry.body);
        let replay = settle(&replicas[i % 2], body, None, None).await.unwrap();
        assert_eq!(replay.body["errorReason"], "duplicate_settlement");
        assert_eq!(replay.body["transaction"], retry.body["transaction"]);
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * 30),
        "every payment settled exactly once"
    );
}

async fn anvil_tx_count(anvil: &Anvil, index: usize) -> u64 {
    use alloy::providers::Provider;
    anvil
        .provider()
        .get_transaction_count(anvil.address(index))
        .await
        .unwrap()
}
