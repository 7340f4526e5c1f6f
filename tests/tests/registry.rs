//! The scheme seam: a scheme written here, outside the facilitator crate, is registered next to
//! the configured `exact` handler on anvil and serves `/supported`, `/verify` and `/settle`
//! over real HTTP; nothing else in the facilitator knows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use x402_facilitator::SchemeHandler;
use x402_proto::{Network, PaymentRequest, Reason, SettleResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_tests::facilitator::TestFacilitator;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS};
use x402_verify::VerifyError;

/// A scheme `dummy` on one network: valid when the payload says `{"ok": true}`, settles by
/// counting and answering a made-up transaction.
struct DummyScheme {
    network: Network,
    settled: AtomicUsize,
}

#[async_trait]
impl SchemeHandler for DummyScheme {
    fn scheme(&self) -> &str {
        "dummy"
    }

    fn network(&self) -> &Network {
        &self.network
    }

    fn versions(&self) -> &[u8] {
        &[2]
    }

    fn extra(&self) -> Option<Value> {
        Some(json!({"flavour": "vanilla"}))
    }

    fn signers(&self) -> Vec<String> {
        vec!["0x000000000000000000000000000000000000dEaD".into()]
    }

    async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        Ok(if req.scheme_payload()["ok"] == json!(true) {
            VerifyResponse::valid("dummy-payer")
        } else {
            VerifyResponse::invalid(
                Reason::InvalidPaymentRequirements,
                Some("not ok".into()),
                None,
            )
        })
    }

    async fn settle(
        &self,
        req: &PaymentRequest,
        _caller: &x402_settle::engine::Caller<'_>,
    ) -> Result<SettleResponse, SettleError> {
        let n = self.settled.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SettleResponse::settled(
            format!("dummy-tx-{n}"),
            req.network_wire().to_string(),
            "dummy-payer".into(),
            req.amount().to_string(),
        ))
    }
}

fn dummy_body(scheme: &str, network: &str, ok: bool) -> Value {
    let requirements = json!({
        "scheme": scheme, "network": network, "amount": "42",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payTo": "0x90F79bf6EB2c4f870365E785982E1f101E93b906", "maxTimeoutSeconds": 60
    });
    json!({
        "x402Version": 2,
        "paymentPayload": {"x402Version": 2, "accepted": requirements, "payload": {"ok": ok}},
        "paymentRequirements": requirements,
    })
}

#[tokio::test]
async fn a_scheme_registered_in_a_test_serves_supported_verify_and_settle() {
    let anvil = Anvil::spawn().await.unwrap();
    let network = Network::evm(anvil.chain_id());
    let dummy = Arc::new(DummyScheme {
        network: network.clone(),
        settled: AtomicUsize::new(0),
    });
    let toml = TestFacilitator::config_toml(&anvil, DEV_PRIVATE_KEYS[1], None);
    let fac = TestFacilitator::start_with_handlers(&toml, vec![dummy.clone()])
        .await
        .unwrap();

    let (status, body) = fac.get("/supported").await.unwrap();
    assert_eq!(status, 200);
    let supported: Value = serde_json::from_str(&body).unwrap();
    let kinds = supported["kinds"].as_array().unwrap();
    assert!(
        kinds.contains(
            &json!({"x402Version": 2, "scheme": "dummy", "network": network.as_str(),
            "extra": {"flavour": "vanilla"}})
        ),
        "{supported}"
    );
    // The configured `exact` kinds are still there, and the dummy has no v1 kind.
    assert!(
        kinds.contains(&json!({"x402Version": 2, "scheme": "exact", "network": network.as_str()}))
    );
    assert!(kinds.contains(&json!({"x402Version": 1, "scheme": "exact", "network": "base"})));
    assert!(!kinds.contains(&json!({"x402Version": 1, "scheme": "dummy", "network": "base"})));
    let evm_signers = supported["signers"]["eip155:*"].as_array().unwrap();
    assert!(evm_signers.contains(&json!("0x000000000000000000000000000000000000dEaD")));
    assert!(evm_signers.contains(&json!(anvil.address(1).to_checksum(None))));

    let (status, answer) = fac
        .post("/verify", &dummy_body("dummy", network.as_str(), true))
        .await
        .unwrap();
    assert_eq!(
        (status, answer),
        (200, json!({"isValid": true, "payer": "dummy-payer"}))
    );
    let (_, answer) = fac
        .post("/verify", &dummy_body("dummy", network.as_str(), false))
        .await
        .unwrap();
    assert_eq!(
        answer["invalidReason"],
        Reason::InvalidPaymentRequirements.as_str(),
        "{answer}"
    );

    let (status, answer) = fac
        .post("/settle", &dummy_body("dummy", network.as_str(), true))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"success": true, "payer": "dummy-payer", "transaction": "dummy-tx-1",
            "network": network.as_str(), "amount": "42"})
    );
    assert_eq!(dummy.settled.load(Ordering::SeqCst), 1);

    // A scheme nobody serves on a served network, and a network nobody serves.
    let (_, answer) = fac
        .post("/verify", &dummy_body("nope", network.as_str(), true))
        .await
        .unwrap();
    assert_eq!(answer["invalidReason"], "unsupported_scheme", "{answer}");
    let (_, answer) = fac
        .post("/settle", &dummy_body("dummy", "eip155:1", true))
        .await
        .unwrap();
    assert_eq!(answer["errorReason"], "invalid_network", "{answer}");
    assert_eq!(dummy.settled.load(Ordering::SeqCst), 1);

    // Pricing is optional: the dummy offers none, and says so (404: not offered).
    let (status, answer) = fac
        .post(
            "/requirements",
            &json!({"network": network.as_str(), "scheme": "dummy", "payTo": "0x90F79bf6EB2c4f870365E785982E1f101E93b906", "price": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("no pricing"),
        "{answer}"
    );
}

#[tokio::test]
async fn two_handlers_of_one_kind_refuse_to_start() {
    let anvil = Anvil::spawn().await.unwrap();
    let handler = || -> Arc<dyn SchemeHandler> {
        Arc::new(DummyScheme {
            network: Network::evm(anvil.chain_id()),
            settled: AtomicUsize::new(0),
        })
    };
    let toml = TestFacilitator::config_toml(&anvil, DEV_PRIVATE_KEYS[1], None);
    let err = TestFacilitator::start_with_handlers(&toml, vec![handler(), handler()])
        .await
        .err()
        .expect("a duplicate kind must not start");
    assert!(err.to_string().contains("registered twice"), "{err}");
}
