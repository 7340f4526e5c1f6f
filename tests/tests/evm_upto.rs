//! EVM `upto` end to end (issue 17 item 4; specs/schemes/upto/scheme_upto_evm.md): anvil with
//! Permit2's canonical bytecode and this project's `X402UptoPermit2Proxy` at the canonical
//! address, a plain ERC-20 without EIP-3009, the facilitator over real HTTP with
//! `schemes = ["exact", "upto"]`. The payer authorizes a maximum; the resource server settles
//! what the work cost, sent by the signer the witness names; a charge of 0 sends nothing. One
//! test per `upto` reason string reachable over HTTP (`upto_amount_exceeds_permitted` and
//! `upto_unauthorized_facilitator` are proxy reverts the checks before them rule out; their
//! mapping is unit-tested in `x402_verify::evm::permit2`).

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use serde_json::{Value, json};
use x402_tests::permit2::{
    EXACT_PROXY, Permit2Auth, Permit2Fixture, UPTO_PROXY, body, install_contracts, nonce_used,
    set_code, upto_settle_body, with_upto,
};

/// The maximum the payer authorizes, atomic units of the plain token.
const MAX: u64 = 50_000;
/// What the work cost.
const CHARGE: u64 = 18_000;

async fn fixture() -> Permit2Fixture {
    Permit2Fixture::start_edited(None, with_upto)
        .await
        .expect("fixture starts")
}

async fn signer_nonce(fx: &Permit2Fixture, signer: Address) -> u64 {
    fx.anvil
        .provider()
        .get_transaction_count(signer)
        .await
        .unwrap()
}

/// An `upto` payment with `edit` applied to the authorization before signing.
fn edited(fx: &Permit2Fixture, edit: impl FnOnce(&mut Permit2Auth)) -> Value {
    let (req, mut auth, _) = fx.plain_upto_payment(MAX);
    edit(&mut auth);
    let sig = auth.sign(&fx.payer, fx.anvil.chain_id()).unwrap();
    body(&req, &sig, &auth)
}

#[tokio::test]
async fn supported_lists_exact_with_eip2612_and_upto_with_its_facilitator_address() {
    let fx = fixture().await;
    let (status, supported) = fx.facilitator.get("/supported").await.unwrap();
    assert_eq!(status, 200, "{supported}");
    let supported: Value = serde_json::from_str(&supported).unwrap();
    let network = format!("eip155:{}", fx.anvil.chain_id());
    let kinds = supported["kinds"].as_array().unwrap();
    let of = |scheme: &str, version: u64| {
        kinds
            .iter()
            .find(|k| {
                k["scheme"] == scheme && k["network"] == network && k["x402Version"] == version
            })
            .cloned()
    };
    assert!(of("exact", 2).is_some(), "{supported}");
    let upto = of("upto", 2).expect("upto listed");
    assert_eq!(
        upto["extra"]["facilitatorAddress"],
        fx.anvil.address(1).to_checksum(None),
        "{supported}"
    );
    assert!(of("upto", 1).is_none(), "upto is v2 only: {supported}");
    assert!(
        supported["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("eip2612GasSponsoring")),
        "{supported}"
    );
}

#[tokio::test]
async fn upto_settles_the_smaller_actual_amount_once_sent_by_its_facilitator() {
    let fx = fixture().await;
    let (_, auth, verify_body) = fx.plain_upto_payment(MAX);
    let payee_before = fx.payee_plain().await.unwrap();
    let payer_before = fx
        .plain
        .balance_of(&fx.anvil, fx.payer.address())
        .await
        .unwrap();

    let (status, verify) = fx.facilitator.post("/verify", &verify_body).await.unwrap();
    assert_eq!(
        (status, verify),
        (
            200,
            json!({"isValid": true, "payer": fx.payer.address().to_checksum(None)})
        )
    );

    let settle_body = upto_settle_body(&verify_body, CHARGE);
    let (status, settle) = fx.facilitator.post("/settle", &settle_body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    assert_eq!(settle["success"], true, "{settle}");
    assert_eq!(settle["amount"], CHARGE.to_string(), "{settle}");
    assert_eq!(settle["payer"], fx.payer.address().to_checksum(None));
    let tx = settle["transaction"].as_str().unwrap().to_string();
    let receipt = fx
        .anvil
        .provider()
        .get_transaction_receipt(tx.parse().unwrap())
        .await
        .unwrap()
        .expect("mined");
    assert_eq!(
        receipt.from,
        fx.anvil.address(1),
        "sent by witness.facilitator"
    );
    println!(
        "upto settlement of a plain ERC-20: gasUsed {}",
        receipt.gas_used
    );
    assert_eq!(receipt.to, Some(UPTO_PROXY));
    assert_eq!(
        fx.payee_plain().await.unwrap(),
        payee_before + U256::from(CHARGE)
    );
    assert_eq!(
        fx.plain
            .balance_of(&fx.anvil, fx.payer.address())
            .await
            .unwrap(),
        payer_before - U256::from(CHARGE),
        "charged the actual amount, not the maximum"
    );
    assert!(nonce_used(&fx.anvil, auth.from, auth.nonce).await.unwrap());

    // The status API carries the settled amount.
    let (status, found) = fx
        .facilitator
        .post("/settlements/lookup", &settle_body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["transaction"], tx, "{found}");
    assert_eq!(found["amount"], CHARGE.to_string(), "{found}");

    // F3: the same settlement again, or another charge of the same authorization, never
    // succeeds again and moves nothing.
    let (_, again) = fx.facilitator.post("/settle", &settle_body).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], tx);
    let (_, other) = fx
        .facilitator
        .post("/settle", &upto_settle_body(&verify_body, CHARGE + 1))
        .await
        .unwrap();
    assert_eq!(other["success"], false, "{other}");
    assert_eq!(
        fx.payee_plain().await.unwrap(),
        payee_before + U256::from(CHARGE)
    );
}

#[tokio::test]
async fn upto_charging_zero_sends_nothing_and_succeeds_once() {
    let fx = fixture().await;
    let (_, auth, verify_body) = fx.plain_upto_payment(MAX);
    let before = fx.payee_plain().await.unwrap();
    let settle_body = upto_settle_body(&verify_body, 0);
    let (status, settle) = fx.facilitator.post("/settle", &settle_body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    assert_eq!(
        settle,
        json!({
            "success": true,
            "transaction": "",
            "network": format!("eip155:{}", fx.anvil.chain_id()),
            "payer": fx.payer.address().to_checksum(None),
            "amount": "0",
        })
    );
    assert_eq!(
        signer_nonce(&fx, fx.anvil.address(1)).await,
        0,
        "nothing sent"
    );
    assert!(!nonce_used(&fx.anvil, auth.from, auth.nonce).await.unwrap());
    assert_eq!(fx.payee_plain().await.unwrap(), before);
    let (_, again) = fx.facilitator.post("/settle", &settle_body).await.unwrap();
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], "");
}

#[tokio::test]
async fn upto_charge_above_the_maximum_is_settlement_exceeds_amount() {
    let fx = fixture().await;
    let (_, _, verify_body) = fx.plain_upto_payment(MAX);
    assert_eq!(
        fx.settle_reason(&upto_settle_body(&verify_body, MAX + 1))
            .await,
        "invalid_upto_evm_payload_settlement_exceeds_amount"
    );
    assert_eq!(signer_nonce(&fx, fx.anvil.address(1)).await, 0);
}

#[tokio::test]
async fn upto_witness_naming_another_facilitator_is_upto_facilitator_mismatch() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.facilitator = Some(fx.anvil.address(5)));
    assert_eq!(fx.verify_reason(&body).await, "upto_facilitator_mismatch");
    assert_eq!(
        fx.settle_reason(&upto_settle_body(&body, CHARGE)).await,
        "upto_facilitator_mismatch"
    );
}

#[tokio::test]
async fn upto_through_the_exact_proxy_is_invalid_permit2_spender() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.spender = EXACT_PROXY);
    assert_eq!(fx.verify_reason(&body).await, "invalid_permit2_spender");
}

#[tokio::test]
async fn upto_verify_with_an_amount_other_than_permitted_is_permit2_amount_mismatch() {
    let fx = fixture().await;
    let (_, _, mut body) = fx.plain_upto_payment(MAX);
    body["paymentRequirements"]["amount"] = json!(CHARGE.to_string());
    body["paymentPayload"]["accepted"]["amount"] = json!(CHARGE.to_string());
    assert_eq!(fx.verify_reason(&body).await, "permit2_amount_mismatch");
}

#[tokio::test]
async fn upto_scheme_and_network_mismatches_use_the_upto_reasons() {
    let fx = fixture().await;
    let (_, _, body) = fx.plain_upto_payment(MAX);
    let mut scheme = body.clone();
    scheme["paymentPayload"]["accepted"]["scheme"] = json!("exact");
    assert_eq!(fx.verify_reason(&scheme).await, "invalid_upto_evm_scheme");
    let mut network = body.clone();
    network["paymentPayload"]["accepted"]["network"] = json!("eip155:1");
    assert_eq!(
        fx.verify_reason(&network).await,
        "invalid_upto_evm_network_mismatch"
    );
}

#[tokio::test]
async fn a_burst_of_the_same_upto_settlement_gets_one_success() {
    let fx = fixture().await;
    let (_, _, verify_body) = fx.plain_upto_payment(MAX);
    let settle_body = upto_settle_body(&verify_body, CHARGE);
    let before = fx.payee_plain().await.unwrap();
    let answers =
        futures::future::join_all((0..8).map(|_| fx.facilitator.post("/settle", &settle_body)))
            .await;
    let successes = answers
        .iter()
        .map(|a| a.as_ref().unwrap())
        .filter(|(_, a)| a["success"] == true)
        .count();
    assert_eq!(successes, 1, "{answers:?}");
    let (_, again) = fx.facilitator.post("/settle", &settle_body).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(fx.payee_plain().await.unwrap(), before + U256::from(CHARGE));
}

/// Two signers: `/supported` names the first, and a payment naming the second (also ours) is
/// sent by the second, whatever the round-robin would have picked.
#[tokio::test]
async fn upto_is_sent_by_the_signer_its_witness_names() {
    let second = x402_tests::DEV_PRIVATE_KEYS[4];
    let fx = Permit2Fixture::start_edited(None, |t| {
        with_upto(t).replacen(
            "signer_private_keys = [\"",
            &format!("signer_private_keys = [\"{second}\", \""),
            1,
        )
    })
    .await
    .unwrap();
    let (_, supported) = fx.facilitator.get("/supported").await.unwrap();
    let supported: Value = serde_json::from_str(&supported).unwrap();
    let upto = supported["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scheme"] == "upto")
        .cloned()
        .unwrap();
    assert_eq!(
        upto["extra"]["facilitatorAddress"],
        fx.anvil.address(4).to_checksum(None),
        "the first configured signer"
    );
    for _ in 0..3 {
        // Named: account 1 (the second configured signer).
        let (_, _, verify_body) = fx.plain_upto_payment(MAX);
        let (_, settle) = fx
            .facilitator
            .post("/settle", &upto_settle_body(&verify_body, CHARGE))
            .await
            .unwrap();
        assert_eq!(settle["success"], true, "{settle}");
    }
    assert_eq!(signer_nonce(&fx, fx.anvil.address(1)).await, 3);
    assert_eq!(signer_nonce(&fx, fx.anvil.address(4)).await, 0);
}

#[tokio::test]
async fn without_the_upto_proxy_the_facilitator_refuses_to_start_naming_schemes() {
    let anvil = x402_tests::Anvil::spawn().await.unwrap();
    install_contracts(&anvil).await.unwrap();
    set_code(&anvil, UPTO_PROXY, Default::default())
        .await
        .unwrap();
    let plain = x402_tests::permit2::Plain::deploy(&anvil).await.unwrap();
    x402_tests::Usdc::deploy(&anvil, anvil.signer(0))
        .await
        .unwrap();
    let toml = with_upto(Permit2Fixture::config_toml(&anvil, plain.address, None));
    let err = x402_tests::facilitator::TestFacilitator::start_with_toml(&toml)
        .await
        .err()
        .expect("refuses to start");
    let text = format!("{err:#}");
    assert!(text.contains("evm[0].schemes"), "{text}");
    assert!(text.contains("x402UptoPermit2Proxy"), "{text}");
}

/// Gas quotes per settlement call (issue 17 item 5): `upto` and `exact` over Permit2 are
/// quoted at Permit2's initial upper bound until their own settlements land, then at the
/// percentile of their receipts; EIP-3009 USDC keeps its own measured quote throughout, and
/// `/requirements` with `scheme: "upto"` prices the upto call into the maximum.
#[tokio::test]
async fn quotes_are_per_settlement_call_and_upto_requirements_price_the_upto_call() {
    const GAS_TOML: &str = r#"
[evm.gas]
markup_bps = 2000
[[evm.gas.price_sources]]
kind = "fixed"
usd = "3000.00"

[quotes]
refresh_seconds = 1
max_age_seconds = 60
"#;
    let fx = Permit2Fixture::start_edited(None, |t| with_upto(t) + GAS_TOML)
        .await
        .unwrap();
    let network = format!("eip155:{}", fx.anvil.chain_id());
    let plain = fx.plain.address.to_checksum(None);
    let quote = |asset: String, scheme: &'static str| {
        let path = format!("/quote?network={network}&asset={asset}&scheme={scheme}");
        let f = &fx.facilitator;
        async move {
            for _ in 0..100 {
                let (status, body) = f.get(&path).await.unwrap();
                if status == 200 {
                    return serde_json::from_str::<Value>(&body).unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("no quote for {path}");
        }
    };
    let gas = |q: &Value| q["gasUnits"].as_u64().unwrap();
    let usdc = quote(x402_tests::BASE_USDC.to_checksum(None), "exact").await;
    let exact = quote(plain.clone(), "exact").await;
    let upto = quote(plain.clone(), "upto").await;
    println!(
        "gas units quoted: USDC EIP-3009 {}, plain exact Permit2 {}, plain upto {}",
        gas(&usdc),
        gas(&exact),
        gas(&upto)
    );
    assert!(usdc.get("kind").is_none(), "{usdc}");
    assert_eq!(exact["kind"], "permit2", "{exact}");
    assert_eq!(upto["kind"], "upto", "{upto}");
    assert_eq!(gas(&upto), 150_000, "Permit2's initial upper bound: {upto}");
    assert_eq!(gas(&exact), 150_000, "{exact}");
    assert!(gas(&usdc) < 150_000, "EIP-3009 measured on its own: {usdc}");

    let (status, req) = fx
        .facilitator
        .post(
            "/requirements",
            &json!({"network": network, "asset": plain, "scheme": "upto",
                    "payTo": fx.pay_to.to_checksum(None), "price": "1000000"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{req}");
    let v2 = &req["v2"];
    assert_eq!(v2["scheme"], "upto", "{req}");
    assert_eq!(
        v2["extra"]["facilitatorAddress"],
        fx.anvil.address(1).to_checksum(None),
        "{req}"
    );
    assert_eq!(v2["extra"]["assetTransferMethod"], "permit2", "{req}");
    let max: u128 = v2["amount"].as_str().unwrap().parse().unwrap();
    assert!(max > 1_000_000, "the maximum carries the upto gas: {req}");
    assert!(req.get("v1").is_none(), "upto has no v1 form: {req}");

    // Five upto settlements land: the upto quote follows their receipts, exact's does not move.
    for _ in 0..5 {
        let (_, _, verify_body) = fx.plain_upto_payment(MAX);
        let (_, settle) = fx
            .facilitator
            .post("/settle", &upto_settle_body(&verify_body, CHARGE))
            .await
            .unwrap();
        assert_eq!(settle["success"], true, "{settle}");
    }
    let mut sampled = 0;
    for _ in 0..50 {
        sampled = gas(&quote(plain.clone(), "upto").await);
        if sampled < 150_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!("upto gas units quoted after 5 landed: {sampled}");
    assert!(
        (90_000..150_000).contains(&sampled),
        "the upto quote follows its receipts: {sampled}"
    );
    assert_eq!(gas(&quote(plain.clone(), "exact").await), 150_000);
}
