//! Settlement webhooks: every final state (`settlement.settled`, `settlement.failed`,
//! `settlement.expired`) of a payment settled through an API key with a `webhook_url` is POSTed
//! there, signed the Standard Webhooks way ([`signing`]).
//!
//! The settlement engine writes the event into the replay store's outbox in the same atomic
//! step as the state ([`x402_settle::outbox`]), so a crash loses none. A [`Worker`] in every
//! replica claims due events with a lease (two replicas never send one event at the same
//! time), POSTs them ([`delivery`]) and completes them on a 2xx answer; otherwise it retries
//! with exponential backoff (`[webhooks]` `initial_backoff_ms` doubling up to
//! `max_backoff_ms`) until the event is `give_up_after_seconds` old (24 h), then dead-letters
//! it (metric `x402_webhook_deliveries_total{outcome="dead_lettered"}` and an ERROR log).
//! Delivery is at least once: receivers deduplicate on `webhook-id`. A Redis failover alone
//! does not repeat an event when `min_replicas_acked` > 0 (claims and completions are
//! acknowledged by the replicas, and a completion is repeated within the claim's lease, see
//! [`x402_settle::replay::RedisStore`]'s outbox); a replica that dies between a delivery and
//! its completion, or a receiver that answers after the timeout, still can.

pub mod delivery;
pub mod metrics;
pub mod signing;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use x402_settle::outbox::Notify;
use x402_settle::replay::Outbox;

use crate::config::ValidConfig;
use crate::config::webhooks::WebhooksConfig;
use metrics::WebhookMetrics;

/// Where one API key's events go.
pub struct Endpoint {
    /// The receiver.
    pub url: reqwest::Url,
    /// HMAC key (the decoded secret).
    pub secret: Vec<u8>,
}

/// Delivery settings (from `[webhooks]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Wait before the second attempt (doubling after each failure).
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Age at which an undelivered event is dead-lettered.
    pub give_up_after: Duration,
    /// Pause of an idle worker.
    pub poll_interval: Duration,
    /// Most events claimed at once.
    pub batch: usize,
}

impl Settings {
    /// From a validated `[webhooks]`.
    pub fn from_config(c: &WebhooksConfig) -> Self {
        Settings {
            timeout: Duration::from_millis(c.timeout_ms),
            initial_backoff: Duration::from_millis(c.initial_backoff_ms),
            max_backoff: Duration::from_millis(c.max_backoff_ms),
            give_up_after: Duration::from_secs(c.give_up_after_seconds),
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            batch: c.batch,
        }
    }

    /// How long a claim holds its events: the answer's timeout plus room for the outbox
    /// update.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(10)
    }
}

/// Each API key's webhook, by key name, from a validated configuration.
pub fn endpoints(config: &ValidConfig) -> HashMap<String, Endpoint> {
    config
        .webhook_targets()
        .iter()
        .map(|t| {
            let endpoint = Endpoint {
                url: t.url.clone(),
                secret: t.secret.clone(),
            };
            (t.key.clone(), endpoint)
        })
        .collect()
}

/// Which keys the settlement engine writes events for; each written event wakes `wake` (the
/// local [`Worker`]).
pub fn notify(endpoints: &HashMap<String, Endpoint>, wake: Arc<tokio::sync::Notify>) -> Notify {
    Notify::for_keys(endpoints.keys().cloned()).on_written(Arc::new(move || wake.notify_one()))
}

/// The delivery loop of this process; stops when dropped.
pub struct Worker {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Worker {
    /// Spawns the loop: claim due events, deliver them concurrently, refresh the outbox
    /// gauges, repeat; when none is due, wait `poll_interval` or until `wake` is notified (an
    /// event written by this process). Runs even without endpoints (events
    /// of a key whose webhook was removed are retried until dead-lettered).
    pub fn spawn(
        outbox: Arc<dyn Outbox>,
        endpoints: HashMap<String, Endpoint>,
        settings: Settings,
        metrics: WebhookMetrics,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let handle = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("x402-facilitator/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default();
            let instance = x402_settle::instance_id();
            let claims = AtomicU64::new(0);
            loop {
                let claim = format!("{instance}:{}", claims.fetch_add(1, Ordering::Relaxed));
                let claimed = outbox.claim(settings.batch, settings.lease(), &claim).await;
                let mut busy = false;
                match claimed {
                    Ok(events) if !events.is_empty() => {
                        busy = true;
                        let deliveries = events.into_iter().map(|event| {
                            let endpoint = endpoints.get(&event.event.key);
                            delivery::deliver(
                                &*outbox, &http, endpoint, event, &claim, &settings, &metrics,
                            )
                        });
                        futures::future::join_all(deliveries).await;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "webhook outbox unavailable"),
                }
                if let Ok(depth) = outbox.depth().await {
                    metrics
                        .outbox
                        .with_label_values(&["pending"])
                        .set(depth.pending as i64);
                    metrics
                        .outbox
                        .with_label_values(&["dead"])
                        .set(depth.dead as i64);
                }
                if busy {
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(settings.poll_interval) => {}
                    _ = wake.notified() => {}
                }
            }
        });
        Worker { handle }
    }
}
