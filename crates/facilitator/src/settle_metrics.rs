//! Metrics of the settlement engine and reconciler (registered in [`crate::metrics::Metrics`]).

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use x402_settle::{SettleEvents, SettleObserver};

/// Settlement-engine metrics.
#[derive(Clone)]
pub struct EngineMetrics {
    /// `x402_settle_takeovers_total`: lapsed reservations taken over (their owner died or
    /// stalled before signing).
    pub takeovers: IntCounter,
    /// `x402_settle_resends_total`: recorded transactions re-sent (same bytes).
    pub resends: IntCounter,
    /// `x402_settle_replacements_total`: stuck transactions replaced with higher fees.
    pub replacements: IntCounter,
    /// `x402_settle_records_resolved_total{state}`: records that reached `confirmed`,
    /// `delivered`, `failed` or `expired`.
    pub resolved: IntCounterVec,
    /// `x402_settle_open_records`: unresolved records (`reserved`, `broadcast`) after the last
    /// reconciler pass.
    pub open_records: IntGauge,
    /// `x402_settle_oldest_open_record_age_seconds`: age of the oldest unresolved record at the
    /// last reconciler pass, seconds (0 when none).
    pub oldest_open_age: IntGauge,
    /// `x402_rpc_failovers_total{network}`: moves to another RPC endpoint after a failure or
    /// timeout.
    pub rpc_failovers: IntCounterVec,
    /// `x402_settle_nonce_gap_fills_total`: sender nonce gaps filled with a 0-value transfer
    /// (a nonce taken and never sent, e.g. by a process that died).
    pub nonce_gap_fills: IntCounter,
    /// `x402_signer_nonce_lag{network,signer}`: sender nonces handed out and not yet mined, per
    /// facilitator signer, at the last repair look (a lag that keeps growing: a stuck sender).
    pub nonce_lag: IntGaugeVec,
}

impl EngineMetrics {
    /// Creates and registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m = EngineMetrics {
            takeovers: IntCounter::new(
                "x402_settle_takeovers_total",
                "Lapsed settlement reservations taken over",
            )
            .expect("valid metric"),
            resends: IntCounter::new(
                "x402_settle_resends_total",
                "Recorded settlement transactions re-sent",
            )
            .expect("valid metric"),
            replacements: IntCounter::new(
                "x402_settle_replacements_total",
                "Stuck settlement transactions replaced with higher fees",
            )
            .expect("valid metric"),
            resolved: IntCounterVec::new(
                Opts::new(
                    "x402_settle_records_resolved_total",
                    "Settlement records resolved, by state",
                ),
                &["state"],
            )
            .expect("valid metric"),
            open_records: IntGauge::new(
                "x402_settle_open_records",
                "Unresolved settlement records at the last reconciler pass",
            )
            .expect("valid metric"),
            oldest_open_age: IntGauge::new(
                "x402_settle_oldest_open_record_age_seconds",
                "Age of the oldest unresolved settlement record, seconds",
            )
            .expect("valid metric"),
            rpc_failovers: IntCounterVec::new(
                Opts::new(
                    "x402_rpc_failovers_total",
                    "Moves to another RPC endpoint after a failure or timeout",
                ),
                &["network"],
            )
            .expect("valid metric"),
            nonce_gap_fills: IntCounter::new(
                "x402_settle_nonce_gap_fills_total",
                "Sender nonce gaps filled with a 0-value transfer",
            )
            .expect("valid metric"),
            nonce_lag: IntGaugeVec::new(
                Opts::new(
                    "x402_signer_nonce_lag",
                    "Sender nonces handed out and not yet mined, per signer",
                ),
                &["network", "signer"],
            )
            .expect("valid metric"),
        };
        registry
            .register(Box::new(m.nonce_gap_fills.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.nonce_lag.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.rpc_failovers.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.takeovers.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.resends.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.replacements.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.resolved.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.open_records.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(m.oldest_open_age.clone()))
            .expect("unique metric");
        m
    }

    /// The engine's event sink.
    pub fn events(&self) -> SettleEvents {
        SettleEvents::new(Arc::new(self.clone()))
    }
}

impl SettleObserver for EngineMetrics {
    fn takeover(&self) {
        self.takeovers.inc();
    }
    fn resend(&self) {
        self.resends.inc();
    }
    fn replacement(&self) {
        self.replacements.inc();
    }
    fn nonce_gap_filled(&self) {
        self.nonce_gap_fills.inc();
    }
    fn resolved(&self, state: &'static str) {
        self.resolved.with_label_values(&[state]).inc();
    }
    fn open_records(&self, count: usize, oldest_age_seconds: u64) {
        self.open_records.set(count as i64);
        self.oldest_open_age.set(oldest_age_seconds as i64);
    }
}
