//! Prometheus metrics served at `GET /metrics` (text exposition format), and the observers
//! that feed them from the chain and replay-store clients.

use std::sync::Arc;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The facilitator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `x402_verify_total{network,result}`: `result` is `valid` or the `invalidReason`.
    pub verify_total: IntCounterVec,
    /// `x402_settle_total{network,result}`: `result` is `success` or the `errorReason`.
    pub settle_total: IntCounterVec,
    /// `x402_settle_duration_seconds{network}`: wall time of `/settle` calls.
    pub settle_duration: HistogramVec,
    /// `x402_settle_gas_used_total{network}`: gas units of mined settlements (receipt `gasUsed`).
    pub gas_used_total: IntCounterVec,
    /// `x402_settle_gas_fee_wei_total{network}`: native fees paid, wei (`gasUsed × effectiveGasPrice`).
    pub gas_fee_wei_total: prometheus::CounterVec,
    /// `x402_settle_gas_usdc_atomic_total{network}`: the same fees in atomic USDC at the quote's
    /// native price (no markup).
    pub gas_usdc_total: IntCounterVec,
    /// `x402_settle_gas_quoted_usdc_atomic_total{network}`: what the quotes current at those
    /// settlements charge for gas, atomic USDC (compare with the actual above).
    pub gas_quoted_usdc_total: IntCounterVec,
    /// `x402_settle_gas_quote_ratio{network}`: per landed settlement, the gas (EVM) or fee and
    /// rent (Solana) the quote current at settlement charges over what it cost, both in USDC
    /// at the quote's native price (1.2 = the default 20 % markup exactly).
    pub gas_quote_ratio: HistogramVec,
    /// `x402_settle_gas_under_collected_total{network}`: landed settlements whose cost exceeds
    /// what that quote charges (ratio < 1): the operator paid part of the gas.
    pub gas_under_collected: IntCounterVec,
    /// `x402_settle_svm_fee_lamports_total{network}`: Solana transaction fees paid by the fee
    /// payer for landed settlements, lamports.
    pub svm_fee_lamports_total: IntCounterVec,
    /// `x402_settle_svm_rent_lamports_total{network}`: rent deposited for destination token
    /// accounts the settlements created, lamports.
    pub svm_rent_lamports_total: IntCounterVec,
    /// `x402_request_errors_total{endpoint,kind}`: `kind` is `malformed` (400), `not_offered`
    /// (404: `/quote` or `/requirements` of a network or asset without pricing), `internal`
    /// (500: a corrupt settlement record) or `unavailable` (503).
    pub request_errors: IntCounterVec,
    /// Settlement engine and reconciler metrics.
    pub engine: crate::settle_metrics::EngineMetrics,
    /// Operational metrics (HTTP, Redis and RPC calls, refusals, dependencies).
    pub ops: crate::http_metrics::OpsMetrics,
    /// Settlement webhook delivery metrics.
    pub webhooks: crate::webhooks::metrics::WebhookMetrics,
}

impl Metrics {
    /// Records one landed settlement's quoted and actual cost on `network` (exported at zero
    /// from the start: call with `None` to touch the series).
    pub fn gas_accounting(
        &self,
        network: &str,
    ) -> impl Fn(Option<x402_settle::replay::GasInUsdc>) + Send + Sync + use<> {
        let ratio = self.gas_quote_ratio.with_label_values(&[network]);
        let under = self.gas_under_collected.with_label_values(&[network]);
        move |usdc| {
            let Some(usdc) = usdc else { return };
            if usdc.actual > 0 {
                ratio.observe(usdc.quoted as f64 / usdc.actual as f64);
            }
            if usdc.quoted < usdc.actual {
                under.inc();
            }
        }
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let verify_total = IntCounterVec::new(
            Opts::new("x402_verify_total", "Verifications by network and result"),
            &["network", "result"],
        )
        .expect("valid metric");
        let settle_total = IntCounterVec::new(
            Opts::new("x402_settle_total", "Settlements by network and result"),
            &["network", "result"],
        )
        .expect("valid metric");
        let settle_duration = HistogramVec::new(
            HistogramOpts::new(
                "x402_settle_duration_seconds",
                "Duration of /settle calls in seconds",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            &["network"],
        )
        .expect("valid metric");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "x402_request_errors_total",
                "Requests answered 400, 404, 500 or 503",
            ),
            &["endpoint", "kind"],
        )
        .expect("valid metric");
        let gas_used_total = IntCounterVec::new(
            Opts::new(
                "x402_settle_gas_used_total",
                "Gas units used by mined settlements",
            ),
            &["network"],
        )
        .expect("valid metric");
        let gas_fee_wei_total = prometheus::CounterVec::new(
            Opts::new(
                "x402_settle_gas_fee_wei_total",
                "Native fees paid for mined settlements, wei",
            ),
            &["network"],
        )
        .expect("valid metric");
        let gas_usdc_total = IntCounterVec::new(
            Opts::new(
                "x402_settle_gas_usdc_atomic_total",
                "Gas fees paid, atomic USDC at the quote's native price",
            ),
            &["network"],
        )
        .expect("valid metric");
        let gas_quoted_usdc_total = IntCounterVec::new(
            Opts::new(
                "x402_settle_gas_quoted_usdc_atomic_total",
                "Gas charged by the quote current at settlement, atomic USDC",
            ),
            &["network"],
        )
        .expect("valid metric");
        let gas_quote_ratio = HistogramVec::new(
            prometheus::HistogramOpts::new(
                "x402_settle_gas_quote_ratio",
                "Quoted over actual settlement cost (USDC at the quote's price), per settlement",
            )
            .buckets(vec![
                0.5, 0.8, 0.9, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 3.0,
            ]),
            &["network"],
        )
        .expect("valid metric");
        let gas_under_collected = IntCounterVec::new(
            Opts::new(
                "x402_settle_gas_under_collected_total",
                "Landed settlements that cost more than the quote charges",
            ),
            &["network"],
        )
        .expect("valid metric");
        let svm_fee_lamports_total = IntCounterVec::new(
            Opts::new(
                "x402_settle_svm_fee_lamports_total",
                "Solana fees paid for landed settlements, lamports",
            ),
            &["network"],
        )
        .expect("valid metric");
        let svm_rent_lamports_total = IntCounterVec::new(
            Opts::new(
                "x402_settle_svm_rent_lamports_total",
                "Rent deposited for destination token accounts created by settlements, lamports",
            ),
            &["network"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(gas_fee_wei_total.clone()))
            .expect("unique metric");
        for c in [
            &verify_total,
            &settle_total,
            &request_errors,
            &gas_used_total,
            &gas_usdc_total,
            &gas_quoted_usdc_total,
            &gas_under_collected,
            &svm_fee_lamports_total,
            &svm_rent_lamports_total,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(settle_duration.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(gas_quote_ratio.clone()))
            .expect("unique metric");
        let engine = crate::settle_metrics::EngineMetrics::register(&registry);
        let ops = crate::http_metrics::OpsMetrics::new();
        ops.register(&registry).expect("unique metric");
        let webhooks =
            crate::webhooks::metrics::WebhookMetrics::register(&registry).expect("unique metric");
        Metrics {
            engine,
            ops,
            webhooks,
            registry,
            verify_total,
            settle_total,
            settle_duration,
            gas_used_total,
            gas_fee_wei_total,
            gas_usdc_total,
            gas_quoted_usdc_total,
            gas_quote_ratio,
            gas_under_collected,
            svm_fee_lamports_total,
            svm_rent_lamports_total,
            request_errors,
        }
    }

    /// The registry every metric is in (for the operational metrics of
    /// [`crate::http_metrics`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// Times the chain JSON-RPC calls of `network` (CAIP-2) by method
    /// (`x402_rpc_call_duration_seconds`, `x402_rpc_call_errors_total`).
    pub fn rpc_call_observer(&self, network: &str) -> x402_chain::CallObserver {
        let duration = self.ops.rpc_call_duration.clone();
        let errors = self.ops.rpc_call_errors.clone();
        let network = network.to_string();
        Arc::new(move |method, elapsed, answered| {
            duration
                .with_label_values(&[network.as_str(), method])
                .observe(elapsed.as_secs_f64());
            if !answered {
                errors.with_label_values(&[network.as_str(), method]).inc();
            }
        })
    }

    /// Times the replay store's Redis calls by operation (`x402_redis_call_duration_seconds`,
    /// `x402_redis_call_errors_total`).
    pub fn redis_call_observer(&self) -> x402_settle::replay::CallObserver {
        let duration = self.ops.redis_call_duration.clone();
        let errors = self.ops.redis_call_errors.clone();
        Arc::new(move |op, elapsed, ok| {
            duration
                .with_label_values(&[op])
                .observe(elapsed.as_secs_f64());
            if !ok {
                errors.with_label_values(&[op]).inc();
            }
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
