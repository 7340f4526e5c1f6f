//! The figures of a bench run, printable (`Display`) and serializable (`--json`).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles of one phase, in microseconds (client-side: request sent → answer read).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// Median, µs.
    pub p50: u64,
    /// 90th percentile, µs.
    pub p90: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// Slowest, µs.
    pub max: u64,
}

impl LatencySummary {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// One phase (`eth_call`, `verify` or `settle`).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name.
    pub name: String,
    /// Requests answered (or failed at the transport).
    pub requests: usize,
    /// Requests never sent because the phase deadline passed.
    pub not_sent: usize,
    /// Wall time of the phase, seconds.
    pub elapsed_seconds: f64,
    /// Latency percentiles, µs.
    pub latency_us: LatencySummary,
    /// Answers by label: `valid` / `success` / `ok`, a reason string, `http_<status>`,
    /// `client_timeout`, `transport_error`.
    pub answers: BTreeMap<String, usize>,
    /// CPU time the facilitator processes used during the phase, seconds (binary replicas only).
    pub facilitator_cpu_seconds: Option<f64>,
    /// Share of that CPU time spent in user space (the rest is the kernel's: sockets,
    /// scheduling), 0–1, from `/proc/<pid>/stat` clock ticks.
    pub facilitator_user_share: Option<f64>,
}

impl PhaseReport {
    /// Answered requests per second of wall time.
    pub fn per_second(&self) -> f64 {
        if self.elapsed_seconds > 0.0 {
            self.requests as f64 / self.elapsed_seconds
        } else {
            0.0
        }
    }

    /// Requests answered `valid`, `success` or `ok` per second of wall time (a refusal such as
    /// an HTTP 503 counts in [`PhaseReport::per_second`] but not here).
    pub fn ok_per_second(&self) -> f64 {
        let ok = self.count("valid") + self.count("success") + self.count("ok");
        if self.elapsed_seconds > 0.0 {
            ok as f64 / self.elapsed_seconds
        } else {
            0.0
        }
    }

    /// Facilitator CPU per request, µs (binary replicas only).
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        let cpu = self.facilitator_cpu_seconds?;
        (self.requests > 0).then(|| cpu * 1e6 / self.requests as f64)
    }

    /// Facilitator user-space CPU per request, µs (binary replicas only).
    pub fn user_cpu_per_request_us(&self) -> Option<f64> {
        Some(self.cpu_per_request_us()? * self.facilitator_user_share?)
    }

    /// The count of answers labelled `label`.
    pub fn count(&self, label: &str) -> usize {
        self.answers.get(label).copied().unwrap_or(0)
    }
}

/// What the settle phase left on chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// `/settle` answers with `success: true`.
    pub successes: usize,
    /// Distinct transaction hashes among the successes.
    pub unique_transactions: usize,
    /// `AuthorizationUsed` events of the token during the phase (one per transfer).
    pub transfers_on_chain: usize,
    /// Blocks from the first to the last holding a transfer, inclusive.
    pub blocks_used: u64,
    /// Blocks holding at least one transfer.
    pub blocks_with_transfers: u64,
    /// Transactions per block over `blocks_used` (only the facilitators send transactions).
    pub mean_txs_per_block: f64,
    /// Most transactions in one block.
    pub max_txs_per_block: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The payment kind (`eip3009`, `permit2`, `upto`).
    pub kind: String,
    /// Payments pre-signed.
    pub payments: usize,
    /// Distinct payers.
    pub payers: usize,
    /// Facilitator signing keys.
    pub signers: usize,
    /// Facilitator replicas.
    pub replicas: usize,
    /// Block time, seconds (`None`: a block per transaction).
    pub block_time_seconds: Option<u64>,
    /// Block gas limit (`None`: anvil's default, 30,000,000).
    pub block_gas_limit: Option<u64>,
    /// Latency added each way between facilitator and RPC, ms.
    pub rpc_delay_ms: f64,
    /// In flight in the `eth_call` and `/verify` phases.
    pub concurrency: usize,
    /// In flight in the settle phase.
    pub settle_concurrency: usize,
    /// Facilitator binary path or `in-process`.
    pub facilitator: String,
    /// Time to start everything and sign the payments, seconds.
    pub setup_seconds: f64,
    /// The phases run, in order.
    pub phases: Vec<PhaseReport>,
    /// On-chain figures of the settle phase.
    pub chain: Option<ChainReport>,
}

impl Report {
    /// The phase called `name`, if it ran.
    pub fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.name == name)
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1e3)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocks = match self.block_time_seconds {
            None => "instant (a block per transaction)".to_string(),
            Some(s) => format!("{s} s"),
        };
        let blocks = match self.block_gas_limit {
            None => blocks,
            Some(limit) => format!("{blocks}, gas limit {limit}"),
        };
        writeln!(
            f,
            "{} payments {} from {} payers; {} signer(s), {} replica(s) ({}); blocks {blocks}; \
             RPC +{} ms each way; concurrency {} (settle {}); setup {:.1} s",
            self.kind,
            self.payments,
            self.payers,
            self.signers,
            self.replicas,
            self.facilitator,
            self.rpc_delay_ms,
            self.concurrency,
            self.settle_concurrency,
            self.setup_seconds
        )?;
        writeln!(
            f,
            "{:<9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}  answers",
            "phase",
            "n",
            "req/s",
            "ok/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "cpu µs/req",
            "user µs/req"
        )?;
        for p in &self.phases {
            let answers = p
                .answers
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let cpu = p
                .cpu_per_request_us()
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "-".into());
            let user = p
                .user_cpu_per_request_us()
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "-".into());
            let not_sent = if p.not_sent > 0 {
                format!(" (not sent before the deadline: {})", p.not_sent)
            } else {
                String::new()
            };
            writeln!(
                f,
                "{:<9} {:>7} {:>9.1} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}  {answers}{not_sent}",
                p.name,
                p.requests,
                p.per_second(),
                p.ok_per_second(),
                ms(p.latency_us.p50),
                ms(p.latency_us.p90),
                ms(p.latency_us.p99),
                ms(p.latency_us.max),
                cpu,
                user,
            )?;
        }
        if let (Some(v), Some(e)) = (self.phase("verify"), self.phase("eth_call"))
            && e.per_second() > 0.0
        {
            writeln!(
                f,
                "verify / bare eth_call throughput: {:.0} %",
                100.0 * v.per_second() / e.per_second()
            )?;
        }
        if let Some(c) = &self.chain {
            writeln!(
                f,
                "on chain: {} transfers for {} successes ({} distinct tx); {} blocks used, \
                 {} with transfers; txs/block mean {:.1}, max {}",
                c.transfers_on_chain,
                c.successes,
                c.unique_transactions,
                c.blocks_used,
                c.blocks_with_transfers,
                c.mean_txs_per_block,
                c.max_txs_per_block
            )?;
        }
        Ok(())
    }
}
