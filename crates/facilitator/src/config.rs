//! Configuration: one TOML file (path from `--config` or `X402_CONFIG`) plus environment
//! overrides for secrets and deployment specifics. See `deploy/config.example.toml`.
//!
//! Environment overrides (applied after the file):
//! - `X402_LISTEN`: listen address (`host:port`).
//! - `X402_REDIS_URL`: Redis URL; set to an empty string to force the in-memory store.
//! - `X402_EVM_SIGNER_KEYS`: comma-separated 0x private keys for every EVM network that has none.
//! - `X402_EVM_<chainId>_SIGNER_KEYS`: comma-separated 0x private keys for one chain.
//! - `X402_EVM_<chainId>_RPC_URL`: RPC URL for one chain.
//! - `X402_SVM_…`: Solana RPC URLs and fee-payer keys, see [`svm`].
//! - `X402_WEBHOOK_SECRET_<NAME>`: the webhook secret of the API key `<NAME>`, see [`webhooks`].

pub mod ops;
pub mod svm;
pub mod webhooks;

use std::collections::HashMap;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use serde::Deserialize;
use x402_chain::presets::{self, EvmPreset};

/// A configuration error naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct ConfigError {
    /// Dotted key path (e.g. `evm[0].assets[1].address`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
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
    /// EVM networks.
    #[serde(default)]
    pub evm: Vec<EvmNetworkConfig>,
    /// Solana networks.
    #[serde(default)]
    pub svm: Vec<svm::SvmNetworkConfig>,
    /// API keys (`[[auth.keys]]`); none → no authentication. See [`ops`].
    #[serde(default)]
    pub auth: ops::AuthConfig,
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

/// `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix (default `x402`).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
}

/// `[settle]`: settlement timing and deadlines (README "Settlement states and recovery").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettleConfig {
    /// Longest wait for a receipt (EVM) or `confirmed` (Solana) within one `/settle` call,
    /// seconds (default 30); then `settlement_pending` with the transaction.
    pub receipt_timeout_seconds: u64,
    /// Receipt / signature-status poll interval, milliseconds (default 200).
    pub poll_interval_ms: u64,
    /// How long a Solana payment's record lives, seconds (default 86,400; at least 120, about
    /// twice a blockhash's lifetime).
    pub svm_record_ttl_seconds: u64,
    /// Every EVM JSON-RPC call gives up after this long, seconds (default 5).
    pub rpc_timeout_seconds: u64,
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
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            receipt_timeout_seconds: 30,
            poll_interval_ms: 200,
            svm_record_ttl_seconds: 24 * 3600,
            rpc_timeout_seconds: 5,
            redis_timeout_ms: 2000,
            lease_seconds: 15,
            resend_after_seconds: 15,
            replace_after_seconds: 60,
            reconcile_interval_seconds: 2,
            signer_wait_seconds: 10,
            max_in_flight_per_signer: x402_settle::evm::DEFAULT_MAX_IN_FLIGHT_PER_SIGNER,
            nonce_gap_fill_seconds: 10,
            reserved_wait_seconds: 10,
        }
    }
}

impl SettleConfig {
    /// The settlement engine's timing.
    pub fn timing(&self) -> x402_settle::engine::SettleTiming {
        use std::time::Duration;
        x402_settle::engine::SettleTiming {
            receipt_timeout: Duration::from_secs(self.receipt_timeout_seconds),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            reserved_wait: Duration::from_secs(self.reserved_wait_seconds),
            lease: Duration::from_secs(self.lease_seconds),
            resend_after: Duration::from_secs(self.resend_after_seconds),
            replace_after: Duration::from_secs(self.replace_after_seconds),
        }
    }
}

/// `[[evm]]`: one EVM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmNetworkConfig {
    /// A known network (`base`, `eip155:8453`, `arbitrum`, …; `x402_chain::presets::EVM`):
    /// fills in `chain_id`, the default USDC (address, EIP-712 name/version, decimals) when no
    /// asset is listed or a listed asset leaves them out, and `gas.l1_fee_oracle` on OP-stack
    /// chains. Explicit keys win.
    #[serde(default)]
    pub network: Option<String>,
    /// EIP-155 chain id; the network is `eip155:{chain_id}` (v1 name from the built-in table).
    /// Required unless `network` names a preset.
    #[serde(default)]
    pub chain_id: u64,
    /// JSON-RPC URL (shorthand for a one-element `rpc_urls`).
    #[serde(default)]
    pub rpc_url: Option<String>,
    /// JSON-RPC URLs in order of preference: calls move to the next on a failure or timeout.
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    /// Facilitator signer keys (0x hex); prefer the environment overrides.
    #[serde(default)]
    pub signer_private_keys: Vec<String>,
    /// Tokens settled on this chain; none listed on a preset network → its USDC.
    #[serde(default)]
    pub assets: Vec<EvmAssetConfig>,
    /// Gas pricing in USDC for `/quote` and `/requirements`; absent → those endpoints answer
    /// 503 for this network.
    #[serde(default)]
    pub gas: Option<GasConfig>,
}

/// `[evm.gas]`: how settlement gas is priced in USDC (see the `x402-gas-oracle` crate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GasConfig {
    /// Safety markup on the converted gas cost, basis points (default 2000 = +20 %).
    #[serde(default = "default_markup_bps")]
    pub markup_bps: u32,
    /// Smallest gas charge, atomic USDC (default 0).
    #[serde(default)]
    pub minimum_usdc_atomic: u64,
    /// Headroom on the next block's base fee, basis points (default 2500).
    #[serde(default = "default_headroom_bps")]
    pub headroom_bps: u32,
    /// Priority-fee percentile of `eth_feeHistory` (default 50).
    #[serde(default = "default_tip_percentile")]
    pub tip_percentile: u8,
    /// OP-stack `GasPriceOracle` predeploy for the L1 data fee (Base:
    /// `0x420000000000000000000000000000000000000F`); absent → no L1 fee.
    #[serde(default)]
    pub l1_fee_oracle: Option<String>,
    /// USD price sources of the native token, tried in order.
    pub price_sources: Vec<PriceSourceConfig>,
}

/// One `[[evm.gas.price_sources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceSourceConfig {
    /// Chainlink `AggregatorV3Interface` feed on this chain (Base ETH/USD:
    /// `0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70`); older than `max_age_seconds` = stale.
    Chainlink {
        /// Feed address.
        address: String,
        /// Oldest accepted `updatedAt`, seconds (default 3600).
        #[serde(default = "default_feed_age")]
        max_age_seconds: u64,
    },
    /// Coinbase-style spot API: `GET {base_url}/v2/prices/{pair}/spot`.
    Coinbase {
        /// API base URL.
        base_url: String,
        /// Pair, e.g. `ETH-USD`.
        pair: String,
        /// Request timeout, milliseconds (default 2000).
        #[serde(default = "default_http_timeout_ms")]
        timeout_ms: u64,
    },
    /// Any JSON API: `GET url`, price at an RFC 6901 pointer (decimal string or integer).
    Http {
        /// URL.
        url: String,
        /// JSON pointer, e.g. `/data/amount`.
        json_pointer: String,
        /// Request timeout, milliseconds (default 2000).
        #[serde(default = "default_http_timeout_ms")]
        timeout_ms: u64,
    },
    /// A fixed price in USD, e.g. `"3000.00"` (a last resort, or for test chains).
    Fixed {
        /// USD per whole native token, decimal string.
        usd: String,
    },
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

fn default_markup_bps() -> u32 {
    2000
}
fn default_headroom_bps() -> u32 {
    2500
}
fn default_tip_percentile() -> u8 {
    50
}
fn default_feed_age() -> u64 {
    3600
}
fn default_http_timeout_ms() -> u64 {
    2000
}
fn default_quote_refresh() -> u64 {
    15
}
fn default_quote_age() -> u64 {
    120
}

/// `[[evm.assets]]`: one EIP-3009 token. At start the facilitator reads the token's
/// `name()`, `version()` and `decimals()` and refuses to start when one differs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmAssetConfig {
    /// Token contract address.
    pub address: String,
    /// EIP-712 domain `name` (Base USDC: "USD Coin"); may be left out for the preset USDC.
    #[serde(default)]
    pub name: Option<String>,
    /// EIP-712 domain `version` (USDC: "2"); may be left out for the preset USDC.
    #[serde(default)]
    pub version: Option<String>,
    /// Token decimals (default: the preset USDC's, else 6).
    #[serde(default)]
    pub decimals: Option<u8>,
}

/// A token of a validated EVM network: the configured values, the preset's where the
/// configuration left them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmAsset {
    /// Token contract.
    pub address: Address,
    /// EIP-712 domain `name`.
    pub name: String,
    /// EIP-712 domain `version`.
    pub version: String,
    /// Token decimals.
    pub decimals: u8,
    /// Config key of this asset (`evm[0].assets[1]`; `evm[0].network` for the preset's USDC),
    /// named by start-up errors.
    pub key: String,
}

fn default_listen() -> String {
    "127.0.0.1:8402".into()
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_prefix() -> String {
    "x402".into()
}
fn default_decimals() -> u8 {
    6
}

/// A validated EVM network ready to connect.
pub struct EvmNetwork {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Config key of this network (`evm[0]`).
    pub key: String,
    /// JSON-RPC URLs, in order of preference (at least one).
    pub rpc_urls: Vec<String>,
    /// Signer keys (at least one).
    pub signers: Vec<PrivateKeySigner>,
    /// Token contracts with their EIP-712 domain.
    pub assets: Vec<EvmAsset>,
    /// Gas pricing, if configured.
    pub gas: Option<GasConfig>,
}

impl Config {
    /// Parses TOML text and resolves `[[evm]] network` presets into chain ids; errors name
    /// the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("(file)", e.to_string()))?;
        let mut config: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| err(e.path().to_string(), e.into_inner().to_string()))?;
        for (i, net) in config.evm.iter_mut().enumerate() {
            net.resolve_chain_id(i)?;
        }
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
                let key_prefix = self
                    .redis
                    .as_ref()
                    .map(|r| r.key_prefix.clone())
                    .unwrap_or_else(default_prefix);
                Some(RedisConfig {
                    url: url.clone(),
                    key_prefix,
                })
            };
        }
        let split = |v: &String| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        svm::apply_env(&mut self.svm, env);
        webhooks::apply_env(&mut self.auth, env);
        for net in &mut self.evm {
            if let Some(urls) = env.get(&format!("X402_EVM_{}_RPC_URL", net.chain_id)) {
                net.rpc_url = None;
                net.rpc_urls = split(urls);
            }
            if let Some(keys) = env.get(&format!("X402_EVM_{}_SIGNER_KEYS", net.chain_id)) {
                net.signer_private_keys = split(keys);
            } else if net.signer_private_keys.is_empty()
                && let Some(keys) = env.get("X402_EVM_SIGNER_KEYS")
            {
                net.signer_private_keys = split(keys);
            }
        }
    }

    /// Checks every value and returns the EVM networks ready to connect. Errors name the key.
    pub fn validate(&self) -> Result<Vec<EvmNetwork>, ConfigError> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| err("listen", format!("{:?} is not host:port: {e}", self.listen)))?;
        if self.body_limit_bytes < 1024 {
            return Err(err("body_limit_bytes", "must be at least 1024"));
        }
        if let Some(r) = &self.redis
            && !(r.url.starts_with("redis://")
                || r.url.starts_with("rediss://")
                || r.url.starts_with("unix://"))
        {
            return Err(err(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        for (key, value) in [
            (
                "settle.rpc_timeout_seconds",
                self.settle.rpc_timeout_seconds,
            ),
            ("settle.redis_timeout_ms", self.settle.redis_timeout_ms),
            ("settle.lease_seconds", self.settle.lease_seconds),
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
        webhooks::validate(&self.auth, &self.webhooks)?;
        self.validate_svm()?;
        let mut seen = std::collections::HashSet::new();
        self.evm
            .iter()
            .enumerate()
            .map(|(i, net)| {
                let at = |k: &str| format!("evm[{i}].{k}");
                if !seen.insert(net.chain_id) {
                    return Err(err(at("chain_id"), format!("chain {} configured twice", net.chain_id)));
                }
                let rpc_urls = match (&net.rpc_url, net.rpc_urls.is_empty()) {
                    (Some(_), false) => return Err(err(at("rpc_urls"), "set rpc_url or rpc_urls, not both")),
                    (Some(url), true) => vec![url.clone()],
                    (None, false) => net.rpc_urls.clone(),
                    (None, true) => return Err(err(at("rpc_url"), "set rpc_url (or rpc_urls)")),
                };
                for (u, url) in rpc_urls.iter().enumerate() {
                    let key = if net.rpc_url.is_some() { at("rpc_url") } else { at(&format!("rpc_urls[{u}]")) };
                    url.parse::<alloy::transports::http::reqwest::Url>().map_err(|e| err(key, e.to_string()))?;
                }
                if net.signer_private_keys.is_empty() {
                    return Err(err(
                        at("signer_private_keys"),
                        format!("no signer key: set it or X402_EVM_{}_SIGNER_KEYS / X402_EVM_SIGNER_KEYS", net.chain_id),
                    ));
                }
                let signers = net
                    .signer_private_keys
                    .iter()
                    .enumerate()
                    .map(|(k, key)| {
                        key.parse::<PrivateKeySigner>()
                            .map_err(|_| err(at(&format!("signer_private_keys[{k}]")), "not a 32-byte hex private key"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let preset = net.preset();
                let assets = net.resolved_assets(i, preset)?;
                let mut gas = net.gas.clone();
                if let Some(gas) = &mut gas {
                    validate_gas(gas, &at("gas"))?;
                    if gas.l1_fee_oracle.is_none() {
                        gas.l1_fee_oracle = preset
                            .and_then(|p| p.l1_fee_oracle)
                            .map(|a| a.to_checksum(None));
                    }
                }
                Ok(EvmNetwork {
                    chain_id: net.chain_id,
                    key: format!("evm[{i}]"),
                    rpc_urls,
                    signers,
                    assets,
                    gas,
                })
            })
            .collect()
    }
}

impl EvmNetworkConfig {
    /// The preset named by `network`, if any.
    pub fn preset(&self) -> Option<&'static EvmPreset> {
        self.network.as_deref().and_then(presets::evm)
    }

    /// Sets `chain_id` from the `network` preset of the `index`-th `[[evm]]`. Errors: an
    /// unknown network, a `chain_id` that contradicts it, neither set.
    fn resolve_chain_id(&mut self, index: usize) -> Result<(), ConfigError> {
        let at = |k: &str| format!("evm[{index}].{k}");
        match (&self.network, self.preset()) {
            (Some(name), None) => {
                let known: Vec<&str> = presets::EVM.iter().map(|p| p.key).collect();
                Err(err(
                    at("network"),
                    format!(
                        "unknown network {name:?}: use chain_id, or one of {} (or eip155:<chain id> of one)",
                        known.join(", ")
                    ),
                ))
            }
            (Some(name), Some(p)) if self.chain_id != 0 && self.chain_id != p.chain_id => Err(err(
                at("chain_id"),
                format!(
                    "{} but network {name:?} is chain {}",
                    self.chain_id, p.chain_id
                ),
            )),
            (Some(_), Some(p)) => {
                self.chain_id = p.chain_id;
                Ok(())
            }
            (None, _) if self.chain_id == 0 => Err(err(at("chain_id"), "set chain_id or network")),
            (None, _) => Ok(()),
        }
    }

    /// The assets of the `index`-th `[[evm]]`, the `preset`'s USDC filling what is left out.
    fn resolved_assets(
        &self,
        index: usize,
        preset: Option<&'static EvmPreset>,
    ) -> Result<Vec<EvmAsset>, ConfigError> {
        let at = |k: &str| format!("evm[{index}].{k}");
        if self.assets.is_empty() {
            let usdc = preset
                .map(|p| p.usdc)
                .ok_or_else(|| err(at("assets"), "list at least one token"))?;
            return Ok(vec![EvmAsset {
                address: usdc.address,
                name: usdc.name.into(),
                version: usdc.version.into(),
                decimals: usdc.decimals,
                key: at("network"),
            }]);
        }
        self.assets
            .iter()
            .enumerate()
            .map(|(a, asset)| {
                let key = at(&format!("assets[{a}]"));
                let address = asset
                    .address
                    .parse::<Address>()
                    .map_err(|_| err(format!("{key}.address"), "not a 0x 20-byte address"))?;
                let known = preset.map(|p| p.usdc).filter(|u| u.address == address);
                let name = asset
                    .name
                    .clone()
                    .or_else(|| known.map(|u| u.name.to_string()))
                    .ok_or_else(|| err(format!("{key}.name"), "missing EIP-712 name"))?;
                if name.is_empty() {
                    return Err(err(format!("{key}.name"), "empty EIP-712 name"));
                }
                let version = asset
                    .version
                    .clone()
                    .or_else(|| known.map(|u| u.version.to_string()))
                    .ok_or_else(|| err(format!("{key}.version"), "missing EIP-712 version"))?;
                let decimals = asset
                    .decimals
                    .or_else(|| known.map(|u| u.decimals))
                    .unwrap_or_else(default_decimals);
                Ok(EvmAsset {
                    address,
                    name,
                    version,
                    decimals,
                    key,
                })
            })
            .collect()
    }
}

impl Config {
    /// Checks every `[[svm]]` entry and returns the Solana networks ready to connect (reads
    /// fee-payer key files). Errors name the key.
    pub fn validate_svm(&self) -> Result<Vec<svm::SvmNetwork>, ConfigError> {
        svm::validate(&self.svm)
    }
}

fn validate_gas(gas: &GasConfig, at: &str) -> Result<(), ConfigError> {
    if gas.tip_percentile > 100 {
        return Err(err(format!("{at}.tip_percentile"), "must be 0..=100"));
    }
    if let Some(oracle) = &gas.l1_fee_oracle {
        oracle
            .parse::<Address>()
            .map_err(|_| err(format!("{at}.l1_fee_oracle"), "not a 0x 20-byte address"))?;
    }
    if gas.price_sources.is_empty() {
        return Err(err(
            format!("{at}.price_sources"),
            "list at least one price source",
        ));
    }
    for (i, source) in gas.price_sources.iter().enumerate() {
        let key = format!("{at}.price_sources[{i}]");
        match source {
            PriceSourceConfig::Chainlink { address, .. } => {
                address
                    .parse::<Address>()
                    .map_err(|_| err(format!("{key}.address"), "not a 0x 20-byte address"))?;
            }
            PriceSourceConfig::Coinbase { base_url: url, .. }
            | PriceSourceConfig::Http { url, .. } => {
                url.parse::<alloy::transports::http::reqwest::Url>()
                    .map_err(|e| err(format!("{key}.url"), e.to_string()))?;
            }
            PriceSourceConfig::Fixed { usd } => {
                x402_gas_oracle::NativePrice::from_decimal_str(usd, 0, "fixed")
                    .map_err(|e| err(format!("{key}.usd"), e.to_string()))?;
            }
        }
    }
    Ok(())
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
    const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaf784d7bf4f2ff80";

    #[test]
    fn env_supplies_keys_and_validation_passes() {
        let mut c = Config::from_toml(GOOD).unwrap();
        assert!(
            c.validate()
                .err()
                .unwrap()
                .key
                .contains("signer_private_keys")
        );
        let env = HashMap::from([("X402_EVM_SIGNER_KEYS".to_string(), ANVIL_KEY.to_string())]);
        c.apply_env(&env);
        let nets = c.validate().unwrap();
        assert_eq!(nets[0].signers.len(), 1);
        assert!(c.redis.is_none());
    }

    #[test]
    fn gas_section_parses_and_is_checked() {
        let with_gas = format!(
            "{GOOD}\n[evm.gas]\nmarkup_bps = 1500\n[[evm.gas.price_sources]]\nkind = \"chainlink\"\naddress = \"0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70\"\n[[evm.gas.price_sources]]\nkind = \"fixed\"\nusd = \"3000.50\"\n"
        );
        let mut c = Config::from_toml(&with_gas).unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        let nets = c.validate().unwrap();
        let gas = nets[0].gas.as_ref().unwrap();
        assert_eq!((gas.markup_bps, gas.price_sources.len()), (1500, 2));
        let bad = with_gas.replace("3000.50", "free");
        let mut c = Config::from_toml(&bad).unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        assert_eq!(
            c.validate().err().unwrap().key,
            "evm[0].gas.price_sources[1].usd"
        );
        let e = Config::from_toml(&with_gas.replace("kind = \"fixed\"", "kind = \"magic\""))
            .unwrap_err();
        assert!(e.key.starts_with("evm[0].gas.price_sources[1]"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            Config::from_toml(&GOOD.replace("chain_id = 8453", "chain_id = \"x\"")).unwrap_err();
        assert_eq!(e.key, "evm[0].chain_id");
        let e = Config::from_toml(&GOOD.replace("listen", "lisen")).unwrap_err();
        assert!(e.message.contains("lisen"), "{e}");
        let mut c =
            Config::from_toml(&GOOD.replace("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "0x12"))
                .unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        assert_eq!(c.validate().err().unwrap().key, "evm[0].assets[0].address");
        c.evm[0].signer_private_keys = vec!["nope".into()];
        assert_eq!(
            c.validate().err().unwrap().key,
            "evm[0].signer_private_keys[0]"
        );
    }

    #[test]
    fn network_presets_resolve_and_contradictions_name_the_key() {
        let preset = |body: &str| {
            Config::from_toml(&format!(
                "[[evm]]\nrpc_url = \"http://127.0.0.1:1\"\nsigner_private_keys = [\"{ANVIL_KEY}\"]\n{body}\n"
            ))
        };
        let c = preset("network = \"optimism\"").unwrap();
        assert_eq!(c.evm[0].chain_id, 10);
        let net = c.validate().unwrap().remove(0);
        assert_eq!(net.assets[0].name, "USD Coin");
        assert_eq!(net.assets[0].key, "evm[0].network");
        assert!(net.gas.is_none(), "no [evm.gas]: nothing to fill");
        assert_eq!(
            preset("network = \"eip155:8453\"\nchain_id = 8453")
                .unwrap()
                .evm[0]
                .chain_id,
            8453
        );
        let e = preset("network = \"base\"\nchain_id = 1").unwrap_err();
        assert_eq!(e.key, "evm[0].chain_id", "{e}");
        let e = preset("network = \"narnia\"").unwrap_err();
        assert_eq!(e.key, "evm[0].network", "{e}");
        assert!(e.message.contains("base-sepolia"), "{e}");
        assert_eq!(preset("").unwrap_err().key, "evm[0].chain_id");
        // Without a preset, an asset needs its domain; without assets, a chain needs a preset.
        let c = preset("chain_id = 31337\n[[evm.assets]]\naddress = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\"").unwrap();
        assert_eq!(c.validate().err().unwrap().key, "evm[0].assets[0].name");
        let c = preset("chain_id = 31337").unwrap();
        assert_eq!(c.validate().err().unwrap().key, "evm[0].assets");
    }
}
