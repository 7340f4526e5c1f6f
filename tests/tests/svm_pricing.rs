//! Solana fee pricing through real HTTP and a real local Solana RPC (surfnet): `GET /quote`,
//! `POST /requirements` (`extra.feePayer`, the rent of a payee's missing token account when the
//! operator lets payments create it), and the seed services' flow: a payment that creates the
//! payee's account, settled, with its fee and rent counted in `/metrics` next to the quote.
//!
//! SOL is priced at a fixed 150 USD with a 10 % markup, so every figure is computed by hand here.

use std::time::Duration;

use serde_json::{Value, json};
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use x402_tests::surfnet::associated_token_address;
use x402_tests::svm_fixture::{SOLANA_DEVNET, SvmRpcFixture, to_base64};

/// USD per SOL of the fixed price source.
const SOL_USD: u128 = 150;
/// Markup, basis points.
const MARKUP_BPS: u128 = 1_000;
/// Rent-exemption minimum of a 165-byte SPL token account, lamports (cluster constant).
const TOKEN_ACCOUNT_RENT: u64 = 2_039_280;
/// Service price of the requirements, atomic USDC (0.01 USDC).
const SERVICE: u64 = 10_000;

/// Atomic USDC (6 decimals) of `lamports` (9 decimals) at [`SOL_USD`], rounded up:
/// `ceil(lamports × 150 / 1000)`.
fn usdc(lamports: u64) -> u128 {
    (u128::from(lamports) * SOL_USD).div_ceil(1_000)
}

/// [`usdc`] with [`MARKUP_BPS`], rounded up again (the oracle's documented rule:
/// `ceil(ceil(value) × (10000 + markup) / 10000)`, never below the exact value).
fn usdc_with_markup(lamports: u64) -> u128 {
    (usdc(lamports) * (10_000 + MARKUP_BPS)).div_ceil(10_000)
}

/// The fixture with `[svm.gas]` at a fixed SOL price and `owner` allowed to have its token
/// account created by payments.
async fn priced_fixture(owner: &str) -> SvmRpcFixture {
    let svm_keys = format!("create_destination_ata_for = [\"{owner}\"]");
    let tail = format!(
        "\n[svm.gas]\nmarkup_bps = {MARKUP_BPS}\n[[svm.gas.price_sources]]\nkind = \"fixed\"\nusd = \"{SOL_USD}\"\n\n[quotes]\nrefresh_seconds = 1\n"
    );
    SvmRpcFixture::start_custom(30, &svm_keys, &tail)
        .await
        .unwrap()
}

/// Polls `GET /quote` until the background refresher has a quote.
async fn quote(fx: &SvmRpcFixture) -> Value {
    let path = format!("/quote?network={SOLANA_DEVNET}&asset={}", fx.mint);
    for _ in 0..100 {
        let (status, text) = fx.facilitator.get(&path).await.unwrap();
        if status == 200 {
            return serde_json::from_str(&text).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no quote within 10 s");
}

async fn requirements(fx: &SvmRpcFixture, pay_to: &str) -> Value {
    let body = json!({
        "network": SOLANA_DEVNET,
        "asset": fx.mint.to_string(),
        "payTo": pay_to,
        "price": SERVICE.to_string(),
        "maxTimeoutSeconds": 60,
    });
    let (status, answer) = fx.facilitator.post("/requirements", &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

fn amount(requirements: &Value) -> u64 {
    requirements["v2"]["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A v2 `/verify`–`/settle` body paying `requirements` with `tx`.
fn v2_body(requirements: &Value, tx: &VersionedTransaction) -> Value {
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "accepted": requirements,
            "payload": {"transaction": to_base64(tx)},
        },
        "paymentRequirements": requirements,
    })
}

/// Reads one sample of `metric{network="solana:…"}` from `/metrics`.
async fn metric(fx: &SvmRpcFixture, metric: &str) -> f64 {
    let (_, text) = fx.facilitator.get("/metrics").await.unwrap();
    let prefix = format!("{metric}{{network=\"{SOLANA_DEVNET}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn quote_and_requirements_price_the_fee_and_the_rent_of_a_missing_account() {
    let new_owner = Keypair::new().pubkey();
    let fx = priced_fixture(&new_owner.to_string()).await;

    // The fee: 2 signatures × 5000 lamports + the priority fee, converted by hand.
    let q = quote(&fx).await;
    let svm = &q["svm"];
    let fee_lamports = svm["totalLamports"].as_u64().unwrap();
    let priority = svm["priorityFeeLamports"].as_u64().unwrap();
    assert_eq!(svm["signatures"], 2, "{q}");
    assert_eq!(fee_lamports, 2 * 5_000 + priority, "{q}");
    let fee_usdc = usdc_with_markup(fee_lamports);
    assert_eq!(q["gasUsdcAtomic"], fee_usdc.to_string(), "{q}");
    assert_eq!(q["nativeUsd"], "150", "{q}");

    // A payee whose account exists: service + fee, and the facilitator's fee payer named.
    let existing = requirements(&fx, &fx.pay_to.to_string()).await;
    assert_eq!(
        u128::from(amount(&existing)),
        u128::from(SERVICE) + fee_usdc
    );
    let extra = &existing["v2"]["extra"];
    assert_eq!(extra["feePayer"], fx.fee_payer.pubkey().to_string());
    assert_eq!(extra["asset_decimals"], 6);
    assert_eq!(extra["breakdown"]["service_usdc"], "0.010000");
    assert_eq!(existing["v1"]["network"], "solana-devnet");
    assert_eq!(existing["v1"]["extra"]["feePayer"], extra["feePayer"]);

    // A listed payee without an account: the rent is added, exactly.
    let missing = requirements(&fx, &new_owner.to_string()).await;
    let rent_usdc = usdc_with_markup(TOKEN_ACCOUNT_RENT);
    assert_eq!(
        u128::from(amount(&missing)) - u128::from(amount(&existing)),
        rent_usdc,
        "{missing}"
    );

    // An unlisted payee without an account: no rent (creation would be refused).
    let stranger = Keypair::new().pubkey().to_string();
    assert_eq!(
        amount(&requirements(&fx, &stranger).await),
        amount(&existing)
    );
}

#[tokio::test]
async fn payment_that_creates_the_payee_account_settles_and_its_cost_is_counted() {
    let new_owner = Keypair::new().pubkey();
    let fx = priced_fixture(&new_owner.to_string()).await;
    quote(&fx).await;
    let reqs = requirements(&fx, &new_owner.to_string()).await;
    let total = amount(&reqs);
    let accepted = reqs["v2"].clone();

    let blockhash = fx.surfnet.latest_blockhash().await.unwrap();
    let tx = fx
        .payment_tx_to(&new_owner, total, blockhash, true)
        .unwrap();
    let body = v2_body(&accepted, &tx);
    let fee_payer_before = fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap();

    let (status, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
    assert_eq!(
        (status, &verify["isValid"]),
        (200, &json!(true)),
        "{verify}"
    );
    assert_eq!(verify["payer"], fx.payer.pubkey().to_string());
    let (status, settle) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(
        (status, &settle["success"]),
        (200, &json!(true)),
        "{settle}"
    );

    // The account exists now and holds the whole amount.
    let ata = associated_token_address(&new_owner, &fx.mint, &fx.token_program);
    assert_eq!(fx.surfnet.token_balance(&ata).await.unwrap(), Some(total));

    // The fee payer paid the fee (2 signatures + priority at 1 µlamport × 60,000 CU) and the rent.
    let fee = 2 * 5_000 + 1;
    let spent = fee_payer_before - fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap();
    assert_eq!(spent, fee + TOKEN_ACCOUNT_RENT);

    // Counted once, in lamports and in USDC next to the quote.
    assert_eq!(
        metric(&fx, "x402_settle_svm_fee_lamports_total").await,
        fee as f64
    );
    assert_eq!(
        metric(&fx, "x402_settle_svm_rent_lamports_total").await,
        TOKEN_ACCOUNT_RENT as f64
    );
    let actual = metric(&fx, "x402_settle_gas_usdc_atomic_total").await;
    let quoted = metric(&fx, "x402_settle_gas_quoted_usdc_atomic_total").await;
    let expected_actual = usdc(fee + TOKEN_ACCOUNT_RENT) as f64;
    assert_eq!(actual, expected_actual);
    assert!(actual <= quoted, "actual {actual} > quoted {quoted}");

    // A retry is no second success (x402-conformance F3) and counts nothing twice.
    let (_, again) = fx.facilitator.post("/settle", &body).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], settle["transaction"], "{again}");
    assert_eq!(
        metric(&fx, "x402_settle_svm_rent_lamports_total").await,
        TOKEN_ACCOUNT_RENT as f64
    );
}

#[tokio::test]
async fn unlisted_payee_without_account_is_refused_with_a_clear_reason() {
    let fx = priced_fixture(&Keypair::new().pubkey().to_string()).await;
    let stranger = Keypair::new().pubkey();
    let blockhash = fx.surfnet.latest_blockhash().await.unwrap();
    let mut requirements = fx.requirements_v2(1_000);
    requirements["payTo"] = json!(stranger.to_string());
    for create in [false, true] {
        let tx = fx
            .payment_tx_to(&stranger, 1_000, blockhash, create)
            .unwrap();
        let body = v2_body(&requirements, &tx);
        let (_, verify) = fx.facilitator.post("/verify", &body).await.unwrap();
        let want = if create {
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds"
        } else {
            "invalid_exact_svm_destination_ata_missing"
        };
        assert_eq!(verify["invalidReason"], want, "{verify}");
    }
}
