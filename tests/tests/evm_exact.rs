//! EVM `exact` end to end: anvil + Circle's real FiatTokenV2_2, the facilitator over real HTTP,
//! the in-memory replay store (Redis-specific behaviour is in `replay_redis.rs`).

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};
use x402_tests::eip3009::{
    Authorization, ExactEvmRequirements, sign_authorization, unix_now, v1_evm_payment_json,
    v2_evm_payment_json,
};
use x402_tests::facilitator::EvmFixture;

const AMOUNT: u64 = 10_000; // 0.01 USDC

/// Signs `auth` for the fixture's token with the EIP-712 domain name `name`.
fn sign(signer: &PrivateKeySigner, name: &str, auth: &Authorization) -> String {
    sign_authorization(signer, name, "2", 8453, x402_tests::BASE_USDC, auth).unwrap()
}

fn body(req: &ExactEvmRequirements, signer: &PrivateKeySigner, auth: &Authorization) -> Value {
    v2_evm_payment_json(&req.v2_json(), &sign(signer, "USD Coin", auth), auth)
}

async fn verify_reason(fx: &EvmFixture, body: &Value) -> String {
    let (status, answer) = fx.facilitator.post("/verify", body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["isValid"], false, "{answer}");
    answer["invalidReason"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn valid_v2_payment_verifies_settles_once_and_retry_returns_first_receipt() {
    let fx = EvmFixture::start(None).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let payee_before = fx.payee_balance().await.unwrap();

    let (status, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(
        (status, &verify),
        (
            200,
            &json!({"isValid": true, "payer": fx.payer.address().to_checksum(None)})
        )
    );
    // Verification is read-only.
    assert_eq!(fx.payee_balance().await.unwrap(), payee_before);

    let (status, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    assert_eq!(settle["success"], true, "{settle}");
    assert_eq!(settle["network"], "eip155:8453");
    assert_eq!(settle["payer"], fx.payer.address().to_checksum(None));
    assert_eq!(settle["amount"], AMOUNT.to_string());
    let tx = settle["transaction"].as_str().unwrap().to_string();
    assert_eq!(tx.len(), 66);
    assert_eq!(
        fx.payee_balance().await.unwrap(),
        payee_before + U256::from(AMOUNT)
    );
    assert!(
        fx.usdc
            .authorization_state(auth.from, auth.nonce)
            .await
            .unwrap()
    );

    // The same payload again (x402-conformance F3): no second success, no second transfer;
    // `duplicate_settlement` names the settled transaction.
    let (status, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], settle["transaction"], "{again}");
    assert_eq!(
        fx.payee_balance().await.unwrap(),
        payee_before + U256::from(AMOUNT)
    );

    // Verifying a settled payment reports the used nonce.
    assert_eq!(
        verify_reason(&fx, &body).await,
        "invalid_exact_evm_nonce_already_used"
    );
}

#[tokio::test]
async fn valid_v1_payment_settles_with_v1_network_name() {
    let fx = EvmFixture::start(None).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v1_evm_payment_json(&req.v1_json(), &sig, &auth);
    let (_, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(verify["isValid"], true, "{verify}");
    let (_, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(settle["success"], true, "{settle}");
    assert_eq!(settle["network"], "base");
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(AMOUNT));
}

#[tokio::test]
async fn each_check_gives_its_reference_reason() {
    let fx = EvmFixture::start(None).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let now = unix_now();
    let fresh = || Authorization::new(fx.payer.address(), fx.pay_to, AMOUNT, 60);

    // Amount: v2 and v1 strings differ in the reference.
    let mut a = fresh();
    a.value = U256::from(AMOUNT - 1);
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.payer, &a)).await,
        "invalid_exact_evm_payload_authorization_value_mismatch"
    );
    let v1 = v1_evm_payment_json(&req.v1_json(), &sign(&fx.payer, "USD Coin", &a), &a);
    assert_eq!(
        verify_reason(&fx, &v1).await,
        "invalid_exact_evm_authorization_value"
    );

    // Recipient.
    let mut a = fresh();
    a.to = Address::repeat_byte(0x11);
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.payer, &a)).await,
        "invalid_exact_evm_recipient_mismatch"
    );

    // Expired, and too close to expiry (validBefore < now + 6 s).
    let mut a = fresh();
    a.valid_before = now - 1;
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.payer, &a)).await,
        "invalid_exact_evm_payload_authorization_valid_before"
    );
    a.valid_before = now + 3;
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.payer, &a)).await,
        "invalid_exact_evm_payload_authorization_valid_before"
    );

    // Not yet valid.
    let mut a = fresh();
    a.valid_after = now + 120;
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.payer, &a)).await,
        "invalid_exact_evm_payload_authorization_valid_after"
    );

    // Wrong domain name: signed as "USDC" while the requirements say "USD Coin" → bad signature;
    // signed and required as "USDC" → the token's name() differs.
    let a = fresh();
    let b = v2_evm_payment_json(&req.v2_json(), &sign(&fx.payer, "USDC", &a), &a);
    assert_eq!(verify_reason(&fx, &b).await, "invalid_exact_evm_signature");
    let mut wrong_name = req.clone();
    wrong_name.name = "USDC".into();
    let b = v2_evm_payment_json(&wrong_name.v2_json(), &sign(&fx.payer, "USDC", &a), &a);
    assert_eq!(
        verify_reason(&fx, &b).await,
        "invalid_exact_evm_token_name_mismatch"
    );

    // Signed by someone else.
    let a = fresh();
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.anvil.signer(5), &a)).await,
        "invalid_exact_evm_signature"
    );

    // An invalid signature wins over every later check: recipient, amount, and (found only by
    // the simulation, after which the signature is recovered) the balance.
    let mut a = fresh();
    a.to = Address::repeat_byte(0x11);
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.anvil.signer(5), &a)).await,
        "invalid_exact_evm_signature"
    );
    let mut a = fresh();
    a.value = U256::from(AMOUNT + 1);
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.anvil.signer(5), &a)).await,
        "invalid_exact_evm_signature"
    );
    let poor = fx.anvil.signer(6);
    let a = Authorization::new(poor.address(), fx.pay_to, AMOUNT, 60);
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.anvil.signer(5), &a)).await,
        "invalid_exact_evm_signature"
    );

    // Insufficient balance: account 6 has no USDC.
    assert_eq!(
        verify_reason(&fx, &body(&req, &poor, &a)).await,
        "invalid_exact_evm_insufficient_balance"
    );
    let (_, settle) = fx
        .facilitator
        .post("/settle", &body(&req, &poor, &a))
        .await
        .unwrap();
    assert_eq!(
        settle["errorReason"], "invalid_exact_evm_insufficient_balance",
        "{settle}"
    );
    assert_eq!(settle["transaction"], "");

    // Missing EIP-712 domain, network mismatch, scheme.
    let a = fresh();
    let mut b = body(&req, &fx.payer, &a);
    b["paymentRequirements"]["extra"] = json!({});
    assert_eq!(
        verify_reason(&fx, &b).await,
        "invalid_exact_evm_missing_eip712_domain"
    );
    let mut b = body(&req, &fx.payer, &a);
    b["paymentPayload"]["accepted"]["network"] = json!("eip155:84532");
    assert_eq!(
        verify_reason(&fx, &b).await,
        "invalid_exact_evm_network_mismatch"
    );
    let mut b = body(&req, &fx.payer, &a);
    b["paymentPayload"]["accepted"]["scheme"] = json!("upto");
    assert_eq!(verify_reason(&fx, &b).await, "invalid_exact_evm_scheme");

    // Used nonce: settle once, then the same authorization verifies as used.
    let a = fresh();
    let b = body(&req, &fx.payer, &a);
    let (_, s) = fx.facilitator.post("/settle", &b).await.unwrap();
    assert_eq!(s["success"], true, "{s}");
    assert_eq!(
        verify_reason(&fx, &b).await,
        "invalid_exact_evm_nonce_already_used"
    );
    // A different payment reusing that nonce (another amount) is refused at settle too.
    let mut other = a.clone();
    other.value = U256::from(AMOUNT * 2);
    let other_req = fx.requirements(AMOUNT * 2);
    let (_, s2) = fx
        .facilitator
        .post("/settle", &body(&other_req, &fx.payer, &other))
        .await
        .unwrap();
    assert_eq!(s2["success"], false, "{s2}");
    assert_eq!(
        s2["errorReason"], "invalid_exact_evm_nonce_already_used",
        "{s2}"
    );
}

#[tokio::test]
async fn unsupported_network_scheme_and_asset_are_reasons_not_errors() {
    let fx = EvmFixture::start(None).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let a = Authorization::new(fx.payer.address(), fx.pay_to, AMOUNT, 60);
    let mut b = body(&req, &fx.payer, &a);
    b["paymentRequirements"]["network"] = json!("eip155:1");
    b["paymentPayload"]["accepted"]["network"] = json!("eip155:1");
    assert_eq!(verify_reason(&fx, &b).await, "invalid_network");
    let (_, s) = fx.facilitator.post("/settle", &b).await.unwrap();
    assert_eq!(
        (
            s["success"].clone(),
            s["errorReason"].clone(),
            s["transaction"].clone()
        ),
        (json!(false), json!("invalid_network"), json!(""))
    );

    let mut b = body(&req, &fx.payer, &a);
    b["paymentRequirements"]["scheme"] = json!("upto");
    assert_eq!(verify_reason(&fx, &b).await, "unsupported_scheme");

    let mut b = body(&req, &fx.payer, &a);
    b["paymentRequirements"]["asset"] = json!("0x0000000000000000000000000000000000000001");
    assert_eq!(verify_reason(&fx, &b).await, "invalid_payment_requirements");
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_field() {
    let fx = EvmFixture::start(None).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let a = Authorization::new(fx.payer.address(), fx.pay_to, AMOUNT, 60);
    let good = body(&req, &fx.payer, &a);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"x402Version": 2}), "paymentPayload"),
        (
            {
                let mut b = good.clone();
                b["paymentRequirements"]
                    .as_object_mut()
                    .unwrap()
                    .remove("payTo");
                b
            },
            "paymentRequirements.payTo",
        ),
        (
            {
                let mut b = good.clone();
                b["paymentRequirements"]["amount"] = json!("1.5");
                b
            },
            "paymentRequirements.amount",
        ),
        (
            {
                let mut b = good.clone();
                b["paymentPayload"]["payload"]["authorization"]
                    .as_object_mut()
                    .unwrap()
                    .remove("nonce");
                b
            },
            "paymentPayload.payload.authorization.nonce",
        ),
        (
            {
                let mut b = good.clone();
                b["paymentPayload"]["payload"]["authorization"]["from"] = json!("0xnothex");
                b
            },
            "paymentPayload.payload.authorization.from",
        ),
        (
            {
                let mut b = good.clone();
                b["paymentPayload"]["x402Version"] = json!(7);
                b
            },
            "paymentPayload.x402Version",
        ),
    ];
    for (bad, field) in cases {
        for path in ["/verify", "/settle"] {
            let (status, answer) = fx.facilitator.post(path, &bad).await.unwrap();
            assert_eq!(status, 400, "{path} {answer}");
            assert_eq!(answer["field"], field, "{path} {answer}");
        }
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/verify", fx.facilitator.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let big = "x".repeat(200_000);
    let resp = reqwest::Client::new()
        .post(format!("{}/settle", fx.facilitator.url()))
        .header("content-type", "application/json")
        .body(format!("{{\"pad\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}

#[tokio::test]
async fn erc1271_wallet_payment_settles_through_bytes_overload() {
    let fx = EvmFixture::start(None).await.unwrap();
    let owner = fx.anvil.signer(7);
    let wallet =
        x402_tests::Usdc::deploy_erc1271_wallet(&fx.anvil, fx.anvil.signer(0), owner.address())
            .await
            .unwrap();
    fx.usdc.mint(wallet, 1_000_000u64).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let a = Authorization::new(wallet, fx.pay_to, AMOUNT, 60);
    let b = body(&req, &owner, &a);
    let (_, v) = fx.facilitator.post("/verify", &b).await.unwrap();
    assert_eq!(v["isValid"], true, "{v}");
    let (_, s) = fx.facilitator.post("/settle", &b).await.unwrap();
    assert_eq!(s["success"], true, "{s}");
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(AMOUNT));
    // Signed by a key the wallet does not accept.
    let a = Authorization::new(wallet, fx.pay_to, AMOUNT, 60);
    assert_eq!(
        verify_reason(&fx, &body(&req, &fx.anvil.signer(8), &a)).await,
        "invalid_exact_evm_signature"
    );
}

#[tokio::test]
async fn supported_health_and_metrics() {
    let fx = EvmFixture::start(None).await.unwrap();
    let (status, supported) = fx.facilitator.get("/supported").await.unwrap();
    assert_eq!(status, 200);
    let supported: Value = serde_json::from_str(&supported).unwrap();
    assert_eq!(
        supported,
        json!({
            "kinds": [
                {"x402Version": 1, "scheme": "exact", "network": "base"},
                {"x402Version": 2, "scheme": "exact", "network": "eip155:8453"}
            ],
            "extensions": ["payment-identifier"],
            "signers": {"eip155:*": [fx.facilitator_signer.to_checksum(None)]}
        })
    );
    let (status, health) = fx.facilitator.get("/health").await.unwrap();
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("\"memory\""), "{health}");

    let req = fx.requirements(AMOUNT);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let (_, s) = fx
        .facilitator
        .post("/settle", &v2_evm_payment_json(&req.v2_json(), &sig, &auth))
        .await
        .unwrap();
    assert_eq!(s["success"], true);
    let (_, metrics) = fx.facilitator.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("x402_settle_total{network=\"eip155:8453\",result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("x402_settle_duration_seconds_count{network=\"eip155:8453\"} 1"),
        "{metrics}"
    );
}
