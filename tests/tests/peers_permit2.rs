//! `exact` over Permit2 against the official `@x402/evm` 2.27 client (issue 17 item 7): the
//! SDK signs a Permit2 payload for a plain ERC-20 without EIP-3009 (requirements with
//! `extra.assetTransferMethod = "permit2"`), `@x402/core`'s `HTTPFacilitatorClient` verifies
//! and settles it through this facilitator on anvil; checked on chain. And `upto`: the SDK's
//! upto client and server scheme, a smaller charge settled. Both again through the official
//! `@x402/express` middleware and `@x402/fetch` buyer (`tests/peers/express_e2e.mjs`), the upto
//! route charging through `setSettlementOverrides`.

use alloy::primitives::U256;
use serde_json::json;
use x402_tests::DEV_PRIVATE_KEYS;
use x402_tests::peers::Peer;
use x402_tests::permit2::{EXACT_PROXY, Permit2Fixture, UPTO_PROXY, nonce_used, requirements};

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

/// `upto` against the official SDK (issue 17 item 4): `@x402/evm`'s upto server scheme builds
/// the requirements from our `/supported` kind (its `extra.facilitatorAddress`), its upto client
/// signs the maximum, and `HTTPFacilitatorClient` verifies the maximum and settles a smaller
/// charge; the payee receives the charge, the answer carries it, a replay gets no success.
#[tokio::test]
async fn node_client_pays_a_smaller_upto_charge_once() {
    const MAX: u64 = 9_000;
    const CHARGE: u64 = 2_500;
    let fx = Permit2Fixture::start_edited(None, x402_tests::permit2::with_upto)
        .await
        .unwrap();
    let mut req = requirements(
        fx.anvil.chain_id(),
        fx.plain.address,
        U256::from(MAX),
        fx.pay_to,
    );
    req["scheme"] = json!("upto");
    let before = fx.payee_plain().await.unwrap();
    let out = Peer::node("upto_client_verify_settle.mjs")
        .env("FACILITATOR_URL", fx.facilitator.url())
        .env("PAYER_KEY", DEV_PRIVATE_KEYS[2])
        .env("REQUIREMENTS_JSON", req.to_string())
        .env("CHARGE", CHARGE.to_string())
        .env("SETTLE_AGAIN", "1")
        .env("ALLOW_ASSET", fx.plain.address.to_checksum(None))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let answer = out.json().unwrap_or_else(|e| panic!("{e:#}\n{out}"));
    let auth = &answer["paymentPayload"]["payload"]["permit2Authorization"];
    assert_eq!(
        auth["spender"].as_str().map(str::to_lowercase),
        Some(format!("{UPTO_PROXY:#x}")),
        "{out}"
    );
    assert_eq!(
        auth["witness"]["facilitator"]
            .as_str()
            .map(str::to_lowercase),
        Some(format!("{:#x}", fx.anvil.address(1))),
        "{out}"
    );
    assert_eq!(auth["permitted"]["amount"], MAX.to_string(), "{out}");
    assert_eq!(answer["verify"]["isValid"], json!(true), "{out}");
    assert_eq!(answer["settle"]["success"], json!(true), "{out}");
    assert_eq!(answer["settle"]["amount"], CHARGE.to_string(), "{out}");
    assert_ne!(answer["settleAgain"]["success"], json!(true), "{out}");
    assert_eq!(fx.payee_plain().await.unwrap(), before + U256::from(CHARGE));
}

/// The official `@x402/express` middleware and `@x402/fetch` buyer through this facilitator:
/// `scheme` on the plain ERC-20 (Permit2), priced `price` atomic units; for `upto` the route
/// settles `charge` through `setSettlementOverrides`. Returns the peer's answer and the payee's
/// balance gain.
async fn express(
    fx: &Permit2Fixture,
    scheme: &str,
    price: u64,
    charge: Option<u64>,
) -> (serde_json::Value, U256) {
    let before = fx.payee_plain().await.unwrap();
    let price_json = json!({
        "amount": price.to_string(),
        "asset": fx.plain.address.to_checksum(None),
        "extra": {"assetTransferMethod": "permit2"},
    });
    let mut peer = Peer::node("express_e2e.mjs")
        .env("FACILITATOR_URL", fx.facilitator.url())
        .env("PAYER_KEY", DEV_PRIVATE_KEYS[2])
        .env("PAY_TO", fx.pay_to.to_checksum(None))
        .env("NETWORK", format!("eip155:{}", fx.anvil.chain_id()))
        .env("SCHEME", scheme)
        .env("PRICE_JSON", price_json.to_string())
        .env("ALLOW_ASSET", fx.plain.address.to_checksum(None));
    if let Some(c) = charge {
        peer = peer.env("CHARGE", c.to_string());
    }
    let out = peer.run().await.unwrap_or_else(|e| panic!("{e:#}"));
    let answer = out.json().unwrap_or_else(|e| panic!("{e:#}\n{out}"));
    assert!(answer.get("setupError").is_none(), "{out}");
    assert_eq!(answer["status402"], json!(402), "{out}");
    assert_eq!(answer["status200"], json!(200), "{out}");
    assert_eq!(answer["paymentResponse"]["success"], json!(true), "{out}");
    let gained = fx.payee_plain().await.unwrap() - before;
    (answer, gained)
}

#[tokio::test]
async fn express_middleware_sells_for_a_plain_erc20_through_permit2() {
    let fx = Permit2Fixture::start(None).await.unwrap();
    let (answer, gained) = express(&fx, "exact", AMOUNT, None).await;
    assert_eq!(
        answer["paymentRequired"]["accepts"][0]["extra"]["assetTransferMethod"], "permit2",
        "{answer}"
    );
    assert_eq!(gained, U256::from(AMOUNT));
}

#[tokio::test]
async fn express_middleware_charges_an_upto_payment_what_the_route_settles() {
    const MAX: u64 = 12_000;
    const CHARGE: u64 = 3_300;
    let fx = Permit2Fixture::start_edited(None, x402_tests::permit2::with_upto)
        .await
        .unwrap();
    let (answer, gained) = express(&fx, "upto", MAX, Some(CHARGE)).await;
    let accepts = &answer["paymentRequired"]["accepts"][0];
    assert_eq!(accepts["scheme"], "upto", "{answer}");
    assert_eq!(
        accepts["extra"]["facilitatorAddress"],
        fx.anvil.address(1).to_checksum(None),
        "{answer}"
    );
    assert_eq!(
        answer["paymentResponse"]["amount"],
        CHARGE.to_string(),
        "{answer}"
    );
    assert_eq!(
        gained,
        U256::from(CHARGE),
        "the payee got the charge, not the maximum"
    );
}
