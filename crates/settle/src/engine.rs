//! The settlement state machine, one for every chain family (see [`crate::record`] for the
//! states and [`crate::family::ChainFamily`] for the per-family part).
//!
//! Every transition is one compare-and-swap in the replay store, so two requests or two
//! replicas never both advance a record:
//! - `settle` of a new payment verifies it, creates `reserved` (owner, lease), takes a signer,
//!   signs, swaps `reserved → broadcast` (the signed bytes are recorded before they are sent),
//!   sends, and waits for the outcome.
//! - A `reserved` record whose lease lapsed (its owner died before signing) is taken over.
//! - A `broadcast` record is resolved from the chain, never signed again.
//! - The request that sees a landing swaps to `delivered` and alone answers `success: true`; the
//!   reconciler swaps to `confirmed`, and the next request swaps `confirmed → delivered`.
//!   Every later request gets `duplicate_settlement` with the transaction (x402-conformance F3).

use std::sync::Arc;
use std::time::Duration;

use x402_proto::{PaymentRequest, Reason, SettleResponse, X402Version};
use x402_verify::Invalid;

use crate::clock::{unix_ms, unix_now};
use crate::family::{ChainFamily, Identified, Identity, Lookup, Sent, Signed};
use crate::outbox::Notify;
use crate::record::{Broadcast, Closed, Cost, Reserved, Settled, SettlementRecord};
use crate::replay::{Created, ReplayStore, Stored};
use crate::{SettleError, SettleEvents};

/// Most replacements of one payment's transaction (each is recorded and looked up).
pub const MAX_REPLACEMENTS: usize = 8;

/// Timing of one settlement engine.
#[derive(Debug, Clone)]
pub struct SettleTiming {
    /// Longest wait for the outcome in one `/settle` call before answering
    /// `settlement_pending`.
    pub receipt_timeout: Duration,
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
            poll_interval: Duration::from_millis(200),
            reserved_wait: Duration::from_secs(10),
            lease: Duration::from_secs(15),
            resend_after: Duration::from_secs(15),
            replace_after: Duration::from_secs(60),
        }
    }
}

/// The state machine over one chain family on one network.
pub struct Engine<F: ChainFamily> {
    family: F,
    store: Arc<dyn ReplayStore>,
    timing: SettleTiming,
    owner: String,
    events: SettleEvents,
    notify: Notify,
}

/// What the caller asked for, kept for the answer.
struct Ctx<'a> {
    id: Identity,
    network: &'a str,
    version: X402Version,
    /// The API key settling the payment (recorded in a new reservation).
    key: Option<&'a str>,
    /// The payer once known (from verification or the record).
    payer: std::sync::Mutex<String>,
}

impl Ctx<'_> {
    fn learn_payer(&self, payer: &str) {
        if !payer.is_empty() {
            *self.payer.lock().unwrap_or_else(|p| p.into_inner()) = payer.to_string();
        }
    }

    fn payer(&self) -> Option<String> {
        let p = self.payer.lock().unwrap_or_else(|p| p.into_inner());
        (!p.is_empty()).then(|| p.clone())
    }
}

/// One step's outcome: an answer, or re-read the record (someone changed it first).
enum Step {
    Answer(SettleResponse),
    Reread,
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
            owner,
            events,
            notify: Notify::default(),
        }
    }

    /// Writes a webhook event into the outbox with every final state of a payment settled by
    /// one of `notify`'s keys (atomically with the state).
    pub fn with_notify(mut self, notify: Notify) -> Self {
        self.notify = notify;
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

    /// Settles the payment in `req` at Unix time `now` (seconds).
    ///
    /// Answers (HTTP 200): success with the transaction (once per payment, ever); a
    /// verification reason with `transaction: ""` (nothing broadcast); `settlement_pending`
    /// with the transaction (broadcast, outcome not known yet: retry); `duplicate_settlement`
    /// (settled already, with the transaction; or held by a live request, with `""`); a
    /// transaction failure with the transaction. Errors: [`SettleError`], nothing broadcast.
    pub async fn settle(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<SettleResponse, SettleError> {
        self.settle_as(req, now, None).await
    }

    /// [`Engine::settle`] on behalf of the API key named `key` (recorded with a new
    /// reservation; its webhook gets the payment's final state).
    pub async fn settle_as(
        &self,
        req: &PaymentRequest,
        now: u64,
        key: Option<&str>,
    ) -> Result<SettleResponse, SettleError> {
        let id = match self.family.identify(req, now).await? {
            Identified::Payment(id) => *id,
            Identified::Refused(answer) => return Ok(*answer),
        };
        let ctx = Ctx {
            payer: std::sync::Mutex::new(id.facts.payer.clone()),
            id,
            network: req.network_wire(),
            version: req.version,
            key,
        };
        let wait_until = tokio::time::Instant::now() + self.timing.reserved_wait;
        loop {
            let step = match self.store.get(&ctx.id.key).await? {
                None => self.start(&ctx, req, now).await?,
                Some(stored) => {
                    self.continue_from(&ctx, req, now, stored, wait_until)
                        .await?
                }
            };
            if let Step::Answer(answer) = step {
                return Ok(answer);
            }
        }
    }

    /// No record: verify, reserve, settle.
    async fn start(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Step, SettleError> {
        let payment = match self.family.verify(req, now).await? {
            Ok(p) => p,
            Err(inv) => {
                // A concurrent request may have settled it meanwhile (its landing fails this
                // verification): its record holds the answer.
                if self.store.get(&ctx.id.key).await?.is_some() {
                    return Ok(Step::Reread);
                }
                if let Some(record) = self.family.recover_lost(req, &ctx.id, &inv).await {
                    tracing::warn!(key = %ctx.id.key, state = record.state_name(), "payment landed without a record; restored from the chain");
                    let ttl = Duration::from_secs(ctx.id.ttl_seconds);
                    self.store
                        .create(&ctx.id.key, &record, ttl, &ctx.id.claims)
                        .await?;
                    return Ok(Step::Reread);
                }
                return Ok(Step::Answer(self.refusal(ctx, inv)));
            }
        };
        self.family.ready_to_settle(&payment).await?;
        // A signer first: none within the wait is a 503 with nothing reserved.
        let guard = self.family.acquire_signer().await?;
        let mut facts = ctx.id.facts.clone();
        facts.key = ctx.key.map(str::to_string);
        facts.payer = self.family.payer_of(&payment);
        ctx.learn_payer(&facts.payer);
        let reserved = self.reservation(facts.clone());
        let ttl = Duration::from_secs(ctx.id.ttl_seconds);
        let created = self
            .store
            .create(&ctx.id.key, &reserved, ttl, &ctx.id.claims)
            .await;
        let created = match created {
            Ok(Created::Created(raw)) => {
                return self
                    .run_owned(ctx, req, now, raw, &payment, facts, guard)
                    .await;
            }
            other => {
                self.family.release_signer(guard).await;
                other?
            }
        };
        match created {
            Created::Created(_) | Created::Exists => Ok(Step::Reread),
            Created::Claimed { holder, .. } => {
                tracing::info!(key = %ctx.id.key, %holder, "memo already claimed by another payment");
                Ok(Step::Answer(self.answer(
                    ctx,
                    Reason::DuplicateSettlement,
                    "extra.memo was already settled for this payTo by another transaction".into(),
                    String::new(),
                )))
            }
        }
    }

    fn reservation(&self, payment: crate::record::PaymentFacts) -> SettlementRecord {
        SettlementRecord::Reserved(Reserved {
            payment,
            owner: self.owner.clone(),
            lease_until_ms: unix_ms() + self.timing.lease.as_millis() as u64,
        })
    }

    /// A record exists: answer from it, take it over, or drive it on.
    async fn continue_from(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
        stored: Stored,
        wait_until: tokio::time::Instant,
    ) -> Result<Step, SettleError> {
        if stored.record.payment().binding != ctx.id.facts.binding {
            return self.mismatch(ctx, req, now, &stored.record).await;
        }
        ctx.learn_payer(&stored.record.payment().payer);
        match stored.record {
            SettlementRecord::Reserved(r) if r.lease_until_ms > unix_ms() => {
                if tokio::time::Instant::now() >= wait_until {
                    return Ok(Step::Answer(self.answer(
                        ctx,
                        Reason::DuplicateSettlement,
                        "this payment is being settled by another request; retry".into(),
                        String::new(),
                    )));
                }
                tokio::time::sleep(self.timing.poll_interval.min(Duration::from_millis(100))).await;
                Ok(Step::Reread)
            }
            SettlementRecord::Reserved(r) => {
                // The owner's lease lapsed with nothing signed: take the payment over.
                let payment = match self.family.verify(req, now).await? {
                    Ok(p) => p,
                    Err(inv) => {
                        self.store
                            .remove(&ctx.id.key, &stored.raw, &ctx.id.claims)
                            .await?;
                        return Ok(Step::Answer(self.refusal(ctx, inv)));
                    }
                };
                self.family.ready_to_settle(&payment).await?;
                let guard = self.family.acquire_signer().await?;
                let mine = self.reservation(r.payment.clone());
                match self.store.swap(&ctx.id.key, &stored.raw, &mine).await {
                    Ok(Some(raw)) => {
                        tracing::warn!(key = %ctx.id.key, previous_owner = %r.owner, "took over a lapsed reservation");
                        self.events.takeover();
                        self.run_owned(ctx, req, now, raw, &payment, r.payment, guard)
                            .await
                    }
                    other => {
                        self.family.release_signer(guard).await;
                        other?;
                        Ok(Step::Reread)
                    }
                }
            }
            SettlementRecord::Broadcast(b) => self.await_outcome(ctx, stored.raw, b).await,
            SettlementRecord::Confirmed(s) => self.deliver(ctx, &stored.raw, s).await,
            SettlementRecord::Delivered(s) => Ok(Step::Answer(self.answer(
                ctx,
                Reason::DuplicateSettlement,
                "this payment was already settled; its success was answered once".into(),
                s.transaction,
            ))),
            SettlementRecord::Failed(c) | SettlementRecord::Expired(c) => {
                Ok(Step::Answer(self.closed(ctx, &c)))
            }
        }
    }

    /// A record of another payment, or of this payload under other requirements: the
    /// verification reason, or `duplicate_settlement`; never success (x402-conformance
    /// F10/F13/F14).
    async fn mismatch(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
        record: &SettlementRecord,
    ) -> Result<Step, SettleError> {
        if let Err(inv) = self.family.verify(req, now).await? {
            return Ok(Step::Answer(self.refusal(ctx, inv)));
        }
        Ok(Step::Answer(self.answer(
            ctx,
            self.family.conflict_reason(),
            "this payment is already settled or settling under other requirements".into(),
            record.transaction().unwrap_or_default().to_string(),
        )))
    }

    /// This request owns the reservation `raw` and holds a signer: sign, record, send (the
    /// signer is given back once sent), wait.
    #[allow(clippy::too_many_arguments)]
    async fn run_owned(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
        raw: String,
        payment: &F::Payment,
        facts: crate::record::PaymentFacts,
        guard: crate::family::SignerGuard,
    ) -> Result<Step, SettleError> {
        let recorded = self
            .sign_and_record(ctx, req, now, raw, payment, facts, &guard)
            .await;
        let (raw, broadcast, outcome) = match recorded {
            Ok(Recorded::Broadcast(raw, broadcast)) => {
                let outcome = self.family.send(&broadcast.sent).await;
                self.family.release_signer(guard).await;
                (raw, broadcast, outcome)
            }
            Ok(Recorded::Not(step)) => {
                self.family.release_signer(guard).await;
                return Ok(step);
            }
            Err(e) => {
                self.family.release_signer(guard).await;
                return Err(e);
            }
        };
        let transaction = broadcast.sent.transaction().to_string();
        match outcome {
            Sent::Accepted => self.await_outcome(ctx, raw, broadcast).await,
            Sent::Unknown(msg) => {
                tracing::warn!(%transaction, error = %msg, "broadcast outcome unknown");
                Ok(Step::Answer(self.answer(
                    ctx,
                    Reason::SettlementPending,
                    format!("broadcast outcome unknown ({msg}); retry /settle"),
                    transaction,
                )))
            }
            Sent::Refused(msg) | Sent::NonceUsed(msg) => {
                // In no mempool; the recorded bytes are re-sent by retries and the reconciler
                // until the transaction lands or can no longer land (or is replaced).
                tracing::warn!(%transaction, error = %msg, "broadcast refused");
                self.await_outcome(ctx, raw, broadcast).await
            }
        }
    }

    /// With the signer held: renew the lease (waiting for the signer may have taken a while,
    /// and ownership is checked), sign, and record `broadcast` before anything is sent.
    #[allow(clippy::too_many_arguments)]
    async fn sign_and_record(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
        raw: String,
        payment: &F::Payment,
        facts: crate::record::PaymentFacts,
        guard: &crate::family::SignerGuard,
    ) -> Result<Recorded, SettleError> {
        // The swap compares the stored bytes: it fails if anyone took the reservation over.
        let renewal = self.reservation(facts.clone());
        let Some(raw) = self.store.swap(&ctx.id.key, &raw, &renewal).await? else {
            return Ok(Recorded::Not(Step::Reread));
        };
        let sent = match self.family.sign(guard, &ctx.id.key, req, payment).await {
            Ok(Signed::Tx(sent)) => sent,
            Ok(Signed::Refused(inv)) => {
                self.give_up(ctx, &raw).await;
                return Ok(Recorded::Not(Step::Answer(self.refusal(ctx, inv))));
            }
            Err(e) => {
                self.give_up(ctx, &raw).await;
                return Err(e);
            }
        };
        let sent_ms = unix_ms();
        let broadcast = Broadcast {
            payment: facts,
            sent,
            replaced: vec![],
            sent_at: now,
            last_sent_ms: sent_ms,
            first_sent_ms: sent_ms,
        };
        // Recorded before it is sent; not recorded → not sent. A store error leaves it unknown
        // whether it was recorded: if it was, the reconciler sends the recorded bytes; if not,
        // the lease lapses and the next request takes over.
        let record = SettlementRecord::Broadcast(broadcast.clone());
        Ok(match self.store.swap(&ctx.id.key, &raw, &record).await? {
            Some(raw) => Recorded::Broadcast(raw, broadcast),
            None => {
                // Taken over first: this transaction is never recorded, so never sent.
                self.family.discard(&broadcast.sent).await;
                Recorded::Not(Step::Reread)
            }
        })
    }

    /// Deletes an owned reservation refused before signing (a failure is logged: the lease
    /// lapses by itself).
    async fn give_up(&self, ctx: &Ctx<'_>, raw: &str) {
        if let Err(e) = self.store.remove(&ctx.id.key, raw, &ctx.id.claims).await {
            tracing::warn!(key = %ctx.id.key, error = %e, "could not release reservation; its lease lapses");
        }
    }

    /// Polls the chain for a broadcast record until it resolves or the receipt timeout.
    async fn await_outcome(
        &self,
        ctx: &Ctx<'_>,
        raw: String,
        broadcast: Broadcast,
    ) -> Result<Step, SettleError> {
        let deadline = tokio::time::Instant::now() + self.timing.receipt_timeout;
        let transaction = broadcast.sent.transaction().to_string();
        let mut broadcast = broadcast;
        let mut raw = raw;
        loop {
            match self.advance(&ctx.id.key, &raw, &broadcast, true).await {
                Ok(Advance::Resolved(record)) => {
                    return Ok(Step::Answer(self.answer_resolved(ctx, record)));
                }
                Ok(Advance::Changed) => return Ok(Step::Reread),
                Ok(Advance::Unchanged) => {}
                Ok(Advance::Resent(next, next_raw)) => {
                    broadcast = next;
                    raw = next_raw;
                }
                Err(e) => tracing::warn!(%transaction, error = %e, "outcome poll failed"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Step::Answer(self.answer(
                    ctx,
                    Reason::SettlementPending,
                    "not confirmed yet; retry /settle".into(),
                    transaction,
                )));
            }
            self.family.wait_for_news(self.timing.poll_interval).await;
        }
    }

    /// One look at a broadcast record: resolve it (to `delivered` when `for_request`, else
    /// `confirmed`), re-send it when stale, or leave it.
    pub(crate) async fn advance(
        &self,
        key: &str,
        raw: &str,
        broadcast: &Broadcast,
        for_request: bool,
    ) -> Result<Advance, SettleError> {
        let now = unix_now();
        let since_sent = unix_ms().saturating_sub(broadcast.last_sent_ms);
        let act_after = self.timing.resend_after.min(self.timing.replace_after);
        // Also once validBefore has passed: whether the node still holds it decides `expired`.
        let probe =
            since_sent >= act_after.as_millis() as u64 || now > broadcast.payment.valid_until;
        let next = match self.family.lookup(broadcast, probe).await? {
            Lookup::Landed { transaction, cost } => {
                let settled = Settled {
                    payment: broadcast.payment.clone(),
                    transaction,
                    cost,
                    settled_at: now,
                };
                if for_request {
                    SettlementRecord::Delivered(settled)
                } else {
                    SettlementRecord::Confirmed(settled)
                }
            }
            Lookup::Failed {
                transaction,
                reason,
                message,
                cost,
            } => SettlementRecord::Failed(Closed {
                payment: broadcast.payment.clone(),
                transaction,
                reason: reason.as_str().into(),
                message,
                cost,
                closed_at: now,
            }),
            Lookup::Expired { message } => SettlementRecord::Expired(Closed {
                payment: broadcast.payment.clone(),
                transaction: broadcast.sent.transaction().into(),
                reason: self.family.transaction_failed().as_str().into(),
                message,
                cost: Cost::default(),
                closed_at: now,
            }),
            Lookup::NotYet { known } => {
                if known && since_sent >= self.timing.replace_after.as_millis() as u64 {
                    return self.replace(key, raw, broadcast).await;
                }
                if since_sent < self.timing.resend_after.as_millis() as u64 {
                    // Sent recently (known or not): give it a moment.
                    return Ok(Advance::Unchanged);
                }
                let mut next = broadcast.clone();
                next.last_sent_ms = unix_ms();
                let Some(next_raw) = self
                    .store
                    .swap(key, raw, &SettlementRecord::Broadcast(next.clone()))
                    .await?
                else {
                    return Ok(Advance::Changed);
                };
                let tx = next.sent.transaction().to_string();
                match self.family.send(&next.sent).await {
                    Sent::Accepted => {
                        tracing::info!(transaction = %tx, known, "re-sent the recorded transaction");
                        self.events.resend();
                    }
                    Sent::Unknown(e) => {
                        tracing::warn!(transaction = %tx, error = %e, "re-send failed")
                    }
                    Sent::Refused(e) => {
                        // The node will not take it as it is (e.g. priced below the base fee):
                        // replace it (EVM), or wait for the blockhash to decide (Solana).
                        tracing::warn!(transaction = %tx, error = %e, "re-send refused");
                        if since_sent >= self.timing.replace_after.as_millis() as u64 {
                            return self.replace(key, &next_raw, &next).await;
                        }
                    }
                    Sent::NonceUsed(e) => {
                        // It can never be mined as signed: replace it now (a new nonce).
                        tracing::warn!(transaction = %tx, error = %e, "re-send refused: nonce used");
                        return self.replace(key, &next_raw, &next).await;
                    }
                }
                return Ok(Advance::Resent(next, next_raw));
            }
        };
        // The first (and only) move into a final state: its webhook event goes with it.
        let event = self.notify.event(key, &next);
        match self
            .store
            .swap_emitting(key, raw, &next, event.as_ref())
            .await?
        {
            Some(_) => {
                if event.is_some() {
                    self.notify.written();
                }
                if let SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) = &next {
                    self.family.observe_landed(&s.cost);
                }
                self.events.resolved(next.state_name());
                Ok(Advance::Resolved(next))
            }
            None => Ok(Advance::Changed),
        }
    }

    /// Replaces a stuck broadcast transaction (same nonce, higher fees): the new one is
    /// recorded, with the ones it replaces (any of them may still land), before it is sent.
    async fn replace(
        &self,
        key: &str,
        raw: &str,
        broadcast: &Broadcast,
    ) -> Result<Advance, SettleError> {
        if broadcast.replaced.len() >= MAX_REPLACEMENTS {
            return Ok(Advance::Resent(broadcast.clone(), raw.to_string()));
        }
        let Some(sent) = self.family.replacement(key, broadcast).await? else {
            // No replacement in this family: the record stays as it is now.
            return Ok(Advance::Resent(broadcast.clone(), raw.to_string()));
        };
        let mut next = broadcast.clone();
        next.replaced.push(std::mem::replace(&mut next.sent, sent));
        next.last_sent_ms = unix_ms();
        let Some(next_raw) = self
            .store
            .swap(key, raw, &SettlementRecord::Broadcast(next.clone()))
            .await?
        else {
            return Ok(Advance::Changed);
        };
        let (old, new) = (broadcast.sent.transaction(), next.sent.transaction());
        match self.family.send(&next.sent).await {
            Sent::Accepted => {
                tracing::warn!(replaced = %old, by = %new, "replaced a stuck transaction with higher fees");
                self.events.replacement();
            }
            Sent::Unknown(e) | Sent::Refused(e) | Sent::NonceUsed(e) => {
                tracing::warn!(replaced = %old, by = %new, error = %e, "replacement not accepted")
            }
        }
        Ok(Advance::Resent(next, next_raw))
    }

    /// `confirmed → delivered`: the winner answers success, the loser re-reads.
    async fn deliver(
        &self,
        ctx: &Ctx<'_>,
        raw: &str,
        settled: Settled,
    ) -> Result<Step, SettleError> {
        let delivered = SettlementRecord::Delivered(settled);
        match self.store.swap(&ctx.id.key, raw, &delivered).await? {
            Some(_) => Ok(Step::Answer(self.answer_resolved(ctx, delivered))),
            None => Ok(Step::Reread),
        }
    }

    /// The answer for a record this request just resolved.
    fn answer_resolved(&self, ctx: &Ctx<'_>, record: SettlementRecord) -> SettleResponse {
        match record {
            SettlementRecord::Delivered(s) => SettleResponse::settled(
                s.transaction,
                ctx.network.to_string(),
                s.payment.payer,
                s.payment.amount,
            ),
            SettlementRecord::Failed(c) | SettlementRecord::Expired(c) => self.closed(ctx, &c),
            other => self.answer(
                ctx,
                Reason::SettlementPending,
                "landed; retry /settle for the receipt".into(),
                other.transaction().unwrap_or_default().to_string(),
            ),
        }
    }

    fn closed(&self, ctx: &Ctx<'_>, closed: &Closed) -> SettleResponse {
        SettlementRecord::closed_response(closed, ctx.network, |r| {
            self.family.reason_for(r, ctx.version)
        })
    }

    fn refusal(&self, ctx: &Ctx<'_>, inv: Invalid) -> SettleResponse {
        SettleResponse::failed(
            inv.reason,
            inv.message,
            String::new(),
            ctx.network.to_string(),
            inv.payer,
        )
    }

    fn answer(
        &self,
        ctx: &Ctx<'_>,
        reason: Reason,
        message: String,
        transaction: String,
    ) -> SettleResponse {
        SettleResponse::failed(
            self.family.reason_for(reason, ctx.version),
            Some(message),
            transaction,
            ctx.network.to_string(),
            ctx.payer(),
        )
    }

    /// The reconciler's look at one unresolved record: a broadcast one is resolved from the
    /// chain (to `confirmed`, `failed`, `expired`) or re-sent; a reservation whose owner's lease
    /// lapsed long ago (nothing signed) is deleted, so a later request starts clean.
    /// The chain look is bounded by `timeout`; a failed or timed-out look is logged and leaves
    /// the record open. `Ok(Some(created_at))` (Unix seconds) when the record is still
    /// unresolved afterwards; errors: the store.
    pub async fn reconcile(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, SettleError> {
        let Some(stored) = self.store.get(key).await? else {
            self.store.forget_open(key).await?;
            return Ok(None);
        };
        let created_at = stored.record.payment().created_at;
        let open = match stored.record {
            SettlementRecord::Broadcast(b) => {
                match tokio::time::timeout(timeout, self.advance(key, &stored.raw, &b, false)).await
                {
                    Ok(Ok(advance)) => !matches!(advance, Advance::Resolved(_)),
                    Ok(Err(e)) => {
                        tracing::warn!(key, error = %e, "reconcile failed");
                        true
                    }
                    Err(_) => {
                        tracing::warn!(key, ?timeout, "reconcile timed out");
                        true
                    }
                }
            }
            SettlementRecord::Reserved(r)
                if r.lease_until_ms + 2 * self.timing.lease.as_millis() as u64 <= unix_ms()
                    && self.store.remove(key, &stored.raw, &[]).await? =>
            {
                tracing::warn!(key, owner = %r.owner, "dropped an abandoned reservation (nothing was signed)");
                false
            }
            other => !other.is_resolved(),
        };
        Ok(open.then_some(created_at))
    }
}

/// [`Engine::sign_and_record`]'s outcome (short-lived, moved once: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Recorded {
    /// Signed and recorded (the stored JSON, the record): send it.
    Broadcast(String, Broadcast),
    /// Not signed or not recorded: this step instead.
    Not(Step),
}

/// [`Engine::advance`]'s outcome.
pub(crate) enum Advance {
    /// Swapped to a resolved state.
    Resolved(SettlementRecord),
    /// Re-sent; the record now (and its stored JSON).
    Resent(Broadcast, String),
    /// Nothing to do yet.
    Unchanged,
    /// Someone changed the record first.
    Changed,
}
