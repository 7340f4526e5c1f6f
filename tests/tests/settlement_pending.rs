//! A broadcast payment that is not mined in time is answered `settlement_pending` with its
//! transaction (never a plain failure), and the retry reconciles with that transaction instead of
//! broadcasting another (`@x402/core` 2.27 `settleWithPendingRetry`).

use alloy::primitives::U256;
use alloy::providers::Provider;
use x402_tests::eip3009::v2_evm_payment_json;
use x402_tests::facilitator::EvmFixture;

#[tokio::test]
async fn f7_unmined_settlement_is_pending_then_one_success_then_duplicate() {
    let fx = EvmFixture::start_with_timeout(None, 1).await.unwrap();
    let provider = fx.anvil.provider();
    fx.anvil.set_automine(false).await.unwrap();

    let req = fx.requirements(5_000);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (status, first) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["success"], false, "{first}");
    assert_eq!(first["errorReason"], "settlement_pending", "{first}");
    let tx = first["transaction"].as_str().unwrap().to_string();
    assert_eq!(tx.len(), 66, "{first}");
    assert_eq!(first["network"], "eip155:8453");
    assert_eq!(first["payer"], fx.payer.address().to_checksum(None));

    // Still not mined: the retry is pending on the same transaction, nothing new is sent.
    let (_, second) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(second["errorReason"], "settlement_pending", "{second}");
    assert_eq!(second["transaction"], tx);
    let pending_nonce = provider
        .get_transaction_count(fx.facilitator_signer)
        .pending()
        .await
        .unwrap();
    assert_eq!(
        pending_nonce, 1,
        "only one settlement transaction in the pool"
    );

    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let (_, third) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(third["success"], true, "{third}");
    assert_eq!(third["transaction"], tx);
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(5_000u64));

    // x402-conformance F7: pending → retry → success → retry → `duplicate_settlement`.
    let (_, fourth) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(fourth["success"], false, "{fourth}");
    assert_eq!(fourth["errorReason"], "duplicate_settlement", "{fourth}");
    assert_eq!(fourth["transaction"], tx);
}
