//! `GET /health/live`, `GET /health/ready` and `GET /health` (an alias of ready).
//!
//! Live answers 200 whenever the process serves HTTP: a liveness probe on it never restarts
//! pods because Redis or an RPC blips. Ready checks, concurrently and each within
//! `health.check_timeout_ms`: the replay store (`PING`), every network's RPC (the native
//! balance of each signer / fee payer) and that each network has at least one funded signer
//! (the network's `min_signer_balance_wei` / `min_fee_payer_balance_lamports`). 200 when all
//! pass, else 503; the body lists each dependency. Each check also updates
//! `x402_dependency_up` and `x402_signer_balance_native`.
//!
//! The checks run only in a background task, every `health.refresh_seconds` (default 5):
//! `/health/ready` answers the last report (with its `checkedAt`), so the public, unlimited
//! probe route costs no RPC call (`getBalance` per signer) and no Redis `PING`, however often
//! it is called. Until the first report exists it waits for it (at most one check timeout),
//! then answers 503 `{"status":"starting"}`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use alloy::primitives::{Address, U256};
use serde::Serialize;
use solana_signer::Signer;
use x402_chain::{EndpointHealth, EvmChain, FailoverEvmChain, RpcSvmChain};
use x402_settle::replay::ReplayStore;

use crate::config::ValidConfig;
use crate::http_metrics::OpsMetrics;

struct EvmProbe {
    network: String,
    chain: Arc<FailoverEvmChain>,
    signers: Vec<Address>,
    /// A signer with less is not funded, wei.
    min_wei: U256,
}

struct SvmProbe {
    network: String,
    /// The network's first RPC endpoint (its errors name it, never its URL).
    client: RpcSvmChain,
    fee_payers: Vec<solana_address::Address>,
    /// A fee payer with less is not funded, lamports.
    min_lamports: u64,
}

/// The readiness checker.
pub struct Health {
    last: tokio::sync::watch::Sender<Option<Arc<Cached>>>,
    store: Arc<dyn ReplayStore>,
    evm: Vec<EvmProbe>,
    svm: Vec<SvmProbe>,
    timeout: Duration,
    metrics: OpsMetrics,
}

/// The last readiness report, serialized once.
struct Cached {
    ready: bool,
    body: String,
}

/// The replay store's state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
    /// `redis` or `memory`.
    pub kind: &'static str,
    /// Whether it answered.
    pub ok: bool,
    /// Round trip, milliseconds.
    pub latency_ms: f64,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Redis: each node, its role and whether it answered (none for the in-memory store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<x402_settle::redis_conn::NodeStatus>,
}

/// One signer's balance.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerReport {
    /// Address (0x or base58).
    pub address: String,
    /// Balance in the native base unit (wei or lamports), decimal; absent when unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    /// At least the configured minimum.
    pub funded: bool,
}

/// One network's state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkReport {
    /// CAIP-2 network.
    pub network: String,
    /// RPC and funded signer both fine.
    pub ok: bool,
    /// The RPC answered at least one balance read.
    pub rpc_ok: bool,
    /// At least one signer is funded.
    pub funded_signer: bool,
    /// Per signer.
    pub signers: Vec<SignerReport>,
    /// First RPC error, if any: generic, naming the endpoint by its index (`rpc timeout
    /// (endpoint 0)`), never its URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// EVM: each configured RPC endpoint (`rpc_urls`), whether it answered last time and
    /// whether calls go to it now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rpc_endpoints: Vec<EndpointHealth>,
}

/// The body of `/health/ready`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyReport {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// When the checks ran, Unix seconds.
    pub checked_at: u64,
    /// The replay store.
    pub replay_store: StoreReport,
    /// Every configured network.
    pub networks: Vec<NetworkReport>,
}

impl ReadyReport {
    /// Whether everything passed.
    pub fn ready(&self) -> bool {
        self.status == "ok"
    }
}

async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    f: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// `wei` in whole tokens (for the gauge; precision loss is fine for display).
fn whole(base_units: f64, decimals: i32) -> f64 {
    base_units / 10f64.powi(decimals)
}

impl Health {
    /// Probes for every network of `config`, checking `store`; EVM networks are read through
    /// the facilitator's own (failover) chains `evm_chains` (CAIP-2 → chain).
    pub fn new(
        config: &ValidConfig,
        store: Arc<dyn ReplayStore>,
        evm_chains: Vec<(String, Arc<FailoverEvmChain>)>,
        metrics: OpsMetrics,
    ) -> Self {
        let timeout = Duration::from_millis(config.health().check_timeout_ms);
        let evm = evm_chains
            .into_iter()
            .map(|(network, chain)| {
                let min_wei = config
                    .evm()
                    .iter()
                    .find(|n| n.network.as_str() == network)
                    .map_or(crate::config::evm::DEFAULT_MIN_SIGNER_BALANCE_WEI, |n| {
                        n.min_signer_balance_wei
                    });
                EvmProbe {
                    network,
                    signers: chain.signers().to_vec(),
                    chain,
                    min_wei: U256::from(min_wei),
                }
            })
            .collect();
        let svm = config
            .svm()
            .iter()
            .map(|net| SvmProbe {
                network: net.network.to_string(),
                client: RpcSvmChain::new(net.rpc_url.clone(), timeout),
                fee_payers: net.fee_payers.iter().map(|k| k.pubkey()).collect(),
                min_lamports: net.min_fee_payer_balance_lamports,
            })
            .collect();
        Health {
            last: tokio::sync::watch::Sender::new(None),
            store,
            evm,
            svm,
            timeout,
            metrics,
        }
    }

    async fn check_store(&self) -> StoreReport {
        let started = Instant::now();
        let ping = async {
            let result = within(self.timeout, self.store.ping()).await;
            (result, started.elapsed())
        };
        let ((result, elapsed), nodes) = tokio::join!(ping, async {
            tokio::time::timeout(self.timeout, self.store.nodes())
                .await
                .unwrap_or_default()
        });
        self.metrics.redis_node_up.reset();
        for n in &nodes {
            self.metrics
                .redis_node_up
                .with_label_values(&[&n.address, &n.role])
                .set(i64::from(n.reachable));
        }
        if self.store.kind() == "redis" {
            self.metrics
                .redis_call_duration
                .with_label_values(&["ping"])
                .observe(elapsed.as_secs_f64());
            if result.is_err() {
                self.metrics
                    .redis_call_errors
                    .with_label_values(&["ping"])
                    .inc();
            }
        }
        StoreReport {
            kind: self.store.kind(),
            ok: result.is_ok(),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            error: result.err(),
            nodes,
        }
    }

    async fn check_evm(&self, probe: &EvmProbe) -> NetworkReport {
        let reads = probe.signers.iter().map(|a| async move {
            let balance = within(self.timeout, probe.chain.balance(*a)).await;
            (a, balance)
        });
        let mut signers = Vec::new();
        let mut error = None;
        for (address, balance) in futures::future::join_all(reads).await {
            let address = address.to_checksum(None);
            match balance {
                Ok(wei) => {
                    let as_f64: f64 = wei.to_string().parse().unwrap_or(f64::MAX);
                    self.metrics
                        .signer_balance
                        .with_label_values(&[&probe.network, &address])
                        .set(whole(as_f64, 18));
                    signers.push(SignerReport {
                        address,
                        balance: Some(wei.to_string()),
                        funded: wei >= probe.min_wei,
                    });
                }
                Err(e) => {
                    error.get_or_insert(e);
                    signers.push(SignerReport {
                        address,
                        balance: None,
                        funded: false,
                    });
                }
            }
        }
        let mut report = self.network_report(&probe.network, signers, error);
        report.rpc_endpoints = probe.chain.health();
        report
    }

    async fn check_svm(&self, probe: &SvmProbe) -> NetworkReport {
        let reads = probe.fee_payers.iter().map(|a| async move {
            let balance = within(self.timeout, probe.client.balance(a)).await;
            (a, balance)
        });
        let mut signers = Vec::new();
        let mut error = None;
        for (address, balance) in futures::future::join_all(reads).await {
            let address = address.to_string();
            match balance {
                Ok(lamports) => {
                    self.metrics
                        .signer_balance
                        .with_label_values(&[&probe.network, &address])
                        .set(whole(lamports as f64, 9));
                    signers.push(SignerReport {
                        address,
                        balance: Some(lamports.to_string()),
                        funded: lamports >= probe.min_lamports,
                    });
                }
                Err(e) => {
                    error.get_or_insert(e);
                    signers.push(SignerReport {
                        address,
                        balance: None,
                        funded: false,
                    });
                }
            }
        }
        self.network_report(&probe.network, signers, error)
    }

    fn network_report(
        &self,
        network: &str,
        signers: Vec<SignerReport>,
        error: Option<String>,
    ) -> NetworkReport {
        let rpc_ok = signers.iter().any(|s| s.balance.is_some());
        let funded_signer = signers.iter().any(|s| s.funded);
        let up = |dep: &str, ok: bool| {
            self.metrics
                .dependency_up
                .with_label_values(&[dep, network])
                .set(i64::from(ok));
        };
        up("rpc", rpc_ok);
        up("funded_signer", funded_signer);
        NetworkReport {
            network: network.to_string(),
            ok: rpc_ok && funded_signer,
            rpc_ok,
            funded_signer,
            signers,
            error,
            rpc_endpoints: Vec::new(),
        }
    }

    /// Runs every check concurrently.
    pub async fn check(&self) -> ReadyReport {
        let evm = futures::future::join_all(self.evm.iter().map(|p| self.check_evm(p)));
        let svm = futures::future::join_all(self.svm.iter().map(|p| self.check_svm(p)));
        let (replay_store, evm, svm) = tokio::join!(self.check_store(), evm, svm);
        self.metrics
            .dependency_up
            .with_label_values(&["replay_store", ""])
            .set(i64::from(replay_store.ok));
        let networks: Vec<NetworkReport> = evm.into_iter().chain(svm).collect();
        let ok = replay_store.ok && networks.iter().all(|n| n.ok);
        ReadyReport {
            status: if ok { "ok" } else { "unavailable" },
            checked_at: x402_chain::clock::unix_now(),
            replay_store,
            networks,
        }
    }

    /// Runs [`Health::check`] and keeps its report as the answer of `/health/ready`.
    pub async fn refresh(&self) -> ReadyReport {
        let report = self.check().await;
        let body = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
        self.last.send_replace(Some(Arc::new(Cached {
            ready: report.ready(),
            body,
        })));
        report
    }

    /// The last report: `(ready, JSON body)`; waits for the first one at most `wait`.
    async fn last_report(&self, wait: Duration) -> Option<(bool, String)> {
        let mut rx = self.last.subscribe();
        let cached = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone(),
            _ => None,
        }?;
        Some((cached.ready, cached.body.clone()))
    }

    /// Repeats [`Health::refresh`] every `every` (at least 1 s) while `health` lives (the task
    /// ends with it). The only place readiness checks run.
    pub fn spawn_refresher(health: &Arc<Health>, every: Duration) {
        let every = every.max(Duration::from_secs(1));
        let weak: Weak<Health> = Arc::downgrade(health);
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(h) => {
                        h.refresh().await;
                    }
                    None => return,
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// Registers `/health/live`, `/health/ready` and `/health`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/health", web::get().to(ready));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn ready(health: web::Data<Health>) -> HttpResponse {
    let wait = health.timeout + Duration::from_secs(1);
    match health.last_report(wait).await {
        Some((true, body)) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        Some((false, body)) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(body),
        None => HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "starting"})),
    }
}
