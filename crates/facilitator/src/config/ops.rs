//! Operations configuration: API keys (`[auth]`), rate limits (`[rate_limit]`), readiness
//! checks (`[health]`) and the log format. Every table is optional; without `[[auth.keys]]`
//! nobody needs a key and without `[rate_limit]` nothing is limited (loopback use).

use std::collections::HashMap;

use secrecy::SecretString;
use serde::Deserialize;

use super::error::{ConfigError, err};

/// What an API key may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /verify`.
    Verify,
    /// `POST /settle` (and settlement status routes).
    Settle,
    /// `GET /quote` and `POST /requirements`.
    Quote,
    /// `GET /metrics`, and every other scope.
    Admin,
}

impl Scope {
    /// The scope's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Verify => "verify",
            Scope::Settle => "settle",
            Scope::Quote => "quote",
            Scope::Admin => "admin",
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The accepted keys; empty → authentication off.
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// One `[[auth.keys]]` entry. The key itself is never configured, only its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Name of the caller (a metric label and a log field): 1–64 characters of
    /// `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Lower-case hex SHA-256 of the key (64 characters), as printed by
    /// `x402-facilitator keygen`. May be left out of the file and given as the environment
    /// variable `X402_API_KEY_SHA256_<NAME>` ([`sha256_env_var`]), which overrides it.
    #[serde(default)]
    pub sha256: String,
    /// What the key may call; `admin` includes every scope.
    pub scopes: Vec<Scope>,
    /// Where the final states (`settled`, `failed`, `expired`) of the payments this key
    /// settles are POSTed, signed (see [`crate::webhooks`]); none → no webhook.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The webhook's signing secret, `whsec_` + base64 (24–64 bytes). Prefer the environment
    /// variable `X402_WEBHOOK_SECRET_<NAME>` ([`super::webhooks::secret_env_var`]), which
    /// overrides this. `Debug` prints it redacted.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
}

/// One limit: a steady rate and a burst (generic cell rate algorithm).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Sustained requests per second (may be fractional, e.g. 0.5).
    pub requests_per_second: f64,
    /// Requests accepted at once after a quiet period (at least 1).
    pub burst: u32,
}

/// `[rate_limit]`: limits on `/verify` and `/settle`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Per API key (only when keys are configured).
    #[serde(default)]
    pub per_key: Option<LimitConfig>,
    /// Per client IP address.
    #[serde(default)]
    pub per_ip: Option<LimitConfig>,
    /// Deprecated (use `trusted_proxies`): take the client IP from `X-Forwarded-For` /
    /// `Forwarded`, believing only the entry the TCP peer (the one proxy in front) appended,
    /// i.e. the rightmost. Default false: the TCP peer address.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Proxies in front of the facilitator, as networks (`10.0.0.0/8`) or addresses: when
    /// the TCP peer is one of them, the client IP is the rightmost `X-Forwarded-For` /
    /// `Forwarded` entry that is not (see [`crate::client_ip`]). Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Keep the budgets in this process even when `[redis]` is configured (default false:
    /// replicas sharing Redis share one budget).
    #[serde(default)]
    pub local_only: bool,
}

/// `[health]`: what `/health/ready` checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Time limit of each dependency check, milliseconds (default 2000).
    #[serde(default = "default_check_timeout_ms")]
    pub check_timeout_ms: u64,
    /// How often the readiness checks run in the background, seconds (default 5, at least 1):
    /// `/health/ready` answers the last report (so probes cost no RPC or Redis call), and the
    /// signer-balance and dependency gauges follow it.
    #[serde(default = "default_refresh_seconds")]
    pub refresh_seconds: u64,
    /// Deprecated: use `[[evm]] min_signer_balance_wei`. The smallest native balance of a
    /// signer, wei, of every EVM network that does not set its own. Always `None` in a
    /// [`ValidConfig`](super::ValidConfig).
    #[serde(default)]
    pub min_evm_signer_balance_wei: Option<u128>,
    /// Deprecated: use `[[svm]] min_fee_payer_balance_lamports`. The smallest fee-payer
    /// balance, lamports, of every Solana network that does not set its own. Always `None` in
    /// a [`ValidConfig`](super::ValidConfig).
    #[serde(default)]
    pub min_svm_fee_payer_lamports: Option<u64>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_timeout_ms: default_check_timeout_ms(),
            refresh_seconds: default_refresh_seconds(),
            min_evm_signer_balance_wei: None,
            min_svm_fee_payer_lamports: None,
        }
    }
}

fn default_check_timeout_ms() -> u64 {
    2000
}
fn default_refresh_seconds() -> u64 {
    5
}

/// `log_format`: `text` (default, human-readable) or `json` (one object per line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line with the request's span fields (request id, key name, …).
    Json,
}

/// The environment variable holding the SHA-256 of the API key named `name`:
/// `X402_API_KEY_SHA256_` + the name upper-cased, `-` and `.` as `_` (`shop-a` →
/// `X402_API_KEY_SHA256_SHOP_A`). Lets a deployment keep its key list in a shared file and the
/// hashes with its secrets.
pub fn sha256_env_var(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("X402_API_KEY_SHA256_{upper}")
}

/// Takes each key's SHA-256 from its environment variable ([`sha256_env_var`]) when set.
pub fn apply_env(auth: &mut AuthConfig, env: &HashMap<String, String>) {
    for key in &mut auth.keys {
        if let Some(hash) = env.get(&sha256_env_var(&key.name)) {
            key.sha256 = hash.trim().to_string();
        }
    }
}

/// Whether `name` is a valid key name (bounded metric label).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks `[auth]`, `[rate_limit]` and `[health]`; errors name the key.
pub fn validate(
    auth: &AuthConfig,
    rate_limit: Option<&RateLimitConfig>,
    health: &HealthConfig,
) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut hashes = std::collections::HashSet::new();
    for (i, key) in auth.keys.iter().enumerate() {
        let at = |k: &str| format!("auth.keys[{i}].{k}");
        if !valid_name(&key.name) {
            return Err(err(
                at("name"),
                "1-64 characters of letters, digits, '_', '.', '-'",
            ));
        }
        if !names.insert(key.name.as_str()) {
            return Err(err(at("name"), format!("{:?} used twice", key.name)));
        }
        if key.sha256.is_empty() {
            return Err(err(
                at("sha256"),
                format!(
                    "missing: set {} (or sha256) to the SHA-256 printed by \
                     `x402-facilitator keygen`",
                    sha256_env_var(&key.name)
                ),
            ));
        }
        if key.sha256.len() != 64
            || !key
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err(
                at("sha256"),
                "64 lower-case hex characters (the SHA-256 of the key, never the key itself; \
                 see `x402-facilitator keygen`)",
            ));
        }
        if !hashes.insert(key.sha256.as_str()) {
            return Err(err(at("sha256"), "the same key is configured twice"));
        }
        if key.scopes.is_empty() {
            return Err(err(
                at("scopes"),
                "list at least one of verify, settle, quote, admin",
            ));
        }
    }
    if let Some(rl) = rate_limit {
        for (name, limit) in [("per_key", &rl.per_key), ("per_ip", &rl.per_ip)] {
            let Some(limit) = limit else { continue };
            let at = |k: &str| format!("rate_limit.{name}.{k}");
            if !(limit.requests_per_second.is_finite() && limit.requests_per_second > 0.0)
                || limit.requests_per_second > 1_000_000.0
            {
                return Err(err(
                    at("requests_per_second"),
                    "must be a number above 0 and at most 1,000,000",
                ));
            }
            if limit.burst == 0 {
                return Err(err(at("burst"), "must be at least 1"));
            }
        }
        for (i, proxy) in rl.trusted_proxies.iter().enumerate() {
            if crate::client_ip::parse_net(proxy).is_none() {
                return Err(err(
                    format!("rate_limit.trusted_proxies[{i}]"),
                    format!("{proxy:?} is not a network (10.0.0.0/8, fd00::/8) or an address"),
                ));
            }
        }
        if rl.per_key.is_some() && auth.keys.is_empty() {
            return Err(err(
                "rate_limit.per_key",
                "needs [[auth.keys]] (without keys there is no key to count per)",
            ));
        }
    }
    if health.check_timeout_ms == 0 {
        return Err(err("health.check_timeout_ms", "must be at least 1"));
    }
    if health.refresh_seconds == 0 {
        return Err(err(
            "health.refresh_seconds",
            "must be at least 1 (/health/ready answers the last background check)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NET: &str = r#"
[[evm]]
chain_id = 8453
rpc_url = "http://127.0.0.1:8545"
signer_private_keys = ["0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaf784d7bf4f2ff80"]
[[evm.assets]]
address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
name = "USD Coin"
version = "2"
"#;
    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn check(extra: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(&format!("{extra}\n{NET}"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_are_off() {
        let c = check("").unwrap();
        assert!(c.auth.keys.is_empty());
        assert!(c.rate_limit.is_none());
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn keys_and_limits_parse() {
        let c = check(&format!(
            "log_format = \"json\"\n[[auth.keys]]\nname = \"shop-a\"\nsha256 = \"{HASH}\"\nscopes = [\"verify\", \"settle\"]\n[rate_limit]\nper_key = {{ requests_per_second = 0.5, burst = 3 }}\nper_ip = {{ requests_per_second = 20, burst = 40 }}\n"
        ))
        .unwrap();
        assert_eq!(c.auth.keys[0].scopes, vec![Scope::Verify, Scope::Settle]);
        assert_eq!(c.rate_limit.unwrap().per_key.unwrap().burst, 3);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_key() {
        let key = |name: &str, hash: &str, scopes: &str| {
            format!("[[auth.keys]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nscopes = {scopes}\n")
        };
        let e = check(&key("a b", HASH, "[\"verify\"]")).unwrap_err();
        assert_eq!(e.key, "auth.keys[0].name");
        let e = check(&key("a", "x402k_secret", "[\"verify\"]")).unwrap_err();
        assert_eq!(e.key, "auth.keys[0].sha256");
        assert!(e.message.contains("never the key"), "{e}");
        let e = check(&key("a", &HASH.to_uppercase(), "[\"verify\"]")).unwrap_err();
        assert_eq!(e.key, "auth.keys[0].sha256");
        let e = check(&key("a", HASH, "[]")).unwrap_err();
        assert_eq!(e.key, "auth.keys[0].scopes");
        let e = check(&key("a", HASH, "[\"root\"]")).unwrap_err();
        assert!(e.key.starts_with("auth.keys[0].scopes"), "{e}");
        let two =
            key("a", HASH, "[\"verify\"]") + &key("a", &HASH.replace('9', "8"), "[\"verify\"]");
        assert_eq!(check(&two).unwrap_err().key, "auth.keys[1].name");
        let e = check("[rate_limit]\nper_ip = { requests_per_second = 0, burst = 1 }").unwrap_err();
        assert_eq!(e.key, "rate_limit.per_ip.requests_per_second");
        let e = check("[rate_limit]\nper_ip = { requests_per_second = 1, burst = 0 }").unwrap_err();
        assert_eq!(e.key, "rate_limit.per_ip.burst");
        let e =
            check("[rate_limit]\nper_key = { requests_per_second = 1, burst = 1 }").unwrap_err();
        assert_eq!(e.key, "rate_limit.per_key");
        let e = check("log_format = \"xml\"").unwrap_err();
        assert_eq!(e.key, "log_format");
        let e =
            check("[rate_limit]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]").unwrap_err();
        assert_eq!(e.key, "rate_limit.trusted_proxies[1]");
        let e = check("[health]\nrefresh_seconds = 0").unwrap_err();
        assert_eq!(e.key, "health.refresh_seconds");
    }

    #[test]
    fn key_hash_from_the_environment() {
        assert_eq!(sha256_env_var("shop-a.eu"), "X402_API_KEY_SHA256_SHOP_A_EU");
        let mut c = Config::from_toml(&format!(
            "[[auth.keys]]\nname = \"shop-a\"\nscopes = [\"verify\"]\n{NET}"
        ))
        .unwrap();
        let e = c.validate().map(|_| ()).unwrap_err();
        assert_eq!(e.key, "auth.keys[0].sha256");
        assert!(e.message.contains("X402_API_KEY_SHA256_SHOP_A"), "{e}");
        c.apply_env(&std::collections::HashMap::from([(
            "X402_API_KEY_SHA256_SHOP_A".to_string(),
            HASH.to_string(),
        )]));
        c.validate().unwrap();
        assert_eq!(c.auth.keys[0].sha256, HASH);
    }
}
