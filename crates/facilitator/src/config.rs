//! Configuration: one TOML file (path from `--config` or `X402_CONFIG`) plus environment
//! overrides for secrets and deployment specifics. See `deploy/config.example.toml`.
//!
//! Environment overrides (applied after the file):
//! - `X402_LISTEN`: listen address (`host:port`).
//! - `X402_REDIS_URL`: Redis URL; set to an empty string to force the in-memory store.
//! - `X402_EVM_SIGNER_KEYS`: comma-separated 0x private keys for every EVM network that has none.
//! - `X402_EVM_<chainId>_SIGNER_KEYS`: comma-separated 0x private keys for one chain.
//! - `X402_EVM_<chainId>_RPC_URL`: RPC URL for one chain.

use std::collections::HashMap;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use serde::Deserialize;

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
    /// EVM networks.
    #[serde(default)]
    pub evm: Vec<EvmNetworkConfig>,
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

/// `[settle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleConfig {
    /// Longest wait for a receipt within one `/settle` call, seconds (default 30).
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_seconds: u64,
    /// Receipt poll interval, milliseconds (default 200).
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            receipt_timeout_seconds: default_receipt_timeout(),
            poll_interval_ms: default_poll_ms(),
        }
    }
}

/// `[[evm]]`: one EVM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmNetworkConfig {
    /// EIP-155 chain id; the network is `eip155:{chain_id}` (v1 name from the built-in table).
    pub chain_id: u64,
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Facilitator signer keys (0x hex); prefer the environment overrides.
    #[serde(default)]
    pub signer_private_keys: Vec<String>,
    /// Tokens settled on this chain.
    pub assets: Vec<EvmAssetConfig>,
}

/// `[[evm.assets]]`: one EIP-3009 token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmAssetConfig {
    /// Token contract address.
    pub address: String,
    /// EIP-712 domain `name` (Base USDC: "USD Coin").
    pub name: String,
    /// EIP-712 domain `version` (USDC: "2").
    pub version: String,
    /// Token decimals (USDC: 6).
    #[serde(default = "default_decimals")]
    pub decimals: u8,
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
fn default_receipt_timeout() -> u64 {
    30
}
fn default_poll_ms() -> u64 {
    200
}
fn default_decimals() -> u8 {
    6
}

/// A validated EVM network ready to connect.
pub struct EvmNetwork {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Signer keys (at least one).
    pub signers: Vec<PrivateKeySigner>,
    /// Token contracts with their EIP-712 domain.
    pub assets: Vec<(Address, EvmAssetConfig)>,
}

impl Config {
    /// Parses TOML text; errors name the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("(file)", e.to_string()))?;
        serde_path_to_error::deserialize(de)
            .map_err(|e| err(e.path().to_string(), e.into_inner().to_string()))
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
        for net in &mut self.evm {
            if let Some(url) = env.get(&format!("X402_EVM_{}_RPC_URL", net.chain_id)) {
                net.rpc_url = url.clone();
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
        if self.evm.is_empty() {
            return Err(err("evm", "configure at least one [[evm]] network"));
        }
        let mut seen = std::collections::HashSet::new();
        self.evm
            .iter()
            .enumerate()
            .map(|(i, net)| {
                let at = |k: &str| format!("evm[{i}].{k}");
                if !seen.insert(net.chain_id) {
                    return Err(err(at("chain_id"), format!("chain {} configured twice", net.chain_id)));
                }
                net.rpc_url.parse::<alloy::transports::http::reqwest::Url>().map_err(|e| err(at("rpc_url"), e.to_string()))?;
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
                if net.assets.is_empty() {
                    return Err(err(at("assets"), "list at least one token"));
                }
                let assets = net
                    .assets
                    .iter()
                    .enumerate()
                    .map(|(a, asset)| {
                        let addr = asset
                            .address
                            .parse::<Address>()
                            .map_err(|_| err(at(&format!("assets[{a}].address")), "not a 0x 20-byte address"))?;
                        if asset.name.is_empty() {
                            return Err(err(at(&format!("assets[{a}].name")), "empty EIP-712 name"));
                        }
                        Ok((addr, asset.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(EvmNetwork { chain_id: net.chain_id, rpc_url: net.rpc_url.clone(), signers, assets })
            })
            .collect()
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
}
