//! Smoke test of the local Solana JSON-RPC server (`x402-surfnet`, surfpool's offline simnet):
//! the cheat codes plant devnet USDC and token balances, the RPC methods the facilitator needs
//! answer, and one real SPL `TransferChecked` signed by a separate fee payer lands and confirms.
//!
//! Needs `.tools/bin/x402-surfnet` (scripts/install-surfnet.sh).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::Transaction;
use x402_tests::Surfnet;
use x402_tests::surfnet::{DEVNET_USDC, SPL_TOKEN_PROGRAM, associated_token_address, parse_pubkey};

const SOL: u64 = 1_000_000_000;

#[tokio::test]
async fn surfnet_usdc_rpc_methods_and_transfer_checked() -> anyhow::Result<()> {
    let started = Instant::now();
    let surfnet = Surfnet::spawn().await?;
    eprintln!(
        "surfnet ready in {:?} at {}",
        started.elapsed(),
        surfnet.rpc_url()
    );

    let token_program = parse_pubkey(SPL_TOKEN_PROGRAM)?;
    let usdc = parse_pubkey(DEVNET_USDC)?;

    // Devnet USDC mint, planted at its real address.
    surfnet.plant_mint(&usdc, 6, &token_program).await?;
    let supply = surfnet.rpc("getTokenSupply", json!([DEVNET_USDC])).await?;
    assert_eq!(supply["value"]["decimals"], 6, "{supply}");
    let mint_info = surfnet
        .rpc(
            "getAccountInfo",
            json!([DEVNET_USDC, { "encoding": "base64" }]),
        )
        .await?;
    assert_eq!(
        mint_info["value"]["owner"], SPL_TOKEN_PROGRAM,
        "{mint_info}"
    );

    // A funded owner's associated token account.
    let owner = Keypair::new();
    let owner_ata = surfnet
        .set_token_balance(&owner.pubkey(), &usdc, 1_000_000, &token_program)
        .await?;
    assert_eq!(
        owner_ata,
        associated_token_address(&owner.pubkey(), &usdc, &token_program)
    );
    let balance = surfnet
        .rpc("getTokenAccountBalance", json!([owner_ata.to_string()]))
        .await?;
    assert_eq!(balance["value"]["amount"], "1000000", "{balance}");
    assert_eq!(balance["value"]["decimals"], 6, "{balance}");
    assert_eq!(surfnet.token_balance(&owner_ata).await?, Some(1_000_000));
    let nobody = associated_token_address(&Keypair::new().pubkey(), &usdc, &token_program);
    assert_eq!(surfnet.token_balance(&nobody).await?, None);

    // SOL for a fresh fee payer.
    let fee_payer = Keypair::new();
    surfnet.airdrop(&fee_payer.pubkey(), 2 * SOL).await?;
    let lamports = surfnet
        .rpc("getBalance", json!([fee_payer.pubkey().to_string()]))
        .await?;
    assert_eq!(lamports["value"], 2 * SOL, "{lamports}");

    // The read methods the facilitator needs.
    let latest = surfnet
        .rpc("getLatestBlockhash", json!([{ "commitment": "confirmed" }]))
        .await?;
    let blockhash = latest["value"]["blockhash"].as_str().expect("blockhash");
    let last_valid = latest["value"]["lastValidBlockHeight"]
        .as_u64()
        .expect("lastValidBlockHeight");
    let height = surfnet
        .rpc("getBlockHeight", json!([{ "commitment": "confirmed" }]))
        .await?
        .as_u64()
        .expect("getBlockHeight: u64");
    assert!(
        last_valid > height,
        "lastValidBlockHeight {last_valid} <= block height {height}"
    );
    let valid = surfnet
        .rpc(
            "isBlockhashValid",
            json!([blockhash, { "commitment": "confirmed" }]),
        )
        .await?;
    assert_eq!(valid["value"], true, "{valid}");
    let random_signature = Keypair::new().sign_message(b"never sent").to_string();
    let statuses = surfnet
        .rpc(
            "getSignatureStatuses",
            json!([[random_signature], { "searchTransactionHistory": true }]),
        )
        .await?;
    assert_eq!(statuses["value"], json!([null]), "{statuses}");
    let rent = surfnet
        .rpc("getMinimumBalanceForRentExemption", json!([165]))
        .await?;
    assert_eq!(rent, 2_039_280, "rent for a token account: {rent}");
    let fees = surfnet
        .rpc(
            "getRecentPrioritizationFees",
            json!([[owner_ata.to_string()]]),
        )
        .await?;
    assert!(fees.is_array(), "{fees}");

    // One real TransferChecked: owner → recipient's ATA, fee paid by the fee payer.
    let recipient = Keypair::new();
    let recipient_ata = surfnet
        .set_token_balance(&recipient.pubkey(), &usdc, 0, &token_program)
        .await?;
    assert_eq!(surfnet.token_balance(&recipient_ata).await?, Some(0));
    let transfer = spl_token_interface::instruction::transfer_checked(
        &token_program,
        &owner_ata,
        &usdc,
        &recipient_ata,
        &owner.pubkey(),
        &[],
        250_000,
        6,
    )?;
    let tx = Transaction::new_signed_with_payer(
        &[transfer],
        Some(&fee_payer.pubkey()),
        &[&fee_payer, &owner],
        surfnet.latest_blockhash().await?,
    );
    let wire = BASE64.encode(bincode::serialize(&tx)?);

    let message = BASE64.encode(bincode::serialize(&tx.message)?);
    let fee = surfnet
        .rpc(
            "getFeeForMessage",
            json!([message, { "commitment": "confirmed" }]),
        )
        .await?;
    let fee = fee["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("getFeeForMessage: {fee}"));
    assert_eq!(fee, 10_000, "two signatures at 5000 lamports each");

    let simulation = surfnet
        .rpc(
            "simulateTransaction",
            json!([wire, { "encoding": "base64", "sigVerify": true, "commitment": "confirmed" }]),
        )
        .await?;
    assert_eq!(simulation["value"]["err"], Value::Null, "{simulation}");
    // sigVerify really verifies: the same transaction with the owner's signature zeroed fails.
    let mut forged = tx.clone();
    forged.signatures[1] = Default::default();
    let forged_wire = BASE64.encode(bincode::serialize(&forged)?);
    let rejected = surfnet
        .rpc(
            "simulateTransaction",
            json!([forged_wire, { "encoding": "base64", "sigVerify": true }]),
        )
        .await;
    eprintln!("simulateTransaction sigVerify with a zeroed signature: {rejected:?}");
    let forged_ok = matches!(&rejected, Ok(v) if v["value"]["err"].is_null());
    assert!(
        !forged_ok,
        "a zeroed signature passed sigVerify: {rejected:?}"
    );

    let sent_at = Instant::now();
    let signature = surfnet
        .rpc(
            "sendTransaction",
            json!([wire, { "encoding": "base64", "preflightCommitment": "confirmed" }]),
        )
        .await?;
    let sent_in = sent_at.elapsed();
    assert_eq!(signature, tx.signatures[0].to_string());
    let status = loop {
        let statuses = surfnet
            .rpc("getSignatureStatuses", json!([[signature]]))
            .await?;
        let status = statuses["value"][0].clone();
        if matches!(
            status["confirmationStatus"].as_str(),
            Some("confirmed" | "finalized")
        ) {
            break status;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(30),
            "not confirmed after 30 s: {statuses}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "sendTransaction answered in {sent_in:?}, confirmed after {:?}: {status}",
        sent_at.elapsed()
    );
    assert_eq!(status["err"], Value::Null, "{status}");

    assert_eq!(surfnet.token_balance(&owner_ata).await?, Some(750_000));
    assert_eq!(surfnet.token_balance(&recipient_ata).await?, Some(250_000));
    assert_eq!(surfnet.balance(&fee_payer.pubkey()).await?, 2 * SOL - fee);
    Ok(())
}
