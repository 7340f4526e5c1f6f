//! The `/settle` request path: verify, create `reserved` (owner, lease), take a signer, sign,
//! swap `reserved → broadcast` (the signed bytes are recorded before they are sent), send, and
//! wait for the outcome; a record that exists is answered from, taken over (lease lapsed,
//! nothing signed) or driven on ([`super::advance`]).

use std::time::Duration;

use x402_proto::{PaymentRequest, Reason, SettleResponse};

use super::advance::Advance;
use super::answer::Ctx;
use super::decide::Resolver;
use super::{Caller, Engine};
use crate::SettleError;
use crate::family::{ChainFamily, Identified, Sent, Signed};
use crate::record::{Broadcast, PaymentFacts, Settled, SettlementRecord};
use crate::replay::{Created, Stored};

/// One step's outcome: an answer, or re-read the record (someone changed it first).
pub(super) enum Step {
    Answer(SettleResponse),
    Reread,
    /// A claim key of the request is held by another payment (an answer id raced: 409).
    Claimed(String),
}

/// The 409 of an answer id bound to another payment.
fn conflict(id: &super::AnswerId) -> SettleError {
    SettleError::AnswerIdConflict(format!(
        "{} was first used with another payment (another payload or other requirements); \
         use a new id for a new payment",
        id.describe()
    ))
}

/// [`Engine::sign_and_record`]'s outcome (short-lived, moved once: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Recorded {
    /// Signed and recorded (the stored JSON, the record): send it.
    Broadcast(String, Broadcast),
    /// Not signed or not recorded: this step instead.
    Not(Step),
}

/// How many times a funds refusal with debits in flight is read again after news (see
/// `funds_refusal`).
const FUNDS_RECHECKS: usize = 3;

impl<F: ChainFamily> Engine<F> {
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
        let caller = Caller {
            key,
            answer_ids: vec![],
        };
        self.settle_for(req, now, &caller).await
    }

    /// [`Engine::settle_as`] for `caller`, whose answer ids ([`super::AnswerId`]) are looked up
    /// before anything is verified: an id bound to this payment gets the payment's answer again
    /// (its success included, for the record's lifetime); an id bound to another payment is
    /// [`SettleError::AnswerIdConflict`]; a new id is bound to the payment with its reservation
    /// (same atomic step). Without ids: one success, to the request that sees it.
    pub async fn settle_for(
        &self,
        req: &PaymentRequest,
        now: u64,
        caller: &Caller<'_>,
    ) -> Result<SettleResponse, SettleError> {
        // The caller's clock starts now: a re-read (a reconciler's re-send, a takeover) does not
        // restart the wait.
        let answer_by = tokio::time::Instant::now()
            + self.timing.answer_within.min(self.timing.receipt_timeout);
        let mut id = match self.family.identify(req, now).await? {
            Identified::Payment(id) => *id,
            Identified::Refused(answer) => return Ok(*answer),
        };
        let mut answer_keys: Vec<String> = Vec::with_capacity(caller.answer_ids.len());
        for answer_id in &caller.answer_ids {
            let key = self.store.answer_key(&answer_id.scoped(caller.key));
            if let Some(holder) = self.store.claim_holder(&key).await?
                && holder != id.key
            {
                return Err(conflict(answer_id));
            }
            if !answer_keys.contains(&key) {
                id.claims.push(key.clone());
                answer_keys.push(key);
            }
        }
        let ctx = Ctx::new(
            id,
            req.network_wire(),
            req.version,
            caller.key,
            answer_keys,
            answer_by,
        );
        let conflict_of = |claim: &str| {
            caller
                .answer_ids
                .iter()
                .find(|a| self.store.answer_key(&a.scoped(caller.key)) == claim)
                .map(conflict)
        };
        let wait_until = tokio::time::Instant::now() + self.timing.reserved_wait;
        loop {
            let step = match self.store.get(&ctx.id.key).await? {
                None => self.start(&ctx, req, now).await?,
                Some(stored) if stored.record.payment().binding != ctx.id.facts.binding => {
                    if let Some(k) = ctx
                        .answer_keys
                        .iter()
                        .find(|k| stored.record.payment().answer_keys.contains(k))
                    {
                        // The id's record holds another payload or other requirements.
                        return Err(conflict_of(k).unwrap_or_else(|| {
                            SettleError::AnswerIdConflict("id used with another payment".into())
                        }));
                    }
                    self.mismatch(&ctx, req, now, &stored.record).await?
                }
                Some(stored) => {
                    self.continue_from(&ctx, req, now, stored, wait_until)
                        .await?
                }
            };
            if let Step::Claimed(claim) = &step
                && let Some(e) = conflict_of(claim)
            {
                return Err(e);
            }
            if let Step::Answer(answer) = step {
                return Ok(answer);
            }
        }
    }

    /// A payment refused with no record of it: the refusal, unless it landed already and its
    /// record was lost ([`crate::family::ChainFamily::recover_lost`]): then the record is
    /// restored and re-read (answered `duplicate_settlement`).
    async fn refused_or_recovered(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        inv: x402_verify::Invalid,
    ) -> Result<Step, SettleError> {
        let recovered = self
            .family
            .recover_lost(req, &ctx.id, &inv, self.clock.unix_now())
            .await;
        if let Some(record) = recovered {
            self.restore(ctx, record).await?;
            return Ok(Step::Reread);
        }
        Ok(Step::Answer(self.refusal(ctx, inv)))
    }

    /// Writes `record`, rebuilt from the chain for a payment that landed without one
    /// ([`crate::family::ChainFamily::recover_lost`]), then indexes its transaction (for
    /// `GET /settlements/{tx}`) and queues its webhook event the way a resolution does: a
    /// compare-and-swap of the record onto itself with the event. The event id is derived from
    /// the replay key, so a receiver that had the original event sees the same id again.
    async fn restore(
        &self,
        ctx: &Ctx<'_>,
        mut record: SettlementRecord,
    ) -> Result<(), SettleError> {
        tracing::warn!(key = %ctx.id.key, state = record.state_name(), "payment landed without a record; restored from the chain");
        let facts = record.payment_mut();
        facts.key = ctx.key.map(str::to_string);
        facts.answer_keys = ctx.answer_keys.clone();
        let ttl = Duration::from_secs(ctx.id.ttl_seconds);
        let Created::Created(raw) = self
            .store
            .create(&ctx.id.key, &record, ttl, &ctx.id.claims)
            .await?
        else {
            // Someone restored or recorded it first: theirs stands.
            return Ok(());
        };
        let event = self
            .notify
            .event(&ctx.id.key, &record, self.clock.unix_ms());
        if self
            .store
            .swap_emitting(&ctx.id.key, &raw, &record, event.as_ref())
            .await?
            .is_some()
            && event.is_some()
        {
            self.notify.written();
        }
        Ok(())
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
                return self.refused_or_recovered(ctx, req, inv).await;
            }
        };
        self.family.ready_to_settle(&payment).await?;
        // A signer first: none within the wait is a 503 with nothing reserved.
        let signer = self.family.acquire_signer(&payment).await?;
        let mut facts = ctx.id.facts.clone();
        facts.key = ctx.key.map(str::to_string);
        facts.answer_keys = ctx.answer_keys.clone();
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
                    .run_owned(ctx, req, now, raw, &payment, facts, signer)
                    .await;
            }
            other => {
                self.family.release_signer(signer).await;
                other?
            }
        };
        match created {
            Created::Created(_) | Created::Exists => Ok(Step::Reread),
            Created::Claimed { claim, .. } if ctx.answer_keys.contains(&claim) => {
                Ok(Step::Claimed(claim))
            }
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

    /// A record exists: answer from it, take it over, or drive it on.
    async fn continue_from(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
        stored: Stored,
        wait_until: tokio::time::Instant,
    ) -> Result<Step, SettleError> {
        ctx.learn_payer(&stored.record.payment().payer);
        match stored.record {
            SettlementRecord::Reserved(r) if r.lease_until_ms > self.clock.unix_ms() => {
                if tokio::time::Instant::now() >= wait_until && ctx.holds(&r.payment) {
                    // The caller's own earlier request is still at it: retry for its answer.
                    return Ok(Step::Answer(self.answer(
                        ctx,
                        Reason::SettlementPending,
                        "this payment is being settled by your earlier request with this id; retry"
                            .into(),
                        String::new(),
                    )));
                }
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
                let signer = self.family.acquire_signer(&payment).await?;
                let mine = self.reservation(r.payment.clone());
                match self.store.swap(&ctx.id.key, &stored.raw, &mine).await {
                    Ok(Some(raw)) => {
                        tracing::warn!(key = %ctx.id.key, previous_owner = %r.owner, "took over a lapsed reservation");
                        self.events.takeover();
                        self.run_owned(ctx, req, now, raw, &payment, r.payment, signer)
                            .await
                    }
                    other => {
                        self.family.release_signer(signer).await;
                        other?;
                        Ok(Step::Reread)
                    }
                }
            }
            SettlementRecord::Broadcast(b) => self.await_outcome(ctx, stored.raw, b).await,
            SettlementRecord::Confirmed(s) if ctx.may_succeed(&s.payment) => {
                self.deliver(ctx, &stored.raw, s).await
            }
            SettlementRecord::Delivered(s) if ctx.holds(&s.payment) => {
                // The caller holding the payment's id asks again: its answer again.
                Ok(Step::Answer(
                    self.answer_resolved(ctx, SettlementRecord::Delivered(s)),
                ))
            }
            SettlementRecord::Confirmed(s) => Ok(Step::Answer(self.answer(
                ctx,
                Reason::DuplicateSettlement,
                "this payment was already settled; its success goes to the request holding its id"
                    .into(),
                s.transaction,
            ))),
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
    /// verification reason, or the family's conflict reason; never success (x402-conformance
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

    /// This request owns the reservation `raw` and holds `signer`: sign, record, send (the
    /// signer is given back once sent), wait.
    #[allow(clippy::too_many_arguments)]
    async fn run_owned(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        now: u64,
        raw: String,
        payment: &F::Payment,
        facts: PaymentFacts,
        signer: F::Signer,
    ) -> Result<Step, SettleError> {
        let recorded = self
            .sign_and_record(ctx, req, now, raw, payment, facts, &signer)
            .await;
        let (raw, broadcast, outcome) = match recorded {
            Ok(Recorded::Broadcast(raw, broadcast)) => {
                let outcome = self.family.send(&broadcast.sent).await;
                self.family.release_signer(signer).await;
                (raw, broadcast, outcome)
            }
            Ok(Recorded::Not(step)) => {
                self.family.release_signer(signer).await;
                return Ok(step);
            }
            Err(e) => {
                self.family.release_signer(signer).await;
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
        facts: PaymentFacts,
        signer: &F::Signer,
    ) -> Result<Recorded, SettleError> {
        // The swap compares the stored bytes: it fails if anyone took the reservation over.
        let renewal = self.reservation(facts.clone());
        let Some(raw) = self.store.swap(&ctx.id.key, &raw, &renewal).await? else {
            return Ok(Recorded::Not(Step::Reread));
        };
        // The payer's balance must cover this payment on top of its settlements in flight
        // reserved before it ([`crate::debits`]): else refused, nothing signed.
        match self.funds_refusal(ctx, payment, &facts).await {
            Ok(None) => {}
            Ok(Some(inv)) => {
                self.give_up(ctx, &raw).await;
                return Ok(Recorded::Not(Step::Answer(self.refusal(ctx, inv))));
            }
            Err(e) => {
                self.give_up(ctx, &raw).await;
                return Err(e);
            }
        }
        let sent = match self.family.sign(signer, &ctx.id.key, req, payment).await {
            Ok(Signed::Tx(sent)) => sent,
            Ok(Signed::Nothing) => {
                // Nothing to send (`upto` charging 0): settled now, once, with no transaction.
                let settled = SettlementRecord::Delivered(Settled {
                    payment: facts,
                    transaction: String::new(),
                    cost: Default::default(),
                    settled_at: now,
                    preconfirmed: None,
                });
                return Ok(Recorded::Not(
                    match self.resolve(&ctx.id.key, &raw, settled).await? {
                        Advance::Resolved(record) => {
                            Step::Answer(self.answer_resolved(ctx, record))
                        }
                        _ => Step::Reread,
                    },
                ));
            }
            Ok(Signed::Refused(inv)) => {
                self.give_up(ctx, &raw).await;
                // EVM settlement-time verification leaves the chain checks to the signing
                // simulation: a lost record's payment is refused here.
                let step = self.refused_or_recovered(ctx, req, inv).await?;
                return Ok(Recorded::Not(step));
            }
            Err(e) => {
                self.give_up(ctx, &raw).await;
                return Err(e);
            }
        };
        let sent_ms = self.clock.unix_ms();
        let broadcast = Broadcast {
            payment: facts,
            sent,
            replaced: vec![],
            sent_at: now,
            last_sent_ms: sent_ms,
            first_sent_ms: sent_ms,
            sent_since_ms: sent_ms,
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

    /// The refusal of a payment whose payer is blocked for reverting
    /// ([`super::PayerPolicy`]), or cannot cover it on top of its in-flight debits reserved
    /// before it, if so.
    async fn funds_refusal(
        &self,
        ctx: &Ctx<'_>,
        payment: &F::Payment,
        facts: &PaymentFacts,
    ) -> Result<Option<x402_verify::Invalid>, SettleError> {
        let standing = self.store.standing(&ctx.id.key, facts).await?;
        if standing.blocked_ms > 0 && self.payers.limit > 0 {
            let reason = self
                .family
                .reason_for(self.family.blocked_payer(), ctx.version);
            tracing::info!(key = %ctx.id.key, payer = %facts.payer, blocked_ms = standing.blocked_ms, "refused before broadcast: the payer's settlements reverted too often");
            self.events.refused_before_broadcast(reason.as_str());
            return Ok(Some(x402_verify::Invalid::new(
                reason,
                format!(
                    "refused before broadcast: this payer's settlements reverted on chain {} \
                     times within {} s; retry in {} s",
                    self.payers.limit,
                    self.payers.window.as_secs(),
                    standing.blocked_ms.div_ceil(1000)
                ),
                Some(facts.payer.clone()),
            )));
        }
        let amount = facts.amount.parse::<u128>().unwrap_or(u128::MAX);
        let mut in_flight = crate::debits::total(&standing.ahead);
        let mut refusal = self.family.check_funds(payment, amount, in_flight).await?;
        // A settlement of this payer that landed in the balance just read still debits until
        // its record resolves (a poll later): counted twice, it would refuse a payer who can
        // pay. While debits are in flight, a refusal is read again after the next news, at most
        // `FUNDS_RECHECKS` times.
        for _ in 0..FUNDS_RECHECKS {
            if refusal.is_none() || in_flight == 0 {
                break;
            }
            let mark = self.family.news_mark();
            self.family
                .wait_for_news(mark, self.timing.poll_interval)
                .await;
            tokio::time::sleep(self.timing.poll_interval.min(Duration::from_millis(100))).await;
            in_flight = crate::debits::total(&self.store.standing(&ctx.id.key, facts).await?.ahead);
            refusal = self.family.check_funds(payment, amount, in_flight).await?;
        }
        let refusal = refusal.map(|inv| x402_verify::Invalid {
            reason: self.family.reason_for(inv.reason, ctx.version),
            ..inv
        });
        if let Some(inv) = &refusal {
            tracing::info!(key = %ctx.id.key, payer = %facts.payer, amount = %facts.amount, in_flight, reason = inv.reason.as_str(), "refused before broadcast: the payer's balance does not cover its settlements in flight");
            self.events.refused_before_broadcast(inv.reason.as_str());
        }
        Ok(refusal)
    }

    /// Deletes an owned reservation refused before signing (a failure is logged: the lease
    /// lapses by itself).
    async fn give_up(&self, ctx: &Ctx<'_>, raw: &str) {
        if let Err(e) = self.store.remove(&ctx.id.key, raw, &ctx.id.claims).await {
            tracing::warn!(key = %ctx.id.key, error = %e, "could not release reservation; its lease lapses");
        }
    }

    /// Polls the chain for a broadcast record until it resolves or the request's answer time
    /// ([`Ctx::answer_by`]: `answer_within`, at most `receipt_timeout`, from its start).
    async fn await_outcome(
        &self,
        ctx: &Ctx<'_>,
        raw: String,
        broadcast: Broadcast,
    ) -> Result<Step, SettleError> {
        let deadline = ctx.answer_by;
        let transaction = broadcast.sent.transaction().to_string();
        let mut broadcast = broadcast;
        let mut raw = raw;
        loop {
            let mark = self.family.news_mark();
            match self
                .advance(&ctx.id.key, &raw, &broadcast, Resolver::Request)
                .await
            {
                Ok(Advance::Resolved(record)) => {
                    // Settled by a transaction this request did not send (one sent before the
                    // payment's record was lost): its success may have gone to another request.
                    let ours = record
                        .transaction()
                        .is_none_or(|t| broadcast.transactions().any(|own| own == t));
                    if !ours && let SettlementRecord::Delivered(s) = &record {
                        return Ok(Step::Answer(self.answer(
                            ctx,
                            Reason::DuplicateSettlement,
                            "this payment was already settled by an earlier transaction".into(),
                            s.transaction.clone(),
                        )));
                    }
                    return Ok(Step::Answer(self.answer_resolved(ctx, record)));
                }
                Ok(Advance::Changed) => return Ok(Step::Reread),
                Ok(Advance::Unchanged) => {}
                Ok(Advance::Moved(next, next_raw)) => {
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
            self.family
                .wait_for_news(mark, self.timing.poll_interval)
                .await;
        }
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
}
