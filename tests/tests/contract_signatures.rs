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

/// A wallet that passes every simulation and then reverts on chain (a flip of its validity
/// lands first in the block, as a front-runner would arrange): the settlement costs at most the
/// contract-signature gas cap, and with `revert_limit = 1` the wallet's next payment is refused
/// before broadcast (the operator's-money reverting-payer counter).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_that_reverts_for_real_costs_at_most_the_cap_and_is_then_refused() {
    use alloy::providers::Provider;
    use alloy::rpc::types::TransactionRequest;

    let anvil = x402_tests::Anvil::spawn().await.unwrap();
    let fx = EvmFixture::start_edited(anvil, None, 10, |toml| {
        toml.replace(
            "[settle]\n",
            "[settle]\nrevert_limit = 1\nrevert_window_seconds = 600\nrevert_block_seconds = 600\n",
        )
    })
    .await
    .unwrap();
    let wallet = deploy_wallet(&fx, "SwitchableWallet", vec![]).await;
    let flip = || {
        TransactionRequest::default()
            .to(wallet)
            .input(alloy::primitives::keccak256("flip()")[..4].to_vec().into())
            .gas_limit(100_000)
            .max_priority_fee_per_gas(100_000_000_000)
            .max_fee_per_gas(1_000_000_000_000)
    };
    let body = payment_from(&fx, wallet);
    let (_, verdict) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(verdict["isValid"], true, "{verdict}");

    fx.anvil.set_automine(false).await.unwrap();
    let provider = fx.anvil.provider();
    let flipper = fx.anvil.wallet_provider(fx.anvil.signer(0));
    let settle = fx.facilitator.post("/settle", &body);
    let front_run = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while provider
            .get_transaction_count(fx.facilitator_signer)
            .pending()
            .await
            .unwrap()
            == 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the settlement never reached the pool"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _pending = flipper.send_transaction(flip()).await.unwrap();
        let _: Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    };
    let (settled, ()) = tokio::join!(settle, front_run);
    fx.anvil.set_automine(true).await.unwrap();
    let (_, mut answer) = settled.unwrap();
    for _ in 0..20 {
        if answer["errorReason"] != "settlement_pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        answer = fx.facilitator.post("/settle", &body).await.unwrap().1;
    }
    assert_eq!(
        answer["errorReason"], "invalid_exact_evm_transaction_failed",
        "{answer}"
    );
    let hash = answer["transaction"].as_str().unwrap().parse().unwrap();
    let receipt = provider
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .unwrap();
    assert!(!receipt.status(), "the settlement reverted on chain");
    let sent = provider
        .get_transaction_by_hash(hash)
        .await
        .unwrap()
        .unwrap();
    use alloy::consensus::Transaction as _;
    assert!(
        sent.gas_limit() <= x402_settle::evm::DEFAULT_CONTRACT_SIGNATURE_GAS_CAP,
        "gas limit {} above the cap",
        sent.gas_limit()
    );
    assert!(receipt.gas_used <= sent.gas_limit());

    // Valid again, and funded: the wallet's next payment is refused before broadcast.
    let _ = flipper
        .send_transaction(flip())
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let before = fx.signer_tx_count().await.unwrap();
    let again = payment_from(&fx, wallet);
    let (_, refused) = fx.facilitator.post("/settle", &again).await.unwrap();
    assert_eq!(refused["success"], false, "{refused}");
    assert_eq!(refused["transaction"], "", "{refused}");
    assert!(
        refused["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("reverted on chain")),
        "refused as a reverting payer: {refused}"
    );
    assert_eq!(fx.signer_tx_count().await.unwrap(), before, "nothing sent");
}
