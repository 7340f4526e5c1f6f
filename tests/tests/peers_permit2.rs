//! `exact` over Permit2 against the official `@x402/evm` 2.27 client (issue 17 item 7): the
//! SDK signs a Permit2 payload for a plain ERC-20 without EIP-3009 (requirements with
//! `extra.assetTransferMethod = "permit2"`), `@x402/core`'s `HTTPFacilitatorClient` verifies
//! and settles it through this facilitator on anvil; checked on chain.

use alloy::primitives::U256;
use serde_json::json;
use x402_tests::DEV_PRIVATE_KEYS;
use x402_tests::peers::Peer;
use x402_tests::permit2::{EXACT_PROXY, Permit2Fixture, nonce_used, requirements};

const AMOUNT: u64 = 4_000;

#[tokio::test]
async fn node_client_pays_a_plain_erc20_through_permit2_once() {
    let fx = Permit2Fixture::start(None).await.unwrap();
    let req = requirements(
        fx.anvil.chain_id(),
        fx.plain.address,
        U256::from(AMOUNT),
        fx.pay_to,
    );
    let before = fx.payee_plain().await.unwrap();
    let out = Peer::node("client_verify_settle.mjs")
        .env("FACILITATOR_URL", fx.facilitator.url())
        .env("PAYER_KEY", DEV_PRIVATE_KEYS[2])
        .env("PAY_TO", fx.pay_to.to_checksum(None))
        .env("X402_VERSION", "2")
        .env("REQUIREMENTS_JSON", req.to_string())
        .env("SETTLE_AGAIN", "1")
        .env("ALLOW_ASSET", fx.plain.address.to_checksum(None))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let answer = out.json().unwrap_or_else(|e| panic!("{e:#}\n{out}"));
    let auth = &answer["paymentPayload"]["payload"]["permit2Authorization"];
    assert!(auth.is_object(), "the SDK built no Permit2 payload\n{out}");
    assert_eq!(
        auth["spender"].as_str().map(str::to_lowercase),
        Some(format!("{EXACT_PROXY:#x}")),
        "{out}"
    );
    assert_eq!(answer["verify"]["isValid"], json!(true), "{out}");
    assert_eq!(answer["settle"]["success"], json!(true), "{out}");
    assert_ne!(answer["settleAgain"]["success"], json!(true), "{out}");
    assert_eq!(fx.payee_plain().await.unwrap(), before + U256::from(AMOUNT));
    let nonce: U256 = auth["nonce"].as_str().unwrap().parse().unwrap();
    assert!(
        nonce_used(&fx.anvil, fx.payer.address(), nonce)
            .await
            .unwrap()
    );
}
