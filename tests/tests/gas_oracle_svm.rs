//! Gas oracle on Solana against a real local Solana JSON-RPC server (`x402-surfnet`, surfpool's
//! offline simnet) through the production `RpcSvmChain`:
//!
//! - the compute unit price is the 75th percentile of `getRecentPrioritizationFees` for the mint
//!   (fed by real prioritized `TransferChecked` transactions), +25 %, and the fee part of the
//!   quote is `2 × 5000 + ceil(price × 20 000 / 10^6)` lamports;
//! - the quote for a `payTo` without an associated token account minus the quote for one with
//!   it is exactly `getMinimumBalanceForRentExemption(165)`, in lamports and, at a fixed SOL
//!   price, in atomic USDC (hand-computed);
//! - that rent is what creating the account really costs its funder on chain, after which the
//!   `payTo` is quoted without rent.
//!
//! Needs `.tools/bin/x402-surfnet` (scripts/install-surfnet.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solana_address::Address;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::Transaction;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::spl::LAMPORTS_PER_SIGNATURE;
use x402_chain::{RpcSvmChain, SvmChain};
use x402_gas_oracle::cost::svm::{SvmAsset, SvmCostModel, SvmCostParams};
use x402_gas_oracle::price::FixedPriceSource;
use x402_gas_oracle::quote::{QuoteCache, Quoter, SvmQuoter, svm_quote_for_pay_to};
use x402_gas_oracle::{Quote, SvmQuoteDetails, UsdcConversion};
use x402_proto::network::SOLANA_DEVNET;
use x402_tests::Surfnet;
use x402_tests::surfnet::{DEVNET_USDC, SPL_TOKEN_PROGRAM, parse_pubkey};

const SOL: u64 = 1_000_000_000;
/// Fixed SOL price of the quotes, USD.
const SOL_USD: &str = "187.53";
/// Markup of the quotes: +10 %.
const MARKUP_BPS: u32 = 1_000;
/// Compute unit prices (micro-lamports per CU) of the prioritized transfers planted first.
const PLANTED_PRICES: [u64; 4] = [7_000, 1_000, 5_000, 3_000];
/// p75 (nearest rank) of 1000 3000 5000 7000 is the 3rd, 5000; +25 % = 6250 µlamports per CU.
const EXPECTED_CU_PRICE: u64 = 6_250;
/// ceil(6250 × 20 000 / 10^6) = 125 lamports.
const EXPECTED_PRIORITY_FEE: u64 = 125;
/// Rent-exemption minimum of a 165-byte SPL token account at Solana's default rent.
const TOKEN_ACCOUNT_RENT: u64 = 2_039_280;
/// 10 125 lamports at $187.53 = $0.0018987412… → 1899 atomic; +10 % = 2088.9 → 2089.
const EXPECTED_FEE_USDC: u128 = 2_089;
/// 2 039 280 lamports at $187.53 = $0.3824261784 → 382 427 atomic; +10 % = 420 669.7 → 420 670.
const EXPECTED_RENT_USDC: u128 = 420_670;

/// Signs, sends (through the production RPC client) and waits until `confirmed`; fails on a
/// transaction error.
async fn send_confirmed(
    chain: &dyn SvmChain,
    surfnet: &Surfnet,
    tx: Transaction,
) -> anyhow::Result<()> {
    let tx = VersionedTransaction::from(tx);
    let signature = chain.send(&tx).await?;
    let start = Instant::now();
    loop {
        if let Some(status) = chain.signature_status(&signature).await?
            && status.confirmed
        {
            anyhow::ensure!(status.err.is_none(), "{signature} failed: {status:?}");
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "{signature} not confirmed after 30 s\n{}",
            surfnet.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `q`'s Solana breakdown.
fn svm(q: &Quote) -> SvmQuoteDetails {
    q.svm.expect("a Solana quote has the svm breakdown")
}

/// Atomic USDC of `lamports` at $187.53 (`18753 / 10^2`) with +10 %, each step rounded up: the
/// hand formula, independent of the crate's conversion.
fn usdc_of(lamports: u64) -> u128 {
    let value = (u128::from(lamports) * 18_753 * 1_000_000).div_ceil(10u128.pow(9 + 2));
    (value * 11_000).div_ceil(10_000)
}

#[tokio::test]
async fn svm_quote_fee_from_prioritization_fees_and_rent_of_missing_ata() -> anyhow::Result<()> {
    let surfnet = Surfnet::spawn().await?;
    let chain: Arc<dyn SvmChain> =
        Arc::new(RpcSvmChain::new(surfnet.rpc_url(), Duration::from_secs(10)));
    let token_program = parse_pubkey(SPL_TOKEN_PROGRAM)?;
    let usdc = parse_pubkey(DEVNET_USDC)?;
    surfnet.plant_mint(&usdc, 6, &token_program).await?;

    let payer = Keypair::new();
    let payer_ata = surfnet
        .set_token_balance(&payer.pubkey(), &usdc, 1_000_000, &token_program)
        .await?;
    let pay_to_with: Address = Keypair::new().pubkey();
    let pay_to_with_ata = surfnet
        .set_token_balance(&pay_to_with, &usdc, 0, &token_program)
        .await?;
    let pay_to_without: Address = Keypair::new().pubkey();
    let fee_payer = Keypair::new();
    surfnet.airdrop(&fee_payer.pubkey(), SOL).await?;

    // Recent prioritized transfers of the mint: one prioritization fee each.
    for (i, price) in PLANTED_PRICES.into_iter().enumerate() {
        let transfer = spl_token_interface::instruction::transfer_checked(
            &token_program,
            &payer_ata,
            &usdc,
            &pay_to_with_ata,
            &payer.pubkey(),
            &[],
            1 + i as u64,
            6,
        )?;
        let tx = Transaction::new_signed_with_payer(
            &[
                ComputeBudgetInstruction::set_compute_unit_limit(20_000),
                ComputeBudgetInstruction::set_compute_unit_price(price),
                transfer,
            ],
            Some(&fee_payer.pubkey()),
            &[&fee_payer, &payer],
            surfnet.latest_blockhash().await?,
        );
        send_confirmed(chain.as_ref(), &surfnet, tx).await?;
    }
    // The node's own answer, read raw: exactly the planted prices.
    let raw = surfnet
        .rpc("getRecentPrioritizationFees", json!([[DEVNET_USDC]]))
        .await?;
    let mut raw_fees: Vec<u64> = raw
        .as_array()
        .expect("array")
        .iter()
        .map(|f| f["prioritizationFee"].as_u64().expect("prioritizationFee"))
        .collect();
    raw_fees.sort_unstable();
    assert_eq!(raw_fees, [1_000, 3_000, 5_000, 7_000], "{raw}");

    let rent_165 = surfnet.rent_exempt_minimum(165).await?;
    assert_eq!(rent_165, TOKEN_ACCOUNT_RENT);

    let params = SvmCostParams::default();
    assert_eq!((params.signatures, params.compute_unit_limit), (2, 20_000));
    let model = Arc::new(SvmCostModel::new(chain.clone(), params));
    let asset = SvmAsset::spl_token(usdc);
    assert!(model.ata_exists(&pay_to_with, &asset).await?);
    assert!(!model.ata_exists(&pay_to_without, &asset).await?);
    let quoter = SvmQuoter::new(
        SOLANA_DEVNET,
        model.clone(),
        asset,
        Arc::new(FixedPriceSource::new(SOL_USD)?),
        UsdcConversion::new(MARKUP_BPS, 1),
    );
    assert_eq!(quoter.asset(), DEVNET_USDC);

    // The base quote: fee only.
    let base = quoter.quote().await?;
    eprintln!("base quote: {}", serde_json::to_string(&base)?);
    let fee_lamports = 2 * LAMPORTS_PER_SIGNATURE + EXPECTED_PRIORITY_FEE;
    assert_eq!(fee_lamports, 10_125);
    let b = svm(&base);
    assert_eq!(b.cost.compute_unit_price_micro_lamports, EXPECTED_CU_PRICE);
    assert_eq!(b.cost.priority_fee_lamports, EXPECTED_PRIORITY_FEE);
    assert_eq!(
        (b.cost.signatures, b.cost.lamports_per_signature),
        (2, 5_000)
    );
    assert_eq!(
        (b.cost.rent_lamports, b.cost.total_lamports),
        (0, fee_lamports)
    );
    assert_eq!(b.ata_rent_lamports, rent_165);
    assert_eq!(base.gas_usdc_atomic, EXPECTED_FEE_USDC);
    assert_eq!(base.gas_usdc_atomic, usdc_of(fee_lamports));
    assert_eq!(base.native_usd, SOL_USD);

    // Fresh quotes per payTo (creation allowed): the difference is exactly the rent.
    let without = quoter.quote_for_pay_to(&pay_to_without, true).await?;
    let with = quoter.quote_for_pay_to(&pay_to_with, true).await?;
    eprintln!("payTo without ATA: {}", serde_json::to_string(&without)?);
    let (sw, sp) = (svm(&without), svm(&with));
    for s in [sw, sp] {
        assert_eq!(
            s.cost.fee_lamports(),
            s.cost.signatures * LAMPORTS_PER_SIGNATURE + s.cost.priority_fee_lamports
        );
        assert_eq!(s.cost.fee_lamports(), fee_lamports);
    }
    assert_eq!(
        (sw.cost.rent_lamports, sp.cost.rent_lamports),
        (rent_165, 0)
    );
    assert_eq!(sw.cost.total_lamports - sp.cost.total_lamports, rent_165);
    assert_eq!(
        without.gas_usdc_atomic - with.gas_usdc_atomic,
        EXPECTED_RENT_USDC
    );
    assert_eq!(EXPECTED_RENT_USDC, usdc_of(rent_165));
    assert_eq!(sw.rent_usdc_atomic, EXPECTED_RENT_USDC);
    assert_eq!(with.gas_usdc_atomic, EXPECTED_FEE_USDC);
    // Creation not allowed for this payTo: no rent, no matter the account.
    let not_created = quoter.quote_for_pay_to(&pay_to_without, false).await?;
    assert_eq!(svm(&not_created).cost.rent_lamports, 0);
    assert_eq!(not_created.gas_usdc_atomic, EXPECTED_FEE_USDC);

    // The request-time path: the cached base quote plus the rent, one getAccountInfo.
    let cache = QuoteCache::new(Duration::from_secs(60));
    cache.refresh(&quoter, Duration::from_secs(10)).await?;
    let cached = cache.get(SOLANA_DEVNET, DEVNET_USDC)?;
    let cached_without =
        svm_quote_for_pay_to(&cached, &model, &asset, &pay_to_without, true).await?;
    let cached_with = svm_quote_for_pay_to(&cached, &model, &asset, &pay_to_with, true).await?;
    assert_eq!(
        svm(&cached_without).cost.total_lamports - svm(&cached_with).cost.total_lamports,
        rent_165
    );
    assert_eq!(
        cached_without.gas_usdc_atomic - cached_with.gas_usdc_atomic,
        EXPECTED_RENT_USDC
    );
    assert_eq!(cached_with, cached, "an existing account adds nothing");

    // The rent is what creating the account costs its funder: one signature + the rent.
    let before = surfnet.balance(&fee_payer.pubkey()).await?;
    let create =
        spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
            &fee_payer.pubkey(),
            &pay_to_without,
            &usdc,
            &token_program,
        );
    let tx = Transaction::new_signed_with_payer(
        &[create],
        Some(&fee_payer.pubkey()),
        &[&fee_payer],
        surfnet.latest_blockhash().await?,
    );
    send_confirmed(chain.as_ref(), &surfnet, tx).await?;
    let after = surfnet.balance(&fee_payer.pubkey()).await?;
    assert_eq!(
        before - after,
        LAMPORTS_PER_SIGNATURE + sw.cost.rent_lamports
    );
    // Now it exists: quoted without rent.
    assert!(model.ata_exists(&pay_to_without, &asset).await?);
    let created = svm_quote_for_pay_to(&cached, &model, &asset, &pay_to_without, true).await?;
    assert_eq!(created, cached);

    // Token-2022 associated token accounts are 170 bytes.
    let t22 = SvmAsset::new(
        usdc,
        parse_pubkey("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")?,
    );
    assert_eq!(
        model.token_account_rent(&t22).await?,
        surfnet.rent_exempt_minimum(170).await?
    );
    Ok(())
}
