//! Metrics of the settlement engine and reconciler (registered in [`crate::metrics::Metrics`]).

use std::sync::Arc;

use prometheus::{CounterVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
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
    /// `x402_settle_refused_before_broadcast_total{reason}`: verified payments refused before
    /// anything was signed (the payer's balance does not cover its settlements in flight, or
    /// the payer is blocked for reverting).
    pub refused_before_broadcast: IntCounterVec,
    /// `x402_settle_reverted_total{network,reason}`: settlements that failed on chain after
    /// passing every check (the facilitator paid their gas or fee for nothing).
    pub reverted: IntCounterVec,
    /// `x402_settle_gas_wasted_wei_total{network}`: EVM gas paid for those, wei.
    pub gas_wasted_wei: CounterVec,
    /// `x402_settle_svm_fee_wasted_lamports_total{network}`: Solana fees paid for those.
    pub svm_fee_wasted: IntCounterVec,
    /// `x402_settle_payers_blocked_total{network}`: payers whose settlements are refused for
    /// reverting too often (`[settle] revert_limit`).
    pub payers_blocked: IntCounterVec,
    /// `x402_settle_preconfirmed_total{network}`: settlements answered success at a flashblock
    /// pre-confirmation, before their block (`[[evm]] preconfirmations`).
    pub preconfirmed: IntCounterVec,
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
            refused_before_broadcast: IntCounterVec::new(
                Opts::new(
                    "x402_settle_refused_before_broadcast_total",
                    "Verified payments refused before anything was signed, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            reverted: IntCounterVec::new(
                Opts::new(
                    "x402_settle_reverted_total",
                    "Settlements that failed on chain after passing every check",
                ),
                &["network", "reason"],
            )
            .expect("valid metric"),
            gas_wasted_wei: CounterVec::new(
                Opts::new(
                    "x402_settle_gas_wasted_wei_total",
                    "EVM gas paid for settlements that failed on chain, wei",
                ),
                &["network"],
            )
            .expect("valid metric"),
            svm_fee_wasted: IntCounterVec::new(
                Opts::new(
                    "x402_settle_svm_fee_wasted_lamports_total",
                    "Solana fees paid for settlements that failed on chain, lamports",
                ),
                &["network"],
            )
            .expect("valid metric"),
            payers_blocked: IntCounterVec::new(
                Opts::new(
                    "x402_settle_payers_blocked_total",
                    "Payers whose settlements are refused for reverting too often",
                ),
                &["network"],
            )
            .expect("valid metric"),
            preconfirmed: IntCounterVec::new(
                Opts::new(
                    "x402_settle_preconfirmed_total",
                    "Settlements answered success at a flashblock pre-confirmation, before their block",
                ),
                &["network"],
            )
            .expect("valid metric"),
        };
        for c in [
            &m.refused_before_broadcast,
            &m.reverted,
            &m.svm_fee_wasted,
            &m.payers_blocked,
            &m.preconfirmed,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(m.gas_wasted_wei.clone()))
            .expect("unique metric");
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

    /// Exports the per-network money metrics of `network` at zero (so that rates and alerts see
    /// them before the first event): `reason` is the network's transaction-failed reason,
    /// `solana` whether its fees are lamports.
    pub fn touch_network(&self, network: &str, reason: &str, solana: bool) {
        self.reverted.with_label_values(&[network, reason]);
        self.payers_blocked.with_label_values(&[network]);
        if solana {
            self.svm_fee_wasted.with_label_values(&[network]);
        } else {
            self.gas_wasted_wei.with_label_values(&[network]);
        }
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
    fn refused_before_broadcast(&self, reason: &'static str) {
        self.refused_before_broadcast
            .with_label_values(&[reason])
            .inc();
    }
    fn reverted(&self, network: &str, reason: &str, gas_wei: u128, fee_lamports: u64) {
        self.reverted.with_label_values(&[network, reason]).inc();
        if gas_wei > 0 {
            self.gas_wasted_wei
                .with_label_values(&[network])
                .inc_by(gas_wei as f64);
        }
        if fee_lamports > 0 {
            self.svm_fee_wasted
                .with_label_values(&[network])
                .inc_by(fee_lamports);
        }
    }
    fn payer_blocked(&self, network: &str) {
        self.payers_blocked.with_label_values(&[network]).inc();
    }
    fn preconfirmed(&self, network: &str) {
        self.preconfirmed.with_label_values(&[network]).inc();
    }
}
