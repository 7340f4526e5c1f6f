//! The engine's rules, one scripted scenario each.

use std::time::Duration;

use x402_proto::Reason;

use super::scripted::{SendScript, Steps, is_success, key_of, reason, request};
use super::{Rig, T0_MS};
use crate::engine::SettleTiming;
use crate::record::{PaymentFacts, Reserved, SettlementRecord};
use crate::replay::ReplayStore;

const FAR: u64 = T0_MS / 1000 + 3_600;

fn dup() -> &'static str {
    Reason::DuplicateSettlement.as_str()
}

fn pending() -> &'static str {
    Reason::SettlementPending.as_str()
}

/// x402-conformance F3: one payment, one success; every later request gets
/// `duplicate_settlement` with the transaction.
#[tokio::test(start_paused = true)]
async fn f3_one_success_then_duplicate_settlement() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let first = rig.settle(&engine, &req).await;
    assert!(is_success(&first), "{first:?}");
    assert!(!first.transaction.is_empty());
    for _ in 0..3 {
        let again = rig.settle(&engine, &req).await;
        assert!(!is_success(&again));
        assert_eq!(reason(&again), dup());
        assert_eq!(again.transaction, first.transaction);
    }
    assert_eq!(rig.chain.transfers("p1"), 1);
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Delivered(_))
    ));
    rig.chain.assert_invariants();
}

/// A payment with nothing to send (`upto` charging 0) is answered success once, with
/// transaction `""` and amount `"0"`, recorded `delivered`: nothing is signed or sent, and a
/// retry gets `duplicate_settlement` (one success per payment, x402-conformance F3).
#[tokio::test(start_paused = true)]
async fn f3_nothing_to_send_is_one_success_with_no_transaction() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "0", FAR);
    let first = rig.settle(&engine, &req).await;
    assert!(is_success(&first), "{first:?}");
    assert_eq!(first.transaction, "");
    assert_eq!(first.amount.as_deref(), Some("0"));
    let again = rig.settle(&engine, &req).await;
    assert_eq!(reason(&again), dup(), "{again:?}");
    assert_eq!(again.transaction, "");
    match rig.record(&key_of("p1")).await {
        Some(SettlementRecord::Delivered(s)) => {
            assert_eq!(s.transaction, "");
            assert_eq!(s.payment.amount, "0");
        }
        other => panic!("expected delivered, got {other:?}"),
    }
    assert!(
        rig.chain
            .with(|s| s.signed.is_empty() && s.sends.is_empty())
    );
    rig.chain.assert_invariants();
}

/// A payment that fails verification reserves nothing and broadcasts nothing.
#[tokio::test(start_paused = true)]
async fn a_refused_payment_leaves_no_record_and_sends_nothing() {
    let rig = Rig::new();
    rig.chain.with(|s| s.invalid.insert("p1".into()));
    let engine = rig.engine("a", Steps::none());
    let answer = rig.settle(&engine, &request("p1", "10", FAR)).await;
    assert_eq!(reason(&answer), Reason::EvmInsufficientBalance.as_str());
    assert_eq!(answer.transaction, "");
    assert!(rig.record(&key_of("p1")).await.is_none());
    assert!(
        rig.chain
            .with(|s| s.signed.is_empty() && s.sends.is_empty())
    );
}

/// Two replicas settle the same payment at once: one wins every compare-and-swap race, the
/// other is answered `duplicate_settlement`; one transfer.
#[tokio::test(start_paused = true)]
async fn f3_two_replicas_racing_get_one_success() {
    let rig = Rig::new();
    let (a, b) = (
        rig.engine("a", Steps::none()),
        rig.engine("b", Steps::none()),
    );
    let req = request("p1", "10", FAR);
    let (x, y) = tokio::join!(rig.settle(&a, &req), rig.settle(&b, &req));
    assert_eq!(
        [is_success(&x), is_success(&y)]
            .iter()
            .filter(|s| **s)
            .count(),
        1,
        "{x:?} {y:?}"
    );
    let loser = if is_success(&x) { &y } else { &x };
    assert_eq!(reason(loser), dup());
    assert_eq!(rig.chain.transfers("p1"), 1);
    assert_eq!(rig.chain.with(|s| s.signed.len()), 1, "signed once");
    rig.chain.assert_invariants();
}

/// A `confirmed` record (resolved by the reconciler) is delivered by exactly one of two
/// racing requests: the other loses the compare-and-swap and re-reads `delivered`.
#[tokio::test(start_paused = true)]
async fn a_lost_compare_and_swap_rereads_and_never_answers_a_second_success() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let a = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let first = rig.settle(&a, &req).await;
    assert_eq!(reason(&first), pending(), "{first:?}");
    rig.chain.with(|s| s.stalled = false);
    rig.chain.mine();
    assert_eq!(
        a.reconcile(&key_of("p1"), Duration::from_secs(5))
            .await
            .unwrap(),
        None,
        "resolved"
    );
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Confirmed(_))
    ));
    let b = rig.engine("b", Steps::none());
    let (x, y) = tokio::join!(rig.settle(&a, &req), rig.settle(&b, &req));
    assert_eq!(usize::from(is_success(&x)) + usize::from(is_success(&y)), 1);
    assert_eq!(x.transaction, y.transaction);
}

/// A reservation whose owner died before signing is taken over once its lease lapsed; while
/// the lease is live, a request waits and then answers `duplicate_settlement` without a
/// transaction.
#[tokio::test(start_paused = true)]
async fn takeover_after_a_lapsed_lease() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let key = key_of("p1");
    let facts = PaymentFacts {
        binding: "p1|10|0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
        network: "eip155:8453".into(),
        payer: "0xPAYERp1".into(),
        amount: "10".into(),
        asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into(),
        pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
        created_at: rig.now(),
        valid_until: FAR,
        key: None,
        answer_keys: vec![],
        kind: None,
    };
    let dead = SettlementRecord::Reserved(Reserved {
        payment: facts,
        owner: "dead".into(),
        lease_until_ms: rig.clock.unix_ms() + 15_000,
    });
    rig.store
        .create(&key, &dead, Duration::from_secs(3_600), &[])
        .await
        .unwrap();
    let held = rig.settle(&engine, &req).await;
    assert_eq!(reason(&held), dup());
    assert_eq!(held.transaction, "", "nothing signed yet");
    rig.wait(Duration::from_secs(6)).await; // the lease lapses
    let taken = rig.settle(&engine, &req).await;
    assert!(is_success(&taken), "{taken:?}");
    assert_eq!(rig.chain.transfers("p1"), 1);
}

/// A transaction lost on the way is answered `settlement_pending` with its hash, re-sent
/// after `resend_after`, and replaced (same nonce, higher fee) once a node has held it unmined
/// for `replace_after`; the replacement lands and is the one answered.
#[tokio::test(start_paused = true)]
async fn resend_then_replacement() {
    let rig = Rig::new();
    rig.chain.with(|s| {
        s.send_script.push_back(SendScript::Lose);
        s.stalled = true;
    });
    let timing = SettleTiming {
        answer_within: Duration::from_secs(30),
        ..super::timing()
    };
    let engine = rig.engine_timed("a", Steps::none(), timing);
    let req = request("p1", "10", FAR);
    let first = rig.settle(&engine, &req).await;
    assert_eq!(reason(&first), pending());
    let original = first.transaction.clone();
    assert!(
        rig.chain.with(|s| s.pool.is_empty()),
        "lost: no node has it"
    );
    // The retry waits for the outcome (30 s here): the recorded bytes are re-sent at 15 s.
    let second = rig.settle(&engine, &req).await;
    assert_eq!(reason(&second), pending());
    assert!(
        rig.chain.with(|s| s.pool.contains_key(&original)),
        "re-sent"
    );
    // Held unmined for 60 s: replaced with a higher fee at the same nonce.
    let third = rig.settle(&engine, &req).await;
    assert_eq!(reason(&third), pending(), "{third:?}");
    let Some(SettlementRecord::Broadcast(b)) = rig.record(&key_of("p1")).await else {
        panic!("not broadcast")
    };
    assert_eq!(b.replaced.len(), 1);
    assert_eq!(b.replaced[0].transaction(), original);
    let replacement = b.sent.transaction().to_string();
    assert_ne!(replacement, original);
    rig.chain.with(|s| {
        let nonces: Vec<u64> = s.signed.iter().map(|t| t.nonce).collect();
        assert_eq!(nonces, vec![0, 0], "same nonce");
        // Lost, then re-sent every 15 s until replaced.
        assert!(s.sends.iter().filter(|h| **h == original).count() >= 3);
    });
    rig.chain.with(|s| s.stalled = false);
    let landed = rig.settle(&engine, &req).await;
    assert!(is_success(&landed), "{landed:?}");
    assert_eq!(landed.transaction, replacement);
    assert_eq!(rig.chain.transfers("p1"), 1);
    rig.chain.assert_invariants();
}

/// A settlement whose sender nonce another transaction used is re-signed at a new nonce at
/// once, and lands.
#[tokio::test(start_paused = true)]
async fn a_nonce_used_elsewhere_is_resigned_at_a_new_nonce() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let first = rig.settle(&engine, &req).await;
    assert_eq!(reason(&first), pending());
    // Someone else's transaction takes nonce 0; the settlement drops from the pool.
    rig.chain.with(|s| {
        s.nonce_used_by.insert(0, "0xother".into());
        s.pool.clear();
        s.next_nonce = 1;
        s.stalled = false;
    });
    rig.wait(Duration::from_secs(15)).await;
    let answer = rig.settle(&engine, &req).await;
    assert!(is_success(&answer), "{answer:?}");
    rig.chain.with(|s| {
        let last = s.signed.last().unwrap();
        assert_eq!(last.nonce, 1);
        assert_eq!(answer.transaction, last.hash);
    });
    assert_eq!(rig.chain.transfers("p1"), 1);
}

/// Replacements stop at [`crate::engine::MAX_REPLACEMENTS`].
#[tokio::test(start_paused = true)]
async fn replacements_are_bounded() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    for _ in 0..40 {
        let answer = rig.settle(&engine, &req).await;
        assert_eq!(reason(&answer), pending());
        engine
            .reconcile(&key_of("p1"), Duration::from_secs(5))
            .await
            .unwrap();
        rig.wait(Duration::from_secs(30)).await;
    }
    let Some(SettlementRecord::Broadcast(b)) = rig.record(&key_of("p1")).await else {
        panic!("not broadcast")
    };
    assert_eq!(b.replaced.len(), crate::engine::MAX_REPLACEMENTS);
    assert_eq!(
        rig.chain.with(|s| s.signed.len()),
        crate::engine::MAX_REPLACEMENTS + 1
    );
}

/// A transaction that no node holds once `validBefore` has passed (and whose authorization
/// is unused) expires: the request is answered the transaction failure, never success, and
/// nothing was transferred.
#[tokio::test(start_paused = true)]
async fn expiry_at_valid_before() {
    let rig = Rig::new();
    rig.chain.with(|s| {
        for _ in 0..20 {
            s.send_script.push_back(SendScript::Lose);
        }
    });
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", T0_MS / 1000 + 40);
    let first = rig.settle(&engine, &req).await;
    assert_eq!(reason(&first), pending());
    let second = rig.settle(&engine, &req).await;
    assert_eq!(reason(&second), pending(), "before validBefore: {second:?}");
    rig.wait(Duration::from_secs(15)).await;
    let last = rig.settle(&engine, &req).await;
    assert_eq!(
        reason(&last),
        Reason::EvmTransactionFailed.as_str(),
        "{last:?}"
    );
    assert_eq!(last.transaction, first.transaction);
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Expired(_))
    ));
    assert_eq!(rig.chain.transfers("p1"), 0);
}

/// A transaction that reverts on chain is answered as failed with its hash, then the same
/// failure on every retry.
#[tokio::test(start_paused = true)]
async fn a_revert_is_answered_failed_with_its_transaction() {
    let rig = Rig::new();
    rig.chain.with(|s| s.reverts.insert("p1".into()));
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let first = rig.settle(&engine, &req).await;
    assert_eq!(reason(&first), Reason::EvmTransactionFailed.as_str());
    assert!(!first.transaction.is_empty());
    let again = rig.settle(&engine, &req).await;
    assert_eq!(reason(&again), Reason::EvmTransactionFailed.as_str());
    assert_eq!(again.transaction, first.transaction);
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Failed(_))
    ));
}

/// The reconciler resolves a broadcast record no request waits for (`confirmed`); the next
/// request answers its one success, later ones `duplicate_settlement`.
#[tokio::test(start_paused = true)]
async fn the_reconciler_resolves_a_broadcast_with_no_request() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    assert_eq!(reason(&rig.settle(&engine, &req).await), pending());
    rig.chain.with(|s| s.stalled = false);
    rig.chain.mine();
    let open = engine
        .reconcile(&key_of("p1"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(open, None);
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Confirmed(_))
    ));
    assert!(is_success(&rig.settle(&engine, &req).await));
    assert_eq!(reason(&rig.settle(&engine, &req).await), dup());
}

/// The reconciler drops a reservation abandoned long ago (nothing signed), so a later request
/// starts clean; a fresh one it leaves alone.
#[tokio::test(start_paused = true)]
async fn the_reconciler_drops_an_abandoned_reservation() {
    let rig = Rig::new();
    let steps = Steps::crash_at(6, super::scripted::CrashMode::After); // after store.create
    let a = rig.engine("a", steps.clone());
    let req = request("p1", "10", FAR);
    tokio::select! {
        _ = rig.settle(&a, &req) => panic!("did not crash"),
        _ = steps.crashed() => {}
    }
    assert_eq!(
        steps.names().last(),
        Some(&"store.create"),
        "{:?}",
        steps.names()
    );
    let b = rig.engine("b", Steps::none());
    let key = key_of("p1");
    let age = b.reconcile(&key, Duration::from_secs(5)).await.unwrap();
    assert_eq!(age, Some(0), "a live reservation stays open");
    rig.wait(Duration::from_secs(46)).await; // lease (15 s) + 2 leases
    assert_eq!(
        b.reconcile(&key, Duration::from_secs(5)).await.unwrap(),
        None
    );
    assert!(rig.record(&key).await.is_none(), "dropped");
    assert!(is_success(&rig.settle(&b, &req).await));
}

/// A payment that landed but whose record was lost (a flushed store) is restored from the
/// chain as `delivered` and answered `duplicate_settlement` with its transaction: never a
/// second success, never a plain failure.
#[tokio::test(start_paused = true)]
async fn recover_lost_restores_a_landed_payment_as_delivered() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let first = rig.settle(&engine, &req).await;
    assert!(is_success(&first));
    // The store is flushed: a new one, the same chain.
    let flushed = Rig {
        chain: rig.chain.clone(),
        store: std::sync::Arc::new(crate::replay::MemoryStore::new().with_clock(rig.clock.clone())),
        clock: rig.clock.clone(),
    };
    flushed.chain.with(|s| s.recovers_lost = true);
    let engine = flushed.engine("b", Steps::none());
    let again = flushed.settle(&engine, &req).await;
    assert_eq!(reason(&again), dup(), "{again:?}");
    assert_eq!(again.transaction, first.transaction);
    assert!(matches!(
        flushed.record(&key_of("p1")).await,
        Some(SettlementRecord::Delivered(_))
    ));
    assert_eq!(rig.chain.transfers("p1"), 1);
}

/// x402-conformance F10: a payment settled under some requirements is never answered
/// success under others (here another amount).
#[tokio::test(start_paused = true)]
async fn f10_the_same_payment_under_other_requirements_never_succeeds() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    assert!(is_success(
        &rig.settle(&engine, &request("p1", "10", FAR)).await
    ));
    let other = rig.settle(&engine, &request("p1", "11", FAR)).await;
    assert!(!is_success(&other));
    assert_eq!(reason(&other), Reason::EvmNonceAlreadyUsed.as_str());
    assert_eq!(rig.chain.transfers("p1"), 1);
}

/// A store that holds the payment's record while a second engine's clock says its lease is
/// live: the signer slot is given back whatever the path (no leak across many refusals).
#[tokio::test(start_paused = true)]
async fn signers_are_always_given_back() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    rig.chain.with(|s| s.reverts.insert("p2".into()));
    rig.chain
        .with(|s| s.send_script.push_back(SendScript::Lose));
    for id in ["p1", "p2", "p3"] {
        rig.settle(&engine, &request(id, "10", FAR)).await;
    }
    assert_eq!(rig.chain.with(|s| s.held), 0);
}

/// A request whose reservation lapsed while it was slow (here its lease renewal took 20 s) and
/// was taken over signs nothing: the renewal's compare-and-swap fails and it re-reads.
#[tokio::test(start_paused = true)]
async fn a_slow_owner_taken_over_signs_nothing() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let steps = Steps::none();
    steps.delay("store.swap(reserved)", Duration::from_secs(20));
    let (a, b) = (rig.engine("a", steps), rig.engine("b", Steps::none()));
    let req = request("p1", "10", FAR);
    let slow = rig.settle(&a, &req);
    let other = async {
        rig.wait(Duration::from_secs(16)).await; // A's lease has lapsed
        rig.settle(&b, &req).await
    };
    let (x, y) = tokio::join!(slow, other);
    // One signature of the payment (a later replacement re-signs the same nonce, higher fee).
    let firsts = rig
        .chain
        .with(|s| s.signed.iter().filter(|t| t.fee == 1).count());
    assert_eq!(firsts, 1, "signed once: {x:?} {y:?}");
    rig.chain.with(|s| s.stalled = false);
    rig.chain.mine();
    let answers = [x, y, rig.settle(&b, &req).await];
    assert_eq!(
        answers.iter().filter(|a| a.success).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(rig.chain.transfers("p1"), 1);
}

/// A transaction every node refuses (e.g. priced under the base fee) is re-sent, and replaced
/// once it has been out unmined for `replace_after`; the replacement lands.
#[tokio::test(start_paused = true)]
async fn a_refused_transaction_is_replaced_once_stale() {
    let rig = Rig::new();
    rig.chain.with(|s| {
        for _ in 0..5 {
            s.send_script.push_back(SendScript::Refuse);
        }
    });
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let answer = rig.settle(&engine, &req).await;
        let success = answer.success;
        answers.push(answer);
        if success {
            break;
        }
    }
    let last = answers.last().unwrap();
    assert!(last.success, "{answers:?}");
    rig.chain.with(|s| {
        assert_eq!(s.signed.len(), 2, "one replacement");
        assert_eq!(s.signed[1].nonce, s.signed[0].nonce, "same nonce");
        assert_eq!(last.transaction, s.signed[1].hash);
    });
    assert!(
        rig.clock.unix_ms() >= T0_MS + 60_000,
        "not before replace_after"
    );
}

/// A re-send refused because the nonce is used ("nonce too low") is replaced at once, without
/// waiting for `replace_after`.
#[tokio::test(start_paused = true)]
async fn a_resend_refused_for_its_nonce_is_replaced_at_once() {
    let rig = Rig::new();
    rig.chain.with(|s| {
        s.send_script.push_back(SendScript::Lose);
        s.send_script.push_back(SendScript::NonceUsed);
    });
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    assert_eq!(reason(&rig.settle(&engine, &req).await), pending());
    let answer = rig.settle(&engine, &req).await;
    assert!(answer.success, "{answer:?}");
    assert_eq!(rig.chain.with(|s| s.signed.len()), 2);
    assert!(
        rig.clock.unix_ms() < T0_MS + 30_000,
        "replaced at the re-send, 15 s"
    );
}
