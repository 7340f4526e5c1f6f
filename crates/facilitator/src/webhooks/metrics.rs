//! Metrics of the webhook delivery (registered in [`crate::metrics::Metrics`]).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Webhook delivery metrics.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// `x402_webhook_deliveries_total{outcome}`: attempts by outcome, `delivered` (2xx),
    /// `failed` (retried later) or `dead_lettered` (given up after the retry period).
    pub deliveries: IntCounterVec,
    /// `x402_webhook_outbox_events{queue}`: events `pending` (not delivered yet) and `dead`
    /// (dead-lettered, kept 7 days), as a worker last counted them.
    pub outbox: IntGaugeVec,
    /// `x402_webhook_delivery_latency_seconds`: from the final state (the event written) to
    /// its delivery, seconds; retries included.
    pub latency: Histogram,
    /// `x402_webhook_attempt_duration_seconds`: one POST to a receiver, seconds.
    pub attempt_duration: Histogram,
}

impl WebhookMetrics {
    /// Creates and registers the metrics in `registry`, with zero-valued series for every
    /// outcome and queue (so alerts see them before the first event).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = WebhookMetrics {
            deliveries: IntCounterVec::new(
                Opts::new(
                    "x402_webhook_deliveries_total",
                    "Webhook delivery attempts by outcome (delivered, failed, dead_lettered)",
                ),
                &["outcome"],
            )?,
            outbox: IntGaugeVec::new(
                Opts::new(
                    "x402_webhook_outbox_events",
                    "Webhook events in the outbox by queue (pending, dead)",
                ),
                &["queue"],
            )?,
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "x402_webhook_delivery_latency_seconds",
                    "Time from a settlement's final state to the delivery of its webhook, seconds",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0, 86400.0,
                ]),
            )?,
            attempt_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "x402_webhook_attempt_duration_seconds",
                    "Duration of one webhook POST, seconds",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
        };
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.outbox.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.attempt_duration.clone()))?;
        for outcome in ["delivered", "failed", "dead_lettered"] {
            m.deliveries.with_label_values(&[outcome]);
        }
        for queue in ["pending", "dead"] {
            m.outbox.with_label_values(&[queue]);
        }
        Ok(m)
    }
}
