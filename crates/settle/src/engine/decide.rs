//! The pure decision for a `broadcast` record: what the chain said, the record, the time and the
//! engine's timing in; one [`Action`] out. No I/O: [`super::advance`] carries the action out,
//! and the unit tests below cover every branch.
//!
//! | chain outcome | condition | action |
//! |---|---|---|
//! | landed | resolved by a request | `delivered` (answer success) |
//! | landed | resolved by the reconciler | `confirmed` (the next request answers success) |
//! | pre-confirmed (flashblocks, success) | resolved by a request | `delivered`, marked pre-confirmed (answer success) |
//! | pre-confirmed | the reconciler | as not yet, a node holds it (the block decides) |
//! | failed on chain | | `failed` with its reason |
//! | expired (`validBefore` / blockhash passed, never landed) | | `expired`, reason = the family's transaction failure |
//! | not yet, a node holds it | the current transaction unmined for `replace_after` since it was first sent | replace (same nonce, higher fees) |
//! | not yet | last sent less than `resend_after` ago | wait |
//! | not yet | otherwise | re-send the recorded bytes |
//!
//! A replacement is only decided while the record has fewer than
//! [`super::MAX_REPLACEMENTS`]; past that the record waits (re-sent by the other rules).

use x402_proto::Reason;

use super::{MAX_REPLACEMENTS, SettleTiming};
use crate::family::{Lookup, Probe, Sent};
use crate::record::{Broadcast, Closed, Cost, Settled, SettlementRecord};

/// Who is resolving a broadcast record; decides which landed state it moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// A `/settle` request: a landing it sees moves to `delivered`, and it answers success.
    Request,
    /// The reconciler (no request waiting): a landing moves to `confirmed`, and the next
    /// request answers success.
    Reconciler,
}

/// What to do with a broadcast record after one look at the chain (short-lived, moved once:
/// its size does not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Swap into this final state (`delivered`, `confirmed`, `failed`, `expired`).
    Resolve(SettlementRecord),
    /// Nothing yet: sent recently.
    Wait,
    /// Send the recorded bytes again (a node may have lost them).
    Resend,
    /// Replace the transaction (same sender nonce, higher fees; a new nonce when the old one
    /// was used by another transaction).
    Replace,
}

/// Milliseconds since the record's transaction was last (re-)sent.
fn since_sent_ms(broadcast: &Broadcast, now_ms: u64) -> u64 {
    now_ms.saturating_sub(broadcast.last_sent_ms)
}

/// Milliseconds the current transaction has been out unmined (re-sends of the same bytes do
/// not reset it; a replacement does).
fn unmined_for_ms(broadcast: &Broadcast, now_ms: u64) -> u64 {
    now_ms.saturating_sub(broadcast.current_since_ms())
}

/// How far the look at the chain must go at `now_ms`: a node is asked whether it still holds
/// the transaction once a re-send or a replacement may be due, or once `validBefore` has passed
/// (whether a node still holds it then decides `expired`).
pub fn probe(broadcast: &Broadcast, now_ms: u64, timing: &SettleTiming) -> Probe {
    let act_after = timing.resend_after.min(timing.replace_after).as_millis() as u64;
    if since_sent_ms(broadcast, now_ms) >= act_after
        || now_ms / 1000 > broadcast.payment.valid_until
    {
        Probe::NodeHolds
    } else {
        Probe::LandedOnly
    }
}

/// The action for `broadcast` given the chain's `outcome` at `now_ms` (Unix milliseconds).
/// `transaction_failed`: the family's reason for a transaction that never landed (stored with
/// `expired`).
pub fn decide(
    outcome: Lookup,
    broadcast: &Broadcast,
    now_ms: u64,
    timing: &SettleTiming,
    resolver: Resolver,
    transaction_failed: Reason,
) -> Action {
    let now = now_ms / 1000;
    let since_sent = since_sent_ms(broadcast, now_ms);
    let stale = unmined_for_ms(broadcast, now_ms) >= timing.replace_after.as_millis() as u64;
    // A pre-confirmation answers a waiting request only: with nobody waiting, the block decides.
    let outcome = match (outcome, resolver) {
        (Lookup::Preconfirmed { .. }, Resolver::Reconciler) => Lookup::NotYet { known: true },
        (outcome, _) => outcome,
    };
    match outcome {
        Lookup::Preconfirmed {
            transaction,
            cost,
            sent,
        } => Action::Resolve(SettlementRecord::Delivered(Settled {
            payment: broadcast.payment.clone(),
            transaction,
            cost,
            settled_at: now,
            preconfirmed: Some(sent),
        })),
        Lookup::Landed { transaction, cost } => {
            let settled = Settled {
                payment: broadcast.payment.clone(),
                transaction,
                cost,
                settled_at: now,
                preconfirmed: None,
            };
            Action::Resolve(match resolver {
                Resolver::Request => SettlementRecord::Delivered(settled),
                Resolver::Reconciler => SettlementRecord::Confirmed(settled),
            })
        }
        Lookup::SettledBefore { transaction, cost } => {
            Action::Resolve(SettlementRecord::Delivered(Settled {
                payment: broadcast.payment.clone(),
                transaction,
                cost,
                settled_at: now,
                preconfirmed: None,
            }))
        }
        Lookup::Failed {
            transaction,
            reason,
            message,
            cost,
        } => Action::Resolve(SettlementRecord::Failed(Closed {
            payment: broadcast.payment.clone(),
            transaction,
            reason: reason.as_str().into(),
            message,
            cost,
            closed_at: now,
        })),
        Lookup::Expired { message } => Action::Resolve(SettlementRecord::Expired(Closed {
            payment: broadcast.payment.clone(),
            transaction: broadcast.sent.transaction().into(),
            reason: transaction_failed.as_str().into(),
            message,
            cost: Cost::default(),
            closed_at: now,
        })),
        Lookup::NotYet { known } => {
            if known && stale && can_replace(broadcast) {
                Action::Replace
            } else if since_sent < timing.resend_after.as_millis() as u64 {
                Action::Wait
            } else {
                Action::Resend
            }
        }
    }
}

/// Whether the record may take one more replacement.
pub fn can_replace(broadcast: &Broadcast) -> bool {
    broadcast.replaced.len() < MAX_REPLACEMENTS
}

/// After a re-send answered `sent` at `now_ms`: whether to replace the transaction now. A
/// transaction whose nonce is used elsewhere can never land as signed (replace now); one a
/// node refuses (e.g. priced below the base fee) is replaced once it has been out unmined for
/// `replace_after`.
pub fn replace_after_resend(
    sent: &Sent,
    broadcast: &Broadcast,
    now_ms: u64,
    timing: &SettleTiming,
) -> bool {
    can_replace(broadcast)
        && match sent {
            Sent::NonceUsed(_) => true,
            Sent::Refused(_) => {
                unmined_for_ms(broadcast, now_ms) >= timing.replace_after.as_millis() as u64
            }
            Sent::Accepted | Sent::Unknown(_) => false,
        }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{PaymentFacts, SentTx};

    const T0: u64 = 1_800_000_000_000;

    fn timing() -> SettleTiming {
        SettleTiming {
            resend_after: Duration::from_secs(15),
            replace_after: Duration::from_secs(60),
            ..SettleTiming::default()
        }
    }

    fn broadcast(replaced: usize) -> Broadcast {
        let tx = |n: usize| SentTx::Evm {
            transaction: format!("0x{n:02x}"),
            raw: "0x".into(),
            signer: "0xS".into(),
            nonce: 7,
            max_fee_per_gas: String::new(),
            max_priority_fee_per_gas: String::new(),
        };
        Broadcast {
            payment: PaymentFacts {
                binding: "0xb".into(),
                network: "eip155:8453".into(),
                payer: "0xP".into(),
                amount: "10".into(),
                asset: "0xA".into(),
                pay_to: "0xT".into(),
                created_at: T0 / 1000,
                valid_until: T0 / 1000 + 300,
                key: None,
                answer_keys: vec![],
                kind: None,
            },
            sent: tx(99),
            replaced: (0..replaced).map(tx).collect(),
            sent_at: T0 / 1000,
            last_sent_ms: T0,
            first_sent_ms: T0,
            sent_since_ms: T0,
        }
    }

    fn not_yet(known: bool, after_ms: u64, replaced: usize) -> Action {
        not_yet_of(&broadcast(replaced), known, after_ms)
    }

    fn not_yet_of(b: &Broadcast, known: bool, after_ms: u64) -> Action {
        decide(
            Lookup::NotYet { known },
            b,
            T0 + after_ms,
            &timing(),
            Resolver::Request,
            Reason::EvmTransactionFailed,
        )
    }

    #[test]
    fn a_payment_settled_before_its_record_was_lost_is_delivered_by_anyone() {
        // Its success may have been answered: never `confirmed` (which the next request
        // would answer with a success), never `failed`.
        for resolver in [Resolver::Request, Resolver::Reconciler] {
            let action = decide(
                Lookup::SettledBefore {
                    transaction: "0x42".into(),
                    cost: Cost::default(),
                },
                &broadcast(0),
                T0,
                &timing(),
                resolver,
                Reason::EvmTransactionFailed,
            );
            assert!(
                matches!(action, Action::Resolve(SettlementRecord::Delivered(ref s)) if s.transaction == "0x42"),
                "{resolver:?}"
            );
        }
    }

    #[test]
    fn a_preconfirmation_answers_a_request_and_the_reconciler_waits_for_the_block() {
        let b = broadcast(0);
        let pre = || Lookup::Preconfirmed {
            transaction: b.sent.transaction().to_string(),
            cost: Cost::default(),
            sent: b.sent.clone(),
        };
        let by_request = decide(
            pre(),
            &b,
            T0,
            &timing(),
            Resolver::Request,
            Reason::EvmTransactionFailed,
        );
        let Action::Resolve(SettlementRecord::Delivered(s)) = by_request else {
            panic!("not delivered: {by_request:?}")
        };
        assert_eq!(s.transaction, b.sent.transaction());
        assert_eq!(s.preconfirmed.as_ref(), Some(&b.sent));
        // The reconciler treats it as a transaction a node holds: wait, then (stale) replace.
        for (after_ms, expected) in [(1_000, Action::Wait), (60_000, Action::Replace)] {
            let by_reconciler = decide(
                pre(),
                &b,
                T0 + after_ms,
                &timing(),
                Resolver::Reconciler,
                Reason::EvmTransactionFailed,
            );
            assert_eq!(by_reconciler, expected, "after {after_ms} ms");
        }
    }

    #[test]
    fn a_landing_is_delivered_by_a_request_and_confirmed_by_the_reconciler() {
        let landed = || Lookup::Landed {
            transaction: "0x99".into(),
            cost: Cost::default(),
        };
        let b = broadcast(0);
        let t = timing();
        let by_request = decide(
            landed(),
            &b,
            T0,
            &t,
            Resolver::Request,
            Reason::EvmTransactionFailed,
        );
        let by_reconciler = decide(
            landed(),
            &b,
            T0,
            &t,
            Resolver::Reconciler,
            Reason::EvmTransactionFailed,
        );
        assert!(
            matches!(by_request, Action::Resolve(SettlementRecord::Delivered(ref s)) if s.transaction == "0x99")
        );
        assert!(matches!(
            by_reconciler,
            Action::Resolve(SettlementRecord::Confirmed(_))
        ));
    }

    #[test]
    fn a_failure_keeps_its_reason_and_an_expiry_takes_the_family_reason() {
        let b = broadcast(0);
        let failed = decide(
            Lookup::Failed {
                transaction: "0x99".into(),
                reason: Reason::EvmTransferEventMismatch,
                message: "m".into(),
                cost: Cost::default(),
            },
            &b,
            T0 + 5_000,
            &timing(),
            Resolver::Reconciler,
            Reason::EvmTransactionFailed,
        );
        let Action::Resolve(SettlementRecord::Failed(c)) = failed else {
            panic!("not failed: {failed:?}")
        };
        assert_eq!(c.reason, Reason::EvmTransferEventMismatch.as_str());
        assert_eq!(c.closed_at, T0 / 1000 + 5);
        let expired = decide(
            Lookup::Expired {
                message: "gone".into(),
            },
            &b,
            T0,
            &timing(),
            Resolver::Request,
            Reason::SvmTransactionFailed,
        );
        let Action::Resolve(SettlementRecord::Expired(c)) = expired else {
            panic!("not expired: {expired:?}")
        };
        assert_eq!(c.reason, Reason::SvmTransactionFailed.as_str());
        assert_eq!(c.transaction, b.sent.transaction());
    }

    #[test]
    fn not_landed_waits_then_resends_then_replaces_only_what_a_node_holds() {
        assert_eq!(not_yet(true, 14_999, 0), Action::Wait);
        assert_eq!(not_yet(false, 14_999, 0), Action::Wait);
        assert_eq!(not_yet(true, 15_000, 0), Action::Resend);
        assert_eq!(not_yet(false, 15_000, 0), Action::Resend);
        assert_eq!(not_yet(true, 60_000, 0), Action::Replace);
        // A node that lost it gets the same bytes again, however old.
        assert_eq!(not_yet(false, 600_000, 0), Action::Resend);
        // Replacements are bounded: past the limit the record is re-sent instead.
        assert_eq!(not_yet(true, 60_000, MAX_REPLACEMENTS), Action::Resend);
    }

    #[test]
    fn re_sending_the_same_bytes_does_not_postpone_the_replacement() {
        // Re-sent every 15 s since T0: the latest send was 10 s ago, but the transaction has
        // been out unmined for 60 s.
        let mut b = broadcast(0);
        b.last_sent_ms = T0 + 50_000;
        assert_eq!(not_yet_of(&b, true, 60_000), Action::Replace);
        assert_eq!(not_yet_of(&b, true, 59_999), Action::Wait);
        // A replacement restarts the clock.
        b.sent_since_ms = T0 + 50_000;
        b.replaced = broadcast(1).replaced;
        assert_eq!(not_yet_of(&b, true, 65_000), Action::Resend);
        // Records written before `sent_since_ms` was kept.
        b.sent_since_ms = 0;
        assert_eq!(b.current_since_ms(), b.last_sent_ms);
        b.replaced.clear();
        assert_eq!(b.current_since_ms(), T0);
    }

    #[test]
    fn a_node_is_probed_once_an_action_may_be_due_or_valid_before_passed() {
        let b = broadcast(0);
        assert_eq!(probe(&b, T0 + 1_000, &timing()), Probe::LandedOnly);
        assert_eq!(probe(&b, T0 + 15_000, &timing()), Probe::NodeHolds);
        assert_eq!(probe(&b, T0 + 301_000, &timing()), Probe::NodeHolds);
        let short = SettleTiming {
            replace_after: Duration::from_secs(5),
            ..timing()
        };
        assert_eq!(probe(&b, T0 + 5_000, &short), Probe::NodeHolds);
    }

    #[test]
    fn a_refused_resend_is_replaced_when_stale_and_a_used_nonce_at_once() {
        let b = broadcast(0);
        let t = timing();
        assert!(replace_after_resend(
            &Sent::NonceUsed("n".into()),
            &b,
            T0 + 15_000,
            &t
        ));
        assert!(!replace_after_resend(
            &Sent::Refused("r".into()),
            &b,
            T0 + 15_000,
            &t
        ));
        assert!(replace_after_resend(
            &Sent::Refused("r".into()),
            &b,
            T0 + 60_000,
            &t
        ));
        assert!(!replace_after_resend(&Sent::Accepted, &b, T0 + 600_000, &t));
        assert!(!replace_after_resend(
            &Sent::Unknown("u".into()),
            &b,
            T0 + 600_000,
            &t
        ));
        let full = broadcast(MAX_REPLACEMENTS);
        assert!(!replace_after_resend(
            &Sent::NonceUsed("n".into()),
            &full,
            T0 + 15_000,
            &t
        ));
    }
}
