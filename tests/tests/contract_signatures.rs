//! Contract-wallet payments that attack the facilitator's gas (issue 21 point 1), on anvil with
//! Circle's real FiatTokenV2_2 and the facilitator over real HTTP. The wallets are the
//! project's own test contracts (`tests/contracts/HostileWallets.sol`, compiled with npm
//! `solc` at test time):
//! - one whose `isValidSignature` answers "valid" only when `tx.gasprice == 0` (a simulation
//!   without fee fields) and so reverts for real at the signer's cost;
//! - one that burns gas in `isValidSignature`, so that its settlement costs what the payer
//!   chooses.
//!
//! Both must cost the facilitator no transaction at all; a contract wallet's honest payment
//! still settles; `accept_contract_signatures = false` refuses contract signatures at
//! `/verify` and `/settle` while ECDSA payments settle.

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolValue;
use serde_json::Value;
use x402_tests::eip3009::{Authorization, v2_evm_payment_json};
use x402_tests::facilitator::EvmFixture;
use x402_tests::solc::compile;
use x402_tests::usdc::deploy_code;

const AMOUNT: u64 = 1_000; // 0.001 USDC

/// A 65-byte signature that recovers to no wallet: only the wallet's `isValidSignature` can
/// accept it.
const JUNK_SIGNATURE: &str = "0x1111111111111111111111111111111111111111111111111111111111111111\
                              22222222222222222222222222222222222222222222222222222222222222221b";

async fn deploy_wallet(fx: &EvmFixture, name: &str, args: Vec<u8>) -> Address {
    let compiled = compile("HostileWallets.sol", name).expect("compiles");
    let mut code = compiled.bytecode.to_vec();
    code.extend(args);
    let wallet = deploy_code(&fx.anvil.wallet_provider(fx.anvil.signer(0)), code.into())
        .await
        .expect("deploys");
    fx.usdc.mint(wallet, 1_000_000u64).await.unwrap();
    wallet
}

fn payment_from(fx: &EvmFixture, wallet: Address) -> Value {
    let req = fx.requirements(AMOUNT);
    let auth = Authorization::new(wallet, fx.pay_to, AMOUNT, 600);
    v2_evm_payment_json(&req.v2_json(), JUNK_SIGNATURE, &auth)
}

/// `/settle` answers a refusal with nothing broadcast, and the signer sent no transaction.
async fn assert_refused_without_a_transaction(fx: &EvmFixture, body: &Value) -> Value {
    let before = fx.signer_tx_count().await.unwrap();
    let (status, answer) = fx.facilitator.post("/settle", body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["transaction"], "", "nothing broadcast: {answer}");
    assert_eq!(
        fx.signer_tx_count().await.unwrap(),
        before,
        "the signer spent gas: {answer}"
    );
    assert_eq!(fx.payee_balance().await.unwrap(), U256::ZERO);
    answer
}

/// A wallet valid only in a fee-less simulation is refused before broadcast: the settlement
/// simulation carries the fee fields of the real transaction.
#[tokio::test]
async fn a_wallet_valid_only_without_gas_price_costs_no_transaction() {
    let fx = EvmFixture::start(None).await.unwrap();
    let wallet = deploy_wallet(&fx, "GasPriceGatedWallet", vec![]).await;
    let body = payment_from(&fx, wallet);
    // /verify simulates as the reference does (no fee fields): it looks valid there.
    let (_, verdict) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(verdict["isValid"], true, "{verdict}");
    let answer = assert_refused_without_a_transaction(&fx, &body).await;
    assert!(
        answer["errorReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("invalid_exact_evm")),
        "{answer}"
    );
}

/// A wallet that burns gas in `isValidSignature` is refused once its settlement would need
/// more than the asset's cap (default: 3 × the learnt ECDSA limit, 300,000 before one): the
/// facilitator pays nothing; a cheap wallet of the same kind settles.
#[tokio::test]
async fn a_gas_burning_wallet_is_refused_above_the_cap() {
    let fx = EvmFixture::start(None).await.unwrap();
    let burner = deploy_wallet(&fx, "GasBurningWallet", U256::from(20_000u64).abi_encode()).await;
    let answer = assert_refused_without_a_transaction(&fx, &payment_from(&fx, burner)).await;
    assert_eq!(
        answer["errorReason"], "invalid_exact_evm_transaction_simulation_failed",
        "{answer}"
    );
    assert!(
        answer["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("cap")),
        "{answer}"
    );
    let light = deploy_wallet(&fx, "GasBurningWallet", U256::from(5u64).abi_encode()).await;
    let (_, settled) = fx
        .facilitator
        .post("/settle", &payment_from(&fx, light))
        .await
        .unwrap();
    assert_eq!(settled["success"], true, "{settled}");
}

/// With a lower configured cap, the same light wallet is refused.
#[tokio::test]
async fn the_configured_cap_is_the_bound() {
    let anvil = x402_tests::Anvil::spawn().await.unwrap();
    let fx = EvmFixture::start_custom(anvil, None, 10, "\ncontract_signature_gas_cap = 40000\n")
        .await
        .unwrap();
    let light = deploy_wallet(&fx, "GasBurningWallet", U256::from(5u64).abi_encode()).await;
    let answer = assert_refused_without_a_transaction(&fx, &payment_from(&fx, light)).await;
    assert!(
        answer["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("40000")),
        "{answer}"
    );
}

/// `accept_contract_signatures = false`: an honest contract wallet's payment is refused at
/// `/verify` and `/settle` with `invalid_exact_evm_signature`; ECDSA payments settle.
#[tokio::test]
async fn contract_signatures_can_be_refused_entirely() {
    let anvil = x402_tests::Anvil::spawn().await.unwrap();
    let fx = EvmFixture::start_edited(anvil, None, 10, |toml| {
        toml.replace("[[evm]]\n", "[[evm]]\naccept_contract_signatures = false\n")
    })
    .await
    .unwrap();
    let owner = fx.anvil.signer(7);
    let wallet =
        x402_tests::Usdc::deploy_erc1271_wallet(&fx.anvil, fx.anvil.signer(0), owner.address())
            .await
            .unwrap();
    fx.usdc.mint(wallet, 1_000_000u64).await.unwrap();
    let req = fx.requirements(AMOUNT);
    let auth = Authorization::new(wallet, fx.pay_to, AMOUNT, 600);
    let sig = x402_tests::eip3009::sign_authorization(
        &owner,
        "USD Coin",
        "2",
        8453,
        x402_tests::BASE_USDC,
        &auth,
    )
    .unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (_, verdict) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(verdict["isValid"], false, "{verdict}");
    assert_eq!(verdict["invalidReason"], "invalid_exact_evm_signature");
    let answer = assert_refused_without_a_transaction(&fx, &body).await;
    assert_eq!(answer["errorReason"], "invalid_exact_evm_signature");
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let (_, settled) = fx
        .facilitator
        .post("/settle", &v2_evm_payment_json(&req.v2_json(), &sig, &auth))
        .await
        .unwrap();
    assert_eq!(settled["success"], true, "{settled}");
}
