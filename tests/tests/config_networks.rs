//! Per-network configuration reaches what it decides: an EVM network's signer balance floor
//! (`[[evm]] min_signer_balance_wei`) refuses settlements and marks the signer unfunded in
//! `/health/ready`; the deprecated `[health] min_evm_signer_balance_wei` still applies where
//! the network sets none; where both are set, the network's own value wins.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use serde_json::Value;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, Usdc};

/// The facilitator signer's balance in these tests, wei (5 ETH: enough gas).
const SIGNER_WEI: u64 = 5_000_000_000_000_000_000;
/// A floor above it, wei (TOML integers stop at 2^63 - 1).
const HIGH: &str = "9000000000000000000";

/// A facilitator on `anvil` with `evm_keys` in its `[[evm]]` table and `tables` appended.
async fn facilitator(anvil: &Anvil, evm_keys: &str, tables: &str) -> TestFacilitator {
    let toml = TestFacilitator::config_toml(anvil, DEV_PRIVATE_KEYS[1], None);
    let signer_line = format!("signer_private_keys = [\"{}\"]\n", DEV_PRIVATE_KEYS[1]);
    assert!(toml.contains(&signer_line));
    let toml = toml.replacen(&signer_line, &format!("{signer_line}{evm_keys}\n"), 1);
    TestFacilitator::start_with_toml(&format!("{toml}\n{tables}\n"))
        .await
        .unwrap()
}

/// `/health/ready` once its RPC read answered: (HTTP status, `fundedSigner` of the network).
async fn readiness(f: &TestFacilitator) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = f.get("/health/ready").await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        let net = &body["networks"][0];
        if net["rpcOk"] == true {
            assert_eq!(
                net["signers"][0]["balance"],
                SIGNER_WEI.to_string(),
                "{body}"
            );
            return (status, net["fundedSigner"].clone());
        }
        assert!(Instant::now() < deadline, "RPC never answered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn each_network_s_signer_floor_decides_settlements_and_readiness() {
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    let payer = anvil.signer(2);
    usdc.mint(payer.address(), 1_000_000).await.unwrap();
    let _: Value = anvil
        .provider()
        .raw_request(
            "anvil_setBalance".into(),
            (anvil.address(1), U256::from(SIGNER_WEI)),
        )
        .await
        .unwrap();
    let req = ExactEvmRequirements::base_usdc(10_000u64, anvil.address(3));
    let (auth, sig) = req.authorize(&payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);

    // The network's floor above the balance: no settlement, not ready.
    let f = facilitator(&anvil, &format!("min_signer_balance_wei = {HIGH}"), "").await;
    assert_eq!(readiness(&f).await, (503, Value::Bool(false)));
    let (status, answer) = f.post("/settle", &body).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("no funded signer"),
        "{answer}"
    );
    assert_eq!(answer["transaction"], "", "{answer}");
    drop(f);

    // The deprecated key alone still applies (with the default floor, 0.0001 ETH, the signer
    // would be funded).
    let legacy = |wei: &str| format!("[health]\nmin_evm_signer_balance_wei = {wei}");
    let f = facilitator(&anvil, "", &legacy(HIGH)).await;
    assert_eq!(readiness(&f).await, (503, Value::Bool(false)));
    drop(f);

    // Both set: the network's own value wins, in either direction.
    let f = facilitator(
        &anvil,
        &format!("min_signer_balance_wei = {HIGH}"),
        &legacy("1"),
    )
    .await;
    assert_eq!(readiness(&f).await, (503, Value::Bool(false)));
    drop(f);
    let f = facilitator(&anvil, "min_signer_balance_wei = 1", &legacy(HIGH)).await;
    assert_eq!(readiness(&f).await, (200, Value::Bool(true)));
    let (status, answer) = f.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
}
