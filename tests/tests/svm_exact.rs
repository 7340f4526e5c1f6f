//! Solana `exact` end to end on an in-process SVM (litesvm: real SPL Token, ATA and Memo
//! programs), with payments built independently of the facilitator's layout code: valid v1/v2
//! payments (SPL Token and Token-2022) verify and settle, each layout rule is refused with its
//! reference reason (checked
//! against `Reason::as_str` and the literal wire string), settlement happens at most once (retry,
//! concurrency, Redis), and an unconfirmed broadcast answers `settlement_pending` until its
//! blockhash expires, which is terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use solana_address::Address;
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_message::{AccountMeta, AddressLookupTableAccount, Instruction, VersionedMessage};
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::{SvmAccount, SvmChain, SvmChainError, SvmSimulation, SvmTxStatus};
use x402_proto::network::SOLANA_DEVNET;
use x402_proto::{PaymentRequest, Reason, SettleResponse};
use x402_settle::replay::keys::svm_replay_key;
use x402_settle::replay::{MemoryStore, RedisStore, ReplayStore, SettlementRecord};
use x402_settle::svm::new_settler;
use x402_tests::RedisServer;
use x402_tests::litesvm_chain::LiteSvmChain;
use x402_tests::svm_payment::{
    PAYER_START_BALANCE, SOLANA_DEVNET_V1, SvmFixture, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, ata,
    ata_with_program, quick_timing, to_base64,
};
use x402_verify::svm::SvmPayment;
use x402_verify::{Invalid, Verdict};

const AMOUNT: u64 = 1_000;

use x402_chain::clock::unix_now as now;

fn fixture() -> SvmFixture {
    SvmFixture::new().expect("fixture")
}

/// A System Program `Transfer` of `lamports` from `from` (signer) to `to`: an instruction the
/// layout does not allow.
fn system_transfer(from: &Address, to: &Address, lamports: u64) -> Instruction {
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    Instruction {
        program_id: Address::from_str_const("11111111111111111111111111111111"),
        accounts: vec![AccountMeta::new(*from, true), AccountMeta::new(*to, false)],
        data,
    }
}

async fn verify(fx: &SvmFixture, req: &PaymentRequest) -> Verdict<SvmPayment> {
    fx.verifier.verify(req, true).await.expect("verify runs")
}

async fn verify_ok(fx: &SvmFixture, req: &PaymentRequest) -> SvmPayment {
    match verify(fx, req).await {
        Verdict::Valid(p) => p,
        Verdict::Invalid(inv) => panic!("expected valid, got {inv:?}"),
    }
}

async fn settle(fx: &SvmFixture, req: &PaymentRequest) -> SettleResponse {
    fx.settler.settle(req, now()).await.expect("settle runs")
}

/// Asserts that `/verify` (with simulation) and `/settle` both refuse `req` with `reason`, whose
/// wire string is `literal`, that settle broadcast nothing (`transaction: ""`), and that no
/// token moved. Returns the verification failure.
async fn assert_refused(
    fx: &SvmFixture,
    req: &PaymentRequest,
    reason: Reason,
    literal: &str,
) -> Invalid {
    assert_eq!(reason.as_str(), literal);
    let inv = match verify(fx, req).await {
        Verdict::Invalid(inv) => inv,
        Verdict::Valid(p) => panic!("expected {literal}, got valid {p:?}"),
    };
    assert_eq!(inv.reason, reason, "{inv:?}");
    assert_eq!(inv.reason.as_str(), literal, "{inv:?}");
    assert!(inv.message.as_deref().is_some_and(|m| !m.is_empty()));

    let sends = fx.chain.send_count();
    let answer = settle(fx, req).await;
    assert!(!answer.success, "{answer:?}");
    assert_eq!(answer.error_reason.as_deref(), Some(literal), "{answer:?}");
    assert_eq!(answer.transaction, "", "{answer:?}");
    assert_eq!(answer.network, req.network_wire());
    assert_eq!(fx.chain.send_count(), sends, "a refused payment was sent");
    assert_eq!(fx.token_balance(&fx.payer_ata), PAYER_START_BALANCE);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), 0);
    inv
}

/// Asserts a successful settlement of `req` moving `amount` from the payer to `pay_to_ata`.
async fn assert_settles(fx: &SvmFixture, req: &PaymentRequest, pay_to_ata: &Address, amount: u64) {
    let payer_before = fx.token_balance(&fx.payer_ata);
    let pay_to_before = fx.token_balance(pay_to_ata);
    let id = fx.verifier.payment_id(req).unwrap().expect("payment id");
    let answer = settle(fx, req).await;
    assert!(answer.success, "{answer:?}");
    assert_eq!(answer.error_reason, None);
    assert_eq!(answer.transaction, id.to_string());
    assert_eq!(
        bs58::decode(&answer.transaction).into_vec().unwrap().len(),
        64
    );
    assert_eq!(answer.network, req.network_wire());
    assert_eq!(
        answer.payer.as_deref(),
        Some(fx.payer.pubkey().to_string().as_str())
    );
    assert_eq!(answer.amount.as_deref(), Some(amount.to_string().as_str()));
    assert_eq!(fx.chain.executed(&id), Some(None), "landed without error");
    assert_eq!(fx.token_balance(&fx.payer_ata), payer_before - amount);
    assert_eq!(fx.token_balance(pay_to_ata), pay_to_before + amount);
}

// --- valid payments -------------------------------------------------------------------------

#[tokio::test]
async fn valid_v2_payment_verifies_without_writing_and_settles() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));

    let fee_payer_before = fx.fee_payer_lamports();
    let payment = verify_ok(&fx, &req).await;
    assert_eq!(payment.payer_string(), fx.payer.pubkey().to_string());
    assert_eq!(payment.fee_payer, fx.fee_payer.pubkey());
    assert_eq!(payment.layout.amount, AMOUNT);
    assert_eq!(payment.layout.destination, fx.pay_to_ata);
    assert_eq!(payment.layout.source, fx.payer_ata);
    assert_eq!(
        payment.fee_lamports, 10_001,
        "2 signatures + 20,000 CU at 1 µL"
    );
    // Verification is read-only.
    assert_eq!(fx.chain.send_count(), 0);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), 0);

    assert_settles(&fx, &req, &fx.pay_to_ata, AMOUNT).await;
    assert_eq!(answer_network(&fx, &req).await, SOLANA_DEVNET);
    assert_eq!(fx.fee_payer_lamports(), fee_payer_before - 10_001);
}

/// The network of a (replayed) settlement answer.
async fn answer_network(fx: &SvmFixture, req: &PaymentRequest) -> String {
    settle(fx, req).await.network
}

#[tokio::test]
async fn valid_v1_payment_verifies_and_settles() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v1(&tx, AMOUNT, json!({}));
    let payment = verify_ok(&fx, &req).await;
    assert_eq!(payment.payer_string(), fx.payer.pubkey().to_string());
    assert_settles(&fx, &req, &fx.pay_to_ata, AMOUNT).await;
    assert_eq!(answer_network(&fx, &req).await, SOLANA_DEVNET_V1);
}

#[tokio::test]
async fn legacy_message_is_accepted() {
    let fx = fixture();
    let built = fx.payment(AMOUNT).legacy().build();
    assert!(matches!(built.message, VersionedMessage::Legacy(_)));
    let req = fx.request_v2(&to_base64(&built), AMOUNT, json!({}));
    verify_ok(&fx, &req).await;
    assert_settles(&fx, &req, &fx.pay_to_ata, AMOUNT).await;
}

#[tokio::test]
async fn second_managed_fee_payer_is_accepted() {
    let fx = fixture();
    let tx = fx
        .payment(AMOUNT)
        .fee_payer(fx.fee_payer_2.pubkey())
        .build_base64();
    let req = fx.request_v2(
        &tx,
        AMOUNT,
        json!({"feePayer": fx.fee_payer_2.pubkey().to_string()}),
    );
    let payment = verify_ok(&fx, &req).await;
    assert_eq!(payment.fee_payer, fx.fee_payer_2.pubkey());
    assert_settles(&fx, &req, &fx.pay_to_ata, AMOUNT).await;
}

#[tokio::test]
async fn compute_price_at_the_cap_and_matching_memo_are_accepted() {
    let fx = fixture();
    let tx = fx
        .payment(AMOUNT)
        .compute_unit_price(fx.policy.max_compute_unit_price)
        .memo("order-42")
        .build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({"memo": "order-42"}));
    let payment = verify_ok(&fx, &req).await;
    assert_eq!(payment.layout.compute_unit_price, 5_000_000);
    assert_settles(&fx, &req, &fx.pay_to_ata, AMOUNT).await;
}

/// Issue 21 point 5: with pricing configured, the fee quote's compute unit price caps what a
/// payer may offer (the fee payer pays that priority fee): above it is refused at verify with
/// the reference reason, at it is accepted; without a fresh quote the static cap applies.
#[tokio::test]
async fn compute_price_above_the_quoted_price_is_refused() {
    let fx = fixture();
    let quoted = Arc::new(std::sync::Mutex::new(Some(2u64)));
    let ceiling = {
        let quoted = quoted.clone();
        Arc::new(move || *quoted.lock().unwrap())
    };
    let network = x402_proto::Network::parse(SOLANA_DEVNET).expect("devnet");
    let verifier = x402_verify::svm::ExactSvmVerifier::new(
        fx.chain.clone(),
        network,
        vec![fx.fee_payer.clone(), fx.fee_payer_2.clone()],
        vec![fx.mint, fx.mint_2022],
        fx.policy.clone(),
    )
    .with_price_ceiling(ceiling);
    let request = |price: u64| {
        let tx = fx.payment(AMOUNT).compute_unit_price(price).build_base64();
        fx.request_v2(&tx, AMOUNT, json!({}))
    };
    match verifier
        .verify(&request(3), true)
        .await
        .expect("verify runs")
    {
        Verdict::Invalid(inv) => {
            assert_eq!(inv.reason, Reason::SvmComputePriceTooHigh);
            assert_eq!(
                inv.reason.as_str(),
                "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high"
            );
        }
        Verdict::Valid(_) => panic!("a price above the quote's was accepted"),
    }
    assert!(matches!(
        verifier
            .verify(&request(2), true)
            .await
            .expect("verify runs"),
        Verdict::Valid(_)
    ));
    // No fresh quote: the static cap decides.
    *quoted.lock().unwrap() = None;
    assert_eq!(
        verifier.max_compute_unit_price(),
        fx.policy.max_compute_unit_price
    );
    assert!(matches!(
        verifier
            .verify(&request(3), true)
            .await
            .expect("verify runs"),
        Verdict::Valid(_)
    ));
}

#[tokio::test]
async fn token_2022_payment_verifies_and_settles() {
    let fx = fixture();
    assert_eq!(
        fx.chain.get_account(&fx.mint_2022).expect("planted").owner,
        TOKEN_2022_PROGRAM
    );
    assert_eq!(
        fx.pay_to_ata_2022,
        ata_with_program(&fx.pay_to, &fx.mint_2022, &TOKEN_2022_PROGRAM)
    );
    assert_ne!(
        fx.pay_to_ata_2022,
        ata_with_program(&fx.pay_to, &fx.mint_2022, &TOKEN_PROGRAM)
    );
    assert_eq!(fx.token_balance(&fx.payer_ata_2022), PAYER_START_BALANCE);
    assert_eq!(fx.token_balance(&fx.pay_to_ata_2022), 0);

    let built = fx.payment_2022(AMOUNT).build();
    let VersionedMessage::V0(message) = &built.message else {
        panic!("v0 by default");
    };
    let transfer = &message.instructions[2];
    assert_eq!(
        message.account_keys[usize::from(transfer.program_id_index)],
        TOKEN_2022_PROGRAM
    );
    let req = fx.request_v2_mint(&fx.mint_2022, &to_base64(&built), AMOUNT, json!({}));
    let payment = verify_ok(&fx, &req).await;
    assert_eq!(payment.layout.token_program, TOKEN_2022_PROGRAM);
    assert_eq!(payment.layout.source, fx.payer_ata_2022);
    assert_eq!(payment.layout.destination, fx.pay_to_ata_2022);
    assert_eq!(payment.layout.amount, AMOUNT);
    assert_eq!(fx.chain.send_count(), 0, "verification is read-only");

    let id = fx.verifier.payment_id(&req).unwrap().expect("payment id");
    let fee_payer_before = fx.fee_payer_lamports();
    let answer = settle(&fx, &req).await;
    assert!(answer.success, "{answer:?}");
    assert_eq!(answer.transaction, id.to_string());
    assert_eq!(
        answer.payer.as_deref(),
        Some(fx.payer.pubkey().to_string().as_str())
    );
    assert_eq!(answer.amount.as_deref(), Some(AMOUNT.to_string().as_str()));
    assert_eq!(fx.chain.executed(&id), Some(None), "landed without error");
    assert_eq!(
        fx.token_balance(&fx.payer_ata_2022),
        PAYER_START_BALANCE - AMOUNT
    );
    assert_eq!(fx.token_balance(&fx.pay_to_ata_2022), AMOUNT);
    assert_eq!(
        fx.fee_payer_lamports(),
        fee_payer_before - payment.fee_lamports
    );
    // The SPL Token accounts of the other mint did not move.
    assert_eq!(fx.token_balance(&fx.payer_ata), PAYER_START_BALANCE);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), 0);
}

// --- rules ----------------------------------------------------------------------------------

#[tokio::test]
async fn token_2022_transfer_to_the_spl_token_ata_is_rejected() {
    let fx = fixture();
    // payTo's account for the Token-2022 mint derived with the wrong program (SPL Token): an
    // address the verifier must not accept for a Token-2022 transfer.
    let spl_derived = ata_with_program(&fx.pay_to, &fx.mint_2022, &TOKEN_PROGRAM);
    // And payTo's (existing) SPL Token account of the other mint.
    for destination in [spl_derived, fx.pay_to_ata] {
        let tx = fx
            .payment_2022(AMOUNT)
            .destination(destination)
            .build_base64();
        let req = fx.request_v2_mint(&fx.mint_2022, &tx, AMOUNT, json!({}));
        let inv = assert_refused(
            &fx,
            &req,
            Reason::SvmRecipientMismatch,
            "invalid_exact_svm_payload_recipient_mismatch",
        )
        .await;
        assert!(
            inv.message
                .as_deref()
                .is_some_and(|m| m.contains(&fx.pay_to_ata_2022.to_string())),
            "the message names the expected account: {inv:?}"
        );
        assert_eq!(inv.payer, Some(fx.payer.pubkey().to_string()));
        assert_eq!(fx.token_balance(&fx.payer_ata_2022), PAYER_START_BALANCE);
        assert_eq!(fx.token_balance(&fx.pay_to_ata_2022), 0);
    }
}

#[tokio::test]
async fn address_lookup_table_is_rejected_as_undecodable() {
    let fx = fixture();
    // Any table key: the verifier must refuse without resolving it.
    let table = AddressLookupTableAccount {
        key: Keypair::new().pubkey(),
        addresses: vec![fx.pay_to_ata],
    };
    let built = fx
        .payment(AMOUNT)
        .address_lookup_table(table.clone())
        .build();
    let VersionedMessage::V0(message) = &built.message else {
        panic!("v0 by default");
    };
    assert_eq!(message.address_table_lookups.len(), 1);
    assert_eq!(message.address_table_lookups[0].account_key, table.key);
    assert!(
        !message.account_keys.contains(&fx.pay_to_ata),
        "the destination is loaded from the table"
    );
    let req = fx.request_v2(&to_base64(&built), AMOUNT, json!({}));
    let inv = assert_refused(
        &fx,
        &req,
        Reason::SvmCouldNotBeDecoded,
        "invalid_exact_svm_payload_transaction_could_not_be_decoded",
    )
    .await;
    let message = inv.message.unwrap_or_default();
    assert!(message.contains("lookup table"), "{message}");
    assert_eq!(fx.chain.send_count(), 0, "nothing sent");
    assert_eq!(fx.chain.executed_count(), 0);
}

/// One refused payment: what is wrong with it, how to build it on a fresh fixture, and the
/// reason `/verify` and `/settle` must both give, with its wire string spelled out.
struct Refusal {
    case: &'static str,
    request: fn(&SvmFixture) -> PaymentRequest,
    reason: Reason,
    literal: &'static str,
}

/// A v2 request for [`AMOUNT`] carrying `tx`, with `extra` added to the requirements.
fn v2(fx: &SvmFixture, tx: String, extra: Value) -> PaymentRequest {
    fx.request_v2(&tx, AMOUNT, extra)
}

/// A payment that transfers one lamport of the payer's to a stranger after its `memos`.
fn with_system_transfer(fx: &SvmFixture, memos: Option<&[&str]>) -> String {
    let thief = Keypair::new().pubkey();
    let mut payment = fx.payment(AMOUNT);
    if let Some(memos) = memos {
        payment = payment.memos(memos);
    }
    payment
        .extra_instruction(system_transfer(&fx.payer.pubkey(), &thief, 1))
        .build_base64()
}

/// Every layout and policy rule with a plain refusal (the rules with more to check have tests of
/// their own below).
fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            case: "an unknown instruction after the memo",
            request: |fx| v2(fx, with_system_transfer(fx, None), json!({})),
            reason: Reason::SvmUnknownFifthInstruction,
            literal: "invalid_exact_svm_payload_unknown_fifth_instruction",
        },
        Refusal {
            case: "an unknown instruction in fourth place",
            request: |fx| v2(fx, with_system_transfer(fx, Some(&[])), json!({})),
            reason: Reason::SvmUnknownFourthInstruction,
            literal: "invalid_exact_svm_payload_unknown_fourth_instruction",
        },
        Refusal {
            case: "an unknown instruction in sixth place",
            request: |fx| v2(fx, with_system_transfer(fx, Some(&["a", "b"])), json!({})),
            reason: Reason::SvmUnknownSixthInstruction,
            literal: "invalid_exact_svm_payload_unknown_sixth_instruction",
        },
        Refusal {
            case: "seven instructions",
            request: |fx| {
                let tx = fx.payment(AMOUNT).memos(&["a", "b", "c", "d"]);
                v2(fx, tx.build_base64(), json!({}))
            },
            reason: Reason::SvmInstructionsLength,
            literal: "invalid_exact_svm_payload_transaction_instructions_length",
        },
        Refusal {
            case: "the fee payer as the source",
            request: |fx| {
                v2(
                    fx,
                    fx.payment(AMOUNT).fee_payer_as_source().build_base64(),
                    json!({}),
                )
            },
            reason: Reason::SvmFeePayerTransferringFunds,
            literal: "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
        },
        Refusal {
            case: "a compute unit price one above the cap",
            request: |fx| {
                let tx = fx
                    .payment(AMOUNT)
                    .compute_unit_price(fx.policy.max_compute_unit_price + 1);
                v2(fx, tx.build_base64(), json!({}))
            },
            reason: Reason::SvmComputePriceTooHigh,
            literal: "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
        },
        Refusal {
            case: "a compute unit limit one above the cap",
            request: |fx| {
                let tx = fx
                    .payment(AMOUNT)
                    .compute_unit_limit(fx.policy.max_compute_unit_limit + 1);
                v2(fx, tx.build_base64(), json!({}))
            },
            reason: Reason::SvmComputeLimitTooHigh,
            literal: "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high",
        },
        Refusal {
            case: "another mint",
            request: |fx| {
                let tx = fx.payment(AMOUNT).transfer_mint(Keypair::new().pubkey());
                v2(fx, tx.build_base64(), json!({}))
            },
            reason: Reason::SvmMintMismatch,
            literal: "invalid_exact_svm_payload_mint_mismatch",
        },
        Refusal {
            case: "one unit more than the amount",
            request: |fx| v2(fx, fx.payment(AMOUNT + 1).build_base64(), json!({})),
            reason: Reason::SvmAmountMismatch,
            literal: "invalid_exact_svm_payload_amount_mismatch",
        },
        Refusal {
            case: "one unit less than the amount",
            request: |fx| v2(fx, fx.payment(AMOUNT - 1).build_base64(), json!({})),
            reason: Reason::SvmAmountMismatch,
            literal: "invalid_exact_svm_payload_amount_mismatch",
        },
        Refusal {
            case: "v1: one unit more than maxAmountRequired",
            request: |fx| fx.request_v1(&fx.payment(AMOUNT + 1).build_base64(), AMOUNT, json!({})),
            reason: Reason::SvmAmountMismatch,
            literal: "invalid_exact_svm_payload_amount_mismatch",
        },
        Refusal {
            case: "another memo than extra.memo",
            request: |fx| {
                let tx = fx.payment(AMOUNT).memo("order-43").build_base64();
                v2(fx, tx, json!({"memo": "order-42"}))
            },
            reason: Reason::SvmMemoMismatch,
            literal: "invalid_exact_svm_payload_memo_mismatch",
        },
        Refusal {
            case: "no memo with extra.memo",
            request: |fx| {
                let tx = fx.payment(AMOUNT).memos(&[]).build_base64();
                v2(fx, tx, json!({"memo": "order-42"}))
            },
            reason: Reason::SvmMemoCount,
            literal: "invalid_exact_svm_payload_memo_count",
        },
        Refusal {
            case: "two memos with extra.memo",
            request: |fx| {
                let tx = fx
                    .payment(AMOUNT)
                    .memos(&["order-42", "order-42"])
                    .build_base64();
                v2(fx, tx, json!({"memo": "order-42"}))
            },
            reason: Reason::SvmMemoCount,
            literal: "invalid_exact_svm_payload_memo_count",
        },
        Refusal {
            case: "no payer signature",
            request: |fx| v2(fx, fx.payment(AMOUNT).unsigned().build_base64(), json!({})),
            reason: Reason::SvmSignatureInvalid,
            literal: "invalid_exact_svm_payload_signature_invalid",
        },
        Refusal {
            case: "signed for AMOUNT - 1, then the amount raised",
            request: |fx| {
                let mut tampered = fx.payment(AMOUNT - 1).build();
                let VersionedMessage::V0(message) = &mut tampered.message else {
                    panic!("v0 by default");
                };
                let transfer = &mut message.instructions[2];
                assert_eq!(transfer.data[0], 12, "TransferChecked");
                transfer.data[1..9].copy_from_slice(&AMOUNT.to_le_bytes());
                v2(fx, to_base64(&tampered), json!({}))
            },
            reason: Reason::SvmSignatureInvalid,
            literal: "invalid_exact_svm_payload_signature_invalid",
        },
        Refusal {
            case: "more than the payer holds (simulation)",
            request: |fx| {
                let amount = PAYER_START_BALANCE + 1;
                fx.request_v2(&fx.payment(amount).build_base64(), amount, json!({}))
            },
            reason: Reason::SvmSimulationFailed,
            literal: "invalid_exact_svm_transaction_simulation_failed",
        },
        Refusal {
            case: "extra.feePayer and account 0 a stranger",
            request: |fx| {
                let stranger = Keypair::new().pubkey();
                let tx = fx.payment(AMOUNT).fee_payer(stranger).build_base64();
                v2(fx, tx, json!({"feePayer": stranger.to_string()}))
            },
            reason: Reason::SvmFeePayerNotManaged,
            literal: "invalid_exact_svm_fee_payer_not_managed_by_facilitator",
        },
        Refusal {
            case: "no extra.feePayer",
            request: |fx| {
                let req = v2(
                    fx,
                    fx.payment(AMOUNT).build_base64(),
                    json!({"feePayer": null}),
                );
                assert!(req.extra_str("feePayer").is_none());
                req
            },
            reason: Reason::SvmMissingFeePayer,
            literal: "invalid_exact_svm_payload_missing_fee_payer",
        },
        Refusal {
            case: "account 0 our other fee payer, extra.feePayer the first",
            request: |fx| {
                let tx = fx.payment(AMOUNT).fee_payer(fx.fee_payer_2.pubkey());
                v2(fx, tx.build_base64(), json!({}))
            },
            reason: Reason::SvmFeePayerMismatch,
            literal: "invalid_exact_svm_fee_payer_mismatch",
        },
        Refusal {
            case: "account 0 a stranger (who would pay the fee), extra.feePayer ours",
            request: |fx| {
                let tx = fx.payment(AMOUNT).fee_payer(Keypair::new().pubkey());
                v2(fx, tx.build_base64(), json!({}))
            },
            reason: Reason::SvmFeePayerMismatch,
            literal: "invalid_exact_svm_fee_payer_mismatch",
        },
    ]
}

#[tokio::test]
async fn every_rule_refuses_with_its_reference_reason() {
    for refusal in refusals() {
        let fx = fixture();
        let req = (refusal.request)(&fx);
        println!("case: {}", refusal.case);
        assert_refused(&fx, &req, refusal.reason, refusal.literal).await;
    }
}

#[tokio::test]
async fn fee_payer_in_instruction_accounts_is_rejected() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).fee_payer_in_accounts().build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let inv = assert_refused(
        &fx,
        &req,
        Reason::SvmFeePayerTransferringFunds,
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    )
    .await;
    assert_eq!(inv.payer, Some(fx.payer.pubkey().to_string()));
}

#[tokio::test]
async fn fee_payer_as_authority_is_rejected() {
    let fx = fixture();
    // Give the fee payer tokens, so that the transfer would succeed if it were co-signed.
    let fee_payer_ata = fx.create_ata(&fx.fee_payer.pubkey()).unwrap();
    fx.mint_to(&fee_payer_ata, AMOUNT).unwrap();
    let built = fx.payment(AMOUNT).fee_payer_as_authority().build();
    assert_eq!(built.message.header().num_required_signatures, 1);
    let req = fx.request_v2(&to_base64(&built), AMOUNT, json!({}));
    let inv = assert_refused(
        &fx,
        &req,
        Reason::SvmFeePayerTransferringFunds,
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    )
    .await;
    assert_eq!(inv.payer, Some(fx.fee_payer.pubkey().to_string()));
    assert_eq!(fx.token_balance(&fee_payer_ata), AMOUNT);
}

#[tokio::test]
async fn wrong_destination_account_is_rejected() {
    let fx = fixture();
    // An existing token account of the right mint, owned by someone else.
    let other = Keypair::new().pubkey();
    let other_ata = fx.create_ata(&other).unwrap();
    let tx = fx.payment(AMOUNT).destination(other_ata).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    assert_refused(
        &fx,
        &req,
        Reason::SvmRecipientMismatch,
        "invalid_exact_svm_payload_recipient_mismatch",
    )
    .await;
    assert_eq!(fx.token_balance(&other_ata), 0);

    // payTo's wallet address itself is not its token account.
    let tx = fx.payment(AMOUNT).destination(fx.pay_to).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    assert_refused(
        &fx,
        &req,
        Reason::SvmRecipientMismatch,
        "invalid_exact_svm_payload_recipient_mismatch",
    )
    .await;
}

#[tokio::test]
async fn expired_blockhash_fails_simulation() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).build_base64();
    fx.chain.expire_blockhash();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let inv = assert_refused(
        &fx,
        &req,
        Reason::SvmSimulationFailed,
        "invalid_exact_svm_transaction_simulation_failed",
    )
    .await;
    assert!(
        inv.message.unwrap().contains("BlockhashNotFound"),
        "the message names the cause"
    );
    // Without simulation the same payment passes every static check.
    assert!(matches!(
        fx.verifier.verify(&req, false).await.unwrap(),
        Verdict::Valid(_)
    ));
}

#[tokio::test]
async fn missing_destination_account_is_rejected() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).pay_to(fx.stranger_pay_to).build_base64();
    let req = fx.request_v2_to(&fx.stranger_pay_to, &tx, AMOUNT, json!({}));
    assert_refused(
        &fx,
        &req,
        Reason::SvmDestinationAtaMissing,
        "invalid_exact_svm_destination_ata_missing",
    )
    .await;
    assert!(
        fx.chain
            .get_account(&ata(&fx.stranger_pay_to, &fx.mint))
            .is_none()
    );
}

#[tokio::test]
async fn create_destination_is_refused_for_an_unlisted_pay_to() {
    let fx = fixture();
    let tx = fx
        .payment(AMOUNT)
        .pay_to(fx.stranger_pay_to)
        .create_destination()
        .build_base64();
    let req = fx.request_v2_to(&fx.stranger_pay_to, &tx, AMOUNT, json!({}));
    let fee_payer_before = fx.fee_payer_lamports();
    assert_refused(
        &fx,
        &req,
        Reason::SvmFeePayerTransferringFunds,
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    )
    .await;
    assert!(
        fx.chain
            .get_account(&ata(&fx.stranger_pay_to, &fx.mint))
            .is_none()
    );
    assert_eq!(fx.fee_payer_lamports(), fee_payer_before);
}

#[tokio::test]
async fn create_destination_is_accepted_for_a_listed_pay_to() {
    let fx = fixture();
    let listed_ata = ata(&fx.listed_pay_to, &fx.mint);
    assert!(fx.chain.get_account(&listed_ata).is_none());
    let tx = fx
        .payment(AMOUNT)
        .pay_to(fx.listed_pay_to)
        .create_destination()
        .build_base64();
    let req = fx.request_v2_to(&fx.listed_pay_to, &tx, AMOUNT, json!({}));
    let payment = verify_ok(&fx, &req).await;
    assert!(payment.layout.creates_destination);
    assert_eq!(payment.layout.destination, listed_ata);

    let fee_payer_before = fx.fee_payer_lamports();
    let rent = fx
        .chain
        .with_svm(|svm| svm.minimum_balance_for_rent_exemption(165));
    assert_settles(&fx, &req, &listed_ata, AMOUNT).await;
    let account = fx.chain.get_account(&listed_ata).expect("created");
    assert_eq!(account.owner, spl_token_interface::ID);
    assert_eq!(fx.token_balance(&listed_ata), AMOUNT);
    assert_eq!(
        fx.fee_payer_lamports(),
        fee_payer_before - payment.fee_lamports - rent,
        "the fee payer paid the fee and the new account's rent"
    );
}

// --- at most once ---------------------------------------------------------------------------

#[tokio::test]
async fn f3_same_transaction_settled_twice_transfers_once_and_succeeds_once() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let first = settle(&fx, &req).await;
    assert!(first.success, "{first:?}");
    let executed = fx.chain.executed_count();
    let sends = fx.chain.send_count();

    let second = settle(&fx, &req).await;
    assert!(!second.success, "one success per payment: {second:?}");
    assert_eq!(
        second.error_reason.as_deref(),
        Some("duplicate_settlement"),
        "{second:?}"
    );
    assert_eq!(
        second.transaction, first.transaction,
        "names the settled transaction"
    );
    assert_eq!(fx.chain.executed_count(), executed);
    assert_eq!(fx.chain.send_count(), sends, "nothing sent again");
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
    assert_eq!(
        fx.token_balance(&fx.payer_ata),
        PAYER_START_BALANCE - AMOUNT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_ten_concurrent_settles_of_one_payment_transfer_once_with_one_success() {
    let fx = Arc::new(fixture());
    let tx = fx.payment(AMOUNT).build_base64();
    let req = Arc::new(fx.request_v2(&tx, AMOUNT, json!({})));
    let id = fx.verifier.payment_id(&req).unwrap().unwrap().to_string();

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let fx = fx.clone();
            let req = req.clone();
            tokio::spawn(async move { settle(&fx, &req).await })
        })
        .collect();
    let answers: Vec<SettleResponse> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();

    // Every answer is about this one transaction: its receipt, or (a request that found it
    // reserved) `duplicate_settlement` / `settlement_pending`; never a plain failure.
    for a in &answers {
        assert_eq!(a.network, SOLANA_DEVNET);
        if a.success {
            assert_eq!(a.transaction, id, "{a:?}");
            assert_eq!(a.amount.as_deref(), Some("1000"));
        } else {
            let reason = a.error_reason.as_deref().unwrap_or_default();
            assert!(
                reason == "duplicate_settlement" || reason == "settlement_pending",
                "{a:?}"
            );
            assert!(a.transaction.is_empty() || a.transaction == id, "{a:?}");
        }
    }
    assert_eq!(
        answers.iter().filter(|a| a.success).count(),
        1,
        "exactly one success: {answers:?}"
    );
    assert_eq!(fx.chain.executed_count(), 1, "one transaction landed");
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
    assert_eq!(
        fx.token_balance(&fx.payer_ata),
        PAYER_START_BALANCE - AMOUNT
    );
}

/// Delegates to a [`LiteSvmChain`] but holds simulations to force one interleaving of two
/// settlements of one payment: simulation #1 waits until simulation #2 started (so both requests
/// already found no record), simulation #2 waits until a transaction landed.
struct GatedChain {
    inner: Arc<LiteSvmChain>,
    simulations: AtomicUsize,
}

impl GatedChain {
    async fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !what() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait]
impl SvmChain for GatedChain {
    async fn simulate(&self, tx: &VersionedTransaction) -> Result<SvmSimulation, SvmChainError> {
        match self.simulations.fetch_add(1, Ordering::SeqCst) {
            0 => Self::wait_for(|| self.simulations.load(Ordering::SeqCst) >= 2).await,
            1 => Self::wait_for(|| self.inner.executed_count() >= 1).await,
            _ => {}
        }
        self.inner.simulate(tx).await
    }
    async fn send(&self, tx: &VersionedTransaction) -> Result<Signature, SvmChainError> {
        self.inner.send(tx).await
    }
    async fn signature_status(
        &self,
        sig: &Signature,
    ) -> Result<Option<SvmTxStatus>, SvmChainError> {
        self.inner.signature_status(sig).await
    }
    async fn is_blockhash_valid(&self, blockhash: &Hash) -> Result<bool, SvmChainError> {
        self.inner.is_blockhash_valid(blockhash).await
    }
    async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError> {
        self.inner.account(address).await
    }
    async fn minimum_balance_for_rent_exemption(
        &self,
        data_len: usize,
    ) -> Result<u64, SvmChainError> {
        self.inner
            .minimum_balance_for_rent_exemption(data_len)
            .await
    }
    async fn recent_prioritization_fees(
        &self,
        accounts: &[Address],
    ) -> Result<Vec<u64>, SvmChainError> {
        self.inner.recent_prioritization_fees(accounts).await
    }
}

/// Two settlements of one payment: both find no record; the first simulates, reserves, sends
/// and confirms; only then does the second simulate, and the landed transaction makes its
/// simulation fail (`AlreadyProcessed`, as on a real cluster). The second must answer the
/// first's receipt (or `settlement_pending` / `duplicate_settlement`), never a plain failure
/// with `transaction: ""` for a payment that was settled.
#[tokio::test]
async fn settle_racing_a_landed_settlement_answers_its_receipt() {
    let fx = fixture();
    let gated = Arc::new(GatedChain {
        inner: fx.chain.clone(),
        simulations: AtomicUsize::new(0),
    });
    let settler = new_settler(
        fx.verifier_over(gated.clone()),
        Arc::new(MemoryStore::new()),
        "x402",
        quick_timing(Duration::from_secs(5)),
        Duration::from_secs(3600),
    );
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let id = fx.verifier.payment_id(&req).unwrap().unwrap().to_string();

    let (a, b) = tokio::join!(settler.settle(&req, now()), settler.settle(&req, now()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(fx.chain.executed_count(), 1, "one transaction landed");
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
    assert!(a.success ^ b.success, "exactly one success: {a:?} {b:?}");
    for answer in [&a, &b] {
        let acceptable = match answer.error_reason.as_deref() {
            None => answer.success && answer.transaction == id,
            Some("settlement_pending") => answer.transaction == id,
            Some("duplicate_settlement") => {
                answer.transaction.is_empty() || answer.transaction == id
            }
            Some(_) => false,
        };
        assert!(
            acceptable,
            "a settled payment answered as a failure: {answer:?}"
        );
    }
}

// --- pending and expiry ---------------------------------------------------------------------

#[tokio::test]
async fn unconfirmed_send_is_pending_and_blockhash_expiry_is_terminal() {
    let fx = SvmFixture::with_timing(quick_timing(Duration::from_millis(300))).unwrap();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let id = fx.verifier.payment_id(&req).unwrap().unwrap().to_string();

    fx.chain.hold_sends(true);
    let started = Instant::now();
    let pending = settle(&fx, &req).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!pending.success, "{pending:?}");
    assert_eq!(
        pending.error_reason.as_deref(),
        Some(Reason::SettlementPending.as_str())
    );
    assert_eq!(pending.error_reason.as_deref(), Some("settlement_pending"));
    assert_eq!(
        pending.transaction, id,
        "pending names the broadcast signature"
    );
    assert_eq!(pending.network, SOLANA_DEVNET);
    assert_eq!(pending.payer, Some(fx.payer.pubkey().to_string()));
    assert_eq!(fx.chain.held_count(), 1, "sent once, not executed");

    // A retry before expiry: still pending, the same transaction (re-sent, not re-signed).
    let again = settle(&fx, &req).await;
    assert_eq!(again.error_reason.as_deref(), Some("settlement_pending"));
    assert_eq!(again.transaction, id);
    assert_eq!(fx.chain.held_count(), 1);

    fx.chain.expire_blockhash();
    let terminal = settle(&fx, &req).await;
    assert!(!terminal.success, "{terminal:?}");
    assert_eq!(
        terminal.error_reason.as_deref(),
        Some(Reason::SvmTransactionFailed.as_str())
    );
    assert_eq!(
        terminal.error_reason.as_deref(),
        Some("invalid_exact_svm_transaction_failed")
    );
    assert_eq!(terminal.transaction, id);
    // Terminal: the next retry answers the same, from the record.
    assert_eq!(settle(&fx, &req).await, terminal);

    // The held transaction can no longer land; nothing moved.
    let released = fx.chain.release_held();
    assert_eq!(released.len(), 1);
    assert_eq!(fx.chain.executed_count(), 0);
    assert_eq!(fx.token_balance(&fx.payer_ata), PAYER_START_BALANCE);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), 0);
}

#[tokio::test]
async fn f7_pending_settlement_that_lands_answers_the_receipt_on_retry_once() {
    let fx = SvmFixture::with_timing(quick_timing(Duration::from_millis(200))).unwrap();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let id = fx.verifier.payment_id(&req).unwrap().unwrap().to_string();

    fx.chain.hold_sends(true);
    let pending = settle(&fx, &req).await;
    assert_eq!(pending.error_reason.as_deref(), Some("settlement_pending"));
    assert_eq!(pending.transaction, id);

    let released = fx.chain.release_held();
    assert_eq!(released.len(), 1);
    assert!(released[0].1.is_ok(), "{released:?}");
    let done = settle(&fx, &req).await;
    assert!(done.success, "{done:?}");
    assert_eq!(done.transaction, id);
    assert_eq!(done.amount.as_deref(), Some("1000"));
    assert_eq!(fx.chain.executed_count(), 1);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
    let later = settle(&fx, &req).await;
    assert!(!later.success, "{later:?}");
    assert_eq!(later.error_reason.as_deref(), Some("duplicate_settlement"));
    assert_eq!(later.transaction, id);
}

// --- Redis ----------------------------------------------------------------------------------

#[tokio::test]
async fn settlement_record_lands_in_redis_under_the_svm_replay_key() {
    let redis = RedisServer::spawn().await.unwrap();
    let fx = fixture();
    let store = Arc::new(
        RedisStore::connect(&redis.url(), "x402", Duration::from_secs(2))
            .await
            .unwrap(),
    );
    let settler = fx.settler_with(store.clone(), quick_timing(Duration::from_secs(10)));
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let id = fx.verifier.payment_id(&req).unwrap().unwrap().to_string();

    let answer = settler.settle(&req, now()).await.unwrap();
    assert!(answer.success, "{answer:?}");
    assert_eq!(answer.transaction, id);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);

    let logical = svm_replay_key("x402", SOLANA_DEVNET, &id);
    assert_eq!(logical, format!("x402:replay:svm:{SOLANA_DEVNET}:{id}"));
    // Stored in its shard (hash tag `{x402:N}`), read back by its replay key.
    let layout = x402_settle::replay::keys::Layout::new("x402", 16);
    let key = layout.record_key(&logical);
    assert_eq!(
        key,
        format!("{logical}:{{x402:{}}}", layout.shard_of(&logical))
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:replay:svm:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys, vec![key.clone()]);
    let raw: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["state"], "delivered", "{stored}");
    assert_eq!(stored["transaction"], id.as_str(), "{stored}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl >= 120, "record kept at least 120 s, got {ttl}");
    match store.get(&logical).await.unwrap().map(|s| s.record) {
        Some(SettlementRecord::Delivered(s)) => assert_eq!(s.transaction, answer.transaction),
        other => panic!("unexpected record {other:?}"),
    }

    // A second settler on the same Redis (another replica) answers the receipt, sends nothing.
    let replica = fx.settler_with(
        Arc::new(
            RedisStore::connect(&redis.url(), "x402", Duration::from_secs(2))
                .await
                .unwrap(),
        ),
        quick_timing(Duration::from_secs(10)),
    );
    let sends = fx.chain.send_count();
    let again = replica.settle(&req, now()).await.unwrap();
    assert_eq!(again.error_reason.as_deref(), Some("duplicate_settlement"));
    assert_eq!(again.transaction, answer.transaction);
    assert_eq!(fx.chain.send_count(), sends);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
}

// --- requirements binding and memo replay (x402-conformance F10, F4) -------------------------

/// F10: a settled payment replayed under other requirements (another `payTo`, a higher
/// amount) is never a success: the record binds the requirements it settled under.
#[tokio::test]
async fn f10_settled_payment_replayed_with_other_requirements_never_succeeds() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).build_base64();
    let req = fx.request_v2(&tx, AMOUNT, json!({}));
    let first = settle(&fx, &req).await;
    assert!(first.success, "{first:?}");

    let other_pay_to = Address::new_unique();
    let elsewhere = fx.request_v2_to(&other_pay_to, &tx, AMOUNT, json!({}));
    let answer = settle(&fx, &elsewhere).await;
    assert!(!answer.success, "another payTo got success: {answer:?}");
    assert_eq!(
        answer.error_reason.as_deref(),
        Some("invalid_exact_svm_payload_recipient_mismatch"),
        "{answer:?}"
    );

    let dearer = fx.request_v2(&tx, AMOUNT + 1, json!({}));
    let answer = settle(&fx, &dearer).await;
    assert!(!answer.success, "a higher amount got success: {answer:?}");
    assert_eq!(
        answer.error_reason.as_deref(),
        Some("invalid_exact_svm_payload_amount_mismatch"),
        "{answer:?}"
    );
    assert_eq!(fx.chain.executed_count(), 1);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
}

/// F4: `extra.memo` is the resource server's one-purchase nonce. A second, different
/// transaction carrying a memo already settled for the same `payTo` is refused
/// (`duplicate_settlement`) and moves nothing; the same memo for another `payTo` is fine.
#[tokio::test]
async fn f4_memo_settled_once_per_pay_to() {
    let fx = fixture();
    let memo = json!({"memo": "order-42"});
    let first_tx = fx.payment(AMOUNT).memo("order-42").build_base64();
    let first = settle(&fx, &fx.request_v2(&first_tx, AMOUNT, memo.clone())).await;
    assert!(first.success, "{first:?}");

    // Another transaction (another compute price: another message, another signature).
    let second_tx = fx
        .payment(AMOUNT)
        .memo("order-42")
        .compute_unit_price(2)
        .build_base64();
    assert_ne!(first_tx, second_tx);
    let second = settle(&fx, &fx.request_v2(&second_tx, AMOUNT, memo.clone())).await;
    assert!(!second.success, "memo replay settled twice: {second:?}");
    assert_eq!(
        second.error_reason.as_deref(),
        Some("duplicate_settlement"),
        "{second:?}"
    );
    assert_eq!(second.transaction, "", "nothing was broadcast: {second:?}");
    assert_eq!(fx.chain.executed_count(), 1, "one transfer");
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
    assert_eq!(
        fx.token_balance(&fx.payer_ata),
        PAYER_START_BALANCE - AMOUNT
    );
}

/// F13, F14: a settled payment replayed under another asset (mint) or another network is never
/// a success and moves nothing.
#[tokio::test]
async fn f13_f14_settled_payment_replayed_with_other_asset_or_network_never_succeeds() {
    let fx = fixture();
    let tx = fx.payment(AMOUNT).build_base64();
    let first = settle(&fx, &fx.request_v2(&tx, AMOUNT, json!({}))).await;
    assert!(first.success, "{first:?}");

    let other_asset = fx.request_v2_mint(&fx.mint_2022, &tx, AMOUNT, json!({}));
    let answer = settle(&fx, &other_asset).await;
    assert!(!answer.success, "another asset got success: {answer:?}");

    let mut body = x402_tests::svm_payment::v2_request_json(
        &tx,
        &fx.mint,
        &fx.pay_to,
        AMOUNT,
        &json!({"feePayer": fx.fee_payer.pubkey().to_string()}),
    );
    let mainnet = json!("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp");
    body["paymentRequirements"]["network"] = mainnet.clone();
    body["paymentPayload"]["accepted"]["network"] = mainnet;
    let other_network = PaymentRequest::from_value(body).unwrap();
    let answer = settle(&fx, &other_network).await;
    assert!(!answer.success, "another network got success: {answer:?}");

    assert_eq!(fx.chain.executed_count(), 1);
    assert_eq!(fx.token_balance(&fx.pay_to_ata), AMOUNT);
}
