//! In-flight debits ([`crate::debits`]): a payer whose balance covers some of its concurrent
//! payments gets those settled and the others refused before anything is signed; every final
//! state releases its debit.

use std::sync::Arc;
use std::time::Duration;

use x402_proto::{Reason, SettleResponse};

use super::scripted::{Family, Steps, is_success, key_of, reason, request_from};
use super::{Rig, T0_MS};
use crate::engine::Engine;
use crate::family::Lookup;
use crate::record::SettlementRecord;

const FAR: u64 = T0_MS / 1000 + 3_600;
const PAYER: &str = "0xPAYER";

fn insufficient() -> &'static str {
    Reason::EvmInsufficientBalance.as_str()
}

/// Settles `n` payments of `amount` by [`PAYER`] at once, the `i`-th through
/// `engines[i % engines.len()]`.
async fn settle_at_once(
    rig: &Rig,
    engines: &[Arc<Engine<Family>>],
    n: usize,
    amount: &str,
) -> Vec<SettleResponse> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let engine = engines[i % engines.len()].clone();
        let req = request_from(&format!("p{i}"), PAYER, amount, FAR);
        let now = rig.now();
        set.spawn(async move { engine.settle(&req, now).await.expect("settle answers") });
    }
    set.join_all().await
}

fn assert_two_settle_eight_refused(rig: &Rig, answers: &[SettleResponse]) {
    let settled = answers.iter().filter(|a| is_success(a)).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| reason(a) == insufficient())
        .collect();
    assert_eq!(settled, 2, "{answers:?}");
    assert_eq!(refused.len(), 8, "{answers:?}");
    assert!(refused.iter().all(|a| a.transaction.is_empty()));
    rig.chain.with(|s| {
        assert_eq!(
            s.signed.len(),
            2,
            "only the payments that settle are signed"
        );
        assert_eq!(s.reverted(), 0, "no transaction reverts");
        assert_eq!(s.balances[PAYER], 2);
    });
    assert!(rig.store.debits_in_flight().is_empty());
    rig.chain.assert_invariants();
}

/// The issue's overdraw: a payer holding 10 signs 10 payments of 4, all settled at once; each
/// passes verification (the balance covers any one), 2 settle, 8 are refused before signing.
#[tokio::test(start_paused = true)]
async fn a_payer_cannot_overdraw_with_concurrent_payments() {
    let rig = Rig::new();
    rig.chain.with(|s| s.balances.insert(PAYER.into(), 10));
    let engine = Arc::new(rig.engine("a", Steps::none()));
    let answers = settle_at_once(&rig, &[engine], 10, "4").await;
    assert_two_settle_eight_refused(&rig, &answers);
}

/// The same through two replicas sharing the store.
#[tokio::test(start_paused = true)]
async fn a_payer_cannot_overdraw_across_replicas() {
    let rig = Rig::new();
    rig.chain.with(|s| s.balances.insert(PAYER.into(), 10));
    let a = Arc::new(rig.engine("a", Steps::none()));
    let b = Arc::new(rig.engine("b", Steps::none()));
    let answers = settle_at_once(&rig, &[a, b], 10, "4").await;
    assert_two_settle_eight_refused(&rig, &answers);
}

/// Once the first settlements landed, the balance they left is what the next one sees: a
/// refused payment settles later when the payer can cover it.
#[tokio::test(start_paused = true)]
async fn a_refused_payment_settles_once_the_balance_covers_it() {
    let rig = Rig::new();
    rig.chain.with(|s| s.balances.insert(PAYER.into(), 10));
    let engine = Arc::new(rig.engine("a", Steps::none()));
    let answers = settle_at_once(&rig, std::slice::from_ref(&engine), 3, "4").await;
    assert_eq!(answers.iter().filter(|a| is_success(a)).count(), 2);
    rig.chain.with(|s| *s.balances.get_mut(PAYER).unwrap() += 4);
    let again = rig
        .settle(&engine, &request_from("p2", PAYER, "4", FAR))
        .await;
    assert!(is_success(&again), "{again:?}");
    assert_eq!(rig.chain.with(|s| s.reverted()), 0);
}

/// Failed, expired and refused-before-signing records release their debits, and so does a
/// reservation the reconciler drops; payments of other payers never count.
#[tokio::test(start_paused = true)]
async fn every_final_state_releases_its_debit() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    // Failed on chain.
    rig.chain.with(|s| s.reverts.insert("f".into()));
    let failed = rig
        .settle(&engine, &request_from("f", PAYER, "4", FAR))
        .await;
    assert_eq!(reason(&failed), Reason::EvmTransactionFailed.as_str());
    assert!(matches!(
        rig.record(&key_of("f")).await,
        Some(SettlementRecord::Failed(_))
    ));
    assert!(rig.store.debits_in_flight().is_empty());
    // Expired.
    rig.chain.with(|s| {
        s.stalled = true;
        s.lookup_script.push_back(Lookup::NotYet { known: true });
        s.lookup_script.push_back(Lookup::Expired {
            message: "gone".into(),
        });
    });
    let expired = rig
        .settle(&engine, &request_from("e", PAYER, "4", FAR))
        .await;
    assert_eq!(reason(&expired), Reason::EvmTransactionFailed.as_str());
    assert!(matches!(
        rig.record(&key_of("e")).await,
        Some(SettlementRecord::Expired(_))
    ));
    assert!(rig.store.debits_in_flight().is_empty());
    rig.chain.with(|s| {
        s.stalled = false;
        s.pool.clear(); // as the expiry said: it never lands
    });
    // Refused before signing: its reservation is deleted.
    rig.chain.with(|s| s.balances.insert(PAYER.into(), 4));
    let store = rig.store.clone();
    let held = crate::record::SettlementRecord::Reserved(crate::record::Reserved {
        payment: crate::record::PaymentFacts {
            binding: "other".into(),
            network: "eip155:8453".into(),
            payer: PAYER.into(),
            amount: "4".into(),
            asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into(),
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
            created_at: FAR - 3_600,
            valid_until: FAR,
            key: None,
            answer_keys: Default::default(),
            kind: None,
        },
        owner: "dead".into(),
        lease_until_ms: T0_MS,
    });
    use crate::replay::ReplayStore;
    store
        .create(&key_of("held"), &held, Duration::from_secs(3_600), &[])
        .await
        .unwrap();
    let refused = rig
        .settle(&engine, &request_from("r", PAYER, "4", FAR))
        .await;
    assert_eq!(reason(&refused), insufficient(), "{refused:?}");
    assert!(rig.record(&key_of("r")).await.is_none());
    assert_eq!(rig.store.debits_in_flight().values().sum::<usize>(), 1);
    // Another payer is not held back by this payer's debits.
    let other = rig
        .settle(&engine, &request_from("o", "0xOTHER", "4", FAR))
        .await;
    assert!(is_success(&other), "{other:?}");
    // The dead owner's reservation is dropped by the reconciler, and its debit with it.
    rig.wait(Duration::from_secs(60)).await;
    engine
        .reconcile(&key_of("held"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(rig.record(&key_of("held")).await.is_none());
    assert!(rig.store.debits_in_flight().is_empty());
    let now_covered = rig
        .settle(&engine, &request_from("r", PAYER, "4", FAR))
        .await;
    assert!(is_success(&now_covered), "{now_covered:?}");
    assert_eq!(
        rig.chain.with(|s| s.reverted()),
        1,
        "only the scripted revert"
    );
}

/// A payer whose settlements fail on chain after passing every check (it moved the funds in
/// between) is counted; at the limit its next settlements are refused before anything is
/// signed, while other payers settle.
#[tokio::test(start_paused = true)]
async fn a_payer_whose_settlements_revert_is_refused_before_broadcast() {
    let rig = Rig::new();
    let engine = rig
        .engine("a", Steps::none())
        .with_payer_policy(crate::engine::PayerPolicy {
            limit: 2,
            window: Duration::from_secs(3_600),
            block: Duration::from_secs(3_600),
        });
    for id in ["r1", "r2"] {
        rig.chain.with(|s| s.reverts.insert(id.into()));
        let answer = rig
            .settle(&engine, &request_from(id, PAYER, "4", FAR))
            .await;
        assert_eq!(reason(&answer), Reason::EvmTransactionFailed.as_str());
        assert!(!answer.transaction.is_empty());
    }
    let signed = rig.chain.with(|s| s.signed.len());
    let refused = rig
        .settle(&engine, &request_from("p3", PAYER, "4", FAR))
        .await;
    assert_eq!(
        reason(&refused),
        Reason::EvmSimulationFailed.as_str(),
        "{refused:?}"
    );
    assert_eq!(refused.transaction, "");
    assert!(
        refused
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("reverted on chain"),
        "{refused:?}"
    );
    assert_eq!(rig.chain.with(|s| s.signed.len()), signed, "nothing signed");
    assert!(rig.record(&key_of("p3")).await.is_none());
    assert!(rig.store.debits_in_flight().is_empty());
    let other = rig
        .settle(&engine, &request_from("o", "0xOTHER", "4", FAR))
        .await;
    assert!(is_success(&other), "{other:?}");
}

/// Below the limit a revert blocks nothing.
#[tokio::test(start_paused = true)]
async fn one_revert_under_the_limit_blocks_nothing() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    rig.chain.with(|s| s.reverts.insert("r1".into()));
    let failed = rig
        .settle(&engine, &request_from("r1", PAYER, "4", FAR))
        .await;
    assert_eq!(reason(&failed), Reason::EvmTransactionFailed.as_str());
    let next = rig
        .settle(&engine, &request_from("p2", PAYER, "4", FAR))
        .await;
    assert!(is_success(&next), "{next:?}");
}
