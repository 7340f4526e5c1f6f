//! `x402-facilitator`: serves `/verify`, `/settle`, `/supported`, `/health/*`, `/metrics`.
//! `x402-facilitator keygen` prints a new API key and the SHA-256 to configure;
//! `x402-facilitator webhook-secret` a new webhook signing secret.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use x402_facilitator::config::Config;
use x402_facilitator::config::ops::LogFormat;
use x402_facilitator::telemetry;

/// Self-hostable x402 facilitator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, env = "X402_CONFIG", default_value = "config.toml")]
    config: String,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random API key (give it to the caller) and the `[[auth.keys]]` entry with
    /// its SHA-256 (put that in the configuration; the key itself never goes there).
    Keygen {
        /// Name of the caller (metric label and log field).
        #[arg(long, default_value = "client")]
        name: String,
        /// Comma-separated scopes: verify, settle, quote, admin.
        #[arg(long, default_value = "verify,settle,quote")]
        scopes: String,
    },
    /// Print a new webhook signing secret (`whsec_…`): give it to the receiver and set it as
    /// `X402_WEBHOOK_SECRET_<NAME>` (or `webhook_secret` of the key).
    WebhookSecret,
    /// Move a single Redis node's keys from the layout before `[redis] mode` to the
    /// hash-tagged one (README "Scaling past one Redis"), with every replica stopped; safe to
    /// run twice. Reads `[redis]` of `--config`.
    MigrateRedis,
}

fn keygen(name: &str, scopes: &str) -> anyhow::Result<()> {
    let scopes: Vec<String> = scopes
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for s in &scopes {
        anyhow::ensure!(
            matches!(s.as_str(), "verify" | "settle" | "quote" | "admin"),
            "--scopes: unknown scope {s:?} (verify, settle, quote, admin)"
        );
    }
    let (key, hash) = x402_facilitator::auth::generate_key().context("keygen: OS random")?;
    let scopes = scopes
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("# API key (give it to the caller; it is shown only now):");
    println!("{key}");
    println!();
    println!("# config.toml:");
    println!("[[auth.keys]]");
    println!("name = {name:?}");
    println!("sha256 = \"{hash}\"");
    println!("scopes = [{scopes}]");
    Ok(())
}

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// (JSON, HTTP), and glibc's `malloc` / `free` were about a tenth of the CPU of a `/verify`
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs to stdout in `format`, filtered by `RUST_LOG` (default `info`), and exports spans over
/// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set in `env` (see [`telemetry`]).
fn init_logging(
    format: LogFormat,
    env: &HashMap<String, String>,
) -> anyhow::Result<Option<telemetry::Telemetry>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (otel, telemetry) = match telemetry::otlp_layer(env).map_err(anyhow::Error::msg)? {
        Some((layer, t)) => (Some(layer), Some(t)),
        None => (None, None),
    };
    let fmt = match format {
        // Colours only for a terminal: formatting them into every request span's fields costs
        // a measurable share of a `/verify` (docs/performance.md).
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    Ok(telemetry)
}

/// `migrate-redis`: see [`x402_settle::replay::migrate`].
fn migrate_redis(config: &x402_facilitator::config::ValidConfig) -> anyhow::Result<()> {
    let redis = config
        .redis()
        .context("migrate-redis: no [redis] configured")?;
    anyhow::ensure!(
        redis.mode() == x402_settle::redis_conn::RedisMode::Single,
        "migrate-redis: redis.mode must be \"single\" (the old layout lived on one node)"
    );
    let timeout = std::time::Duration::from_millis(config.settle().redis_timeout_ms.max(5000));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let moved = runtime.block_on(async {
        let mut conn = x402_settle::redis_conn::RedisConn::connect(&redis.target(timeout)).await?;
        let layout = x402_settle::replay::keys::Layout::new(&redis.key_prefix, redis.index_shards);
        x402_settle::replay::migrate::migrate_single_node(&mut conn, &layout).await
    })?;
    println!("migrated: {moved:?}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Keygen { name, scopes }) => return keygen(name, scopes),
        Some(Command::WebhookSecret) => {
            let secret = x402_facilitator::webhooks::signing::generate_secret()
                .context("webhook-secret: OS random")?;
            println!("{secret}");
            return Ok(());
        }
        Some(Command::MigrateRedis) | None => {}
    }
    let env = std::env::vars().collect::<HashMap<_, _>>();
    let mut config = Config::from_file(&cli.config)?;
    config.apply_env(&env);
    let telemetry = init_logging(config.log_format, &env)?;
    // The one validation: everything below reads `config`, never the file or a key file again.
    let config = config.validate()?;
    // `--check` reports a keyless non-loopback listen address as the start would.
    x402_facilitator::auth::check_exposure(
        config.listen(),
        !config.auth().keys.is_empty(),
        config.allow_unauthenticated(),
    )?;
    if cli.check {
        config.warn_deprecations();
        println!("config ok");
        return Ok(());
    }
    if matches!(cli.command, Some(Command::MigrateRedis)) {
        return migrate_redis(&config);
    }
    let listener = std::net::TcpListener::bind(config.listen())
        .with_context(|| format!("listen: bind {}", config.listen()))?;
    tracing::info!(listen = %config.listen(), otlp = telemetry.is_some(), "x402 facilitator starting");
    actix_web::rt::System::new().block_on(async {
        x402_facilitator::start(&config, listener).await?.await?;
        anyhow::Ok(())
    })?;
    tracing::info!("x402 facilitator stopped");
    if let Some(t) = telemetry {
        t.shutdown();
    }
    Ok(())
}
