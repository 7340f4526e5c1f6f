//! `[redis]`: where the replay store lives (README "Scaling past one Redis").
//!
//! ```toml
//! [redis]
//! mode = "sentinel"                 # "single" (default) | "sentinel" | "cluster"
//! urls = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"]
//! sentinel_master = "x402"          # sentinel mode: the group's primary name
//! key_prefix = "x402"
//! index_shards = 16                 # never changed on live data
//! min_replicas_acked = 1            # default: 0 single, 1 sentinel / cluster
//! ```
//!
//! `url = "redis://host:6379/0"` is the single-node shorthand. `rediss://` connects with TLS.
//! Environment: `X402_REDIS_URL` (a single node; empty: the in-memory store), `X402_REDIS_URLS`
//! (comma-separated, replaces `url` and `urls`), `X402_REDIS_MODE`, `X402_REDIS_SENTINEL_MASTER`,
//! `X402_REDIS_USERNAME` and `X402_REDIS_PASSWORD` (the ACL user and password of the data
//! nodes; never in the file).

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use x402_settle::redis_conn::{RedisMode, RedisTarget};
use x402_settle::replay::keys::DEFAULT_SHARDS;

use super::error::{ConfigError, err};

/// `[redis] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeConfig {
    /// One node.
    #[default]
    Single,
    /// A Sentinel group (`urls`: the sentinels; `sentinel_master`: the group name).
    Sentinel,
    /// Redis Cluster (`urls`: seed nodes).
    Cluster,
}

/// `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `single` (default), `sentinel` or `cluster`.
    #[serde(default)]
    pub mode: ModeConfig,
    /// The single node (`redis://host:port/db`, `rediss://…`, `unix://…`): `mode = "single"`
    /// only.
    #[serde(default)]
    pub url: Option<String>,
    /// The node (single, one entry), the sentinels (sentinel) or the seed nodes (cluster).
    #[serde(default)]
    pub urls: Vec<String>,
    /// The Sentinel group's primary name (sentinel mode only).
    #[serde(default)]
    pub sentinel_master: Option<String>,
    /// Key prefix (default `x402`).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Index shards (1 to 1024, default 16): the unresolved-record, transaction and webhook
    /// indexes are split into this many hash-tagged shards. Never changed on live data.
    #[serde(default = "default_shards")]
    pub index_shards: u16,
    /// Replicas that must acknowledge the record written before a broadcast and the final
    /// state (Redis `WAIT`) within `[settle] redis_timeout_ms` / 2; else the settlement answers
    /// 503 and nothing is broadcast. Default 0 in single mode, 1 otherwise.
    #[serde(default)]
    pub min_replicas_acked: Option<u32>,
    /// ACL user of the data nodes: `X402_REDIS_USERNAME` only.
    #[serde(skip)]
    pub username: Option<String>,
    /// Password of the data nodes: `X402_REDIS_PASSWORD` only.
    #[serde(skip)]
    pub password: Option<SecretString>,
    /// An `X402_REDIS_MODE` that is no mode (reported by validation).
    #[serde(skip)]
    bad_mode_env: Option<String>,
}

/// Default `key_prefix`.
fn default_prefix() -> String {
    "x402".to_string()
}

fn default_shards() -> u16 {
    DEFAULT_SHARDS
}

impl RedisConfig {
    /// A single node at `url` (the `X402_REDIS_URL` override).
    pub fn single(url: &str) -> Self {
        RedisConfig {
            mode: ModeConfig::Single,
            url: Some(url.to_string()),
            urls: Vec::new(),
            sentinel_master: None,
            key_prefix: default_prefix(),
            index_shards: DEFAULT_SHARDS,
            min_replicas_acked: None,
            username: None,
            password: None,
            bad_mode_env: None,
        }
    }

    /// The mode.
    pub fn mode(&self) -> RedisMode {
        match self.mode {
            ModeConfig::Single => RedisMode::Single,
            ModeConfig::Sentinel => RedisMode::Sentinel,
            ModeConfig::Cluster => RedisMode::Cluster,
        }
    }

    /// Every configured URL: `url`, then `urls`.
    pub fn all_urls(&self) -> Vec<String> {
        self.url.iter().chain(self.urls.iter()).cloned().collect()
    }

    /// Replicas that must acknowledge a write before an irreversible act.
    pub fn min_replicas_acked(&self) -> u32 {
        self.min_replicas_acked.unwrap_or(match self.mode {
            ModeConfig::Single => 0,
            ModeConfig::Sentinel | ModeConfig::Cluster => 1,
        })
    }

    /// Where to connect, every call bounded by `timeout`.
    pub fn target(&self, timeout: Duration) -> RedisTarget {
        RedisTarget {
            mode: self.mode(),
            urls: self.all_urls(),
            sentinel_master: self.sentinel_master.clone(),
            username: self.username.clone(),
            password: self
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string()),
            timeout,
        }
    }

    /// Applies `X402_REDIS_URLS`, `X402_REDIS_MODE`, `X402_REDIS_SENTINEL_MASTER`,
    /// `X402_REDIS_USERNAME`, `X402_REDIS_PASSWORD`.
    pub(super) fn apply_env(&mut self, env: &HashMap<String, String>) {
        if let Some(mode) = env.get("X402_REDIS_MODE").filter(|m| !m.is_empty()) {
            match mode.as_str() {
                "single" => self.mode = ModeConfig::Single,
                "sentinel" => self.mode = ModeConfig::Sentinel,
                "cluster" => self.mode = ModeConfig::Cluster,
                other => self.bad_mode_env = Some(other.to_string()),
            }
        }
        if let Some(m) = env
            .get("X402_REDIS_SENTINEL_MASTER")
            .filter(|m| !m.is_empty())
        {
            self.sentinel_master = Some(m.clone());
        }
        if let Some(urls) = env.get("X402_REDIS_URLS").filter(|u| !u.trim().is_empty()) {
            self.url = None;
            self.urls = urls
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect();
        }
        if let Some(u) = env.get("X402_REDIS_USERNAME").filter(|u| !u.is_empty()) {
            self.username = Some(u.clone());
        }
        if let Some(p) = env.get("X402_REDIS_PASSWORD").filter(|p| !p.is_empty()) {
            self.password = Some(SecretString::from(p.clone()));
        }
    }

    /// Checks the mode, URLs and values; errors name the key (never a URL's text: it may
    /// carry a password).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = &self.bad_mode_env {
            return Err(err(
                "X402_REDIS_MODE",
                format!("{bad:?} is not single, sentinel or cluster"),
            ));
        }
        let urls = self.all_urls();
        match self.mode {
            ModeConfig::Single => {
                if urls.len() != 1 {
                    return Err(err(
                        "redis.url",
                        format!(
                            "mode \"single\" takes one URL (url, or urls with one entry); {} given",
                            urls.len()
                        ),
                    ));
                }
            }
            ModeConfig::Sentinel | ModeConfig::Cluster => {
                let mode = self.mode().as_str();
                if self.url.is_some() {
                    return Err(err(
                        "redis.url",
                        format!("is the single-node shorthand; mode \"{mode}\" takes urls"),
                    ));
                }
                if self.urls.is_empty() {
                    return Err(err(
                        "redis.urls",
                        format!(
                            "mode \"{mode}\" needs at least one URL ({})",
                            if mode == "sentinel" {
                                "the sentinels"
                            } else {
                                "cluster seed nodes"
                            }
                        ),
                    ));
                }
            }
        }
        match (self.mode, &self.sentinel_master) {
            (ModeConfig::Sentinel, None) => {
                return Err(err(
                    "redis.sentinel_master",
                    "mode \"sentinel\" needs the name of the group's primary",
                ));
            }
            (ModeConfig::Sentinel, Some(m)) if m.trim().is_empty() => {
                return Err(err("redis.sentinel_master", "must not be empty"));
            }
            (ModeConfig::Single | ModeConfig::Cluster, Some(_)) => {
                return Err(err(
                    "redis.sentinel_master",
                    "is for mode = \"sentinel\" only",
                ));
            }
            _ => {}
        }
        let keyed = self.url.iter().map(|u| ("redis.url".to_string(), u)).chain(
            self.urls
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("redis.urls[{i}]"), u)),
        );
        for (key, url) in keyed {
            let scheme_ok = url.starts_with("redis://")
                || url.starts_with("rediss://")
                || (self.mode == ModeConfig::Single && url.starts_with("unix://"));
            if !scheme_ok {
                return Err(err(
                    key,
                    if self.mode == ModeConfig::Single {
                        "must start with redis://, rediss:// or unix://"
                    } else {
                        "must start with redis:// or rediss://"
                    },
                ));
            }
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                return Err(err(key, format!("is not a Redis URL: {}", e.kind_name())));
            }
        }
        if !(1..=1024).contains(&self.index_shards) {
            return Err(err("redis.index_shards", "must be between 1 and 1024"));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(err(
                "redis.key_prefix",
                "must not be empty nor contain { or } (hash tags are the store's)",
            ));
        }
        Ok(())
    }
}

/// The kind of a Redis URL error, without the URL.
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> String {
        self.detail()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:?}", self.kind()))
    }
}
