//! Gas in the price, through the facilitator's HTTP API: `GET /quote` answers from the cache,
//! `POST /requirements` adds the quoted gas to the service price, the official `@x402/evm`
//! client signs those requirements, and the payment verifies and settles; the settlement's gas
//! is recorded and stays under the quote.

use std::time::Duration;

use alloy::primitives::U256;
use serde_json::{Value, json};
use x402_tests::facilitator::EvmFixture;
use x402_tests::peers::{Peer, ensure_installed};
use x402_tests::{Anvil, DEV_PRIVATE_KEYS};

/// A fixed ETH price and 20 % markup; base fee 1 gwei.
const GAS_TOML: &str = r#"
[evm.gas]
markup_bps = 2000
[[evm.gas.price_sources]]
kind = "fixed"
usd = "3000.00"

[quotes]
refresh_seconds = 1
max_age_seconds = 60
"#;

async fn fixture() -> EvmFixture {
    let anvil = Anvil::builder()
        .block_base_fee_per_gas(1_000_000_000)
        .spawn()
        .await
        .unwrap();
    EvmFixture::start_custom(anvil, None, 10, GAS_TOML)
        .await
        .unwrap()
}

/// Polls `/quote` until the background refresher has a quote (bounded).
async fn wait_for_quote(fx: &EvmFixture) -> Value {
    for _ in 0..100 {
        let (status, body) = fx
            .facilitator
            .get("/quote?network=eip155:8453")
            .await
            .unwrap();
        if status == 200 {
            return serde_json::from_str(&body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no quote after 10 s");
}

fn u(v: &Value) -> u128 {
    v.as_str()
        .map(|s| s.parse().unwrap())
        .or_else(|| v.as_u64().map(u128::from))
        .unwrap()
}

#[tokio::test]
async fn quote_is_the_cost_converted_with_markup() {
    let fx = fixture().await;
    let q = wait_for_quote(&fx).await;
    assert_eq!(q["network"], "eip155:8453", "{q}");
    let total_wei = u(&q["totalWei"]);
    assert!(u(&q["gasUnits"]) > 80_000, "{q}");
    // The next block's base fee with at least one block of EIP-1559 rise (12.5 %, the floor of
    // the horizon headroom; docs/gas-pricing.md).
    let fees = alloy::providers::Provider::get_fee_history(
        &fx.anvil.provider(),
        1,
        alloy::eips::BlockNumberOrTag::Latest,
        &[],
    )
    .await
    .unwrap();
    let next_base_fee = fees.base_fee_per_gas[1];
    assert!(
        u(&q["feePerGasWei"]) >= (next_base_fee * 1_125).div_ceil(1_000),
        "{q} next base fee {next_base_fee}"
    );
    assert_eq!(
        total_wei,
        u(&q["gasUnits"]) * u(&q["feePerGasWei"]) + u(&q["l1FeeWei"]),
        "{q}"
    );
    // wei × $3000 / 1e18 in atomic USDC (1e6), rounded up, then +20 %, rounded up.
    let usdc = (total_wei * 3000 * 1_000_000).div_ceil(10u128.pow(18));
    assert_eq!(
        u(&q["gasUsdcAtomic"]),
        (usdc * 12_000).div_ceil(10_000),
        "{q}"
    );

    // Unknown network / asset are 400 naming the field; no network is 400 too.
    let (status, body) = fx.facilitator.get("/quote?network=eip155:1").await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"network\""), "{body}");
    let (status, body) = fx
        .facilitator
        .get("/quote?network=base&asset=0x0000000000000000000000000000000000000001")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"asset\""), "{body}");
    let (status, _) = fx.facilitator.get("/quote").await.unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn requirements_add_gas_and_the_official_client_pays_them() {
    ensure_installed().unwrap();
    let fx = fixture().await;
    let q = wait_for_quote(&fx).await;
    let gas = u(&q["gasUsdcAtomic"]);
    let (status, r) = fx
        .facilitator
        .post(
            "/requirements",
            &json!({"network": "eip155:8453", "payTo": fx.pay_to.to_checksum(None), "price": "10000",
                    "maxTimeoutSeconds": 120}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{r}");
    let v2 = &r["v2"];
    // The quote may have been refreshed in between; the amount is service + some quote's gas.
    let total = u(&v2["amount"]);
    let gas_now = total - 10_000;
    assert!(
        gas_now > 0 && gas_now.abs_diff(gas) * 10 <= gas,
        "gas {gas_now} vs quote {gas}: {r}"
    );
    assert_eq!(v2["extra"]["name"], "USD Coin");
    assert_eq!(v2["extra"]["version"], "2");
    let breakdown = &v2["extra"]["breakdown"];
    assert_eq!(breakdown["service_usdc"], "0.010000", "{r}");
    assert_eq!(breakdown["total_usdc"], format!("0.{total:06}"), "{r}");
    assert_eq!(r["v1"]["network"], "base");
    assert_eq!(r["v1"]["maxAmountRequired"], v2["amount"]);

    // The official client signs exactly these requirements; our facilitator verifies and settles.
    let out = Peer::node("client_verify_settle.mjs")
        .env("FACILITATOR_URL", fx.facilitator.url())
        .env("PAYER_KEY", DEV_PRIVATE_KEYS[2])
        .env("PAY_TO", fx.pay_to.to_checksum(None))
        .env("REQUIREMENTS_JSON", v2.to_string())
        .run()
        .await
        .unwrap();
    let answer = out.json().unwrap();
    assert!(out.success(), "{out}");
    assert_eq!(answer["verify"]["isValid"], true, "{out}");
    assert_eq!(answer["settle"]["success"], true, "{out}");
    assert_eq!(fx.payee_balance().await.unwrap(), U256::from(total));

    // Gas accounting: the metrics hold what the receipt says, in wei and in USDC, under the quote.
    let (_, metrics) = fx.facilitator.get("/metrics").await.unwrap();
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    let actual_usdc = value("x402_settle_gas_usdc_atomic_total{network=\"eip155:8453\"}");
    let quoted_usdc = value("x402_settle_gas_quoted_usdc_atomic_total{network=\"eip155:8453\"}");
    assert!(
        actual_usdc > 0.0 && actual_usdc <= quoted_usdc,
        "actual {actual_usdc} quoted {quoted_usdc}"
    );
}

#[tokio::test]
async fn quote_and_requirements_are_served_from_cache_with_the_rpc_down() {
    let fx = fixture().await;
    let before = wait_for_quote(&fx).await;
    drop(fx.anvil); // the chain is gone: any RPC on the request path would now fail
    let started = std::time::Instant::now();
    let (status, body) = fx
        .facilitator
        .get("/quote?network=eip155:8453")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let after: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(after["gasUsdcAtomic"], before["gasUsdcAtomic"]);
    let (status, r) = fx
        .facilitator
        .post(
            "/requirements",
            &json!({"network": "base", "payTo": fx.pay_to.to_checksum(None), "price": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answers waited on something"
    );
}

/// No `[evm.gas]`: the network is served without pricing, so 404 (not offered), not 503.
#[tokio::test]
async fn no_gas_config_means_no_quote() {
    let fx = EvmFixture::start(None).await.unwrap();
    let (status, body) = fx
        .facilitator
        .get("/quote?network=eip155:8453")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, _) = fx
        .facilitator
        .post(
            "/requirements",
            &json!({"network": "eip155:8453", "payTo": fx.pay_to.to_checksum(None), "price": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, body) = fx
        .facilitator
        .post(
            "/requirements",
            &json!({"network": "eip155:8453", "price": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["field"], "payTo", "{body}");
}
