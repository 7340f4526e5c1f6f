//! EVM `exact` over Permit2 end to end (issue 17 items 2, 6, 7): anvil with Permit2's canonical
//! bytecode and this project's `X402ExactPermit2Proxy` at their canonical addresses, a plain
//! ERC-20 without EIP-3009, real USDC, the facilitator over real HTTP. One test per reason
//! string the Permit2 checks answer (`permit2_invalid_owner` is unreachable over HTTP: a zero
//! owner never passes the signature check; its revert mapping is unit-tested in
//! `x402_verify::evm::permit2`).

use alloy::primitives::{Address, U256};
use serde_json::{Value, json};
use x402_tests::eip3009::unix_now;
use x402_tests::permit2::{
    EXACT_PROXY, Permit2Auth, Permit2Fixture, approve_permit2, body, burn_nonce, eip2612_extension,
    nonce_used, requirements, set_code,
};

const AMOUNT: u64 = 25_000;

async fn fixture() -> Permit2Fixture {
    Permit2Fixture::start(None).await.expect("fixture starts")
}

/// A payment of the plain token with `edit` applied to the authorization before signing.
fn edited(fx: &Permit2Fixture, edit: impl FnOnce(&mut Permit2Auth)) -> Value {
    let (req, mut auth, _) = fx.plain_payment(AMOUNT);
    edit(&mut auth);
    let sig = auth.sign(&fx.payer, fx.anvil.chain_id()).unwrap();
    body(&req, &sig, &auth)
}

#[tokio::test]
async fn plain_erc20_settles_through_permit2_exactly_once() {
    let fx = fixture().await;
    let (_, auth, body) = fx.plain_payment(AMOUNT);
    let before = fx.payee_plain().await.unwrap();

    let (status, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(
        (status, verify),
        (
            200,
            json!({"isValid": true, "payer": fx.payer.address().to_checksum(None)})
        )
    );
    assert_eq!(
        fx.payee_plain().await.unwrap(),
        before,
        "verify moved funds"
    );

    let (status, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{settle}");
    assert_eq!(settle["success"], true, "{settle}");
    assert_eq!(settle["amount"], AMOUNT.to_string());
    assert_eq!(settle["payer"], fx.payer.address().to_checksum(None));
    assert_eq!(settle["transaction"].as_str().unwrap().len(), 66);
    let receipt = alloy::providers::Provider::get_transaction_receipt(
        &fx.anvil.provider(),
        settle["transaction"].as_str().unwrap().parse().unwrap(),
    )
    .await
    .unwrap()
    .expect("mined");
    println!(
        "exact Permit2 settlement of a plain ERC-20: gasUsed {}",
        receipt.gas_used
    );
    assert_eq!(fx.payee_plain().await.unwrap(), before + U256::from(AMOUNT));
    assert!(nonce_used(&fx.anvil, auth.from, auth.nonce).await.unwrap());

    // F3: the same payment again gets no second success and moves nothing.
    let (status, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], settle["transaction"]);
    assert_eq!(fx.payee_plain().await.unwrap(), before + U256::from(AMOUNT));
}

#[tokio::test]
async fn a_burst_of_the_same_permit2_payment_gets_one_success() {
    let fx = fixture().await;
    let (_, _, body) = fx.plain_payment(AMOUNT);
    let before = fx.payee_plain().await.unwrap();
    let answers =
        futures::future::join_all((0..8).map(|_| fx.facilitator.post("/settle", &body))).await;
    let successes = answers
        .iter()
        .map(|a| a.as_ref().unwrap())
        .filter(|(_, a)| a["success"] == true)
        .count();
    assert_eq!(successes, 1, "{answers:?}");
    // Whatever the others answered, one transfer happened, and asking again confirms it.
    let (_, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(fx.payee_plain().await.unwrap(), before + U256::from(AMOUNT));
}

#[tokio::test]
async fn usdc_settles_with_either_method_on_one_sender() {
    let fx = fixture().await;
    // EIP-3009, unchanged on the wire.
    let req = x402_tests::eip3009::ExactEvmRequirements::base_usdc(AMOUNT, fx.pay_to);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let eip3009 = x402_tests::eip3009::v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    // Permit2, same token.
    let p2req = requirements(
        fx.anvil.chain_id(),
        x402_tests::BASE_USDC,
        U256::from(AMOUNT),
        fx.pay_to,
    );
    let p2 = Permit2Auth::new(
        fx.payer.address(),
        x402_tests::BASE_USDC,
        U256::from(AMOUNT),
        fx.pay_to,
        300,
    );
    let p2body = body(
        &p2req,
        &p2.sign(&fx.payer, fx.anvil.chain_id()).unwrap(),
        &p2,
    );
    let before = fx.usdc.balance_of(fx.pay_to).await.unwrap();
    let (a, b) = tokio::join!(
        fx.facilitator.post("/settle", &eip3009),
        fx.facilitator.post("/settle", &p2body)
    );
    let (a, b) = (a.unwrap().1, b.unwrap().1);
    assert_eq!(a["success"], true, "{a}");
    assert_eq!(b["success"], true, "{b}");
    assert_ne!(a["transaction"], b["transaction"]);
    assert_eq!(
        fx.usdc.balance_of(fx.pay_to).await.unwrap(),
        before + U256::from(2 * AMOUNT)
    );
    // One sender: the two settlements used consecutive nonces of the one signer.
    use alloy::providers::Provider;
    let count = fx
        .anvil
        .provider()
        .get_transaction_count(fx.anvil.address(1))
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn permit2_lookup_and_status_name_the_settlement() {
    let fx = fixture().await;
    let (_, _, body) = fx.plain_payment(AMOUNT);
    let (_, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(settle["success"], true, "{settle}");
    let (status, found) = fx
        .facilitator
        .post("/settlements/lookup", &body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["transaction"], settle["transaction"], "{found}");
    assert_eq!(found["state"], "settled", "{found}");
    assert_eq!(found["amount"], AMOUNT.to_string(), "{found}");
    assert_eq!(
        found["asset"],
        fx.plain.address.to_checksum(None),
        "{found}"
    );
}

#[tokio::test]
async fn wrong_spender_is_invalid_permit2_spender() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.spender = Address::repeat_byte(0x42));
    assert_eq!(fx.verify_reason(&body).await, "invalid_permit2_spender");
}

#[tokio::test]
async fn witness_to_other_than_pay_to_is_invalid_permit2_recipient_mismatch() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.to = Address::repeat_byte(0x43));
    assert_eq!(
        fx.verify_reason(&body).await,
        "invalid_permit2_recipient_mismatch"
    );
}

#[tokio::test]
async fn deadline_under_six_seconds_is_permit2_deadline_expired() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.deadline = unix_now() + 3);
    assert_eq!(fx.verify_reason(&body).await, "permit2_deadline_expired");
}

#[tokio::test]
async fn future_valid_after_is_permit2_not_yet_valid() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.valid_after = unix_now() + 120);
    assert_eq!(fx.verify_reason(&body).await, "permit2_not_yet_valid");
}

#[tokio::test]
async fn other_amount_is_permit2_amount_mismatch() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.amount = U256::from(AMOUNT + 1));
    assert_eq!(fx.verify_reason(&body).await, "permit2_amount_mismatch");
}

#[tokio::test]
async fn other_token_is_permit2_token_mismatch() {
    let fx = fixture().await;
    let body = edited(&fx, |a| a.token = x402_tests::BASE_USDC);
    assert_eq!(fx.verify_reason(&body).await, "permit2_token_mismatch");
}

#[tokio::test]
async fn signature_of_another_key_is_invalid_permit2_signature() {
    let fx = fixture().await;
    let (req, auth, _) = fx.plain_payment(AMOUNT);
    let sig = auth.sign(&fx.anvil.signer(5), fx.anvil.chain_id()).unwrap();
    let body = body(&req, &sig, &auth);
    assert_eq!(fx.verify_reason(&body).await, "invalid_permit2_signature");
    // Settling it broadcasts nothing.
    let (_, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(
        settle["errorReason"], "invalid_permit2_signature",
        "{settle}"
    );
    assert_eq!(settle["transaction"], "");
}

#[tokio::test]
async fn no_approval_to_permit2_is_permit2_allowance_required() {
    let fx = fixture().await;
    let payer = fx.anvil.signer(4);
    fx.plain
        .mint(&fx.anvil, payer.address(), U256::from(AMOUNT))
        .await
        .unwrap();
    let req = requirements(
        fx.anvil.chain_id(),
        fx.plain.address,
        U256::from(AMOUNT),
        fx.pay_to,
    );
    let auth = Permit2Auth::new(
        payer.address(),
        fx.plain.address,
        U256::from(AMOUNT),
        fx.pay_to,
        300,
    );
    let body = body(
        &req,
        &auth.sign(&payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    assert_eq!(fx.verify_reason(&body).await, "permit2_allowance_required");
}

#[tokio::test]
async fn approved_without_funds_is_permit2_insufficient_balance() {
    let fx = fixture().await;
    let payer = fx.anvil.signer(5);
    approve_permit2(&fx.anvil, &payer, fx.plain.address, U256::MAX)
        .await
        .unwrap();
    let req = requirements(
        fx.anvil.chain_id(),
        fx.plain.address,
        U256::from(AMOUNT),
        fx.pay_to,
    );
    let auth = Permit2Auth::new(
        payer.address(),
        fx.plain.address,
        U256::from(AMOUNT),
        fx.pay_to,
        300,
    );
    let body = body(
        &req,
        &auth.sign(&payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    assert_eq!(
        fx.verify_reason(&body).await,
        "permit2_insufficient_balance"
    );
}

#[tokio::test]
async fn proxy_without_code_is_permit2_proxy_not_deployed() {
    let fx = fixture().await;
    // Removed after the facilitator started (which refuses to start without it).
    set_code(&fx.anvil, EXACT_PROXY, Default::default())
        .await
        .unwrap();
    let (_, _, body) = fx.plain_payment(AMOUNT);
    assert_eq!(fx.verify_reason(&body).await, "permit2_proxy_not_deployed");
}

#[tokio::test]
async fn unexplained_revert_is_permit2_simulation_failed() {
    let fx = fixture().await;
    fx.plain.set_frozen(&fx.anvil, true).await.unwrap();
    let (_, _, body) = fx.plain_payment(AMOUNT);
    assert_eq!(fx.verify_reason(&body).await, "permit2_simulation_failed");
}

#[tokio::test]
async fn zero_amount_is_permit2_invalid_amount() {
    let fx = fixture().await;
    let req = requirements(fx.anvil.chain_id(), fx.plain.address, U256::ZERO, fx.pay_to);
    let auth = Permit2Auth::new(
        fx.payer.address(),
        fx.plain.address,
        U256::ZERO,
        fx.pay_to,
        300,
    );
    let body = body(
        &req,
        &auth.sign(&fx.payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    // /verify answers as the reference does; /settle names the proxy's revert.
    assert_eq!(fx.verify_reason(&body).await, "permit2_simulation_failed");
    assert_eq!(fx.settle_reason(&body).await, "permit2_invalid_amount");
}

#[tokio::test]
async fn zero_destination_is_permit2_invalid_destination() {
    let fx = fixture().await;
    let req = requirements(
        fx.anvil.chain_id(),
        fx.plain.address,
        U256::from(AMOUNT),
        Address::ZERO,
    );
    let auth = Permit2Auth::new(
        fx.payer.address(),
        fx.plain.address,
        U256::from(AMOUNT),
        Address::ZERO,
        300,
    );
    let body = body(
        &req,
        &auth.sign(&fx.payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    // /verify answers as the reference does; /settle names the proxy's revert.
    assert_eq!(fx.verify_reason(&body).await, "permit2_simulation_failed");
    assert_eq!(fx.settle_reason(&body).await, "permit2_invalid_destination");
}

#[tokio::test]
async fn valid_after_past_our_clock_but_not_the_chains_is_permit2_payment_too_early() {
    let fx = fixture().await;
    // The chain's latest block is older than our clock (anvil mines on transactions only):
    // `validAfter = now` passes our check and not the proxy's `block.timestamp >= validAfter`.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let body = edited(&fx, |a| a.valid_after = unix_now());
    // /verify answers as the reference does; /settle names the proxy's revert.
    assert_eq!(fx.verify_reason(&body).await, "permit2_simulation_failed");
    assert_eq!(fx.settle_reason(&body).await, "permit2_payment_too_early");
}

#[tokio::test]
async fn burnt_nonce_is_permit2_invalid_nonce() {
    let fx = fixture().await;
    let (_, auth, body) = fx.plain_payment(AMOUNT);
    burn_nonce(&fx.anvil, &fx.payer, auth.nonce).await.unwrap();
    assert_eq!(fx.verify_reason(&body).await, "permit2_simulation_failed");
    assert_eq!(fx.settle_reason(&body).await, "permit2_invalid_nonce");
}

#[tokio::test]
async fn another_payment_under_a_settled_nonce_is_permit2_invalid_nonce() {
    let fx = fixture().await;
    let (req, auth, first) = fx.plain_payment(AMOUNT);
    let (_, settle) = fx.facilitator.post("/settle", &first).await.unwrap();
    assert_eq!(settle["success"], true, "{settle}");
    // Same owner and nonce, another deadline: another payment, the same Permit2 nonce.
    let mut second = auth.clone();
    second.deadline += 60;
    let body = body(
        &req,
        &second.sign(&fx.payer, fx.anvil.chain_id()).unwrap(),
        &second,
    );
    let (_, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], "permit2_invalid_nonce", "{again}");
    assert_eq!(fx.payee_plain().await.unwrap(), U256::from(AMOUNT));
}

#[tokio::test]
async fn a_permit2_payload_for_an_eip3009_only_asset_is_refused() {
    let fx = Permit2Fixture::start_edited(None, |t| {
        t.replace(
            "transfer_methods = [\"eip3009\", \"permit2\"]",
            "transfer_methods = [\"eip3009\"]",
        )
    })
    .await
    .unwrap();
    let req = requirements(
        fx.anvil.chain_id(),
        x402_tests::BASE_USDC,
        U256::from(AMOUNT),
        fx.pay_to,
    );
    let auth = Permit2Auth::new(
        fx.payer.address(),
        x402_tests::BASE_USDC,
        U256::from(AMOUNT),
        fx.pay_to,
        300,
    );
    let body = body(
        &req,
        &auth.sign(&fx.payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    assert_eq!(
        fx.verify_reason(&body).await,
        "invalid_payment_requirements"
    );
}

#[tokio::test]
async fn without_permit2_on_chain_the_facilitator_refuses_to_start_naming_the_key() {
    let anvil = x402_tests::Anvil::spawn().await.unwrap();
    let plain = x402_tests::permit2::Plain::deploy(&anvil).await.unwrap();
    x402_tests::Usdc::deploy(&anvil, anvil.signer(0))
        .await
        .unwrap();
    let toml = Permit2Fixture::config_toml(&anvil, plain.address, None);
    let err = x402_tests::facilitator::TestFacilitator::start_with_toml(&toml)
        .await
        .err()
        .expect("refuses to start");
    let text = format!("{err:#}");
    assert!(text.contains("evm[0].assets[0].transfer_methods"), "{text}");
    assert!(text.contains("Permit2"), "{text}");
}

#[tokio::test]
async fn accepted_scheme_other_than_exact_is_unsupported_payload_type() {
    let fx = fixture().await;
    let (_, _, mut body) = fx.plain_payment(AMOUNT);
    body["paymentPayload"]["accepted"]["scheme"] = json!("upto");
    assert_eq!(fx.verify_reason(&body).await, "unsupported_payload_type");
}

#[tokio::test]
async fn accepted_network_other_than_required_is_network_mismatch() {
    let fx = fixture().await;
    let (_, _, mut body) = fx.plain_payment(AMOUNT);
    body["paymentPayload"]["accepted"]["network"] = json!("eip155:84532");
    assert_eq!(
        fx.verify_reason(&body).await,
        "invalid_exact_evm_network_mismatch"
    );
}

#[tokio::test]
async fn asset_without_code_is_asset_not_deployed_contract() {
    let ghost = Address::repeat_byte(0x0d);
    let fx = Permit2Fixture::start_edited(None, |t| {
        t + &format!(
            "\n[[evm.assets]]\naddress = \"{ghost}\"\ndecimals = 6\ntransfer_methods = [\"permit2\"]\n"
        )
    })
    .await
    .unwrap();
    let req = requirements(fx.anvil.chain_id(), ghost, U256::from(AMOUNT), fx.pay_to);
    let auth = Permit2Auth::new(
        fx.payer.address(),
        ghost,
        U256::from(AMOUNT),
        fx.pay_to,
        300,
    );
    let body = body(
        &req,
        &auth.sign(&fx.payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    assert_eq!(fx.verify_reason(&body).await, "asset_not_deployed_contract");
}

/// A USDC Permit2 payment from a payer (account 6, funded, no allowance to Permit2) carrying an
/// EIP-2612 permit to Permit2, with `edit` applied to the extension's info.
async fn with_2612(
    fx: &Permit2Fixture,
    permit_value: U256,
    edit: impl FnOnce(&mut Value),
) -> Value {
    let payer = fx.anvil.signer(6);
    fx.usdc.mint(payer.address(), AMOUNT).await.unwrap();
    let req = requirements(
        fx.anvil.chain_id(),
        x402_tests::BASE_USDC,
        U256::from(AMOUNT),
        fx.pay_to,
    );
    let auth = Permit2Auth::new(
        payer.address(),
        x402_tests::BASE_USDC,
        U256::from(AMOUNT),
        fx.pay_to,
        300,
    );
    let mut b = body(
        &req,
        &auth.sign(&payer, fx.anvil.chain_id()).unwrap(),
        &auth,
    );
    let mut ext = eip2612_extension(
        &payer,
        x402_tests::BASE_USDC,
        "USD Coin",
        "2",
        fx.anvil.chain_id(),
        x402_tests::permit2::PERMIT2,
        permit_value,
        0,
        unix_now() + 300,
    )
    .unwrap();
    edit(&mut ext["eip2612GasSponsoring"]["info"]);
    b["paymentPayload"]["extensions"] = ext;
    b
}

#[tokio::test]
async fn an_eip2612_permit_settles_a_payer_who_never_approved_permit2() {
    let fx = fixture().await;
    let (_, supported) = fx.facilitator.get("/supported").await.unwrap();
    let supported: Value = serde_json::from_str(&supported).unwrap();
    assert!(
        supported["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("eip2612GasSponsoring")),
        "{supported}"
    );
    let body = with_2612(&fx, U256::from(AMOUNT), |_| {}).await;
    // Without the extension the same payment lacks the allowance.
    let mut bare = body.clone();
    bare["paymentPayload"]
        .as_object_mut()
        .unwrap()
        .remove("extensions");
    assert_eq!(fx.verify_reason(&bare).await, "permit2_allowance_required");
    let (_, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(verify["isValid"], true, "{verify}");
    let before = fx.usdc.balance_of(fx.pay_to).await.unwrap();
    let (_, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(settle["success"], true, "{settle}");
    assert_eq!(
        fx.usdc.balance_of(fx.pay_to).await.unwrap(),
        before + U256::from(AMOUNT)
    );
}

#[tokio::test]
async fn malformed_eip2612_info_is_invalid_eip2612_extension_format() {
    let fx = fixture().await;
    let body = with_2612(&fx, U256::from(AMOUNT), |i| i["amount"] = json!("12a")).await;
    assert_eq!(
        fx.verify_reason(&body).await,
        "invalid_eip2612_extension_format"
    );
}

#[tokio::test]
async fn eip2612_from_another_account_is_eip2612_from_mismatch() {
    let fx = fixture().await;
    let other = fx.anvil.address(7).to_checksum(None);
    let body = with_2612(&fx, U256::from(AMOUNT), |i| i["from"] = json!(other)).await;
    assert_eq!(fx.verify_reason(&body).await, "eip2612_from_mismatch");
}

#[tokio::test]
async fn eip2612_of_another_token_is_eip2612_asset_mismatch() {
    let fx = fixture().await;
    let plain = fx.plain.address.to_checksum(None);
    let body = with_2612(&fx, U256::from(AMOUNT), |i| i["asset"] = json!(plain)).await;
    assert_eq!(fx.verify_reason(&body).await, "eip2612_asset_mismatch");
}

#[tokio::test]
async fn eip2612_to_the_proxy_is_eip2612_spender_not_permit2() {
    let fx = fixture().await;
    let proxy = EXACT_PROXY.to_checksum(None);
    let body = with_2612(&fx, U256::from(AMOUNT), |i| i["spender"] = json!(proxy)).await;
    assert_eq!(fx.verify_reason(&body).await, "eip2612_spender_not_permit2");
}

#[tokio::test]
async fn eip2612_deadline_under_six_seconds_is_eip2612_deadline_expired() {
    let fx = fixture().await;
    let soon = (unix_now() + 2).to_string();
    let body = with_2612(&fx, U256::from(AMOUNT), |i| i["deadline"] = json!(soon)).await;
    assert_eq!(fx.verify_reason(&body).await, "eip2612_deadline_expired");
}

#[tokio::test]
async fn eip2612_value_other_than_the_amount_is_permit2_2612_amount_mismatch() {
    let fx = fixture().await;
    let body = with_2612(&fx, U256::from(AMOUNT + 1), |_| {}).await;
    assert_eq!(
        fx.settle_reason(&body).await,
        "permit2_2612_amount_mismatch"
    );
}
