//! Configuration: one TOML file (path from `--config` or `X402_CONFIG`) plus environment
//! overrides for secrets and deployment specifics. See `deploy/config.example.toml`.
//!
//! [`Config`] is the file as written (plus [`Config::apply_env`]); [`Config::validate`] checks
//! it once and returns the one [`ValidConfig`] that start-up, the handlers and `/health/ready`
//! consume: keys parsed, key files read, networks and assets resolved, per-network values
//! filled in. Nothing after it reads the raw configuration or a key file again.
//!
//! Environment overrides (applied after the file):
//! - `X402_LISTEN`: listen address (`host:port`).
//! - `X402_REDIS_URL`: a single Redis node's URL; set to an empty string to force the
//!   in-memory store. `X402_REDIS_URLS`, `X402_REDIS_USERNAME`, `X402_REDIS_PASSWORD`: see
//!   [`redis`].
//! - `X402_EVM_…`: EVM RPC URLs and signer keys, see [`evm`].
//! - `X402_SVM_…`: Solana RPC URLs and fee-payer keys, see [`svm`].
//! - `X402_WEBHOOK_SECRET_<NAME>`: the webhook secret of the API key `<NAME>`, see [`webhooks`].
//! - `X402_API_KEY_SHA256_<NAME>`: the SHA-256 of the API key `<NAME>`, see [`ops`].
//!
//! Secrets (signer and fee-payer keys, webhook secrets) are `secrecy::SecretString`s: `Debug`
//! prints them redacted, and TOML errors never quote the file ([`Config::from_toml`]).
//!
//! Deprecated keys (still accepted; [`ValidConfig::deprecations`] names the replacement and
//! the start logs it at WARN): `[settle] rpc_timeout_seconds` → `[[evm]] rpc_timeout_seconds`,
//! `[health] min_evm_signer_balance_wei` → `[[evm]] min_signer_balance_wei`, `[health]
//! min_svm_fee_payer_lamports` → `[[svm]] min_fee_payer_balance_lamports`. A network's own key
//! wins over the deprecated one.

mod error;
pub mod evm;
pub mod gas;
pub mod ops;
pub mod redis;
pub mod svm;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

pub use self::redis::{ModeConfig, RedisConfig};
pub use error::ConfigError;
use error::err;
pub use gas::{GasConfig, PriceSourceConfig};

/// The whole configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address, default `127.0.0.1:8402`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest accepted request body in bytes (default 65,536).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Redis replay store; absent → in-memory store (single process only).
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Settlement timing.
    #[serde(default)]
    pub settle: SettleConfig,
    /// Quote cache.
    #[serde(default)]
    pub quotes: QuotesConfig,
    /// EVM networks, see [`evm`].
    #[serde(default)]
    pub evm: Vec<evm::EvmNetworkConfig>,
    /// Solana networks, see [`svm`].
    #[serde(default)]
    pub svm: Vec<svm::SvmNetworkConfig>,
    /// API keys (`[[auth.keys]]`); none → no authentication. See [`ops`].
    #[serde(default)]
    pub auth: ops::AuthConfig,
    /// Serve without API keys on a non-loopback listen address (default false: such a start
    /// is refused, see [`crate::auth::check_exposure`]); logged as a WARN at every start.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Rate limits on `/verify` and `/settle`; absent → none.
    #[serde(default)]
    pub rate_limit: Option<ops::RateLimitConfig>,
    /// What `/health/ready` checks.
    #[serde(default)]
    pub health: ops::HealthConfig,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub log_format: ops::LogFormat,
    /// Graceful shutdown (SIGTERM): longest wait for in-flight requests, seconds (default:
    /// `settle.receipt_timeout_seconds` + 10).
    #[serde(default)]
    pub shutdown_timeout_seconds: Option<u64>,
    /// Delivery of the settlement webhooks (the URLs are per key, in `[[auth.keys]]`).
    #[serde(default)]
    pub webhooks: webhooks::WebhooksConfig,
}

/// `[settle]`: settlement timing and deadlines (README "Settlement states and recovery").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettleConfig {
    /// Longest wait for a receipt (EVM) or `confirmed` (Solana) within one `/settle` call,
    /// seconds (default 30); then `settlement_pending` with the transaction. Also sets the
    /// default graceful-shutdown drain.
    pub receipt_timeout_seconds: u64,
    /// A `/settle` not confirmed within this many seconds answers `settlement_pending` with the
    /// transaction and the payment keeps going (default 20, below the official SDK's 30 s
    /// facilitator timeout, so its pending-retry happens); a `/settle` answers at the earlier
    /// of this and `receipt_timeout_seconds`.
    pub answer_within_seconds: u64,
    /// Receipt / signature-status poll interval, milliseconds (default 200).
    pub poll_interval_ms: u64,
    /// How long a Solana payment's record lives, seconds (default 86,400; at least 120, about
    /// twice a blockhash's lifetime).
    pub svm_record_ttl_seconds: u64,
    /// Deprecated: use `[[evm]] rpc_timeout_seconds`. The JSON-RPC call timeout, seconds, of
    /// every EVM network that does not set its own. Always `None` in a [`ValidConfig`] (it is
    /// resolved into [`evm::EvmNetwork::rpc_timeout`]).
    pub rpc_timeout_seconds: Option<u64>,
    /// Every Redis command gives up after this long, milliseconds (default 2000).
    pub redis_timeout_ms: u64,
    /// A reservation's lease, seconds (default 15): a settlement whose process died before
    /// signing is taken over by the next `/settle` of the payment after this long.
    pub lease_seconds: u64,
    /// A broadcast transaction not landed after this long is re-sent, seconds (default 15).
    pub resend_after_seconds: u64,
    /// A broadcast EVM transaction a node holds but that stays unmined this long is replaced
    /// with the same nonce and higher fees, seconds (default 60).
    pub replace_after_seconds: u64,
    /// The reconciler's interval, seconds (default 2).
    pub reconcile_interval_seconds: u64,
    /// Longest wait for a free EVM signer slot before answering 503 (nothing reserved),
    /// seconds (default 10).
    pub signer_wait_seconds: u64,
    /// Most settlements per EVM signer between taking the signer and sending (default 64);
    /// nonces come from a shared counter, so they sign in parallel.
    pub max_in_flight_per_signer: usize,
    /// A sender nonce the node is missing below the counter (taken and never sent) is filled
    /// with a 0-value transfer after this long, seconds (default 10).
    pub nonce_gap_fill_seconds: u64,
    /// How long a request that finds its payment held by a live request waits before
    /// answering `duplicate_settlement`, seconds (default 10).
    pub reserved_wait_seconds: u64,
    /// A payer whose settlements fail on chain after passing every check this many times
    /// within `revert_window_seconds` has its settlements refused before broadcast for
    /// `revert_block_seconds` (default 3; 0: never refused, still counted).
    pub revert_limit: u32,
    /// The window reverted settlements are counted in, seconds (default 3600).
    pub revert_window_seconds: u64,
    /// How long a payer past `revert_limit` is refused, seconds (default 3600).
    pub revert_block_seconds: u64,
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            receipt_timeout_seconds: 30,
            answer_within_seconds: 20,
            poll_interval_ms: 200,
            svm_record_ttl_seconds: 24 * 3600,
            rpc_timeout_seconds: None,
            redis_timeout_ms: 2000,
            lease_seconds: 15,
            resend_after_seconds: 15,
            replace_after_seconds: 60,
            reconcile_interval_seconds: 2,
            signer_wait_seconds: 10,
            max_in_flight_per_signer: x402_settle::evm::DEFAULT_MAX_IN_FLIGHT_PER_SIGNER,
            nonce_gap_fill_seconds: 10,
            reserved_wait_seconds: 10,
            revert_limit: 3,
            revert_window_seconds: 3600,
            revert_block_seconds: 3600,
        }
    }
}

impl SettleConfig {
    /// Which payers' settlements are refused for reverting.
    pub fn payer_policy(&self) -> x402_settle::engine::PayerPolicy {
        x402_settle::engine::PayerPolicy {
            limit: self.revert_limit,
            window: Duration::from_secs(self.revert_window_seconds.max(1)),
            block: Duration::from_secs(self.revert_block_seconds.max(1)),
        }
    }

    /// The settlement engine's timing.
    pub fn timing(&self) -> x402_settle::engine::SettleTiming {
        x402_settle::engine::SettleTiming {
            receipt_timeout: Duration::from_secs(self.receipt_timeout_seconds),
            answer_within: Duration::from_secs(self.answer_within_seconds),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            reserved_wait: Duration::from_secs(self.reserved_wait_seconds),
            lease: Duration::from_secs(self.lease_seconds),
            resend_after: Duration::from_secs(self.resend_after_seconds),
            replace_after: Duration::from_secs(self.replace_after_seconds),
        }
    }
}

/// `[quotes]`: the quote cache shared by every network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotesConfig {
    /// Background refresh interval, seconds (default 15).
    #[serde(default = "default_quote_refresh")]
    pub refresh_seconds: u64,
    /// Oldest quote served, seconds (default 120); older → 503, never a stale price.
    #[serde(default = "default_quote_age")]
    pub max_age_seconds: u64,
}

impl Default for QuotesConfig {
    fn default() -> Self {
        QuotesConfig {
            refresh_seconds: default_quote_refresh(),
            max_age_seconds: default_quote_age(),
        }
    }
}

fn default_quote_refresh() -> u64 {
    15
}
fn default_quote_age() -> u64 {
    120
}
fn default_listen() -> String {
    "127.0.0.1:8402".into()
}
fn default_body_limit() -> usize {
    64 * 1024
}
/// A deprecated key the configuration sets, and the key that replaces it. Its `Display` is
/// the start-up WARN line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecation {
    /// The deprecated key (`settle.rpc_timeout_seconds`).
    pub key: &'static str,
    /// The key to set instead (`[[evm]] rpc_timeout_seconds`).
    pub replacement: &'static str,
}

impl std::fmt::Display for Deprecation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config: {} is deprecated: set {} instead (per network; where both are set, the \
             network's value wins)",
            self.key, self.replacement
        )
    }
}

/// The deprecated keys: (key, replacement).
const DEPRECATED_EVM_RPC_TIMEOUT: Deprecation = Deprecation {
    key: "settle.rpc_timeout_seconds",
    replacement: "[[evm]] rpc_timeout_seconds",
};
const DEPRECATED_EVM_MIN_BALANCE: Deprecation = Deprecation {
    key: "health.min_evm_signer_balance_wei",
    replacement: "[[evm]] min_signer_balance_wei",
};
const DEPRECATED_SVM_MIN_BALANCE: Deprecation = Deprecation {
    key: "health.min_svm_fee_payer_lamports",
    replacement: "[[svm]] min_fee_payer_balance_lamports",
};

/// A checked configuration: every value in range, signer keys parsed, fee-payer key files
/// read, networks and assets resolved (presets, environment, per-network values with their
/// deprecated fallbacks). Only [`Config::validate`] makes one; start-up, the scheme handlers
/// and `/health/ready` all read this one value.
pub struct ValidConfig {
    listen: SocketAddr,
    body_limit_bytes: usize,
    redis: Option<RedisConfig>,
    settle: SettleConfig,
    quotes: QuotesConfig,
    evm: Vec<evm::EvmNetwork>,
    svm: Vec<svm::SvmNetwork>,
    auth: ops::AuthConfig,
    allow_unauthenticated: bool,
    rate_limit: Option<ops::RateLimitConfig>,
    health: ops::HealthConfig,
    log_format: ops::LogFormat,
    shutdown_timeout: Duration,
    webhooks: webhooks::WebhooksConfig,
    webhook_targets: Vec<webhooks::WebhookTarget>,
    reconcile_step_timeout: Duration,
    deprecations: Vec<Deprecation>,
}

impl ValidConfig {
    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Largest accepted request body, bytes.
    pub fn body_limit_bytes(&self) -> usize {
        self.body_limit_bytes
    }

    /// `[redis]`, if configured (else the in-memory store).
    pub fn redis(&self) -> Option<&RedisConfig> {
        self.redis.as_ref()
    }

    /// `[settle]` (its deprecated `rpc_timeout_seconds` resolved into the EVM networks).
    pub fn settle(&self) -> &SettleConfig {
        &self.settle
    }

    /// `[quotes]`.
    pub fn quotes(&self) -> &QuotesConfig {
        &self.quotes
    }

    /// The EVM networks, in configuration order.
    pub fn evm(&self) -> &[evm::EvmNetwork] {
        &self.evm
    }

    /// The Solana networks, in configuration order.
    pub fn svm(&self) -> &[svm::SvmNetwork] {
        &self.svm
    }

    /// `[auth]` (webhook secrets already taken from the environment).
    pub fn auth(&self) -> &ops::AuthConfig {
        &self.auth
    }

    /// `allow_unauthenticated`: serving without API keys on a non-loopback address is allowed.
    pub fn allow_unauthenticated(&self) -> bool {
        self.allow_unauthenticated
    }

    /// `[rate_limit]`, if configured.
    pub fn rate_limit(&self) -> Option<&ops::RateLimitConfig> {
        self.rate_limit.as_ref()
    }

    /// `[health]` (its deprecated balance floors resolved into the networks).
    pub fn health(&self) -> &ops::HealthConfig {
        &self.health
    }

    /// The log format.
    pub fn log_format(&self) -> ops::LogFormat {
        self.log_format
    }

    /// On SIGTERM, the longest wait for in-flight requests (`shutdown_timeout_seconds`, default
    /// `settle.receipt_timeout_seconds` + 10 seconds).
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// `[webhooks]`: the delivery settings.
    pub fn webhooks(&self) -> &webhooks::WebhooksConfig {
        &self.webhooks
    }

    /// Each API key's webhook (URL parsed, secret decoded), in `[[auth.keys]]` order.
    pub fn webhook_targets(&self) -> &[webhooks::WebhookTarget] {
        &self.webhook_targets
    }

    /// The bound of each reconciler look at a record: four times the longest EVM JSON-RPC
    /// timeout (with no EVM network, four times the EVM default or the deprecated
    /// `[settle] rpc_timeout_seconds`).
    pub fn reconcile_step_timeout(&self) -> Duration {
        self.reconcile_step_timeout
    }

    /// The deprecated keys the configuration sets, each with its replacement.
    pub fn deprecations(&self) -> &[Deprecation] {
        &self.deprecations
    }

    /// Logs each deprecated key at WARN (once per start).
    pub fn warn_deprecations(&self) {
        for d in &self.deprecations {
            tracing::warn!(key = d.key, replacement = d.replacement, "{d}");
        }
    }
}

impl Config {
    /// Parses TOML text and resolves `[[evm]] network` presets into chain ids; errors name
    /// the key.
    ///
    /// Errors never quote the file: they give the line and the parser's message, and for a
    /// key that holds a secret or a credential-bearing URL ([`holds_secret`]) not even the
    /// message (serde's "invalid type: string \"…\"" would print the value).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de =
            toml::Deserializer::parse(text).map_err(|e| toml_error(text, "(file)".into(), &e))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            toml_error(text, key, e.inner())
        })?;
        evm::resolve_chain_ids(&mut config.evm)?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", format!("cannot read {path}: {e}")))?;
        Self::from_toml(&text)
    }

    /// Applies the `X402_*` environment overrides from `env`.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) {
        if let Some(v) = env.get("X402_LISTEN") {
            self.listen = v.clone();
        }
        if let Some(url) = env.get("X402_REDIS_URL") {
            self.redis = if url.is_empty() {
                None
            } else {
                let mut single = RedisConfig::single(url);
                if let Some(r) = &self.redis {
                    single.key_prefix = r.key_prefix.clone();
                    single.index_shards = r.index_shards;
                    single.min_replicas_acked = r.min_replicas_acked;
                }
                Some(single)
            };
        }
        if self.redis.is_none()
            && env
                .get("X402_REDIS_URLS")
                .is_some_and(|u| !u.trim().is_empty())
        {
            let mut r = RedisConfig::single("");
            r.url = None;
            self.redis = Some(r);
        }
        if let Some(r) = &mut self.redis {
            r.apply_env(env);
        }
        evm::apply_env(&mut self.evm, env);
        svm::apply_env(&mut self.svm, env);
        webhooks::apply_env(&mut self.auth, env);
        ops::apply_env(&mut self.auth, env);
    }

    /// Checks every value, once: parses the signer keys, reads the fee-payer key files,
    /// resolves presets and per-network values. Errors name the key.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| err("listen", format!("{:?} is not host:port: {e}", self.listen)))?;
        if self.body_limit_bytes < 1024 {
            return Err(err("body_limit_bytes", "must be at least 1024"));
        }
        if let Some(r) = &self.redis {
            r.validate()?;
        }
        for (key, value) in [
            (
                DEPRECATED_EVM_RPC_TIMEOUT.key,
                self.settle.rpc_timeout_seconds.unwrap_or(1),
            ),
            ("settle.redis_timeout_ms", self.settle.redis_timeout_ms),
            ("settle.lease_seconds", self.settle.lease_seconds),
            (
                "settle.answer_within_seconds",
                self.settle.answer_within_seconds,
            ),
            (
                "settle.max_in_flight_per_signer",
                self.settle.max_in_flight_per_signer as u64,
            ),
            (
                "settle.reconcile_interval_seconds",
                self.settle.reconcile_interval_seconds,
            ),
        ] {
            if value == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        if self.settle.svm_record_ttl_seconds < 120 {
            return Err(err(
                "settle.svm_record_ttl_seconds",
                "must be at least 120 (a blockhash lives about 60-90 s)",
            ));
        }
        if self.evm.is_empty() && self.svm.is_empty() {
            return Err(err(
                "evm",
                "configure at least one [[evm]] or [[svm]] network",
            ));
        }
        ops::validate(&self.auth, self.rate_limit.as_ref(), &self.health)?;
        let webhook_targets = webhooks::validate(&self.auth, &self.webhooks)?;
        let svm = svm::validate(
            &self.svm,
            self.health
                .min_svm_fee_payer_lamports
                .unwrap_or(svm::DEFAULT_MIN_FEE_PAYER_BALANCE_LAMPORTS),
        )?;
        let evm_fallbacks = evm::Fallbacks {
            rpc_timeout_seconds: self
                .settle
                .rpc_timeout_seconds
                .unwrap_or(evm::DEFAULT_RPC_TIMEOUT_SECONDS),
            min_signer_balance_wei: self
                .health
                .min_evm_signer_balance_wei
                .unwrap_or(evm::DEFAULT_MIN_SIGNER_BALANCE_WEI),
        };
        let evm = evm::validate(&self.evm, &evm_fallbacks)?;
        let deprecations = [
            (
                self.settle.rpc_timeout_seconds.is_some(),
                DEPRECATED_EVM_RPC_TIMEOUT,
            ),
            (
                self.health.min_evm_signer_balance_wei.is_some(),
                DEPRECATED_EVM_MIN_BALANCE,
            ),
            (
                self.health.min_svm_fee_payer_lamports.is_some(),
                DEPRECATED_SVM_MIN_BALANCE,
            ),
        ]
        .into_iter()
        .filter_map(|(set, d)| set.then_some(d))
        .collect();
        let longest_evm_rpc_timeout = evm
            .iter()
            .map(|n| n.rpc_timeout)
            .max()
            .unwrap_or(Duration::from_secs(evm_fallbacks.rpc_timeout_seconds));
        let mut settle = self.settle.clone();
        settle.rpc_timeout_seconds = None;
        let mut health = self.health.clone();
        health.min_evm_signer_balance_wei = None;
        health.min_svm_fee_payer_lamports = None;
        Ok(ValidConfig {
            listen,
            body_limit_bytes: self.body_limit_bytes,
            redis: self.redis.clone(),
            shutdown_timeout: Duration::from_secs(
                self.shutdown_timeout_seconds
                    .unwrap_or(self.settle.receipt_timeout_seconds.saturating_add(10)),
            ),
            settle,
            quotes: self.quotes.clone(),
            evm,
            svm,
            auth: self.auth.clone(),
            allow_unauthenticated: self.allow_unauthenticated,
            rate_limit: self.rate_limit.clone(),
            health,
            log_format: self.log_format,
            webhooks: self.webhooks.clone(),
            webhook_targets,
            reconcile_step_timeout: longest_evm_rpc_timeout * 4,
            deprecations,
        })
    }
}

/// Keys whose values are secrets (signer and fee-payer keys, webhook secrets) or URLs that
/// may carry credentials (RPC and Redis URLs, webhook URLs with tokens).
const SECRET_KEYS: &[&str] = &[
    "signer_private_keys",
    "fee_payer_keys",
    "webhook_secret",
    "rpc_url",
    "rpc_urls",
    "url",
    "base_url",
    "webhook_url",
];

/// Whether the dotted key path (`evm[0].signer_private_keys[1]`) names a key holding a
/// secret (signer and fee-payer keys, webhook secrets) or a URL that may carry credentials
/// (`rpc_url`, `rpc_urls`, `url`, `base_url`, `webhook_url`).
pub fn holds_secret(key: &str) -> bool {
    key.split('.').any(|segment| {
        let name = segment.split('[').next().unwrap_or(segment);
        SECRET_KEYS.contains(&name)
    })
}

/// A TOML error as a [`ConfigError`] without the source line: `line N: message`, the message
/// withheld for [`holds_secret`] keys.
fn toml_error(text: &str, key: String, e: &toml::de::Error) -> ConfigError {
    let message = if holds_secret(&key) {
        "invalid value (not shown: this key holds a secret or a URL that may carry credentials)"
            .to_string()
    } else {
        e.message().trim().to_string()
    };
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            err(key, format!("line {line}: {message}"))
        }
        None => err(key, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"
[[evm]]
chain_id = 8453
rpc_url = "http://127.0.0.1:8545"
[[evm.assets]]
address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
name = "USD Coin"
version = "2"
"#;

    #[test]
    fn secrets_stay_out_of_debug_and_toml_errors() {
        let secret_key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        let mut c = Config::from_toml(&format!(
            "{GOOD}\n[[auth.keys]]\nname = \"shop\"\nsha256 = \"{}\"\nscopes = [\"settle\"]\nwebhook_url = \"https://shop.example/h\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        ))
        .unwrap();
        c.apply_env(&HashMap::from([(
            "X402_EVM_SIGNER_KEYS".to_string(),
            secret_key.to_string(),
        )]));
        c.validate().unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(&secret_key[2..]), "{debug}");
        assert!(
            !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{debug}"
        );
        assert!(debug.contains("REDACTED"), "{debug}");

        // A key written as the wrong type: neither the value nor its line is printed.
        let rpc = "rpc_url = \"http://127.0.0.1:8545\"";
        for (bad, key) in [
            (
                GOOD.replace(
                    rpc,
                    &format!("{rpc}\nsigner_private_keys = \"{secret_key}\""),
                ),
                "evm[0].signer_private_keys",
            ),
            (
                GOOD.replace(
                    rpc,
                    &format!("{rpc}\nsigner_private_keys = [[\"{secret_key}\"]]"),
                ),
                "evm[0].signer_private_keys[0]",
            ),
            (
                GOOD.replace(
                    rpc,
                    "rpc_urls = \"https://user:hunter2@rpc.example/v2/KEY\"",
                ),
                "evm[0].rpc_urls",
            ),
        ] {
            let e = Config::from_toml(&bad).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            let shown = e.to_string();
            assert!(!shown.contains(&secret_key[2..]), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("line "), "{shown}");
        }
        // A syntax error on a secret's line: the line is not quoted either.
        let e = Config::from_toml(
            &GOOD.replace(rpc, &format!("signer_private_keys = [\"{secret_key}\"")),
        )
        .unwrap_err();
        assert!(!e.to_string().contains(&secret_key[2..]), "{e}");
        assert!(holds_secret("svm[1].fee_payer_keys[0]"));
        assert!(holds_secret("auth.keys[0].webhook_secret"));
        assert!(!holds_secret("evm[0].chain_id"));
    }

    const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaf784d7bf4f2ff80";

    /// One EVM and one Solana network, with `evm` and `svm` added to their tables and `top`
    /// before them.
    fn two_families(top: &str, evm: &str, svm: &str) -> Config {
        let fee_payer = solana_keypair::Keypair::new().to_base58_string();
        Config::from_toml(&format!(
            r#"{top}
[[evm]]
network = "base"
rpc_url = "http://127.0.0.1:8545"
signer_private_keys = ["{ANVIL_KEY}"]
{evm}
[[svm]]
network = "solana-devnet"
rpc_url = "http://127.0.0.1:8899"
fee_payer_keys = ["{fee_payer}"]
{svm}
"#
        ))
        .unwrap()
    }

    #[test]
    fn without_deprecated_keys_the_defaults_apply_and_nothing_is_deprecated() {
        let valid = two_families("", "", "").validate().unwrap();
        assert!(valid.deprecations().is_empty());
        let (evm, svm) = (&valid.evm()[0], &valid.svm()[0]);
        assert_eq!(evm.rpc_timeout, Duration::from_secs(5));
        assert_eq!(evm.min_signer_balance_wei, 100_000_000_000_000);
        assert_eq!(svm.rpc_timeout, Duration::from_secs(10));
        assert_eq!(svm.min_fee_payer_balance_lamports, 1_000_000);
        assert_eq!(valid.reconcile_step_timeout(), Duration::from_secs(20));
        assert_eq!(valid.shutdown_timeout(), Duration::from_secs(40));
        assert_eq!(valid.listen(), "127.0.0.1:8402".parse().unwrap());
    }

    #[test]
    fn deprecated_keys_are_accepted_with_a_warning_naming_the_new_key() {
        let c = two_families(
            "[settle]\nrpc_timeout_seconds = 7\n\
             [health]\nmin_evm_signer_balance_wei = 5\nmin_svm_fee_payer_lamports = 9\n",
            "",
            "",
        );
        let valid = c.validate().unwrap();
        // The deprecated values apply to the networks that leave the new keys out.
        assert_eq!(valid.evm()[0].rpc_timeout, Duration::from_secs(7));
        assert_eq!(valid.evm()[0].min_signer_balance_wei, 5);
        assert_eq!(valid.svm()[0].min_fee_payer_balance_lamports, 9);
        assert_eq!(valid.reconcile_step_timeout(), Duration::from_secs(28));
        // Resolved into the networks: nothing downstream can read them from the sections.
        assert_eq!(valid.settle().rpc_timeout_seconds, None);
        assert_eq!(valid.health().min_evm_signer_balance_wei, None);
        assert_eq!(valid.health().min_svm_fee_payer_lamports, None);
        let lines: Vec<String> = valid.deprecations().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "config: settle.rpc_timeout_seconds is deprecated: set [[evm]] \
                 rpc_timeout_seconds instead (per network; where both are set, the network's \
                 value wins)",
                "config: health.min_evm_signer_balance_wei is deprecated: set [[evm]] \
                 min_signer_balance_wei instead (per network; where both are set, the \
                 network's value wins)",
                "config: health.min_svm_fee_payer_lamports is deprecated: set [[svm]] \
                 min_fee_payer_balance_lamports instead (per network; where both are set, the \
                 network's value wins)",
            ]
        );
        // A deprecated key keeps its own range check.
        let mut c = c;
        c.settle.rpc_timeout_seconds = Some(0);
        assert_eq!(
            c.validate().err().unwrap().key,
            "settle.rpc_timeout_seconds"
        );
    }

    #[test]
    fn per_network_keys_win_over_the_deprecated_ones() {
        let c = two_families(
            "[settle]\nrpc_timeout_seconds = 7\n\
             [health]\nmin_evm_signer_balance_wei = 5\nmin_svm_fee_payer_lamports = 9\n",
            "rpc_timeout_seconds = 3\nmin_signer_balance_wei = 11",
            "rpc_timeout_seconds = 4\nmin_fee_payer_balance_lamports = 13",
        );
        let valid = c.validate().unwrap();
        assert_eq!(valid.evm()[0].rpc_timeout, Duration::from_secs(3));
        assert_eq!(valid.evm()[0].min_signer_balance_wei, 11);
        assert_eq!(valid.svm()[0].rpc_timeout, Duration::from_secs(4));
        assert_eq!(valid.svm()[0].min_fee_payer_balance_lamports, 13);
        assert_eq!(valid.reconcile_step_timeout(), Duration::from_secs(12));
        // Still deprecated (and said so), even where every network overrides them.
        assert_eq!(valid.deprecations().len(), 3);
        // The new keys alone: no deprecation.
        let valid = two_families(
            "",
            "rpc_timeout_seconds = 3\nmin_signer_balance_wei = 11",
            "min_fee_payer_balance_lamports = 13",
        )
        .validate()
        .unwrap();
        assert!(valid.deprecations().is_empty());
        assert_eq!(valid.evm()[0].min_signer_balance_wei, 11);
        assert_eq!(valid.svm()[0].min_fee_payer_balance_lamports, 13);
    }

    #[test]
    fn a_second_evm_network_keeps_its_own_values() {
        let c = two_families(
            "[settle]\nrpc_timeout_seconds = 7\n",
            &format!(
                "rpc_timeout_seconds = 2\n[[evm]]\nnetwork = \"base-sepolia\"\n\
                 rpc_url = \"http://127.0.0.1:8546\"\nsigner_private_keys = [\"{ANVIL_KEY}\"]\n\
                 min_signer_balance_wei = 1"
            ),
            "",
        );
        let valid = c.validate().unwrap();
        let timeouts: Vec<_> = valid
            .evm()
            .iter()
            .map(|n| n.rpc_timeout.as_secs())
            .collect();
        assert_eq!(timeouts, [2, 7]);
        let floors: Vec<_> = valid
            .evm()
            .iter()
            .map(|n| n.min_signer_balance_wei)
            .collect();
        assert_eq!(floors, [100_000_000_000_000, 1]);
        assert_eq!(valid.reconcile_step_timeout(), Duration::from_secs(28));
    }

    #[test]
    fn unknown_keys_in_the_network_tables_name_the_key() {
        let e = Config::from_toml(
            "[[svm]]\nnetwork = \"solana-devnet\"\nrpc_url = \"http://x\"\nmin_fee_payer_lamports = 1\n",
        )
        .unwrap_err();
        assert!(e.key.starts_with("svm[0]"), "{e}");
        assert!(e.message.contains("min_fee_payer_lamports"), "{e}");
    }
}
