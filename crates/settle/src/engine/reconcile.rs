//! The reconciler's look at one open record ([`crate::reconciler`] walks them): a `broadcast`
//! record is resolved from the chain (`confirmed`, `failed`, `expired`) or re-sent/replaced, as
//! [`super::decide`] says; a `reserved` record whose owner's lease lapsed long ago (the owner
//! died before signing) is deleted, so a later request starts clean.

use std::time::Duration;

use super::Engine;
use super::advance::Advance;
use super::decide::Resolver;
use crate::SettleError;
use crate::family::ChainFamily;
use crate::record::SettlementRecord;

impl<F: ChainFamily> Engine<F> {
    /// One look at the record under `key`. The chain look is bounded by `timeout`; a failed or
    /// timed-out look is logged and leaves the record open. `Ok(Some(age_seconds))` (since the
    /// reservation, by the engine's clock) when the record is still unresolved afterwards;
    /// errors: the store.
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
                let look = self.advance(key, &stored.raw, &b, Resolver::Reconciler);
                match tokio::time::timeout(timeout, look).await {
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
                if r.lease_until_ms + 2 * self.timing.lease.as_millis() as u64
                    <= self.clock.unix_ms()
                    && self.store.remove(key, &stored.raw, &[]).await? =>
            {
                tracing::warn!(key, owner = %r.owner, "dropped an abandoned reservation (nothing was signed)");
                false
            }
            other => !other.is_resolved(),
        };
        Ok(open.then(|| self.clock.unix_now().saturating_sub(created_at)))
    }
}
