//! The demo's Solana leg (`demo --solana`): one real x402 `exact` payment on a local Solana
//! JSON-RPC server through the real `x402-facilitator` binary.
//!
//! surfnet (surfpool's offline simnet, `scripts/install-surfnet.sh`) with Circle's devnet USDC mint
//! planted, a payer holding 10 USDC (and no SOL: the facilitator pays every fee), a fee payer with
//! 1 SOL, and a payee (`payTo`) WITHOUT a USDC token account. The facilitator runs one `[[svm]]`
//! devnet network on surfnet with `create_destination_ata_for = [payTo]` and `[svm.gas]` at a
//! FIXED SOL price (no live price source). Then `/quote`, `/requirements` (0.01 USDC service +
//! fee + the rent of payTo's new account), the payment transaction `[SetComputeUnitLimit,
//! SetComputeUnitPrice, CreateIdempotent(payTo's account, funded by the fee payer),
//! TransferChecked(total), Memo]` signed by the payer, `/verify`, `/settle`, the balances, the
//! SOL the fee payer actually spent next to the quoted charge, and the fee and rent metrics.
//!
//! Keys are generated here at each run; all traffic stays on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use solana_address::Address;
use solana_keypair::Keypair;
use solana_signer::Signer;
use x402_proto::network::SOLANA_DEVNET;
use x402_tests::Surfnet;
use x402_tests::surfnet::{DEVNET_USDC, SPL_TOKEN_PROGRAM, associated_token_address, parse_pubkey};
use x402_tests::svm_payment::{
    CREATE_COMPUTE_UNIT_LIMIT, DEFAULT_COMPUTE_UNIT_PRICE, SvmPaymentBuilder, to_base64,
};

use super::{
    FacilitatorProcess, post, pretty, replay_store, show_supported, step, verify_and_settle,
    wait_for_quote,
};

/// The price paid for the service: 0.01 USDC (atomic units, 6 decimals).
const PRICE: u64 = 10_000;
/// USDC given to the payer: 10 USDC.
const PAYER_FUNDS: u64 = 10_000_000;
/// Lamports per SOL.
const SOL: u64 = 1_000_000_000;
/// SOL airdropped to the fee payer, lamports.
const FEE_PAYER_LAMPORTS: u64 = SOL;
/// The fixed SOL price of `[svm.gas]`, whole USD.
const SOL_USD: u64 = 150;
/// Markup of `[svm.gas]`, basis points (+20 %).
const MARKUP_BPS: u64 = 2_000;
/// Base fee per signature, lamports (cluster constant).
const LAMPORTS_PER_SIGNATURE: u64 = 5_000;
/// USDC decimals.
const USDC_DECIMALS: u8 = 6;

/// Runs the Solana leg; any failed step or check is an error.
pub async fn run() -> anyhow::Result<()> {
    step("Solana: surfnet (local Solana JSON-RPC, surfpool's offline simnet) + devnet USDC");
    let surfnet = Surfnet::spawn().await?;
    let mint = parse_pubkey(DEVNET_USDC)?;
    let token_program = parse_pubkey(SPL_TOKEN_PROGRAM)?;
    surfnet
        .plant_mint(&mint, USDC_DECIMALS, &token_program)
        .await
        .context("planting the USDC mint")?;
    let payer = Arc::new(Keypair::new());
    let fee_payer = Keypair::new();
    let pay_to = Keypair::new().pubkey();
    surfnet
        .airdrop(&fee_payer.pubkey(), FEE_PAYER_LAMPORTS)
        .await?;
    let payer_ata = surfnet
        .set_token_balance(&payer.pubkey(), &mint, PAYER_FUNDS, &token_program)
        .await?;
    let pay_to_ata = associated_token_address(&pay_to, &mint, &token_program);
    ensure!(
        surfnet.token_balance(&payer_ata).await? == Some(PAYER_FUNDS),
        "the payer's USDC was not planted"
    );
    ensure!(
        surfnet.token_balance(&pay_to_ata).await?.is_none(),
        "payTo already has a token account"
    );
    println!("  rpc        {}", surfnet.rpc_url());
    println!("  USDC       {mint} (Circle's devnet mint, planted; SPL Token)");
    println!(
        "  payer      {} (USDC account {payer_ata}: {}; 0 SOL, it pays no fee)",
        payer.pubkey(),
        usdc_fmt(PAYER_FUNDS.into())
    );
    println!("  payTo      {pay_to} (no USDC account: {pay_to_ata} does not exist)");
    println!(
        "  fee payer  {} (facilitator key, {} SOL)",
        fee_payer.pubkey(),
        FEE_PAYER_LAMPORTS / SOL
    );
    println!("  keys generated for this run");

    step("replay store: Redis");
    let (redis_url, _own_redis) = replay_store().await?;

    step("facilitator: the real x402-facilitator binary, one [[svm]] network (devnet) on surfnet");
    let toml = config_toml(&surfnet.rpc_url(), &redis_url, &fee_payer, &mint, &pay_to);
    let facilitator = FacilitatorProcess::start("svm", &toml).await?;
    let url = facilitator.url().to_string();
    facilitator.describe();
    println!("  create_destination_ata_for = [payTo]: payments to payTo may create its account");
    println!(
        "  SOL/USD FIXED at {SOL_USD} USD ([svm.gas] price source kind = \"fixed\", no live \
         price), markup +{} %",
        MARKUP_BPS / 100
    );
    let http = reqwest::Client::new();

    show_supported(&http, &url).await?;

    step("GET /quote (the transaction fee in USDC, payee account assumed to exist)");
    let quote = wait_for_quote(
        &http,
        &url,
        &format!("network={SOLANA_DEVNET}&asset={mint}"),
    )
    .await?;
    println!("{}", pretty(&quote));
    let fee_charge = u128_field(&quote, "/gasUsdcAtomic")?;
    let quoted_fee_lamports = u64_field(&quote, "/svm/totalLamports")?;
    let ata_rent_lamports = u64_field(&quote, "/svm/ataRentLamports")?;
    ensure!(
        quote["nativeUsd"].as_str().and_then(|usd| usd.parse().ok()) == Some(SOL_USD),
        "the quote's SOL price is not the fixed {SOL_USD} USD: {}",
        quote["nativeUsd"]
    );

    step("POST /requirements (service price 0.01 USDC + fee + rent of payTo's new account)");
    let ask = json!({
        "network": SOLANA_DEVNET, "asset": mint.to_string(), "payTo": pay_to.to_string(),
        "price": PRICE.to_string(), "maxTimeoutSeconds": 60
    });
    let (status, offered) = post(&http, &url, "/requirements", &ask).await?;
    ensure!(status == 200, "/requirements answered {status}: {offered}");
    let accepted = offered["v2"].clone();
    println!("{}", pretty(&accepted));
    let total = u128_field(&accepted, "/amount")?;
    let gas = total
        .checked_sub(u128::from(PRICE))
        .context("amount below the service price")?;
    let rent_charge = gas
        .checked_sub(fee_charge)
        .filter(|rent| *rent > 0)
        .with_context(|| {
            format!("the requirements' gas {gas} does not include the rent (fee {fee_charge})")
        })?;
    let fee_payer_offered = parse_pubkey(
        accepted["extra"]["feePayer"]
            .as_str()
            .context("no extra.feePayer")?,
    )?;
    ensure!(
        fee_payer_offered == fee_payer.pubkey(),
        "extra.feePayer {fee_payer_offered} is not the configured fee payer"
    );
    println!("  breakdown (quoted, +{} % markup):", MARKUP_BPS / 100);
    println!("    service {:>15}", usdc_fmt(PRICE.into()));
    println!(
        "    fee     {:>15}   ({quoted_fee_lamports} lamports: {} signatures × {} + priority \
         fee {})",
        usdc_fmt(fee_charge),
        quote["svm"]["signatures"],
        quote["svm"]["lamportsPerSignature"],
        quote["svm"]["priorityFeeLamports"]
    );
    println!(
        "    rent    {:>15}   ({ata_rent_lamports} lamports: rent-exempt minimum of payTo's \
         new token account)",
        usdc_fmt(rent_charge)
    );
    println!(
        "    total   {:>15}   (= amount {total}; extra.breakdown {})",
        usdc_fmt(total),
        accepted["extra"]["breakdown"]
    );

    step(
        "payer builds the payment transaction (v0): CreateIdempotent + TransferChecked of the \
         total + Memo",
    );
    let amount = u64::try_from(total).context("amount above u64")?;
    let blockhash = surfnet.latest_blockhash().await?;
    let builder = SvmPaymentBuilder::new(
        payer.clone(),
        fee_payer_offered,
        mint,
        pay_to,
        amount,
        blockhash,
    )
    .create_destination();
    for (i, ix) in builder.instructions().iter().enumerate() {
        println!("  ix{i} {}", describe(&ix.program_id, &ix.data));
    }
    let tx = builder.build();
    let signatures = u64::from(tx.message.header().num_required_signatures);
    println!(
        "  blockhash {blockhash}; {signatures} signatures: fee payer (slot 0, empty: the \
         facilitator co-signs), payer (signed)"
    );
    let body = json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "resource": {"url": "http://127.0.0.1/demo/item", "mimeType": "application/json"},
            "accepted": accepted,
            "payload": {"transaction": to_base64(&tx)},
        },
        "paymentRequirements": accepted,
    });
    let payer_before = surfnet.token_balance(&payer_ata).await?;
    let pay_to_before = surfnet.token_balance(&pay_to_ata).await?;
    let fee_payer_before = surfnet.balance(&fee_payer.pubkey()).await?;

    let settle = verify_and_settle(&http, &url, &body).await?;
    let signature = settle["transaction"]
        .as_str()
        .filter(|s| !s.is_empty())
        .context("/settle answer without a transaction")?;

    step("on chain");
    let status = signature_status(&surfnet, signature).await?;
    println!("  signature {signature}");
    println!(
        "  slot      {}   status {}   err {}",
        status["slot"], status["confirmationStatus"], status["err"]
    );
    let payer_after = surfnet.token_balance(&payer_ata).await?;
    let pay_to_after = surfnet.token_balance(&pay_to_ata).await?;
    let fee_payer_after = surfnet.balance(&fee_payer.pubkey()).await?;
    println!("  USDC balance {:>28}  {:>28}", "before", "after");
    for (who, before, after) in [
        ("payer", payer_before, payer_after),
        ("payTo", pay_to_before, pay_to_after),
    ] {
        println!(
            "  {who:<12} {:>28}  {:>28}",
            balance_fmt(before),
            balance_fmt(after)
        );
    }
    let (payer_before, payer_after) = (payer_before.unwrap_or(0), payer_after.unwrap_or(0));
    ensure!(
        payer_before.checked_sub(payer_after) == Some(amount)
            && pay_to_before.is_none()
            && pay_to_after == Some(amount),
        "balances did not move by exactly {amount} atomic USDC into payTo's new account"
    );

    step("SOL the fee payer actually spent, next to the quoted charge");
    let spent = fee_payer_before
        .checked_sub(fee_payer_after)
        .context("the fee payer's SOL went up")?;
    let rent = surfnet.balance(&pay_to_ata).await?;
    let priority =
        (u64::from(CREATE_COMPUTE_UNIT_LIMIT) * DEFAULT_COMPUTE_UNIT_PRICE).div_ceil(1_000_000);
    let fee = signatures * LAMPORTS_PER_SIGNATURE + priority;
    ensure!(
        spent == fee + rent,
        "the fee payer spent {spent} lamports, expected fee {fee} + rent {rent}"
    );
    ensure!(
        rent == ata_rent_lamports,
        "rent {rent} lamports, the quote priced {ata_rent_lamports}"
    );
    let actual_usdc = (u128::from(spent) * u128::from(SOL_USD)).div_ceil(1_000);
    let quoted = fee_charge + rent_charge;
    ensure!(
        actual_usdc <= quoted,
        "actual {actual_usdc} above quoted {quoted} atomic USDC"
    );
    println!("  fee payer {fee_payer_before} → {fee_payer_after} lamports");
    println!(
        "  {:<8} {:>10}  {:>17}",
        "",
        "lamports",
        format!("at {SOL_USD} USD/SOL")
    );
    println!(
        "  {:<8} {fee:>10}  {:>17}  {signatures} signatures × {LAMPORTS_PER_SIGNATURE} + priority \
         {priority} ({CREATE_COMPUTE_UNIT_LIMIT} CU × {DEFAULT_COMPUTE_UNIT_PRICE} µlamport)",
        "fee",
        usd_fmt(fee)
    );
    println!(
        "  {:<8} {rent:>10}  {:>17}  rent-exempt deposit, now held by payTo's new account",
        "rent",
        usd_fmt(rent)
    );
    println!(
        "  {:<8} {spent:>10}  {:>17}  = {} rounded up (actual)",
        "spent",
        usd_fmt(spent),
        usdc_fmt(actual_usdc)
    );
    println!(
        "  {:<8} {:>10}  {:>17}  fee {} + rent {} (+{} % markup), paid by the payer",
        "quoted",
        "",
        usdc_fmt(quoted),
        usdc_fmt(fee_charge),
        usdc_fmt(rent_charge),
        MARKUP_BPS / 100
    );
    println!(
        "  {:<8} {:>10}  {:>17}  quoted − actual, kept by the facilitator",
        "margin",
        "",
        usdc_fmt(quoted - actual_usdc)
    );

    step("GET /metrics (Solana fee and rent paid, actual vs quoted)");
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let solana_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("network=\"{SOLANA_DEVNET}\"")))
        .filter(|l| {
            l.starts_with("x402_settle_svm_fee_lamports_total")
                || l.starts_with("x402_settle_svm_rent_lamports_total")
                || l.starts_with("x402_settle_gas_usdc_atomic_total")
                || l.starts_with("x402_settle_gas_quoted_usdc_atomic_total")
                || l.starts_with("x402_settle_total")
        })
        .collect();
    solana_lines.iter().for_each(|l| println!("  {l}"));
    for (name, want) in [
        ("x402_settle_svm_fee_lamports_total", u128::from(fee)),
        ("x402_settle_svm_rent_lamports_total", u128::from(rent)),
        ("x402_settle_gas_usdc_atomic_total", actual_usdc),
    ] {
        let got = metric_value(&solana_lines, name)?;
        ensure!(got == want as f64, "{name} is {got}, expected {want}");
    }

    step("stopping the facilitator and surfnet");
    facilitator.stop_and_clean();
    drop(surfnet);
    Ok(())
}

/// The facilitator's configuration: Redis, one `[[svm]]` devnet network at `rpc_url` with
/// `fee_payer`, USDC, `pay_to` allowed to have its account created, and `[svm.gas]` at the fixed
/// SOL price.
fn config_toml(
    rpc_url: &str,
    redis_url: &str,
    fee_payer: &Keypair,
    mint: &Address,
    pay_to: &Address,
) -> String {
    format!(
        r#"listen = "127.0.0.1:0"

[redis]
url = "{redis_url}"
key_prefix = "x402"

[settle]
receipt_timeout_seconds = 30
poll_interval_ms = 100

[[svm]]
network = "{SOLANA_DEVNET}"
rpc_url = "{rpc_url}"
fee_payer_keys = ["{fee_payer}"]
create_destination_ata_for = ["{pay_to}"]

[[svm.assets]]
mint = "{mint}"
decimals = {USDC_DECIMALS}

[svm.gas]
markup_bps = {MARKUP_BPS}
[[svm.gas.price_sources]]
kind = "fixed"
usd = "{SOL_USD}"

[quotes]
refresh_seconds = 5
max_age_seconds = 60
"#,
        fee_payer = fee_payer.to_base58_string(),
    )
}

/// One line about an instruction of the payment.
fn describe(program: &Address, data: &[u8]) -> String {
    let program = program.to_string();
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    match (program.as_str(), data.first()) {
        ("ComputeBudget111111111111111111111111111111", Some(2)) => {
            let units = data
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            format!("ComputeBudget SetComputeUnitLimit({units})")
        }
        ("ComputeBudget111111111111111111111111111111", Some(3)) => format!(
            "ComputeBudget SetComputeUnitPrice({} µlamports/CU)",
            u64_at(1)
        ),
        ("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL", Some(1)) => {
            "AssociatedToken CreateIdempotent(payTo's USDC account, funded by the fee payer)".into()
        }
        (SPL_TOKEN_PROGRAM, Some(12)) => format!(
            "SPL Token TransferChecked({} = {}, {} decimals) payer → payTo, authority payer",
            u64_at(1),
            usdc_fmt(u64_at(1).into()),
            data.get(9).copied().unwrap_or_default()
        ),
        ("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", _) => {
            format!("Memo {:?} (random nonce)", String::from_utf8_lossy(data))
        }
        _ => format!("{program} ({} bytes of data)", data.len()),
    }
}

/// `getSignatureStatuses` (with history) of `signature`: must be known, confirmed, without error.
async fn signature_status(surfnet: &Surfnet, signature: &str) -> anyhow::Result<Value> {
    for _ in 0..100 {
        let statuses = surfnet
            .rpc(
                "getSignatureStatuses",
                json!([[signature], { "searchTransactionHistory": true }]),
            )
            .await?;
        let status = statuses["value"][0].clone();
        if matches!(
            status["confirmationStatus"].as_str(),
            Some("confirmed" | "finalized")
        ) {
            ensure!(status["err"].is_null(), "{signature} failed: {status}");
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{signature} not confirmed on surfnet")
}

fn metric_value(lines: &[&str], name: &str) -> anyhow::Result<f64> {
    let line = lines
        .iter()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .with_context(|| format!("no {name} sample for {SOLANA_DEVNET} in /metrics"))?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    value
        .parse()
        .with_context(|| format!("{name}: value {value:?}"))
}

fn u128_field(v: &Value, pointer: &str) -> anyhow::Result<u128> {
    let text = v
        .pointer(pointer)
        .and_then(Value::as_str)
        .with_context(|| format!("no {pointer} in {v}"))?;
    text.parse()
        .with_context(|| format!("{pointer}: {text:?} is not an integer"))
}

fn u64_field(v: &Value, pointer: &str) -> anyhow::Result<u64> {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("no integer {pointer} in {v}"))
}

/// `10000` → `0.010000 USDC`.
fn usdc_fmt(atomic: u128) -> String {
    format!("{}.{:06} USDC", atomic / 1_000_000, atomic % 1_000_000)
}

/// Lamports at the fixed SOL price, exact: `10001` → `0.001500150 USD`.
fn usd_fmt(lamports: u64) -> String {
    let nano_usd = u128::from(lamports) * u128::from(SOL_USD);
    format!(
        "{}.{:09} USD",
        nano_usd / u128::from(SOL),
        nano_usd % u128::from(SOL)
    )
}

/// A token balance, or that the account does not exist.
fn balance_fmt(balance: Option<u64>) -> String {
    match balance {
        Some(atomic) => format!("{atomic} ({})", usdc_fmt(atomic.into())),
        None => "(no account)".into(),
    }
}
