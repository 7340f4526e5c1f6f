//! Smoke test of the harness: anvil + real USDC + EIP-3009 + Redis.

use std::time::Instant;

use alloy::primitives::{Address, U256};
use alloy::primitives::{address, b256, hex};
use alloy::providers::Provider;
use x402_tests::eip3009::{Authorization, sign_authorization_sig};
use x402_tests::{
    Anvil, BASE_SEPOLIA_USDC, BASE_USDC, DEV_PRIVATE_KEYS, RedisServer, Usdc, dev_signer,
};

#[tokio::test]
async fn anvil_usdc_and_eip3009_transfer() -> anyhow::Result<()> {
    let started = Instant::now();
    let anvil = Anvil::spawn().await?;
    let spawned = started.elapsed();
    assert_eq!(anvil.provider().get_chain_id().await?, 8453);

    // The dev keys are anvil's own accounts.
    let accounts: Vec<Address> = anvil.provider().get_accounts().await?;
    let ours: Vec<Address> = (0..DEV_PRIVATE_KEYS.len())
        .map(|i| dev_signer(i).address())
        .collect();
    assert_eq!(accounts, ours);

    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await?;
    eprintln!(
        "anvil ready in {spawned:?}, USDC deployed after {:?}",
        started.elapsed()
    );
    assert_eq!(usdc.address(), BASE_USDC);
    let token = usdc.contract();
    assert_eq!(token.name().call().await?, "USD Coin");
    assert_eq!(token.version().call().await?, "2");
    assert_eq!(token.symbol().call().await?, "USDC");
    assert_eq!(token.decimals().call().await?, 6);

    let payer = anvil.signer(1);
    let pay_to = anvil.address(2);
    usdc.mint(payer.address(), 5_000_000u64).await?;
    assert_eq!(
        usdc.balance_of(payer.address()).await?,
        U256::from(5_000_000u64)
    );

    let auth = Authorization::new(payer.address(), pay_to, 1_250_000u64, 60);
    let sig = sign_authorization_sig(&payer, "USD Coin", "2", 8453, BASE_USDC, &auth)?;
    assert!(!usdc.authorization_state(auth.from, auth.nonce).await?);

    // Submitted by a third account (the "facilitator"), v,r,s overload.
    let relayer = usdc.contract_with(anvil.wallet_provider(anvil.signer(3)));
    let call = relayer.transferWithAuthorization_0(
        auth.from,
        auth.to,
        auth.value,
        U256::from(auth.valid_after),
        U256::from(auth.valid_before),
        auth.nonce,
        sig.v_byte(),
        sig.r().into(),
        sig.s().into(),
    );
    let receipt = x402_tests::usdc::confirm(call.send().await?).await?;
    eprintln!("transferWithAuthorization gas used: {}", receipt.gas_used);

    assert_eq!(
        usdc.balance_of(payer.address()).await?,
        U256::from(3_750_000u64)
    );
    assert_eq!(usdc.balance_of(pay_to).await?, U256::from(1_250_000u64));
    assert!(usdc.authorization_state(auth.from, auth.nonce).await?);

    // Replaying the same authorization reverts (already simulated by eth_estimateGas / eth_call).
    let Err(err) = call.call().await else {
        panic!("replay must revert in eth_call");
    };
    assert!(
        err.to_string()
            .contains("authorization is used or canceled"),
        "{err}"
    );
    assert!(
        call.send().await.is_err(),
        "gas estimation of a replay fails"
    );
    // Forced on chain with a fixed gas limit, the replay is mined and reverts.
    let forced = x402_tests::usdc::confirm(call.clone().gas(200_000).send().await?).await;
    assert!(forced.unwrap_err().to_string().contains("reverted"));
    assert_eq!(usdc.balance_of(pay_to).await?, U256::from(1_250_000u64));
    Ok(())
}

#[tokio::test]
async fn erc1271_wallet_pays_with_owner_signature() -> anyhow::Result<()> {
    let anvil = Anvil::spawn().await?;
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await?;
    let owner = anvil.signer(4);
    let wallet = Usdc::deploy_erc1271_wallet(&anvil, anvil.signer(0), owner.address()).await?;
    usdc.mint(wallet, 1_000u64).await?;
    let auth = Authorization::new(wallet, anvil.address(5), 400u64, 60);
    let sig = sign_authorization_sig(&owner, "USD Coin", "2", 8453, BASE_USDC, &auth)?;
    let relayer = usdc.contract_with(anvil.wallet_provider(anvil.signer(3)));
    let call = relayer.transferWithAuthorization_1(
        auth.from,
        auth.to,
        auth.value,
        U256::from(auth.valid_after),
        U256::from(auth.valid_before),
        auth.nonce,
        sig.as_bytes().to_vec().into(),
    );
    x402_tests::usdc::confirm(call.send().await?).await?;
    assert_eq!(usdc.balance_of(wallet).await?, U256::from(600u64));
    assert!(usdc.authorization_state(wallet, auth.nonce).await?);
    Ok(())
}

#[tokio::test]
async fn redis_spawn_and_stop() -> anyhow::Result<()> {
    let mut redis = RedisServer::spawn().await?;
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    assert!(redis.ping().await);
    redis.stop().await?;
    assert!(!redis.ping().await);
    redis.stop().await?; // idempotent
    Ok(())
}

/// The known-answer vector of the x402 spec, settled on Circle's contract on a Base Sepolia
/// lookalike whose clock starts inside the authorization's validity window.
#[tokio::test]
async fn spec_vector_settles_on_base_sepolia_usdc() -> anyhow::Result<()> {
    let anvil = Anvil::builder()
        .chain_id(84532)
        .arg("--timestamp")
        .arg("1740672100")
        .spawn()
        .await?;
    let usdc = Usdc::deploy_custom(&anvil, anvil.signer(0), BASE_SEPOLIA_USDC, "USDC").await?;
    let from = address!("0x857b06519E91e3A54538791bDbb0E22373e36b66");
    let to = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    usdc.mint(from, 10_000).await?;
    let signature = hex::decode(
        "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c",
    )?;
    let nonce = b256!("0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480");
    let relayer = usdc.contract_with(anvil.wallet_provider(anvil.signer(3)));
    let call = relayer.transferWithAuthorization_1(
        from,
        to,
        U256::from(10_000),
        U256::from(1740672089u64),
        U256::from(1740672154u64),
        nonce,
        signature.into(),
    );
    x402_tests::usdc::confirm(call.send().await?).await?;
    assert_eq!(usdc.balance_of(to).await?, U256::from(10_000));
    assert!(usdc.authorization_state(from, nonce).await?);
    Ok(())
}
