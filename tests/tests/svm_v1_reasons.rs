//! x402 v1 Solana payments answer with the reason strings of `@x402/svm` 2.27's
//! `ExactSvmSchemeV1`, which keeps five short forms (`unsupported_scheme`, `network_mismatch`,
//! `fee_payer_not_managed_by_facilitator`, `transaction_simulation_failed`,
//! `transaction_failed`); v2 answers keep the `invalid_exact_svm_…` forms. In process (litesvm).

use std::time::Duration;

use serde_json::json;
use solana_keypair::Keypair;
use solana_signer::Signer;
use x402_proto::{PaymentRequest, Reason, X402Version};
use x402_tests::svm_payment::{SvmFixture, quick_timing, v1_request_json};
use x402_verify::Verdict;

const AMOUNT: u64 = 1_000;

async fn verify_reason(fx: &SvmFixture, req: &PaymentRequest) -> String {
    match fx.verifier.verify(req, true).await.unwrap() {
        Verdict::Invalid(inv) => inv.reason.as_str().to_string(),
        Verdict::Valid(p) => panic!("expected a refusal, got {p:?}"),
    }
}

use x402_chain::clock::unix_now;

#[tokio::test]
async fn fee_payer_not_managed_uses_the_v1_string_in_v1_only() {
    let fx = SvmFixture::new().unwrap();
    let tx = fx.payment(AMOUNT).build_base64();
    let stranger = json!({"feePayer": Keypair::new().pubkey().to_string()});
    let v1 = fx.request_v1(&tx, AMOUNT, stranger.clone());
    assert_eq!(
        verify_reason(&fx, &v1).await,
        "fee_payer_not_managed_by_facilitator"
    );
    let v2 = fx.request_v2(&tx, AMOUNT, stranger);
    assert_eq!(
        verify_reason(&fx, &v2).await,
        "invalid_exact_svm_fee_payer_not_managed_by_facilitator"
    );
}

#[tokio::test]
async fn simulation_failure_uses_the_v1_string_in_v1_only() {
    let fx = SvmFixture::new().unwrap();
    // More than the payer holds: the transfer fails in simulation.
    let too_much = 1_000_000_000_000;
    let tx = fx.payment(too_much).build_base64();
    let v1 = fx.request_v1(&tx, too_much, json!({}));
    assert_eq!(
        verify_reason(&fx, &v1).await,
        "transaction_simulation_failed"
    );
    let settled = fx.settler.settle(&v1, unix_now()).await.unwrap();
    assert_eq!(
        settled.error_reason.as_deref(),
        Some("transaction_simulation_failed")
    );
    assert_eq!(settled.network, "solana-devnet");
    let v2 = fx.request_v2(&tx, too_much, json!({}));
    assert_eq!(
        verify_reason(&fx, &v2).await,
        "invalid_exact_svm_transaction_simulation_failed"
    );
}

#[tokio::test]
async fn network_mismatch_and_scheme_use_the_v1_strings() {
    let fx = SvmFixture::new().unwrap();
    let tx = fx.payment(AMOUNT).build_base64();
    let body = |payload_network: &str, scheme: &str| {
        let mut v = v1_request_json(&tx, &fx.mint, &fx.pay_to, AMOUNT, &fx.extra(&json!({})));
        v["paymentPayload"]["network"] = json!(payload_network);
        v["paymentPayload"]["scheme"] = json!(scheme);
        PaymentRequest::from_value(v).unwrap()
    };
    assert_eq!(
        verify_reason(&fx, &body("solana", "exact")).await,
        "network_mismatch"
    );
    assert_eq!(
        verify_reason(&fx, &body("solana-devnet", "upto")).await,
        "unsupported_scheme"
    );
}

#[tokio::test]
async fn expired_unlanded_settlement_is_transaction_failed_in_v1() {
    let fx = SvmFixture::with_timing(quick_timing(Duration::from_millis(300))).unwrap();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v1(&tx, AMOUNT, json!({}));
    assert_eq!(req.version, X402Version::V1);
    fx.chain.hold_sends(true);
    let pending = fx.settler.settle(&req, unix_now()).await.unwrap();
    assert_eq!(pending.error_reason.as_deref(), Some("settlement_pending"));
    fx.chain.expire_blockhash();
    let terminal = fx.settler.settle(&req, unix_now()).await.unwrap();
    assert_eq!(terminal.error_reason.as_deref(), Some("transaction_failed"));
    assert_eq!(
        Reason::SvmTransactionFailed.for_svm_version(X402Version::V1),
        Reason::TransactionFailed
    );
    assert_eq!(terminal.network, "solana-devnet");
    assert!(!terminal.transaction.is_empty());
}
