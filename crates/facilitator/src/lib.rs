//! The x402 facilitator service: configuration, handler registry, HTTP routes and metrics.
//!
//! [`start`] builds everything from a [`config::Config`] and serves it on a bound listener,
//! which is how both the binary and the end-to-end tests run it.

pub mod config;
pub mod gas;
pub mod metrics;
pub mod registry;
pub mod requirements;
pub mod routes;
pub mod settle_metrics;
pub mod settlements;
pub mod svm;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};

pub use registry::{Facilitator, StartError};

/// Serves `facilitator` (reporting to `metrics`) on `listener` with a body limit of
/// `body_limit_bytes`.
/// Returns the running server (await it, or keep its handle to stop it).
pub fn serve(
    facilitator: Arc<Facilitator>,
    metrics: metrics::Metrics,
    listener: TcpListener,
    body_limit_bytes: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(routes::AppState {
        facilitator,
        metrics,
    });
    let server = HttpServer::new(move || {
        App::new()
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(state.clone())
            .configure(|cfg| routes::configure(cfg, body_limit_bytes))
    })
    .listen(listener)?
    .run();
    Ok(server)
}

/// Connects everything described by `config` and serves it on `listener`.
pub async fn start(
    config: &config::Config,
    listener: TcpListener,
) -> Result<actix_web::dev::Server, anyhow::Error> {
    let metrics = metrics::Metrics::new();
    let facilitator = Arc::new(Facilitator::from_config(config, &metrics).await?);
    Ok(serve(
        facilitator,
        metrics,
        listener,
        config.body_limit_bytes,
    )?)
}
