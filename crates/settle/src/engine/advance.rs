//! Carries out [`super::decide`]'s action for a `broadcast` record: the one swap into a final
//! state (with its webhook event), or the `broadcast → broadcast` self-loops: a re-send (the
//! record's `last_sent_ms` moves first, then the recorded bytes are sent) and a replacement
//! (the new transaction is recorded, with the ones it replaces, before it is sent).

use super::Engine;
use super::decide::{self, Action, Resolver};
use crate::SettleError;
use crate::family::{ChainFamily, Sent};
use crate::record::{Broadcast, Closed, SettlementRecord};

/// [`Engine::advance`]'s outcome.
pub(crate) enum Advance {
    /// Swapped to a resolved state.
    Resolved(SettlementRecord),
    /// The record changed (re-sent or replaced): the record now and its stored JSON.
    Moved(Broadcast, String),
    /// Nothing to do yet; the record is as it was.
    Unchanged,
    /// Someone changed the record first: re-read it.
    Changed,
}

/// [`Engine::replace`]'s outcome (short-lived, moved once: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Replaced {
    /// Recorded and sent: the record now and its stored JSON.
    Swapped(Broadcast, String),
    /// No replacement now (limit reached, or the family has none): nothing changed.
    NotNow,
    /// Someone changed the record first: nothing recorded, nothing sent.
    Changed,
}

impl<F: ChainFamily> Engine<F> {
    /// One look at a broadcast record (stored as `raw` under `key`): resolve it, re-send it,
    /// replace it, or leave it, as [`decide::decide`] says.
    pub(crate) async fn advance(
        &self,
        key: &str,
        raw: &str,
        broadcast: &Broadcast,
        resolver: Resolver,
    ) -> Result<Advance, SettleError> {
        let now_ms = self.clock.unix_ms();
        let probe = decide::probe(broadcast, now_ms, &self.timing);
        let outcome = self.family.lookup(broadcast, probe, now_ms / 1000).await?;
        let action = decide::decide(
            outcome,
            broadcast,
            now_ms,
            &self.timing,
            resolver,
            self.family.transaction_failed(broadcast),
        );
        match action {
            Action::Resolve(next) => self.resolve(key, raw, next).await,
            Action::Wait => Ok(Advance::Unchanged),
            Action::Resend => self.resend(key, raw, broadcast, now_ms).await,
            Action::Replace => Ok(match self.replace(key, raw, broadcast).await? {
                Replaced::Swapped(next, next_raw) => Advance::Moved(next, next_raw),
                Replaced::NotNow => Advance::Unchanged,
                Replaced::Changed => Advance::Changed,
            }),
        }
    }

    /// The first (and only) move into a final state: its webhook event goes with it.
    pub(super) async fn resolve(
        &self,
        key: &str,
        raw: &str,
        next: SettlementRecord,
    ) -> Result<Advance, SettleError> {
        let event = self.notify.event(key, &next, self.clock.unix_ms());
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
                    self.family.observe_landed(&s.payment, &s.cost);
                    if s.preconfirmed.is_some() {
                        tracing::info!(key, transaction = %s.transaction, network = %s.payment.network, "settlement answered at a flashblock pre-confirmation, before its block");
                        self.events.preconfirmed(&s.payment.network);
                    }
                }
                if let SettlementRecord::Failed(c) = &next {
                    self.count_revert(key, c).await;
                }
                self.events.resolved(next.state_name());
                Ok(Advance::Resolved(next))
            }
            None => Ok(Advance::Changed),
        }
    }

    /// A settlement that passed every check and failed on chain (recorded `failed` by this
    /// call, so counted once): metrics, and the payer's count toward a block
    /// ([`super::PayerPolicy`]). A store failure is logged: the count is best effort.
    async fn count_revert(&self, key: &str, closed: &Closed) {
        let payment = &closed.payment;
        let wei = closed.cost.gas.as_ref().map_or(0, |g| g.fee_wei);
        let lamports = closed.cost.svm_fee.as_ref().map_or(0, |f| f.fee_lamports);
        self.events
            .reverted(&payment.network, &closed.reason, wei, lamports);
        tracing::warn!(key, payer = %payment.payer, transaction = %closed.transaction, reason = %closed.reason, gas_wasted_wei = wei, fee_wasted_lamports = lamports, "settlement failed on chain after passing every check");
        let p = &self.payers;
        match self
            .store
            .payer_reverted(payment, p.limit, p.window, p.block)
            .await
        {
            Ok(true) => {
                tracing::warn!(payer = %payment.payer, network = %payment.network, limit = p.limit, window_seconds = p.window.as_secs(), block_seconds = p.block.as_secs(), "payer blocked: its settlements reverted on chain too often; its next settlements are refused before broadcast");
                self.events.payer_blocked(&payment.network);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(payer = %payment.payer, error = %e, "could not count the payer's reverted settlement")
            }
        }
    }

    /// Re-sends the recorded bytes (after moving `last_sent_ms`), then replaces the
    /// transaction when the answer says so ([`decide::replace_after_resend`]).
    async fn resend(
        &self,
        key: &str,
        raw: &str,
        broadcast: &Broadcast,
        now_ms: u64,
    ) -> Result<Advance, SettleError> {
        let mut next = broadcast.clone();
        next.last_sent_ms = now_ms;
        let Some(next_raw) = self
            .store
            .swap(key, raw, &SettlementRecord::Broadcast(next.clone()))
            .await?
        else {
            return Ok(Advance::Changed);
        };
        let tx = next.sent.transaction().to_string();
        let sent = self.family.send(&next.sent).await;
        match &sent {
            Sent::Accepted => {
                tracing::info!(transaction = %tx, "re-sent the recorded transaction");
                self.events.resend();
            }
            Sent::Unknown(e) => tracing::warn!(transaction = %tx, error = %e, "re-send failed"),
            Sent::Refused(e) => tracing::warn!(transaction = %tx, error = %e, "re-send refused"),
            Sent::NonceUsed(e) => {
                tracing::warn!(transaction = %tx, error = %e, "re-send refused: nonce used")
            }
        }
        if !decide::replace_after_resend(&sent, &next, now_ms, &self.timing) {
            return Ok(Advance::Moved(next, next_raw));
        }
        Ok(match self.replace(key, &next_raw, &next).await? {
            Replaced::Swapped(replaced, replaced_raw) => Advance::Moved(replaced, replaced_raw),
            Replaced::NotNow => Advance::Moved(next, next_raw),
            Replaced::Changed => Advance::Changed,
        })
    }

    /// Replaces a stuck broadcast transaction: the new one is recorded, with the ones it
    /// replaces (any of them may still land), before it is sent.
    async fn replace(
        &self,
        key: &str,
        raw: &str,
        broadcast: &Broadcast,
    ) -> Result<Replaced, SettleError> {
        if !decide::can_replace(broadcast) {
            return Ok(Replaced::NotNow);
        }
        let Some(sent) = self.family.replacement(key, broadcast).await? else {
            return Ok(Replaced::NotNow);
        };
        let mut next = broadcast.clone();
        next.replaced.push(std::mem::replace(&mut next.sent, sent));
        next.last_sent_ms = self.clock.unix_ms();
        next.sent_since_ms = next.last_sent_ms;
        let Some(next_raw) = self
            .store
            .swap(key, raw, &SettlementRecord::Broadcast(next.clone()))
            .await?
        else {
            // Someone changed the record first: this replacement is never recorded, so never
            // sent. (Its nonce is not given back: a same-nonce replacement shares the recorded
            // transaction's nonce; a fresh one left unused is filled by nonce repair.)
            return Ok(Replaced::Changed);
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
        Ok(Replaced::Swapped(next, next_raw))
    }
}
