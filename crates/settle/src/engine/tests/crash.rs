//! A crash at every step of a settlement (x402-conformance F3 under kill -9): engine instance A
//! settles a payment and dies at await point k (its future is dropped, as a killed process
//! stops), before or after that step's effect; instance B, on the same store and chain, then
//! serves the payment's retries and runs the reconciler until the record resolves.
//!
//! After every crash: at most one transfer; exactly one success answered, unless A died after
//! swapping to `delivered` (its answer died with it); the record resolves; no sender nonce is
//! signed for two payments.
//!
//! The settlement under test has one look that finds nothing before its block (so every kind
//! of step appears): [`FLOW`] names its steps in order, and
//! `the_crash_tests_cover_every_step_of_a_settlement` fails when the engine gains or loses an
//! await point, so that this list is kept whole.

use std::time::Duration;

use x402_proto::SettleResponse;

use super::Rig;
use super::scripted::{CrashMode, Steps, is_success, key_of, reason, request};
use crate::record::SettlementRecord;

/// The steps of one uncrashed settlement, in order.
const FLOW: [&str; 17] = [
    "identify",
    "store.get",
    "verify",
    "ready_to_settle",
    "acquire_signer",
    "store.create",
    "store.swap(reserved)",
    "store.standing",
    "check_funds",
    "sign",
    "store.swap(broadcast)",
    "send",
    "release_signer",
    "lookup",
    "wait_for_news",
    "lookup",
    "store.swap(delivered)",
];

const VALID_BEFORE: u64 = super::T0_MS / 1000 + 3_600;

/// Engine A settles with no crash: the steps it takes.
#[tokio::test(start_paused = true)]
async fn the_crash_tests_cover_every_step_of_a_settlement() {
    let rig = Rig::new();
    let steps = Steps::none();
    let a = rig.engine("a", steps.clone());
    let answer = rig.settle(&a, &request("p1", "10", VALID_BEFORE)).await;
    assert!(is_success(&answer), "{answer:?}");
    assert_eq!(steps.names(), FLOW.to_vec());
}

/// A dies at step `k` (1-based, [`FLOW`]) in `mode`; B finishes; the invariants hold.
async fn crash_at(k: usize, mode: CrashMode) {
    let rig = Rig::new();
    let req = request("p1", "10", VALID_BEFORE);
    let key = key_of("p1");
    let steps = Steps::crash_at(k, mode);
    let a = rig.engine("a", steps.clone());
    tokio::select! {
        answer = rig.settle(&a, &req) => panic!("A answered instead of crashing at step {k}: {answer:?}"),
        _ = steps.crashed() => {}
    }
    drop(a);
    assert!(steps.did_crash());
    assert_eq!(steps.names().len(), k);
    assert_eq!(steps.names()[k - 1], FLOW[k - 1]);
    // A's answer, if it reached the store before A died, is lost with it.
    let delivered_by_a = matches!(rig.record(&key).await, Some(SettlementRecord::Delivered(_)));

    let b = rig.engine("b", Steps::none());
    let mut answers: Vec<SettleResponse> = Vec::new();
    for _ in 0..20 {
        let answer = rig.settle(&b, &req).await;
        let done = !answer.success
            && reason(&answer) != x402_proto::Reason::SettlementPending.as_str()
            && !answer.transaction.is_empty();
        let success = answer.success;
        answers.push(answer);
        if success || done {
            break;
        }
        // The reconciler's pass, then time for leases, re-sends and blocks.
        b.reconcile(&key, Duration::from_secs(5)).await.unwrap();
        rig.chain.mine();
        rig.wait(Duration::from_secs(5)).await;
    }
    // The answers a resource server gets from here on.
    answers.push(rig.settle(&b, &req).await);

    let record = rig.record(&key).await.expect("a record");
    assert!(
        matches!(record, SettlementRecord::Delivered(_)),
        "the record resolves to delivered: {record:?} (answers: {answers:?})"
    );
    assert_eq!(rig.chain.transfers("p1"), 1, "exactly one transfer");
    let successes = answers.iter().filter(|a| a.success).count();
    assert_eq!(
        successes + usize::from(delivered_by_a),
        1,
        "one success, ever (A delivered before dying: {delivered_by_a}; answers: {answers:?})"
    );
    let last = answers.last().unwrap();
    assert_eq!(
        reason(last),
        x402_proto::Reason::DuplicateSettlement.as_str()
    );
    assert_eq!(last.transaction, record.transaction().unwrap());
    rig.chain.assert_invariants();
    assert!(
        rig.store.debits_in_flight().is_empty(),
        "the resolved record's debit is released: {:?}",
        rig.store.debits_in_flight()
    );
    let signers_held = rig.chain.with(|s| s.held);
    assert!(
        signers_held <= 1,
        "only the dead instance may hold a signer"
    );
}

macro_rules! crash_tests {
    ($($name:ident: $k:expr, $mode:ident;)*) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $name() {
                crash_at($k, CrashMode::$mode).await
            }
        )*
    };
}

crash_tests! {
    crash_before_identify: 1, Before;
    crash_after_identify: 1, After;
    crash_before_first_read: 2, Before;
    crash_after_first_read: 2, After;
    crash_before_verify: 3, Before;
    crash_after_verify: 3, After;
    crash_before_ready_check: 4, Before;
    crash_after_ready_check: 4, After;
    crash_before_acquire_signer: 5, Before;
    crash_after_acquire_signer: 5, After;
    crash_before_create_reserved: 6, Before;
    crash_after_create_reserved: 6, After;
    crash_before_lease_renewal: 7, Before;
    crash_after_lease_renewal: 7, After;
    crash_before_debits_read: 8, Before;
    crash_after_debits_read: 8, After;
    crash_before_funds_check: 9, Before;
    crash_after_funds_check: 9, After;
    crash_before_sign: 10, Before;
    crash_after_sign: 10, After;
    crash_before_record_broadcast: 11, Before;
    crash_after_record_broadcast: 11, After;
    crash_before_send: 12, Before;
    crash_after_send: 12, After;
    crash_before_release_signer: 13, Before;
    crash_after_release_signer: 13, After;
    crash_before_first_lookup: 14, Before;
    crash_after_first_lookup: 14, After;
    crash_before_block_wait: 15, Before;
    crash_after_block_wait: 15, After;
    crash_before_landed_lookup: 16, Before;
    crash_after_landed_lookup: 16, After;
    crash_before_swap_delivered: 17, Before;
    crash_after_swap_delivered: 17, After;
}
