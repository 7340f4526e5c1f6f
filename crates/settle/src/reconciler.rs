//! The reconciler: a background task in every replica, one at a time through a lease in the
//! store, that walks the unresolved records (`{prefix}:settlements:open`) at start and every
//! interval, and drives each with its network's engine ([`Engine::reconcile`]): broadcast
//! records are resolved from the chain (`confirmed`, `failed`, `expired`) or re-sent; abandoned
//! reservations (nothing signed) are dropped. It needs no client retry to finish a payment.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::engine::Engine;
use crate::family::ChainFamily;
use crate::replay::ReplayStore;
use crate::replay::keys::reconciler_lock_key;
use crate::{SettleError, SettleEvents};

/// Most records looked at in one pass.
pub const PASS_LIMIT: usize = 500;

/// One network's engine as the reconciler sees it.
#[async_trait]
pub trait Reconcile: Send + Sync {
    /// Whether `key` is one of this engine's replay keys.
    fn owns(&self, key: &str) -> bool;
    /// One look at the record under `key`.
    async fn reconcile(&self, key: &str) -> Result<(), SettleError>;
    /// Creation time (Unix seconds) of the record under `key`, if any.
    async fn created_at(&self, key: &str) -> Option<u64>;
}

#[async_trait]
impl<F: ChainFamily> Reconcile for Engine<F> {
    fn owns(&self, key: &str) -> bool {
        key.starts_with(&self.family().key_space())
    }

    async fn reconcile(&self, key: &str) -> Result<(), SettleError> {
        Engine::reconcile(self, key).await
    }

    async fn created_at(&self, key: &str) -> Option<u64> {
        let stored = self.store().get(key).await.ok()??;
        Some(stored.record.payment().created_at)
    }
}

/// Runs passes until dropped (the task is aborted with its handle).
pub struct Reconciler {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Reconciler {
    /// Spawns the task: a pass now, then every `interval`; each look at a record is bounded by
    /// `step_timeout`.
    pub fn spawn(
        store: Arc<dyn ReplayStore>,
        prefix: &str,
        engines: Vec<Arc<dyn Reconcile>>,
        interval: Duration,
        step_timeout: Duration,
        events: SettleEvents,
    ) -> Self {
        let lock = reconciler_lock_key(prefix);
        let holder = crate::instance_id();
        let handle = tokio::spawn(async move {
            loop {
                if let Err(e) = pass(
                    &*store,
                    &lock,
                    &holder,
                    &engines,
                    interval,
                    step_timeout,
                    &events,
                )
                .await
                {
                    tracing::warn!(error = %e, "reconciler pass failed");
                }
                tokio::time::sleep(interval).await;
            }
        });
        Reconciler { handle }
    }
}

/// One pass, if this replica holds the reconciler lease.
pub async fn pass(
    store: &dyn ReplayStore,
    lock: &str,
    holder: &str,
    engines: &[Arc<dyn Reconcile>],
    interval: Duration,
    step_timeout: Duration,
    events: &SettleEvents,
) -> Result<(), SettleError> {
    let lease = (interval * 3).max(step_timeout * 2);
    if !store.try_lease(lock, holder, lease).await? {
        return Ok(());
    }
    let keys = store.open_keys(PASS_LIMIT).await;
    let result = async {
        let keys = keys?;
        let mut oldest = None::<u64>;
        for key in &keys {
            let Some(engine) = engines.iter().find(|e| e.owns(key)) else {
                continue;
            };
            match tokio::time::timeout(step_timeout, engine.reconcile(key)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(key, error = %e, "reconcile failed"),
                Err(_) => tracing::warn!(key, "reconcile timed out"),
            }
            if let Some(at) = engine.created_at(key).await {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        let remaining = store.open_keys(PASS_LIMIT).await?.len();
        let age = oldest
            .map(|at| crate::clock::unix_now().saturating_sub(at))
            .unwrap_or(0);
        events.open_records(remaining, if remaining == 0 { 0 } else { age });
        Ok::<_, SettleError>(())
    }
    .await;
    store.end_lease(lock, holder).await?;
    result
}
