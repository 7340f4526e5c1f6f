//! The x402 facilitator service: configuration, handler registry, HTTP routes and metrics.
//!
//! [`start`] builds everything from a [`config::ValidConfig`] (a [`config::Config`] checked
//! once by [`config::Config::validate`]) and serves it on a bound listener, which is how both
//! the binary and the end-to-end tests run it.

pub mod auth;
pub mod client_ip;
pub mod config;
pub mod evm;
pub mod facilitator;
pub mod gas;
pub mod guard;
pub mod health;
pub mod http_metrics;
pub mod metrics;
pub mod rate_limit;
pub mod registry;
pub mod requirements;
pub mod routes;
pub mod scheme;
pub mod settle_metrics;
pub mod settlements;
pub mod state;
pub mod svm;
pub mod telemetry;
pub mod upto;
pub mod webhooks;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

pub use facilitator::Facilitator;
pub use scheme::{SchemeHandler, StartError};

/// The operational parts in front of the routes: access control, readiness, HTTP metrics
/// and the graceful shutdown bound.
pub struct Ops {
    /// API keys and rate limits.
    pub guard: Arc<guard::Guard>,
    /// Readiness checks.
    pub health: Arc<health::Health>,
    /// HTTP, Redis and dependency metrics.
    pub metrics: Arc<http_metrics::OpsMetrics>,
    /// On SIGTERM: stop accepting, then wait this long for in-flight requests.
    pub shutdown_timeout: Duration,
    /// The webhook delivery loop (stops with the server).
    pub webhooks: Option<webhooks::Worker>,
}

/// Serves `facilitator` (reporting to `metrics`) behind `ops` on `listener` with a body limit
/// of `body_limit_bytes`.
/// Returns the running server (await it, or keep its handle to stop it).
pub fn serve(
    facilitator: Arc<Facilitator>,
    metrics: metrics::Metrics,
    ops: Ops,
    listener: TcpListener,
    body_limit_bytes: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let health = web::Data::from(ops.health.clone());
    let Ops {
        guard,
        metrics: ops_metrics,
        shutdown_timeout,
        webhooks,
        ..
    } = ops;
    let state = web::Data::new(state::AppState {
        facilitator,
        metrics,
        _webhooks: webhooks,
    });
    let server = HttpServer::new(move || {
        let guard = guard.clone();
        let ops_metrics = ops_metrics.clone();
        App::new()
            .wrap(from_fn(move |req, next| {
                guard::guard(guard.clone(), req, next)
            }))
            .wrap(from_fn(move |req, next| {
                http_metrics::observe(ops_metrics.clone(), req, next)
            }))
            .app_data(state.clone())
            .app_data(health.clone())
            .configure(health::configure)
            .configure(|cfg| routes::configure(cfg, body_limit_bytes))
    })
    .shutdown_timeout(shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

/// Connects everything described by `config` and serves it on `listener`.
pub async fn start(
    config: &config::ValidConfig,
    listener: TcpListener,
) -> Result<actix_web::dev::Server, anyhow::Error> {
    start_with(config, listener, Vec::new()).await
}

/// [`start`] with `extra` scheme handlers registered next to the configured ones (a scheme
/// built outside this crate; see [`SchemeHandler`]). Logs the configuration's deprecated keys
/// at WARN first.
pub async fn start_with(
    config: &config::ValidConfig,
    listener: TcpListener,
    extra: Vec<Arc<dyn SchemeHandler>>,
) -> Result<actix_web::dev::Server, anyhow::Error> {
    // Before anything connects: an open service on a reachable address is refused.
    let listen = listener.local_addr()?;
    let open = auth::check_exposure(
        listen,
        !config.auth().keys.is_empty(),
        config.allow_unauthenticated(),
    )?;
    if open {
        tracing::warn!(
            %listen,
            "allow_unauthenticated = true: serving WITHOUT API keys on a non-loopback address; \
             anyone who reaches it can settle payments (we pay the gas), read /metrics and \
             every settlement"
        );
    }
    config.warn_deprecations();
    let metrics = metrics::Metrics::new();
    let ops_metrics = metrics.ops.clone();
    let endpoints = webhooks::endpoints(config);
    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = webhooks::notify(&endpoints, wake.clone());
    let facilitator =
        Arc::new(Facilitator::from_config_with(config, &metrics, extra, notify).await?);
    if !endpoints.is_empty() && config.redis().is_none() {
        tracing::warn!(
            "settlement webhooks with the in-memory store: events not delivered before a restart are lost"
        );
    }
    // Each replica with webhooks configured runs a worker; the workers share the outbox.
    let webhooks = (!endpoints.is_empty()).then(|| {
        webhooks::Worker::spawn(
            facilitator.store().clone(),
            endpoints,
            webhooks::Settings::from_config(config.webhooks()),
            metrics.webhooks.clone(),
            wake,
        )
    });
    let limiter = match config.rate_limit() {
        Some(rl) => Some(
            rate_limit::RateLimiter::new(rl, config.redis(), ops_metrics.clone())
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let keys = auth::ApiKeys::from_config(config.auth());
    tracing::info!(
        api_keys = config.auth().keys.len(),
        rate_limits = match &limiter {
            None => "off",
            Some(l) if l.is_shared() => "shared through Redis",
            Some(_) => "in-process",
        },
        "access control"
    );
    let client_ip = match config.rate_limit() {
        Some(rl) => {
            if rl.trust_forwarded_for && rl.trusted_proxies.is_empty() {
                tracing::warn!(
                    "rate_limit.trust_forwarded_for is deprecated: the client IP is the \
                     X-Forwarded-For entry the proxy in front appended (the rightmost); set \
                     rate_limit.trusted_proxies to the proxies' networks instead"
                );
            }
            client_ip::ClientIp::new(&rl.trusted_proxies, rl.trust_forwarded_for)
        }
        None => client_ip::ClientIp::peer_only(),
    };
    let guard = Arc::new(guard::Guard {
        keys,
        limiter,
        client_ip,
        metrics: ops_metrics.clone(),
    });
    spawn_forget_idle(&guard);
    let health = Arc::new(health::Health::new(
        config,
        facilitator.store().clone(),
        facilitator.evm_chains(),
        ops_metrics.clone(),
    ));
    health::Health::spawn_refresher(
        &health,
        Duration::from_secs(config.health().refresh_seconds),
    );
    let ops = Ops {
        guard,
        health,
        metrics: Arc::new(ops_metrics),
        shutdown_timeout: config.shutdown_timeout(),
        webhooks,
    };
    Ok(serve(
        facilitator,
        metrics,
        ops,
        listener,
        config.body_limit_bytes(),
    )?)
}

/// Every minute, drops the in-process rate budgets that are full again (ends with the guard).
fn spawn_forget_idle(guard: &Arc<guard::Guard>) {
    if guard.limiter.is_none() {
        return;
    }
    let weak = Arc::downgrade(guard);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            match weak.upgrade() {
                Some(g) => {
                    if let Some(l) = &g.limiter {
                        l.forget_idle();
                    }
                }
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use solana_signer::Signer;

    use super::*;

    /// The fee-payer key file is read by the one validation and never again: the whole start
    /// (handlers, readiness probes, webhooks, access control) runs from the [`config::ValidConfig`]
    /// after the file is gone.
    #[tokio::test]
    async fn start_reads_no_key_file_after_the_one_validation() {
        let kp = solana_keypair::Keypair::new();
        let path = std::env::temp_dir().join(format!("x402-once-{}.json", kp.pubkey()));
        std::fs::write(
            &path,
            serde_json::to_string(&kp.to_bytes().to_vec()).unwrap(),
        )
        .unwrap();
        let config = config::Config::from_toml(&format!(
            "[[svm]]\nnetwork = \"solana-devnet\"\nrpc_url = \"http://127.0.0.1:1\"\n\
             fee_payer_key_files = [{:?}]\n",
            path.to_str().unwrap()
        ))
        .unwrap();
        let valid = config.validate().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            config.validate().is_err(),
            "validating again would need the file"
        );

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/supported", listener.local_addr().unwrap());
        let server = start(&valid, listener).await.unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        let supported: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(
            supported["signers"]["solana:*"][0],
            kp.pubkey().to_string(),
            "{supported}"
        );
        handle.stop(false).await;
    }
}
