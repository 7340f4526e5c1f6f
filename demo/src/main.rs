//! End-to-end demo: one real x402 payment through the real `x402-facilitator` binary.
//!
//! anvil (chain 8453) + Circle's FiatTokenV2_2 at the Base USDC address, Redis (the one on
//! 127.0.0.1:6379 if it answers, else a private one), the facilitator started as a child process
//! from a generated config, a Chainlink-style ETH/USD feed (MockV3Aggregator) for gas pricing,
//! then `/supported`, `/quote`, `/requirements` (0.01 USDC service + quoted gas), `/verify` and
//! `/settle` over HTTP, and the gas actually paid next to the quote.
//!
//! Accounts (anvil dev keys): 0 USDC owner, 1 facilitator signer (pays gas), 2 payer, 3 payee.
//!
//! With `--solana`, a second leg follows on a local Solana RPC (surfnet): see [`svm`].
//! Run it with `scripts/demo.sh [--solana]` (installs the tools and builds both binaries first).

mod svm;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::price_feed::MockAggregator;
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

/// Minted to the payer: 10 USDC (atomic units, 6 decimals).
const PAYER_FUNDS: u64 = 10_000_000;
/// The price paid: 0.01 USDC.
const PRICE: u64 = 10_000;
/// $3000.00 with the feed's 8 decimals.
const ETH_USD_8_DECIMALS: i128 = 300_000_000_000;
/// The Redis tried first.
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379/";

const USAGE: &str = "usage: demo [--solana]\n  (no flag)  one EVM payment on anvil\n  --solana   \
                     then one Solana payment on surfnet (needs scripts/install-surfnet.sh)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let solana = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => false,
        ["--solana"] => true,
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("demo: unexpected arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut legs = Vec::new();
    let mut result = run().await.context("EVM leg");
    legs.push(("EVM", started.elapsed()));
    if solana && result.is_ok() {
        let leg = Instant::now();
        result = svm::run().await.context("Solana leg");
        legs.push(("Solana", leg.elapsed()));
    }
    match result {
        Ok(()) => {
            let legs: Vec<String> = legs
                .iter()
                .map(|(name, took)| format!("{name} {:.1} s", took.as_secs_f64()))
                .collect();
            println!(
                "\nDEMO OK in {:.1} s ({})",
                started.elapsed().as_secs_f64(),
                legs.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    step("chain: anvil (chain id 8453) + Circle FiatTokenV2_2 at the Base USDC address");
    let anvil = Anvil::spawn().await?;
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await?;
    let payer = anvil.signer(2);
    let pay_to = anvil.address(3);
    usdc.mint(payer.address(), PAYER_FUNDS).await?;
    println!("  rpc      {}", anvil.rpc_url());
    println!("  USDC     {}", usdc.address());
    println!(
        "  payer    {} (minted {})",
        payer.address(),
        usdc_fmt(U256::from(PAYER_FUNDS))
    );
    println!("  payee    {pay_to}");
    println!("  signer   {} (facilitator, pays gas)", anvil.address(1));
    let feed = MockAggregator::deploy(&anvil, anvil.signer(0), 8, ETH_USD_8_DECIMALS).await?;
    println!(
        "  ETH/USD  {} (MockV3Aggregator, $3000.00, 8 decimals)",
        feed.address()
    );

    step("replay store: Redis");
    // `_own_redis` keeps a private server alive until the end of `run`.
    let (redis_url, _own_redis) = replay_store().await?;

    step("facilitator: the real x402-facilitator binary");
    let toml = TestFacilitator::config_toml(&anvil, DEV_PRIVATE_KEYS[1], Some(&redis_url))
        + &gas_toml(&feed.address().to_checksum(None));
    let facilitator = FacilitatorProcess::start("evm", &toml).await?;
    let url = facilitator.url().to_string();
    facilitator.describe();
    let http = reqwest::Client::new();

    show_supported(&http, &url).await?;

    step("GET /quote (settlement gas in USDC, from the background-refreshed cache)");
    let quote = wait_for_quote(&http, &url, "network=eip155:8453").await?;
    println!("{}", pretty(&quote));

    step("POST /requirements (service price 0.01 USDC + quoted gas)");
    let ask = serde_json::json!({
        "network": "eip155:8453", "payTo": pay_to.to_checksum(None),
        "price": PRICE.to_string(), "maxTimeoutSeconds": 60
    });
    let (status, offered) = post(&http, &url, "/requirements", &ask).await?;
    ensure!(status == 200, "/requirements answered {status}: {offered}");
    let accepted = offered["v2"].clone();
    println!("{}", pretty(&accepted));
    let total: u64 = accepted["amount"].as_str().context("no amount")?.parse()?;
    let breakdown = &accepted["extra"]["breakdown"];
    println!(
        "  breakdown: service {} + gas {} = total {} USDC",
        breakdown["service_usdc"], breakdown["gas_usdc"], breakdown["total_usdc"]
    );

    step("payer signs an EIP-3009 transferWithAuthorization for exactly that total");
    let requirements = ExactEvmRequirements::base_usdc(total, pay_to);
    let (auth, signature) = requirements.authorize(&payer)?;
    let body = v2_evm_payment_json(&accepted, &signature, &auth);
    println!("  nonce {}  signature {}…", auth.nonce, &signature[..20]);
    let payer_before = usdc.balance_of(payer.address()).await?;
    let payee_before = usdc.balance_of(pay_to).await?;

    let settle = verify_and_settle(&http, &url, &body).await?;

    step("on chain");
    let tx: B256 = settle["transaction"]
        .as_str()
        .context("/settle answer without a transaction")?
        .parse()
        .context("transaction is not a 32-byte hash")?;
    let receipt = anvil
        .provider()
        .get_transaction_receipt(tx)
        .await?
        .context("no receipt for the settlement transaction")?;
    ensure!(receipt.status(), "settlement transaction {tx} reverted");
    let payer_after = usdc.balance_of(payer.address()).await?;
    let payee_after = usdc.balance_of(pay_to).await?;
    println!("  tx        {tx}");
    println!(
        "  block     {}   gas used {}   from {}",
        receipt.block_number.unwrap_or_default(),
        receipt.gas_used,
        receipt.from
    );
    println!("  USDC balance {:>28}  {:>28}", "before", "after");
    for (who, before, after) in [
        ("payer", payer_before, payer_after),
        ("payee", payee_before, payee_after),
    ] {
        let (before, after) = (atomic_and_usdc(before), atomic_and_usdc(after));
        println!("  {who:<12} {before:>28}  {after:>28}");
    }
    let paid = U256::from(total);
    ensure!(
        payer_before - payer_after == paid && payee_after - payee_before == paid,
        "balances did not move by exactly {total} atomic USDC"
    );

    step("GET /settlements/{tx} (the record keeps the gas quoted and the gas paid)");
    let view: serde_json::Value = http
        .get(format!("{url}/settlements/{tx:#x}"))
        .send()
        .await?
        .json()
        .await?;
    let cost = &view["cost"];
    println!("{}", pretty(cost));
    if let (Some(quoted), Some(actual)) = (cost["quotedUsdc"].as_u64(), cost["actualUsdc"].as_u64())
        && actual > 0
    {
        // docs/gas-pricing.md: on a steady chain the model charges markup × one block of
        // EIP-1559 headroom (12.5 %, the floor); issue 18's target is 1 + markup + 0.10.
        println!(
            "  gas quoted {quoted} vs paid {actual} atomic USDC: quoted/actual {:.3} \
             (target <= 1.30 with the 20 % markup; model on a steady chain: 1.2 x 1.125 = 1.35)",
            quoted as f64 / actual as f64
        );
    }

    step("GET /metrics (settlements and gas: actual vs quoted)");
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    metrics
        .lines()
        .filter(|l| l.starts_with("x402_settle_total") || l.starts_with("x402_settle_gas"))
        .for_each(|l| println!("  {l}"));

    step("stopping the facilitator and anvil");
    facilitator.stop_and_clean();
    drop(anvil);
    Ok(())
}

/// The Redis of the replay store: the one answering on 127.0.0.1:6379, else a private
/// `redis-server` (returned: it stops when dropped).
async fn replay_store() -> anyhow::Result<(String, Option<RedisServer>)> {
    if x402_tests::redis_server::ping_port(6379).await {
        println!("  using the Redis already answering on 127.0.0.1:6379");
        Ok((LOCAL_REDIS.to_string(), None))
    } else {
        let server = RedisServer::spawn().await?;
        let url = server.url();
        println!("  nothing on 127.0.0.1:6379: started a private redis-server at {url}");
        Ok((url, Some(server)))
    }
}

/// `GET /supported`, printed.
async fn show_supported(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    step("GET /supported");
    let supported: Value = http
        .get(format!("{url}/supported"))
        .send()
        .await?
        .json()
        .await?;
    println!("{}", pretty(&supported));
    Ok(())
}

/// `POST /verify` then `POST /settle` of `body`, printed; fails unless the payment is valid and
/// settled. Returns the settlement response.
async fn verify_and_settle(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    step("POST /verify");
    let (status, verify) = post(http, url, "/verify", body).await?;
    println!("HTTP {status}\n{}", pretty(&verify));
    ensure!(
        status == 200 && verify["isValid"] == true,
        "/verify did not accept the payment"
    );

    step("POST /settle");
    let (status, settle) = post(http, url, "/settle", body).await?;
    println!("HTTP {status}\n{}", pretty(&settle));
    ensure!(
        status == 200 && settle["success"] == true,
        "/settle did not settle the payment"
    );
    Ok(settle)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let resp = http.post(format!("{url}{path}")).json(body).send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let json = serde_json::from_str(&text)
        .with_context(|| format!("{path}: HTTP {status}, not JSON: {text}"))?;
    Ok((status, json))
}

/// `[evm.gas]` for the demo chain: the on-chain feed first, a fixed price as fallback.
fn gas_toml(feed: &str) -> String {
    format!(
        r#"
[evm.gas]
markup_bps = 2000
[[evm.gas.price_sources]]
kind = "chainlink"
address = "{feed}"
[[evm.gas.price_sources]]
kind = "fixed"
usd = "3000.00"

[quotes]
refresh_seconds = 5
max_age_seconds = 60
"#
    )
}

/// Polls `GET /quote?<query>` until the first background refresh is done (at most 10 s).
async fn wait_for_quote(http: &reqwest::Client, url: &str, query: &str) -> anyhow::Result<Value> {
    for _ in 0..100 {
        let resp = http.get(format!("{url}/quote?{query}")).send().await?;
        if resp.status() == 200 {
            return Ok(resp.json().await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no gas quote for {query} after 10 s")
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `10000` → `0.010000 USDC`.
fn usdc_fmt(atomic: U256) -> String {
    let unit = U256::from(1_000_000u64);
    format!("{}.{:06} USDC", atomic / unit, (atomic % unit).to::<u64>())
}

/// `10000` → `10000 (0.010000 USDC)`.
fn atomic_and_usdc(atomic: U256) -> String {
    format!("{atomic} ({})", usdc_fmt(atomic))
}
