//! In-flight debits on the local Solana RPC (surfnet, issue 18): the payer holds 10 USDC and
//! signs 10 payments of 4 USDC (distinct transactions), all settled at once. Each passes
//! verification and its simulation (the balance covers any one); without in-flight debits the
//! 8 that the balance cannot cover were sent and failed on chain, the fee payer paying their
//! fees. Now 2 settle and 8 are refused before broadcast: the fee payer pays exactly 2 fees, and
//! every debit is released.
//!
//! Needs `.tools/bin/x402-surfnet` (scripts/install-surfnet.sh) and `redis-server`.

use std::time::Instant;

use solana_signer::Signer;
use x402_tests::svm_fixture::{
    COMPUTE_UNIT_LIMIT, COMPUTE_UNIT_PRICE, FEE_PAYER_LAMPORTS, PAYER_FUNDS, SvmRpcFixture,
};

const AMOUNT: u64 = 4_000_000;

fn expected_fee() -> u64 {
    let priority = (u64::from(COMPUTE_UNIT_LIMIT) * COMPUTE_UNIT_PRICE).div_ceil(1_000_000);
    2 * 5_000 + priority
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payer_cannot_make_the_fee_payer_pay_for_transfers_that_fail() {
    let fx = SvmRpcFixture::start().await.unwrap();
    assert_eq!(PAYER_FUNDS, 10_000_000);
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let tx = fx.payment_b64(AMOUNT).await.unwrap();
        bodies.push(fx.body_v2(&tx, AMOUNT));
    }
    let started = Instant::now();
    let answers: Vec<_> =
        futures::future::join_all(bodies.iter().map(|b| fx.facilitator.post("/settle", b)))
            .await
            .into_iter()
            .map(|r| r.unwrap().1)
            .collect();
    let settled = answers.iter().filter(|a| a["success"] == true).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a["errorReason"] == "invalid_exact_svm_transaction_simulation_failed")
        .collect();
    println!(
        "solana: {settled} settled, {} refused before broadcast, in {:?}",
        refused.len(),
        started.elapsed()
    );
    assert_eq!(settled, 2, "{answers:#?}");
    assert_eq!(refused.len(), 8, "{answers:#?}");
    for a in &refused {
        assert_eq!(a["transaction"], "", "{a}");
        assert!(
            a["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("insufficient funds"),
            "{a}"
        );
    }
    assert_eq!(fx.payer_balance().await.unwrap(), PAYER_FUNDS - 2 * AMOUNT);
    assert_eq!(fx.pay_to_balance().await.unwrap(), 2 * AMOUNT);
    let spent = FEE_PAYER_LAMPORTS - fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap();
    println!(
        "solana: the fee payer spent {spent} lamports (2 fees: {})",
        2 * expected_fee()
    );
    assert_eq!(
        spent,
        2 * expected_fee(),
        "the fee payer paid for failed transfers"
    );
    let debits: Vec<String> = fx
        .redis_keys("x402:debits:*")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| !k.ends_with(":seq"))
        .collect();
    assert_eq!(debits, Vec::<String>::new(), "every debit released");
}
