//! One delivery attempt of a claimed event, and what follows from its outcome: completed,
//! rescheduled with exponential backoff, or dead-lettered once the event is older than
//! `give_up_after_seconds`.

use std::time::{Duration, Instant};

use x402_settle::clock::{unix_ms, unix_now};
use x402_settle::replay::{ClaimedEvent, Outbox};

use super::metrics::WebhookMetrics;
use super::signing::signature;
use super::{Endpoint, Settings};

/// `url` for logs: scheme, host, port and path, without user info, query or fragment (a
/// receiver's URL may carry a token in either).
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// No 2xx answer (status or transport error): retry later. The text never holds the
    /// receiver's URL (it goes to logs and to the outbox in Redis).
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
            // reqwest's text names the URL ("error sending request for url (…)"): drop it,
            // and the source chain with it (hyper's causes do not carry the URL).
            transport_error(e)
        }),
    }
}

/// A transport error's text without the request URL: the error and its causes.
fn transport_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

/// Pause between two tries of a completion that failed.
const COMPLETE_RETRY: Duration = Duration::from_millis(200);

/// Marks a delivered event complete, trying again every [`COMPLETE_RETRY`] while the outbox
/// refuses (Redis down, failing over, or the replicas not acknowledging) until `lease_end`:
/// the claim's lease. A completion the outbox does not hold by then leaves the event due
/// again, and it is delivered once more (at least once); one that lands within the lease,
/// on the primary promoted by a failover included, delivers it once.
pub async fn complete_within(
    outbox: &dyn Outbox,
    id: &str,
    lease_end: Instant,
) -> Result<(), x402_settle::replay::StoreError> {
    loop {
        match outbox.complete(id).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() + COMPLETE_RETRY >= lease_end => return Err(e),
            Err(e) => {
                tracing::debug!(event = %id, error = %e, "webhook completion not recorded yet; retrying");
                tokio::time::sleep(COMPLETE_RETRY).await;
            }
        }
    }
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
    // The claim was made just before (by the worker, this process): its lease ends about a
    // lease from now; a second's margin for the claim's own round trips.
    let lease_end = started + settings.lease().saturating_sub(Duration::from_secs(1));
    let outcome = match endpoint {
        Some(endpoint) => attempt(http, endpoint, &claimed, settings.timeout).await,
        None => Outcome::Failed(format!("API key {:?} has no webhook now", event.key)),
    };
    metrics
        .attempt_duration
        .observe(started.elapsed().as_secs_f64());
    let age_ms = unix_ms().saturating_sub(event.created_ms);
    let url = endpoint.map(|e| redacted_url(&e.url)).unwrap_or_default();
    let result = match outcome {
        Outcome::Delivered => {
            metrics.deliveries.with_label_values(&["delivered"]).inc();
            metrics.latency.observe(age_ms as f64 / 1000.0);
            tracing::info!(event = %event.id, kind = %event.kind, key = %event.key, %url, attempts = claimed.attempts, "webhook delivered");
            complete_within(outbox, &event.id, lease_end).await
        }
        Outcome::Failed(error) if age_ms >= settings.give_up_after.as_millis() as u64 => {
            metrics
                .deliveries
                .with_label_values(&["dead_lettered"])
                .inc();
            tracing::error!(event = %event.id, kind = %event.kind, key = %event.key, %url, attempts = claimed.attempts, %error, "webhook dead-lettered: not delivered within its retry period");
            outbox.dead_letter(&event.id, claim, &error).await
        }
        Outcome::Failed(error) => {
            metrics.deliveries.with_label_values(&["failed"]).inc();
            let wait = backoff(settings, claimed.attempts);
            tracing::warn!(event = %event.id, kind = %event.kind, key = %event.key, %url, attempts = claimed.attempts, %error, retry_in_ms = wait.as_millis() as u64, "webhook not delivered; will retry");
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
    fn urls_are_logged_without_credentials() {
        let url = reqwest::Url::parse("https://user:pw@shop.example:8443/hooks/x?token=s3cret#f")
            .unwrap();
        assert_eq!(redacted_url(&url), "https://shop.example:8443/hooks/x");
    }

    /// A receiver that accepts the connection and closes it without answering: reqwest's
    /// error then names the URL, whose query holds a token.
    #[tokio::test]
    async fn a_transport_error_holds_no_url() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                drop(socket);
            }
        });
        let endpoint = Endpoint {
            url: reqwest::Url::parse(&format!(
                "http://user:pw@127.0.0.1:{port}/hook?token=s3cret"
            ))
            .unwrap(),
            secret: vec![7; 32],
        };
        let claimed = ClaimedEvent {
            event: x402_settle::replay::OutboxEvent {
                id: "evt_1".into(),
                key: "shop".into(),
                kind: "settlement.settled".into(),
                body: "{}".into(),
                created_ms: 0,
            },
            attempts: 1,
        };
        let outcome = attempt(
            &reqwest::Client::new(),
            &endpoint,
            &claimed,
            Duration::from_secs(5),
        )
        .await;
        let Outcome::Failed(error) = outcome else {
            panic!("a closed connection was delivered");
        };
        assert!(!error.contains("s3cret"), "{error}");
        assert!(!error.contains("token"), "{error}");
        assert!(!error.contains("pw@"), "{error}");
        assert!(!error.contains("127.0.0.1"), "{error}");
        server.abort();
    }

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
