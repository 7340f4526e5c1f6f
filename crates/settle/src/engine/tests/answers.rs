//! Answer ids (`payment-identifier`, `Idempotency-Key`): the caller holding the id gets its
//! payment's answer again, success included; everyone else keeps today's rules (one success,
//! then `duplicate_settlement`, x402-conformance F3); the id with another payment is a 409.

use std::time::Duration;

use x402_proto::{PaymentRequest, Reason, SettleResponse};

use super::scripted::{CrashMode, Family, Steps, is_success, key_of, reason, request};
use super::{Rig, T0_MS};
use crate::SettleError;
use crate::engine::{AnswerId, AnswerIdKind, Caller, Engine};
use crate::record::SettlementRecord;

const FAR: u64 = T0_MS / 1000 + 3_600;

fn dup() -> &'static str {
    Reason::DuplicateSettlement.as_str()
}

fn pending() -> &'static str {
    Reason::SettlementPending.as_str()
}

fn pid(id: &str) -> AnswerId {
    AnswerId {
        kind: AnswerIdKind::PaymentIdentifier,
        id: id.into(),
    }
}

fn idem(id: &str) -> AnswerId {
    AnswerId {
        kind: AnswerIdKind::IdempotencyKey,
        id: id.into(),
    }
}

const ID: &str = "pay_0123456789abcdef";

async fn settle_with(
    rig: &Rig,
    engine: &Engine<Family>,
    req: &PaymentRequest,
    key: Option<&str>,
    ids: &[AnswerId],
) -> Result<SettleResponse, SettleError> {
    let caller = Caller {
        key,
        answer_ids: ids.to_vec(),
    };
    engine.settle_for(req, rig.now(), &caller).await
}

async fn answer(
    rig: &Rig,
    engine: &Engine<Family>,
    req: &PaymentRequest,
    ids: &[AnswerId],
) -> SettleResponse {
    settle_with(rig, engine, req, None, ids)
        .await
        .expect("settle answers")
}

/// The id holder gets the same success again, as often as it asks; without the id, with
/// another id or under another API key: `duplicate_settlement` with the transaction.
#[tokio::test(start_paused = true)]
async fn the_id_holder_gets_its_success_again_and_nobody_else() {
    for id in [pid(ID), idem("3f0c9a1e-key")] {
        let rig = Rig::new();
        let engine = rig.engine("a", Steps::none());
        let req = request("p1", "10", FAR);
        let first = answer(&rig, &engine, &req, std::slice::from_ref(&id)).await;
        assert!(is_success(&first), "{first:?}");
        for _ in 0..3 {
            let again = answer(&rig, &engine, &req, std::slice::from_ref(&id)).await;
            assert_eq!(again, first, "the same answer again");
        }
        for other in [
            vec![],
            vec![pid("pay_another_id_0000")],
            vec![idem("other")],
        ] {
            let replay = answer(&rig, &engine, &req, &other).await;
            assert_eq!(reason(&replay), dup(), "{other:?}: {replay:?}");
            assert_eq!(replay.transaction, first.transaction);
        }
        let other_key = settle_with(
            &rig,
            &engine,
            &req,
            Some("shop-b"),
            std::slice::from_ref(&id),
        )
        .await
        .unwrap();
        assert_eq!(reason(&other_key), dup(), "the id is scoped to the API key");
        assert_eq!(rig.chain.transfers("p1"), 1);
        rig.chain.assert_invariants();
    }
}

/// The same id with another payment (another replay key, or the same payload under other
/// requirements) is a conflict: nothing verified, reserved or sent.
#[tokio::test(start_paused = true)]
async fn the_id_with_another_payment_is_a_conflict() {
    let rig = Rig::new();
    let engine = rig.engine("a", Steps::none());
    let first = answer(&rig, &engine, &request("p1", "10", FAR), &[pid(ID)]).await;
    assert!(is_success(&first));
    let other_payment = settle_with(&rig, &engine, &request("p2", "10", FAR), None, &[pid(ID)])
        .await
        .unwrap_err();
    assert!(
        matches!(&other_payment, SettleError::AnswerIdConflict(m) if m.contains(ID)),
        "{other_payment:?}"
    );
    assert!(
        rig.record(&key_of("p2")).await.is_none(),
        "nothing reserved"
    );
    let other_requirements =
        settle_with(&rig, &engine, &request("p1", "11", FAR), None, &[pid(ID)])
            .await
            .unwrap_err();
    assert!(matches!(
        other_requirements,
        SettleError::AnswerIdConflict(_)
    ));
    // The header and the extension are different ids; another key's header is another id.
    let p3 = request("p3", "10", FAR);
    assert!(is_success(&answer(&rig, &engine, &p3, &[idem(ID)]).await));
    assert_eq!(rig.chain.transfers("p2"), 0);
    let signed = rig.chain.with(|s| s.signed.len());
    assert_eq!(signed, 2, "p1 and p3 only");
}

/// A caller that gave up before the answer (its HTTP client timed out) gets its success back
/// with the id, even when another request without the id saw the landing first, or the
/// reconciler did.
#[tokio::test(start_paused = true)]
async fn a_lost_answer_comes_back_with_the_id() {
    for reconciler_first in [false, true] {
        let rig = Rig::new();
        rig.chain.with(|s| s.stalled = true);
        let engine = rig.engine("a", Steps::none());
        let req = request("p1", "10", FAR);
        let gave_up = tokio::time::timeout(
            Duration::from_millis(250),
            answer(&rig, &engine, &req, &[pid(ID)]),
        )
        .await;
        assert!(gave_up.is_err(), "the client gave up");
        assert!(matches!(
            rig.record(&key_of("p1")).await,
            Some(SettlementRecord::Broadcast(_))
        ));
        rig.chain.with(|s| s.stalled = false);
        if reconciler_first {
            rig.chain.mine();
            engine
                .reconcile(&key_of("p1"), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(matches!(
                rig.record(&key_of("p1")).await,
                Some(SettlementRecord::Confirmed(_))
            ));
        }
        // A replay of the payment header without the id: never the success.
        let replay = answer(&rig, &engine, &req, &[]).await;
        assert_eq!(reason(&replay), dup(), "{replay:?}");
        assert!(!replay.transaction.is_empty());
        let retry = answer(&rig, &engine, &req, &[pid(ID)]).await;
        assert!(is_success(&retry), "{retry:?}");
        assert_eq!(retry.transaction, replay.transaction);
        assert_eq!(retry.amount.as_deref(), Some("10"));
        assert_eq!(retry.payer.as_deref(), Some("0xPAYERp1"));
        assert!(is_success(&answer(&rig, &engine, &req, &[pid(ID)]).await));
        assert_eq!(rig.chain.transfers("p1"), 1);
    }
}

/// A request with the id while the caller's first request still holds the reservation waits,
/// then answers `settlement_pending` (retry), not `duplicate_settlement`.
#[tokio::test(start_paused = true)]
async fn the_id_holder_finding_its_own_request_at_work_is_told_to_retry() {
    let rig = Rig::new();
    let steps = Steps::none();
    steps.delay("sign", Duration::from_secs(12));
    let slow = rig.engine("a", steps);
    let other = rig.engine("b", Steps::none());
    let req = request("p1", "10", FAR);
    let ids = [pid(ID)];
    let (first, second) = tokio::join!(answer(&rig, &slow, &req, &ids), async {
        rig.wait(Duration::from_secs(1)).await;
        answer(&rig, &other, &req, &[pid(ID)]).await
    });
    assert_eq!(reason(&second), pending(), "{second:?}");
    assert_eq!(second.transaction, "");
    assert!(is_success(&first), "{first:?}");
    assert!(is_success(&answer(&rig, &other, &req, &[pid(ID)]).await));
}

/// A settlement not confirmed within `answer_within` (20 s) answers `settlement_pending` with
/// its transaction, and the payment keeps going: the retry gets the success.
#[tokio::test(start_paused = true)]
async fn pending_is_answered_within_answer_within() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = rig.engine("a", Steps::none());
    let req = request("p1", "10", FAR);
    let started = tokio::time::Instant::now();
    let first = answer(&rig, &engine, &req, &[]).await;
    let waited = started.elapsed();
    assert_eq!(reason(&first), pending());
    assert!(!first.transaction.is_empty());
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
        "{waited:?}"
    );
    rig.chain.with(|s| s.stalled = false);
    let retry = answer(&rig, &engine, &req, &[]).await;
    assert!(is_success(&retry));
    assert_eq!(retry.transaction, first.transaction);
}

/// kill -9 of the id holder's engine at every await point (before and after its effect): a
/// second instance serving the caller's retries with the same id ends with the caller's
/// success, and a replay without the id gets `duplicate_settlement`.
#[tokio::test(start_paused = true)]
async fn a_crash_at_every_step_then_the_retry_with_the_id_gets_the_success() {
    for k in 1..=17 {
        for mode in [CrashMode::Before, CrashMode::After] {
            let rig = Rig::new();
            let req = request("p1", "10", FAR);
            let key = key_of("p1");
            let steps = Steps::crash_at(k, mode);
            let a = rig.engine("a", steps.clone());
            let ids = [pid(ID)];
            let crashed = tokio::select! {
                answer = answer(&rig, &a, &req, &ids) => {
                    assert!(is_success(&answer), "{answer:?}");
                    false
                }
                _ = steps.crashed() => true,
            };
            drop(a);
            if !crashed {
                continue;
            }
            let b = rig.engine("b", Steps::none());
            let mut last = None;
            for _ in 0..20 {
                let retry = answer(&rig, &b, &req, &[pid(ID)]).await;
                let done = retry.success || reason(&retry) != pending();
                last = Some(retry);
                if done {
                    break;
                }
                b.reconcile(&key, Duration::from_secs(5)).await.unwrap();
                rig.chain.mine();
                rig.wait(Duration::from_secs(5)).await;
            }
            let last = last.unwrap();
            assert!(last.success, "step {k} {mode:?}: {last:?}");
            let replay = answer(&rig, &b, &req, &[]).await;
            assert_eq!(reason(&replay), dup(), "step {k} {mode:?}");
            assert_eq!(replay.transaction, last.transaction);
            assert_eq!(rig.chain.transfers("p1"), 1);
            rig.chain.assert_invariants();
        }
    }
}

/// Two requests waiting on one payment whose transaction the node refused (re-sent at 15 s by
/// one of them, the record changing under the other) both answer `settlement_pending` within
/// `answer_within` of their own start: the answer time counts from the request's start and a
/// re-read does not restart it.
#[tokio::test(start_paused = true)]
async fn a_re_read_while_waiting_does_not_restart_the_answer_time() {
    let rig = Rig::new();
    rig.chain.with(|s| {
        s.send_script.push_back(super::scripted::SendScript::Refuse);
        s.stalled = true;
    });
    let a = rig.engine("a", Steps::none());
    let b = rig.engine("b", Steps::none());
    let req = request("p1", "10", FAR);
    let timed = |engine| {
        let req = &req;
        let rig = &rig;
        async move {
            let started = tokio::time::Instant::now();
            let answer = answer(rig, engine, req, &[]).await;
            (answer, started.elapsed())
        }
    };
    let ((first, first_waited), (second, second_waited)) = tokio::join!(timed(&a), async {
        rig.wait(Duration::from_millis(1_100)).await;
        timed(&b).await
    });
    for (answer, waited) in [(first, first_waited), (second, second_waited)] {
        assert_eq!(reason(&answer), pending(), "{answer:?}");
        assert!(
            waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
            "{waited:?}"
        );
    }
    let sends = rig.chain.with(|s| s.sends.len());
    assert!(sends >= 2, "the lost transaction was re-sent");
}
