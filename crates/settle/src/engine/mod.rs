//! The settlement state machine, one for every chain family (see [`crate::record`] for the
//! states and their transition table, [`crate::family::ChainFamily`] for the per-family part).
//!
//! Every transition is one compare-and-swap in the replay store, so two requests or two
//! replicas never both advance a record. Where each move happens:
//!
//! | file | moves |
//! |---|---|
//! | [`request`] | `/settle`: verify, create `reserved`, take over a lapsed lease, sign and record `broadcast` before sending, send, wait; `confirmed → delivered`; every answer |
//! | [`decide`] | the pure decision for a broadcast record: chain outcome, record, time and timing in; answer, wait, re-send, replace, expire or fail out |
//! | [`advance`] | carries a decision out: the swap into a final state (with its webhook event), the re-send and the replacement self-loops of `broadcast` |
//! | [`reconcile`] | the reconciler's look at one open record: resolves `broadcast` to `confirmed`/`failed`/`expired`, deletes abandoned `reserved` |
//! | [`status`] | `GET /settlements/…` queries (read only) |
//!
//! Nonce repair ([`crate::evm::gaps`]) re-sends recorded EVM transactions and fills sender
//! nonces outside the engine; it never changes a record.
//!
//! The one success: the request that sees a landing swaps to `delivered` and alone answers
//! `success: true`; the reconciler swaps to `confirmed`, and the next request swaps
//! `confirmed → delivered`. Every later request gets `duplicate_settlement` with the
//! transaction (x402-conformance F3).

pub mod advance;
mod answer;
pub mod decide;
pub mod reconcile;
pub mod request;
pub mod status;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use decide::{Action, Resolver};

use crate::SettleEvents;
use crate::clock::Clock;
use crate::family::ChainFamily;
use crate::outbox::Notify;
use crate::record::{PaymentFacts, Reserved, SettlementRecord};
use crate::replay::ReplayStore;

/// Most replacements of one payment's transaction (each is recorded and looked up).
pub const MAX_REPLACEMENTS: usize = 8;

/// Timing of one settlement engine.
#[derive(Debug, Clone)]
pub struct SettleTiming {
    /// Longest wait for the outcome in one `/settle` call before answering
    /// `settlement_pending` (the engine's bound; a request answers at the earlier of this and
    /// [`SettleTiming::answer_within`]).
    pub receipt_timeout: Duration,
    /// A `/settle` whose transaction is not confirmed by then answers `settlement_pending` with
    /// the transaction (the payment keeps going: retries and the reconciler resolve it). Below
    /// the official SDK's 30 s facilitator timeout, so that its pending-retry happens.
    pub answer_within: Duration,
    /// Interval between outcome polls.
    pub poll_interval: Duration,
    /// How long a request that finds the payment reserved by a live owner waits before
    /// answering `duplicate_settlement`.
    pub reserved_wait: Duration,
    /// A reservation's lease: an owner that dies before signing loses the payment to the next
    /// request after this long.
    pub lease: Duration,
    /// A broadcast transaction still not landed after this long is re-sent (same bytes).
    pub resend_after: Duration,
    /// A broadcast EVM transaction a node holds but that stays unmined this long (e.g. priced
    /// below a risen base fee) is replaced: same nonce, higher fees.
    pub replace_after: Duration,
}

impl Default for SettleTiming {
    fn default() -> Self {
        SettleTiming {
            receipt_timeout: Duration::from_secs(30),
            answer_within: Duration::from_secs(20),
            poll_interval: Duration::from_millis(200),
            reserved_wait: Duration::from_secs(10),
            lease: Duration::from_secs(15),
            resend_after: Duration::from_secs(15),
            replace_after: Duration::from_secs(60),
        }
    }
}

/// The kind of an [`AnswerId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerIdKind {
    /// `paymentPayload.extensions["payment-identifier"].info.id`.
    PaymentIdentifier,
    /// The `Idempotency-Key` request header of `/settle`.
    IdempotencyKey,
}

/// An id a caller sends with a payment to get the same answer again if it loses it: the first
/// request with the id binds it to the payment (in the same atomic step as the record); a later
/// request with the id and the same payment gets the record's answer, its success included; the
/// id with another payment is refused ([`crate::SettleError::AnswerIdConflict`], 409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerId {
    /// Where it came from.
    pub kind: AnswerIdKind,
    /// The id as sent.
    pub id: String,
}

impl AnswerId {
    /// The id scoped by kind and by the API key named `key` (another key's equal id is another
    /// id): `{pid|idem}:{key or "-"}:{id}`.
    pub fn scoped(&self, key: Option<&str>) -> String {
        let kind = match self.kind {
            AnswerIdKind::PaymentIdentifier => "pid",
            AnswerIdKind::IdempotencyKey => "idem",
        };
        format!("{kind}:{}:{}", key.unwrap_or("-"), self.id)
    }

    /// How answers and errors name it.
    pub fn describe(&self) -> String {
        match self.kind {
            AnswerIdKind::PaymentIdentifier => format!("payment-identifier id {:?}", self.id),
            AnswerIdKind::IdempotencyKey => format!("Idempotency-Key {:?}", self.id),
        }
    }
}

/// Payers whose settlements revert on chain after passing every check (they moved the funds
/// or used the authorization in between): past `limit` such reverts within `window`, the
/// payer's settlements on the network are refused before broadcast for `block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerPolicy {
    /// Reverts within the window that block the payer; 0 never blocks (still counted).
    pub limit: u32,
    /// The window the reverts are counted in.
    pub window: Duration,
    /// How long a blocked payer's settlements are refused.
    pub block: Duration,
}

impl Default for PayerPolicy {
    fn default() -> Self {
        PayerPolicy {
            limit: 3,
            window: Duration::from_secs(3600),
            block: Duration::from_secs(3600),
        }
    }
}

/// Who asks for a settlement: the API key, and the ids it can get a lost answer back with.
#[derive(Debug, Clone, Default)]
pub struct Caller<'a> {
    /// Name of the API key (recorded with a new reservation; its webhook gets the final state).
    pub key: Option<&'a str>,
    /// `payment-identifier` and `Idempotency-Key` ids, if any.
    pub answer_ids: Vec<AnswerId>,
}

/// The state machine over one chain family on one network.
pub struct Engine<F: ChainFamily> {
    family: F,
    store: Arc<dyn ReplayStore>,
    timing: SettleTiming,
    payers: PayerPolicy,
    owner: String,
    events: SettleEvents,
    notify: Notify,
    clock: Clock,
}

impl<F: ChainFamily> Engine<F> {
    /// An engine recording in `store`; `owner` names this process in reservations.
    pub fn new(
        family: F,
        store: Arc<dyn ReplayStore>,
        timing: SettleTiming,
        owner: String,
        events: SettleEvents,
    ) -> Self {
        Engine {
            family,
            store,
            timing,
            payers: PayerPolicy::default(),
            owner,
            events,
            notify: Notify::default(),
            clock: Clock::system(),
        }
    }

    /// Writes a webhook event into the outbox with every final state of a payment settled by
    /// one of `notify`'s keys (atomically with the state).
    pub fn with_notify(mut self, notify: Notify) -> Self {
        self.notify = notify;
        self
    }

    /// Blocks payers whose settlements revert as `policy` says (default: 3 in an hour block
    /// for an hour).
    pub fn with_payer_policy(mut self, policy: PayerPolicy) -> Self {
        self.payers = policy;
        self
    }

    /// Reads every time it decides on from `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The chain family.
    pub fn family(&self) -> &F {
        &self.family
    }

    /// The replay store.
    pub fn store(&self) -> &Arc<dyn ReplayStore> {
        &self.store
    }

    /// The clock the engine decides by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A reservation of `payment` by this process, its lease starting now.
    fn reservation(&self, payment: PaymentFacts) -> SettlementRecord {
        SettlementRecord::Reserved(Reserved {
            payment,
            owner: self.owner.clone(),
            lease_until_ms: self.clock.unix_ms() + self.timing.lease.as_millis() as u64,
        })
    }
}
