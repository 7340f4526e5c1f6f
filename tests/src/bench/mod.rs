//! Load harness: anvil with Circle's real `FiatTokenV2_2`, a private Redis, one or more
//! facilitator replicas (the release binary, or in-process) and an optional latency-injecting
//! relay between the facilitators and the RPC node. It pre-signs payments from many payers,
//! then drives, each at a given concurrency and in this order:
//!
//! 1. `eth_call` of the same `transferWithAuthorization` calldata straight to the RPC (the
//!    ceiling of `/verify`, which makes one such call);
//! 2. `/verify` of the pre-signed payments (cycled when more requests than payments);
//! 3. `/settle` of every payment once;
//!
//! and reports requests/s, latency percentiles, answers by reason, the facilitators' CPU per
//! request (binary replicas, from `/proc`), and on chain: transfers, blocks used, transactions
//! per block. Everything listens on 127.0.0.1; every phase is bounded by a request count and a
//! deadline, and every child process is killed when the run ends.
//!
//! Run it with `cargo run --release -p x402-tests --bin bench -- --help` (see the README).

pub mod proxy;
mod report;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use crate::facilitator::TestFacilitator;
use crate::usdc::FiatToken;
use crate::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc, net};

pub use proxy::LatencyProxy;
pub use report::{ChainReport, LatencySummary, PhaseReport, Report};

/// Which facilitator processes serve the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FacilitatorKind {
    /// The `x402-facilitator` binary at this path, one child process per replica.
    Binary(PathBuf),
    /// In this process ([`TestFacilitator`]); no CPU figures.
    InProcess,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Payments pre-signed, each settled once in the settle phase.
    pub payments: usize,
    /// Distinct payers the payments are spread over (round robin).
    pub payers: usize,
    /// Requests of the `eth_call` and `/verify` phases (cycling over the payments).
    pub verify_requests: usize,
    /// Connections (requests in flight) of the `eth_call` and `/verify` phases.
    pub concurrency: usize,
    /// Requests in flight in the settle phase.
    pub settle_concurrency: usize,
    /// Block time in seconds; `None`: a block per transaction (anvil's automine).
    pub block_time_seconds: Option<u64>,
    /// Block gas limit of the chain (`None`: anvil's 30,000,000). A settlement uses about
    /// 96,000 gas and reserves its limit (estimate + 20 %) in a block.
    pub block_gas_limit: Option<u64>,
    /// Replicas follow anvil's `newHeads` over WebSocket (`[[evm]] ws_url`, straight to anvil:
    /// the latency relay carries HTTP only).
    pub ws_heads: bool,
    /// Latency the relay adds in each direction between facilitator and RPC (zero: no relay).
    pub rpc_delay: Duration,
    /// Facilitator signing keys (anvil dev accounts 1..=signers; at most 8).
    pub signers: usize,
    /// Facilitator replicas sharing Redis and the signing keys; requests go round robin.
    pub replicas: usize,
    /// Binary or in-process.
    pub facilitator: FacilitatorKind,
    /// Run the bare `eth_call` phase.
    pub eth_call: bool,
    /// Run the `/verify` phase.
    pub verify: bool,
    /// Run the `/settle` phase.
    pub settle: bool,
    /// Upper bound of each phase; requests not started by then are not sent.
    pub phase_deadline: Duration,
    /// Client timeout of one request.
    pub request_timeout: Duration,
    /// `RUST_LOG` of binary replicas.
    pub log_filter: String,
    /// Write anvil's log (every JSON-RPC method it served) to this file.
    pub anvil_log: Option<std::path::PathBuf>,
    /// Run binary replicas on these CPUs only (`taskset -c` list, e.g. `"1"`), so that on a small
    /// machine the facilitator does not share cores with the chain node and the load tool (start
    /// the bench itself under `taskset -c 0`).
    pub facilitator_cpus: Option<String>,
    /// The replay store's Redis: one node, or a cluster (README "Scaling past one Redis").
    pub redis: RedisTopology,
    /// The payment kind.
    pub kind: PaymentKind,
}

/// The payment kind every pre-signed payment of a run is (issue 17 targets: Permit2 `exact`
/// and `upto` settle throughput within 80 % of EIP-3009's, verify CPU within 1.5x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentKind {
    /// `exact` with EIP-3009 `transferWithAuthorization` (USDC).
    #[default]
    Eip3009,
    /// `exact` over Permit2 through `x402ExactPermit2Proxy` (the same USDC, approved to
    /// Permit2).
    Permit2,
    /// `upto` through `x402UptoPermit2Proxy`, each settling half its maximum, naming the
    /// signers in turn.
    Upto,
}

impl PaymentKind {
    /// Its name on the command line and in the report.
    pub fn name(&self) -> &'static str {
        match self {
            PaymentKind::Eip3009 => "eip3009",
            PaymentKind::Permit2 => "permit2",
            PaymentKind::Upto => "upto",
        }
    }
}

/// The Redis deployment a bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisTopology {
    /// One `redis-server`.
    #[default]
    Single,
    /// Redis Cluster of `primaries` primaries with `replicas` replicas each
    /// (`min_replicas_acked = 1` when `replicas > 0`).
    Cluster {
        /// Primaries.
        primaries: usize,
        /// Replicas per primary.
        replicas: usize,
    },
}

/// A running Redis of either topology (stopped on drop).
enum RunningRedis {
    Single(RedisServer),
    Cluster(crate::redis_group::RedisCluster),
}

impl RunningRedis {
    async fn start(topology: RedisTopology) -> anyhow::Result<Self> {
        Ok(match topology {
            RedisTopology::Single => RunningRedis::Single(RedisServer::spawn().await?),
            RedisTopology::Cluster {
                primaries,
                replicas,
            } => RunningRedis::Cluster(
                crate::redis_group::RedisCluster::spawn(primaries, replicas).await?,
            ),
        })
    }

    /// The `[redis]` table of the replicas.
    fn toml(&self) -> String {
        match self {
            RunningRedis::Single(r) => format!("[redis]\nurl = \"{}\"\n", r.url()),
            RunningRedis::Cluster(c) => {
                let urls: Vec<String> = c.urls().iter().map(|u| format!("{u:?}")).collect();
                let acked = u32::from(c.nodes.len() > 3);
                format!(
                    "[redis]\nmode = \"cluster\"\nurls = [{}]\nmin_replicas_acked = {acked}\n",
                    urls.join(", ")
                )
            }
        }
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            payments: 200,
            payers: 50,
            verify_requests: 2000,
            concurrency: 16,
            settle_concurrency: 200,
            block_time_seconds: None,
            block_gas_limit: None,
            ws_heads: false,
            rpc_delay: Duration::ZERO,
            signers: 1,
            replicas: 1,
            facilitator: FacilitatorKind::InProcess,
            eth_call: true,
            verify: true,
            settle: true,
            phase_deadline: Duration::from_secs(300),
            request_timeout: Duration::from_secs(150),
            log_filter: "info".into(),
            anvil_log: None,
            facilitator_cpus: None,
            redis: RedisTopology::Single,
            kind: PaymentKind::Eip3009,
        }
    }
}

/// Atomic USDC of each payment (0.01 USDC).
pub const PAYMENT_AMOUNT: u64 = 10_000;

/// Anvil dev account receiving every payment.
const PAY_TO_ACCOUNT: usize = 9;

/// One pre-signed payment.
struct Payment {
    /// `/verify` body (and `/settle` body but for `upto`).
    body: Vec<u8>,
    /// `/settle` body (`upto`: the charge, half the maximum).
    settle_body: Vec<u8>,
    /// JSON-RPC `eth_call` body of its `transferWithAuthorization`.
    eth_call: Vec<u8>,
}

/// One answer of the system under load: a label (`valid`, a reason, `success`, `http_503`,
/// `transport_error`, …) and, for a settlement, its transaction hash.
struct Answer {
    label: String,
    transaction: Option<String>,
}

/// Runs the whole benchmark and returns its report. Children (anvil, Redis, facilitators) are
/// stopped before it returns, also on error.
pub async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    ensure!(
        config.payments > 0 && config.payers > 0,
        "payments and payers must be > 0"
    );
    ensure!(
        (1..=8).contains(&config.signers),
        "signers must be 1..=8 (anvil dev accounts 1..=8)"
    );
    ensure!(config.replicas >= 1, "replicas must be >= 1");
    ensure!(
        config.kind == PaymentKind::Eip3009 || !config.eth_call,
        "the eth_call phase calls transferWithAuthorization: EIP-3009 only"
    );
    ensure!(
        config.concurrency >= 1 && config.settle_concurrency >= 1,
        "concurrency must be >= 1"
    );
    let setup_started = Instant::now();
    let redis = RunningRedis::start(config.redis).await?;
    let mut anvil = Anvil::builder();
    if let Some(limit) = config.block_gas_limit {
        anvil = anvil.arg("--gas-limit").arg(limit.to_string());
    }
    if let Some(path) = &config.anvil_log {
        anvil = anvil.log_to(path);
    }
    let anvil = anvil.spawn().await?;
    if config.kind != PaymentKind::Eip3009 {
        crate::permit2::install_contracts(&anvil).await?;
    }
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await?;
    let payers: Vec<PrivateKeySigner> = (0..config.payers.min(config.payments))
        .map(|_| PrivateKeySigner::random())
        .collect();
    let per_payer = config.payments.div_ceil(payers.len()) as u64;
    for payer in &payers {
        usdc.mint(payer.address(), per_payer * PAYMENT_AMOUNT)
            .await?;
        if config.kind != PaymentKind::Eip3009 {
            // Gas for the one approval of Permit2.
            anvil
                .provider()
                .raw_request::<_, Value>(
                    "anvil_setBalance".into(),
                    (payer.address(), U256::from(10u128.pow(18))),
                )
                .await
                .context("anvil_setBalance")?;
            crate::permit2::approve_permit2(&anvil, payer, usdc.address(), U256::MAX).await?;
        }
    }
    let pay_to = anvil.address(PAY_TO_ACCOUNT);
    let signer_keys: Vec<&str> = DEV_PRIVATE_KEYS[1..=config.signers].to_vec();
    let signer_addresses: Vec<Address> = (1..=config.signers).map(|i| anvil.address(i)).collect();
    let payments = sign_payments(config, &payers, pay_to, &signer_addresses)?;

    let anvil_addr = format!("127.0.0.1:{}", anvil.port()).parse()?;
    let relay = if config.rpc_delay.is_zero() {
        None
    } else {
        Some(LatencyProxy::start(anvil_addr, config.rpc_delay).await?)
    };
    let rpc_url = relay
        .as_ref()
        .map(|r| r.url())
        .unwrap_or_else(|| anvil.rpc_url().to_string());
    let replicas = start_replicas(config, &anvil, &rpc_url, &redis.toml(), &signer_keys).await?;
    if let Some(secs) = config.block_time_seconds {
        anvil
            .provider()
            .raw_request::<_, Value>("evm_setIntervalMining".into(), (secs,))
            .await
            .context("evm_setIntervalMining")?;
    }
    let setup = setup_started.elapsed();

    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.concurrency.max(config.settle_concurrency))
        .build()?;
    let payments = Arc::new(payments);
    let mut phases = Vec::new();

    if config.eth_call {
        let (client, payments, url) = (client.clone(), payments.clone(), rpc_url.clone());
        let phase = drive(
            "eth_call",
            config.verify_requests,
            config.concurrency,
            config.phase_deadline,
            &[],
            move |i| {
                let body = payments[i % payments.len()].eth_call.clone();
                eth_call(client.clone(), url.clone(), body)
            },
        )
        .await;
        phases.push(phase.0);
    }
    if config.verify {
        let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.url()).collect());
        let (client, payments) = (client.clone(), payments.clone());
        let phase = drive(
            "verify",
            config.verify_requests,
            config.concurrency,
            config.phase_deadline,
            &replicas.iter().filter_map(Replica::pid).collect::<Vec<_>>(),
            move |i| {
                let url = format!("{}/verify", urls[i % urls.len()]);
                let body = payments[i % payments.len()].body.clone();
                post(client.clone(), url, body, false)
            },
        )
        .await;
        phases.push(phase.0);
    }
    let mut chain = None;
    if config.settle {
        let provider = anvil.provider();
        let start_block = provider.get_block_number().await?;
        let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.url()).collect());
        let (client, payments_c) = (client.clone(), payments.clone());
        let (phase, answers) = drive(
            "settle",
            payments.len(),
            config.settle_concurrency,
            config.phase_deadline,
            &replicas.iter().filter_map(Replica::pid).collect::<Vec<_>>(),
            move |i| {
                let url = format!("{}/settle", urls[i % urls.len()]);
                post(client.clone(), url, payments_c[i].settle_body.clone(), true)
            },
        )
        .await;
        phases.push(phase);
        chain = Some(chain_report(&anvil, usdc.address(), pay_to, start_block, &answers).await?);
    }
    drop(client);
    drop(replicas);
    drop(relay);
    Ok(Report {
        kind: config.kind.name().to_string(),
        payments: config.payments,
        payers: payers.len(),
        signers: config.signers,
        replicas: config.replicas,
        block_time_seconds: config.block_time_seconds,
        block_gas_limit: config.block_gas_limit,
        rpc_delay_ms: config.rpc_delay.as_secs_f64() * 1e3,
        concurrency: config.concurrency,
        settle_concurrency: config.settle_concurrency,
        facilitator: match (&config.facilitator, &config.facilitator_cpus) {
            (FacilitatorKind::Binary(p), Some(cpus)) => format!("{} on CPUs {cpus}", p.display()),
            (FacilitatorKind::Binary(p), None) => p.display().to_string(),
            (FacilitatorKind::InProcess, _) => "in-process".into(),
        },
        setup_seconds: setup.as_secs_f64(),
        phases,
        chain,
    })
}

/// Signs `config.payments` authorizations of `config.kind` (payer `i % payers`), valid for an
/// hour; `upto` payments name `signers[i % signers]` as their facilitator.
fn sign_payments(
    config: &BenchConfig,
    payers: &[PrivateKeySigner],
    pay_to: Address,
    signers: &[Address],
) -> anyhow::Result<Vec<Payment>> {
    if config.kind != PaymentKind::Eip3009 {
        return sign_permit2_payments(config, payers, pay_to, signers);
    }
    let eth_call_from = signers[0];
    let mut requirements = ExactEvmRequirements::base_usdc(PAYMENT_AMOUNT, pay_to);
    requirements.max_timeout_seconds = 3600;
    let req_json = requirements.v2_json();
    (0..config.payments)
        .map(|i| {
            let payer = &payers[i % payers.len()];
            let (auth, sig) = requirements.authorize(payer)?;
            let body = serde_json::to_vec(&v2_evm_payment_json(&req_json, &sig, &auth))?;
            let raw = alloy::primitives::hex::decode(&sig)?;
            let call = FiatToken::transferWithAuthorization_0Call {
                from: auth.from,
                to: auth.to,
                value: auth.value,
                validAfter: U256::from(auth.valid_after),
                validBefore: U256::from(auth.valid_before),
                nonce: auth.nonce,
                v: raw[64],
                r: B256::from_slice(&raw[..32]),
                s: B256::from_slice(&raw[32..64]),
            };
            let rpc = json!({"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [{
                "from": eth_call_from, "to": crate::BASE_USDC,
                "input": alloy::primitives::hex::encode_prefixed(call.abi_encode()),
            }, "latest"]});
            Ok(Payment {
                settle_body: body.clone(),
                body,
                eth_call: serde_json::to_vec(&rpc)?,
            })
        })
        .collect()
}

/// [`sign_payments`] of Permit2 kinds: `exact` of [`PAYMENT_AMOUNT`], or `upto` of at most
/// [`PAYMENT_AMOUNT`] settling half of it.
fn sign_permit2_payments(
    config: &BenchConfig,
    payers: &[PrivateKeySigner],
    pay_to: Address,
    signers: &[Address],
) -> anyhow::Result<Vec<Payment>> {
    use crate::permit2::{Permit2Auth, body, requirements, upto_requirements, upto_settle_body};
    let amount = U256::from(PAYMENT_AMOUNT);
    (0..config.payments)
        .map(|i| {
            let payer = &payers[i % payers.len()];
            let (req, auth) = match config.kind {
                PaymentKind::Upto => {
                    let facilitator = signers[i % signers.len()];
                    (
                        upto_requirements(8453, crate::BASE_USDC, amount, pay_to, facilitator),
                        Permit2Auth::upto(
                            payer.address(),
                            crate::BASE_USDC,
                            amount,
                            pay_to,
                            facilitator,
                            3600,
                        ),
                    )
                }
                _ => (
                    requirements(8453, crate::BASE_USDC, amount, pay_to),
                    Permit2Auth::new(payer.address(), crate::BASE_USDC, amount, pay_to, 3600),
                ),
            };
            let signature = auth.sign(payer, 8453)?;
            let verify = body(&req, &signature, &auth);
            let settle = match config.kind {
                PaymentKind::Upto => upto_settle_body(&verify, PAYMENT_AMOUNT / 2),
                _ => verify.clone(),
            };
            Ok(Payment {
                body: serde_json::to_vec(&verify)?,
                settle_body: serde_json::to_vec(&settle)?,
                eth_call: Vec::new(),
            })
        })
        .collect()
}

/// A facilitator replica of the run.
enum Replica {
    Process {
        child: Child,
        url: String,
        _dir: TempDir,
    },
    InProcess(TestFacilitator),
}

impl Replica {
    fn url(&self) -> String {
        match self {
            Replica::Process { url, .. } => url.clone(),
            Replica::InProcess(f) => f.url().to_string(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Replica::Process { child, .. } => Some(child.id()),
            Replica::InProcess(_) => None,
        }
    }
}

impl Drop for Replica {
    /// SIGTERM (a clean exit, so a profiler wrapping the binary writes its output), then
    /// SIGKILL after 20 s.
    fn drop(&mut self) {
        if let Replica::Process { child, .. } = self {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = std::env::temp_dir().join(format!(
            "x402-bench-{}",
            alloy::primitives::hex::encode(bytes)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The facilitator configuration of a replica listening on `listen`.
fn replica_toml(
    listen: &str,
    rpc_url: &str,
    ws_url: Option<&str>,
    redis: &str,
    keys: &[&str],
    kind: PaymentKind,
) -> String {
    let (schemes, methods) = match kind {
        PaymentKind::Eip3009 => ("", ""),
        _ => (
            "schemes = [\"exact\", \"upto\"]\n",
            "transfer_methods = [\"eip3009\", \"permit2\"]\n",
        ),
    };
    let ws = ws_url
        .map(|u| format!("ws_url = \"{u}\"\n"))
        .unwrap_or_default();
    let keys = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"listen = "{listen}"

{redis}

[settle]
receipt_timeout_seconds = 120

[[evm]]
chain_id = 8453
rpc_url = "{rpc_url}"
{ws}{schemes}signer_private_keys = [{keys}]

[[evm.assets]]
address = "{usdc}"
name = "USD Coin"
version = "2"
{methods}"#,
        usdc = crate::BASE_USDC,
    )
}

async fn start_replicas(
    config: &BenchConfig,
    anvil: &Anvil,
    rpc_url: &str,
    redis: &str,
    keys: &[&str],
) -> anyhow::Result<Vec<Replica>> {
    let ws = config
        .ws_heads
        .then(|| anvil.rpc_url().replace("http://", "ws://"));
    let ws = ws.as_deref();
    let mut replicas = Vec::new();
    for index in 0..config.replicas {
        let replica = match &config.facilitator {
            FacilitatorKind::InProcess => Replica::InProcess(
                TestFacilitator::start_with_toml(&replica_toml(
                    "127.0.0.1:0",
                    rpc_url,
                    ws,
                    redis,
                    keys,
                    config.kind,
                ))
                .await?,
            ),
            FacilitatorKind::Binary(bin) => {
                let dir = TempDir::new()?;
                let port = net::free_port()?;
                let listen = format!("127.0.0.1:{port}");
                let config_path = dir.0.join("config.toml");
                std::fs::write(
                    &config_path,
                    replica_toml(&listen, rpc_url, ws, redis, keys, config.kind),
                )?;
                let log = std::fs::File::create(dir.0.join("facilitator.log"))?;
                let mut command = match &config.facilitator_cpus {
                    Some(cpus) => {
                        let mut c = Command::new("taskset");
                        c.arg("-c").arg(cpus).arg(bin);
                        c
                    }
                    None => Command::new(bin),
                };
                let child = command
                    .arg("--config")
                    .arg(&config_path)
                    .env("RUST_LOG", &config.log_filter)
                    .env_remove("X402_EVM_SIGNER_KEYS")
                    .env_remove("X402_REDIS_URL")
                    .env_remove("X402_LISTEN")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("spawning {}", bin.display()))?;
                let replica = Replica::Process {
                    child,
                    url: format!("http://{listen}"),
                    _dir: dir,
                };
                wait_healthy(&replica.url(), index).await?;
                replica
            }
        };
        replicas.push(replica);
    }
    Ok(replicas)
}

async fn wait_healthy(url: &str, index: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(resp) = client.get(format!("{url}/health")).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        // Generous: the binary may run under a profiler (valgrind) for instruction counts.
        if started.elapsed() > Duration::from_secs(120) {
            bail!("facilitator replica {index} at {url} not healthy after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU time used so far by process `pid`, all threads (Linux `/proc/<pid>/task/*/schedstat`).
fn process_cpu(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns: u64 = 0;
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

fn total_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| process_cpu(p)).sum()
}

/// User and kernel CPU time of process `pid` so far, in clock ticks (`utime`, `stime` of
/// `/proc/<pid>/stat`): coarse, used only for the user share of [`total_cpu`].
fn user_system_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    Some((rest.next()?.parse().ok()?, rest.next()?.parse().ok()?))
}

fn total_user_system(pids: &[u32]) -> Option<(u64, u64)> {
    pids.iter()
        .map(|&p| user_system_ticks(p))
        .try_fold((0, 0), |(u, s), t| t.map(|(tu, ts)| (u + tu, s + ts)))
}

/// Sends `requests` requests (request `i` made by `make(i)`) over `concurrency` workers until
/// all are answered or `deadline` has passed. Returns the phase report and every answer.
async fn drive<F, Fut>(
    name: &str,
    requests: usize,
    concurrency: usize,
    deadline: Duration,
    pids: &[u32],
    make: F,
) -> (PhaseReport, Vec<Answer>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = total_cpu(pids);
    let ticks_before = total_user_system(pids);
    let started = Instant::now();
    let stop_at = started + deadline;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(requests) {
        let (make, next) = (make.clone(), next.clone());
        workers.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds");
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || Instant::now() >= stop_at {
                    break;
                }
                let t0 = Instant::now();
                let answer = make(i).await;
                let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(micros.max(1));
                answers.push(answer);
            }
            (hist, answers)
        });
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let mut answers = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (h, a) = done.expect("bench worker panicked");
        hist.add(&h).expect("same histogram bounds");
        answers.extend(a);
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, total_cpu(pids)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let user_share = match (ticks_before, total_user_system(pids)) {
        (Some((u0, s0)), Some((u1, s1))) if u1 + s1 > u0 + s0 => {
            Some((u1 - u0) as f64 / ((u1 + s1) - (u0 + s0)) as f64)
        }
        _ => None,
    };
    let mut by_label = BTreeMap::new();
    for a in &answers {
        *by_label.entry(a.label.clone()).or_insert(0usize) += 1;
    }
    let report = PhaseReport {
        name: name.to_string(),
        requests: answers.len(),
        not_sent: requests.saturating_sub(answers.len()),
        elapsed_seconds: elapsed.as_secs_f64(),
        latency_us: LatencySummary::of(&hist),
        answers: by_label,
        facilitator_cpu_seconds: cpu.map(|c| c.as_secs_f64()),
        facilitator_user_share: user_share,
    };
    (report, answers)
}

async fn post(client: reqwest::Client, url: String, body: Vec<u8>, settle: bool) -> Answer {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return transport_error(&e),
    };
    let status = resp.status().as_u16();
    let json: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return transport_error(&e),
    };
    if status != 200 {
        return Answer {
            label: format!("http_{status}"),
            transaction: None,
        };
    }
    let (ok, reason) = if settle {
        (json["success"] == true, &json["errorReason"])
    } else {
        (json["isValid"] == true, &json["invalidReason"])
    };
    let label = match (ok, settle) {
        (true, true) => "success".to_string(),
        (true, false) => "valid".to_string(),
        _ => reason.as_str().unwrap_or("no_reason").to_string(),
    };
    Answer {
        label,
        transaction: json["transaction"]
            .as_str()
            .filter(|t| ok && !t.is_empty())
            .map(String::from),
    }
}

async fn eth_call(client: reqwest::Client, url: String, body: Vec<u8>) -> Answer {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let json: Value = match sent {
        Ok(r) => match r.json().await {
            Ok(v) => v,
            Err(e) => return transport_error(&e),
        },
        Err(e) => return transport_error(&e),
    };
    let label = if json.get("result").is_some() {
        "ok"
    } else {
        "rpc_error"
    };
    Answer {
        label: label.into(),
        transaction: None,
    }
}

fn transport_error(e: &reqwest::Error) -> Answer {
    let label = if e.is_timeout() {
        "client_timeout"
    } else {
        "transport_error"
    };
    Answer {
        label: label.into(),
        transaction: None,
    }
}

/// Reads what the settle phase left on chain: `AuthorizationUsed` events of the token after
/// `start_block`, and the blocks holding them.
/// On chain since `start_block`: the token's `Transfer`s to `pay_to` (one per settlement,
/// whatever its kind), blocks used, transactions per block.
async fn chain_report(
    anvil: &Anvil,
    token: Address,
    pay_to: Address,
    start_block: u64,
    answers: &[Answer],
) -> anyhow::Result<ChainReport> {
    let provider = anvil.provider();
    let end_block = provider.get_block_number().await?;
    let filter = Filter::new()
        .address(token)
        .event_signature(FiatToken::Transfer::SIGNATURE_HASH)
        .topic2(pay_to.into_word())
        .from_block(start_block + 1)
        .to_block(end_block);
    let logs = provider.get_logs(&filter).await?;
    let mut per_block: BTreeMap<u64, usize> = BTreeMap::new();
    for log in &logs {
        if let Some(b) = log.block_number {
            *per_block.entry(b).or_insert(0) += 1;
        }
    }
    let mut txs_per_block = BTreeMap::new();
    if let (Some(&first), Some(&last)) = (per_block.keys().next(), per_block.keys().last()) {
        for b in first..=last {
            let n = provider
                .get_block_transaction_count_by_number(BlockNumberOrTag::Number(b))
                .await?
                .unwrap_or(0);
            txs_per_block.insert(b, n);
        }
    }
    let successes = answers.iter().filter(|a| a.label == "success").count();
    let unique: HashSet<&str> = answers
        .iter()
        .filter_map(|a| a.transaction.as_deref())
        .collect();
    let counts: Vec<u64> = txs_per_block.values().copied().collect();
    Ok(ChainReport {
        successes,
        unique_transactions: unique.len(),
        transfers_on_chain: logs.len(),
        blocks_used: counts.len() as u64,
        blocks_with_transfers: per_block.len() as u64,
        mean_txs_per_block: if counts.is_empty() {
            0.0
        } else {
            counts.iter().sum::<u64>() as f64 / counts.len() as f64
        },
        max_txs_per_block: counts.iter().copied().max().unwrap_or(0),
    })
}
