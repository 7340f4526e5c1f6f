//! `x402-facilitator`: serves `/verify`, `/settle`, `/supported`, `/health/*`, `/metrics`.
//! `x402-facilitator keygen` prints a new API key and the SHA-256 to configure.

use std::collections::HashMap;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use x402_facilitator::config::Config;
use x402_facilitator::config::ops::LogFormat;

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

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Keygen { name, scopes }) = &cli.command {
        return keygen(name, scopes);
    }
    let mut config = Config::from_file(&cli.config)?;
    config.apply_env(&std::env::vars().collect::<HashMap<_, _>>());
    init_logging(config.log_format);
    config.validate()?;
    if cli.check {
        println!("config ok");
        return Ok(());
    }
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("listen: bind {}", config.listen))?;
    tracing::info!(listen = %config.listen, "x402 facilitator starting");
    x402_facilitator::start(&config, listener).await?.await?;
    tracing::info!("x402 facilitator stopped");
    Ok(())
}
