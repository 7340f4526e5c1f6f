//! `x402-facilitator`: serves `/verify`, `/settle`, `/supported`, `/health`, `/metrics`.

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use x402_facilitator::config::Config;

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
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mut config = Config::from_file(&cli.config)?;
    config.apply_env(&std::env::vars().collect::<HashMap<_, _>>());
    config.validate()?;
    if cli.check {
        println!("config ok");
        return Ok(());
    }
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("listen: bind {}", config.listen))?;
    tracing::info!(listen = %config.listen, "x402 facilitator starting");
    x402_facilitator::start(&config, listener).await?.await?;
    Ok(())
}
