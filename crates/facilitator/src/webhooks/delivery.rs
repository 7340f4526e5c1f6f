//! One delivery attempt of a claimed event, and what follows from its outcome: completed,
//! rescheduled with exponential backoff, or dead-lettered once the event is older than
//! `give_up_after_seconds`.

use std::time::{Duration, Instant};

use x402_settle::clock::{unix_ms, unix_now};
use x402_settle::replay::{ClaimedEvent, Outbox};

use super::metrics::WebhookMetrics;
use super::signing::signature;
use super::{Endpoint, Settings};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// No 2xx answer (status or transport error): retry later.
    Failed(String),
}

/// POSTs `event` to `endpoint`, signed at the current time.
pub async fn attempt(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    claimed: &ClaimedEvent,
    timeout: Duration,
) -> Outcome {
    let event = &claimed.event;
    let timestamp = unix_now();
    let sig = signature(&endpoint.secret, &event.id, timestamp, &event.body);
    let sent = http
        .post(endpoint.url.clone())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sig)
        .body(event.body.clone())
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => Outcome::Delivered,
        Ok(resp) => Outcome::Failed(format!("HTTP {}", resp.status().as_u16())),
        Err(e) => Outcome::Failed(if e.is_timeout() {
            format!("no answer within {timeout:?}")
        } else if e.is_connect() {
            "connection refused or unreachable".to_string()
        } else {
            e.to_string()
        }),
    }
}

/// Wait before the attempt after `attempts` failed ones: `initial × 2^(attempts-1)`, at most
/// `max`.
pub fn backoff(settings: &Settings, attempts: u32) -> Duration {
    let factor = 1u64 << attempts.saturating_sub(1).min(30);
    settings
        .initial_backoff
        .saturating_mul(factor as u32)
        .min(settings.max_backoff)
}

/// Delivers one claimed event and records the outcome in the outbox and the metrics.
pub async fn deliver(
    outbox: &dyn Outbox,
    http: &reqwest::Client,
    endpoint: Option<&Endpoint>,
    claimed: ClaimedEvent,
    claim: &str,
    settings: &Settings,
    metrics: &WebhookMetrics,
) {
    let event = &claimed.event;
    let started = Instant::now();
    let outcome = match endpoint {
        Some(endpoint) => attempt(http, endpoint, &claimed, settings.timeout).await,
        None => Outcome::Failed(format!("API key {:?} has no webhook now", event.key)),
    };
    metrics
        .attempt_duration
        .observe(started.elapsed().as_secs_f64());
    let age_ms = unix_ms().saturating_sub(event.created_ms);
    let result = match outcome {
        Outcome::Delivered => {
            metrics.deliveries.with_label_values(&["delivered"]).inc();
            metrics.latency.observe(age_ms as f64 / 1000.0);
            tracing::info!(event = %event.id, kind = %event.kind, key = %event.key, attempts = claimed.attempts, "webhook delivered");
            outbox.complete(&event.id).await
        }
        Outcome::Failed(error) if age_ms >= settings.give_up_after.as_millis() as u64 => {
            metrics
                .deliveries
                .with_label_values(&["dead_lettered"])
                .inc();
            tracing::error!(event = %event.id, kind = %event.kind, key = %event.key, attempts = claimed.attempts, %error, "webhook dead-lettered: not delivered within its retry period");
            outbox.dead_letter(&event.id, claim, &error).await
        }
        Outcome::Failed(error) => {
            metrics.deliveries.with_label_values(&["failed"]).inc();
            let wait = backoff(settings, claimed.attempts);
            tracing::warn!(event = %event.id, kind = %event.kind, key = %event.key, attempts = claimed.attempts, %error, retry_in_ms = wait.as_millis() as u64, "webhook not delivered; will retry");
            outbox
                .retry(
                    &event.id,
                    claim,
                    unix_ms() + wait.as_millis() as u64,
                    &error,
                )
                .await
        }
    };
    if let Err(e) = result {
        // The lease lapses and the event is due again: at worst it is sent once more.
        tracing::warn!(event = %event.id, error = %e, "webhook outbox update failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = Settings {
            timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            give_up_after: Duration::from_secs(86_400),
            poll_interval: Duration::from_secs(1),
            batch: 1,
        };
        assert_eq!(backoff(&settings, 1), Duration::from_secs(5));
        assert_eq!(backoff(&settings, 2), Duration::from_secs(10));
        assert_eq!(backoff(&settings, 4), Duration::from_secs(40));
        assert_eq!(backoff(&settings, 5), Duration::from_secs(60));
        assert_eq!(backoff(&settings, 1_000), Duration::from_secs(60));
    }
}
