//! `bench`: load harness of the facilitator (see `x402_tests::bench` and docs/performance.md).
//!
//! Build both binaries in release first, then run, e.g.:
//! `cargo build --release -p x402-facilitator -p x402-tests --bin x402-facilitator --bin bench`
//! `$CARGO_TARGET_DIR/release/bench --payments 400 --block-time 2 --rpc-delay-ms 40 --signers 4`
//!
//! Everything runs on 127.0.0.1 and stops by itself (request counts, a deadline per phase).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use x402_tests::bench::RedisTopology;
use x402_tests::bench::{self, BenchConfig, FacilitatorKind, PaymentKind};

/// Load harness: anvil + real USDC + Redis + facilitator replicas (+ a latency relay to the RPC).
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Payments pre-signed; each is settled once in the settle phase.
    #[arg(long, default_value_t = 200)]
    payments: usize,
    /// Distinct payers (payments are spread round robin).
    #[arg(long, default_value_t = 50)]
    payers: usize,
    /// Requests of the eth_call and /verify phases (cycling over the payments).
    #[arg(long, default_value_t = 2000)]
    verify_requests: usize,
    /// Requests in flight in the eth_call and /verify phases.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests in flight in the settle phase (default: all payments at once, at most 400).
    #[arg(long)]
    settle_concurrency: Option<usize>,
    /// Block time in seconds (0: a block per transaction, anvil's automine).
    #[arg(long, default_value_t = 0)]
    block_time: u64,
    /// Block gas limit (default: anvil's 30,000,000; Base's is several times larger).
    #[arg(long)]
    block_gas_limit: Option<u64>,
    /// Replicas follow anvil's `newHeads` over WebSocket (`[[evm]] ws_url`).
    #[arg(long)]
    ws_heads: bool,
    /// Latency added in each direction between facilitator and RPC, milliseconds (0: no relay).
    #[arg(long, default_value_t = 0)]
    rpc_delay_ms: u64,
    /// Facilitator signing keys (1..=8).
    #[arg(long, default_value_t = 1)]
    signers: usize,
    /// Facilitator replicas sharing Redis and the keys.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Facilitator binary (default: `x402-facilitator` next to this binary).
    #[arg(long)]
    facilitator_bin: Option<PathBuf>,
    /// Serve the facilitator in this process instead of the binary (no CPU figures).
    #[arg(long)]
    in_process: bool,
    /// Phases to run, comma-separated: eth_call, verify, settle.
    #[arg(long, default_value = "eth_call,verify,settle", value_delimiter = ',')]
    phases: Vec<String>,
    /// Upper bound of each phase, seconds.
    #[arg(long, default_value_t = 300)]
    phase_deadline_seconds: u64,
    /// RUST_LOG of the facilitator processes.
    #[arg(long, default_value = "info")]
    log: String,
    /// Run the facilitator binaries on these CPUs only (`taskset -c` list). With `taskset -c 0`
    /// in front of the bench, the chain node, Redis and the load tool keep CPU 0 and the
    /// facilitator gets the rest, as when the RPC node runs on its own machine.
    #[arg(long)]
    facilitator_cpus: Option<String>,
    /// Write anvil's log (one line per JSON-RPC method served) to this file.
    #[arg(long)]
    anvil_log: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The replay store: `single` (one redis-server), `cluster` (3 primaries + 3 replicas,
    /// `min_replicas_acked = 1`), or `both` (single then cluster in one run, with the ratio of
    /// their settle throughputs).
    #[arg(long, default_value = "single")]
    redis: String,
    /// The payment kind: `eip3009` (exact, USDC), `permit2` (exact over Permit2, the same
    /// USDC), `upto` (each settling half its maximum), or `all` (the three in one run, with
    /// each Permit2 kind's settle throughput and verify CPU next to EIP-3009's). Permit2 kinds
    /// skip the `eth_call` phase.
    #[arg(long, default_value = "eip3009")]
    kind: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    for p in &cli.phases {
        anyhow::ensure!(
            ["eth_call", "verify", "settle"].contains(&p.as_str()),
            "unknown phase {p:?} (eth_call, verify, settle)"
        );
    }
    let facilitator = if cli.in_process {
        FacilitatorKind::InProcess
    } else {
        let bin = match cli.facilitator_bin {
            Some(p) => p,
            None => std::env::current_exe()?.with_file_name("x402-facilitator"),
        };
        anyhow::ensure!(
            bin.is_file(),
            "{} not found: build it (`cargo build --release -p x402-facilitator`), pass \
             --facilitator-bin, or use --in-process",
            bin.display()
        );
        FacilitatorKind::Binary(bin)
    };
    let config = BenchConfig {
        payments: cli.payments,
        payers: cli.payers,
        verify_requests: cli.verify_requests,
        concurrency: cli.concurrency,
        settle_concurrency: cli.settle_concurrency.unwrap_or(cli.payments.min(400)),
        block_time_seconds: (cli.block_time > 0).then_some(cli.block_time),
        block_gas_limit: cli.block_gas_limit,
        ws_heads: cli.ws_heads,
        rpc_delay: Duration::from_millis(cli.rpc_delay_ms),
        signers: cli.signers,
        replicas: cli.replicas,
        facilitator,
        eth_call: cli.phases.iter().any(|p| p == "eth_call"),
        verify: cli.phases.iter().any(|p| p == "verify"),
        settle: cli.phases.iter().any(|p| p == "settle"),
        phase_deadline: Duration::from_secs(cli.phase_deadline_seconds),
        log_filter: cli.log,
        anvil_log: cli.anvil_log,
        facilitator_cpus: cli.facilitator_cpus,
        ..BenchConfig::default()
    };
    let cluster = RedisTopology::Cluster {
        primaries: 3,
        replicas: 1,
    };
    let topologies = match cli.redis.as_str() {
        "single" => vec![RedisTopology::Single],
        "cluster" => vec![cluster],
        "both" => vec![RedisTopology::Single, cluster],
        other => anyhow::bail!("--redis {other:?}: single, cluster or both"),
    };
    let kinds = match cli.kind.as_str() {
        "eip3009" => vec![PaymentKind::Eip3009],
        "permit2" => vec![PaymentKind::Permit2],
        "upto" => vec![PaymentKind::Upto],
        "all" => vec![
            PaymentKind::Eip3009,
            PaymentKind::Permit2,
            PaymentKind::Upto,
        ],
        other => anyhow::bail!("--kind {other:?}: eip3009, permit2, upto or all"),
    };
    let mut settle_rates = Vec::new();
    let mut by_kind = Vec::new();
    for topology in topologies {
        for &kind in &kinds {
            let config = BenchConfig {
                redis: topology,
                kind,
                eth_call: config.eth_call && kind == PaymentKind::Eip3009,
                ..config.clone()
            };
            let report = bench::run(&config).await?;
            println!("== redis: {topology:?}, kind: {}", kind.name());
            print!("{report}");
            let settle = report.phase("settle").map(|p| p.ok_per_second());
            let verify_cpu = report.phase("verify").and_then(|p| p.cpu_per_request_us());
            if let (Some(rate), PaymentKind::Eip3009) = (settle, kind) {
                settle_rates.push((topology, rate));
            }
            by_kind.push((kind, settle, verify_cpu));
            if let Some(path) = &cli.json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
        }
    }
    if let Some((_, base_settle, base_cpu)) = by_kind
        .iter()
        .find(|(k, _, _)| *k == PaymentKind::Eip3009)
        .copied()
    {
        for (kind, settle, cpu) in by_kind
            .iter()
            .filter(|(k, _, _)| *k != PaymentKind::Eip3009)
        {
            let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.0} %", a / b * 100.0),
                _ => "n/a".into(),
            };
            println!(
                "{}: settle throughput {} of EIP-3009's (target >= 80 %), verify CPU per \
                 request {} of EIP-3009's (target <= 150 %)",
                kind.name(),
                pct(*settle, base_settle),
                pct(*cpu, base_cpu)
            );
        }
    }
    if let [(_, single), (_, cluster)] = settle_rates.as_slice() {
        println!(
            "settle throughput: single {single:.1}/s, cluster (3 primaries + 3 replicas) \
             {cluster:.1}/s: {:.0} % of single",
            if *single > 0.0 {
                cluster / single * 100.0
            } else {
                0.0
            }
        );
    }
    Ok(())
}
