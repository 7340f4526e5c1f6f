//! The reconciler: a background task in every replica, one at a time through a lease in the
//! store, that walks the unresolved records (`{prefix}:settlements:open:{prefix:s}`, every
//! shard `s`, [`crate::replay::keys`]) at start and every
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
    /// One look at the record under `key` (the chain part bounded by `timeout`); its age
    /// (seconds since the reservation) when it is still unresolved afterwards.
    async fn reconcile(&self, key: &str, timeout: Duration) -> Result<Option<u64>, SettleError>;
    /// The family's periodic repair ([`ChainFamily::maintain`]), bounded by `timeout`.
    async fn maintain(&self, timeout: Duration);
}

#[async_trait]
impl<F: ChainFamily> Reconcile for Engine<F> {
    fn owns(&self, key: &str) -> bool {
        key.starts_with(&self.family().key_space())
    }

    async fn reconcile(&self, key: &str, timeout: Duration) -> Result<Option<u64>, SettleError> {
        Engine::reconcile(self, key, timeout).await
    }

    async fn maintain(&self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.family().maintain())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "periodic repair timed out");
        }
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
    // Every replica repairs its own signers (only it holds their keys), lease or not.
    for engine in engines {
        engine.maintain(step_timeout).await;
    }
    let lease = (interval * 3).max(step_timeout * 2);
    if !store.try_lease(lock, holder, lease).await? {
        return Ok(());
    }
    let keys = store.open_keys(PASS_LIMIT).await;
    let result = async {
        let keys = keys?;
        // Ages of the records still unresolved after their look, seconds.
        let mut open = Vec::new();
        for key in &keys {
            let Some(engine) = engines.iter().find(|e| e.owns(key)) else {
                continue;
            };
            match engine.reconcile(key, step_timeout).await {
                Ok(created_at) => open.extend(created_at),
                // A corrupt record must not stop the pass for the records behind it: it is
                // logged (at ERROR, each pass) and left for an operator.
                Err(SettleError::Internal(e)) => {
                    tracing::error!(key, error = %e, "reconciler skipped a corrupt record")
                }
                Err(e) => return Err(e),
            }
        }
        let oldest_age = open.iter().max().copied().unwrap_or(0);
        events.open_records(store.open_keys(PASS_LIMIT).await?.len(), oldest_age);
        Ok::<_, SettleError>(())
    }
    .await;
    store.end_lease(lock, holder).await?;
    result
}
