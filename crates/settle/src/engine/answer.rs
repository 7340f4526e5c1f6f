//! The `/settle` answers the engine gives (x402-reference §5 "SettlementResponse"), built from
//! what the request asked ([`Ctx`]) and what the record says.

use x402_proto::{Reason, SettleResponse, X402Version};
use x402_verify::Invalid;

use super::Engine;
use crate::family::{ChainFamily, Identity};
use crate::record::{Closed, PaymentFacts, SettlementRecord};

/// What the caller asked for, kept for the answer.
pub(super) struct Ctx<'a> {
    /// The payment's identity (replay key, facts, claims).
    pub id: Identity,
    /// The network as the request spelled it (v1 name or CAIP-2).
    pub network: &'a str,
    /// The request's x402 version.
    pub version: X402Version,
    /// The API key settling the payment (recorded in a new reservation).
    pub key: Option<&'a str>,
    /// Answer index keys of the ids this request carries ([`crate::engine::AnswerId`]).
    pub answer_keys: Vec<String>,
    /// When this request answers `settlement_pending` at the latest if the outcome is not
    /// known (from its start, whatever re-reads happen meanwhile).
    pub answer_by: tokio::time::Instant,
    /// The payer once known (from verification or the record).
    payer: std::sync::Mutex<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        id: Identity,
        network: &'a str,
        version: X402Version,
        key: Option<&'a str>,
        answer_keys: Vec<String>,
        answer_by: tokio::time::Instant,
    ) -> Self {
        Ctx {
            answer_by,
            payer: std::sync::Mutex::new(id.facts.payer.clone()),
            id,
            network,
            version,
            key,
            answer_keys,
        }
    }

    /// Whether this request carries one of the ids the record of `payment` was reserved with.
    pub fn holds(&self, payment: &PaymentFacts) -> bool {
        payment
            .answer_keys
            .iter()
            .any(|k| self.answer_keys.contains(k))
    }

    /// Whether this request may be answered the success of the record of `payment`: it was
    /// reserved without ids (the old rule: the one request that sees it), or this request
    /// carries one of them (as often as it asks).
    pub fn may_succeed(&self, payment: &PaymentFacts) -> bool {
        payment.answer_keys.is_empty() || self.holds(payment)
    }

    pub fn learn_payer(&self, payer: &str) {
        if !payer.is_empty() {
            *self.payer.lock().unwrap_or_else(|p| p.into_inner()) = payer.to_string();
        }
    }

    fn payer(&self) -> Option<String> {
        let p = self.payer.lock().unwrap_or_else(|p| p.into_inner());
        (!p.is_empty()).then(|| p.clone())
    }
}

impl<F: ChainFamily> Engine<F> {
    /// The answer for a record this request just resolved: success only for `delivered`.
    pub(super) fn answer_resolved(
        &self,
        ctx: &Ctx<'_>,
        record: SettlementRecord,
    ) -> SettleResponse {
        match record {
            SettlementRecord::Delivered(s) if !ctx.may_succeed(&s.payment) => self.answer(
                ctx,
                Reason::DuplicateSettlement,
                "this payment was already settled; its success goes to the request holding its id"
                    .into(),
                s.transaction,
            ),
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

    /// The answer of a `failed` / `expired` record.
    pub(super) fn closed(&self, ctx: &Ctx<'_>, closed: &Closed) -> SettleResponse {
        SettlementRecord::closed_response(closed, ctx.network, |r| {
            self.family.reason_for(r, ctx.version)
        })
    }

    /// A verification failure: nothing was broadcast (`transaction: ""`).
    pub(super) fn refusal(&self, ctx: &Ctx<'_>, inv: Invalid) -> SettleResponse {
        SettleResponse::failed(
            inv.reason,
            inv.message,
            String::new(),
            ctx.network.to_string(),
            inv.payer,
        )
    }

    /// A failure answer with `reason` (spelled for the request's version) and `transaction`.
    pub(super) fn answer(
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
}
