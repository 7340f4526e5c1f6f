//! Settlement webhooks configuration: per API key a `webhook_url` and its signing secret
//! (`[[auth.keys]]` `webhook_url`, `webhook_secret` or better the environment variable
//! `X402_WEBHOOK_SECRET_<NAME>`), and the delivery settings of `[webhooks]`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::error::{ConfigError, err};
use super::ops::AuthConfig;

/// Prefix of a written webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The key bytes of a webhook secret written `whsec_<base64>` (the prefix may be omitted).
/// Errors: not base64, or fewer than 24 / more than 64 bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let bytes = STANDARD.decode(b64).map_err(
        |_| "expected whsec_ followed by base64 (see `x402-facilitator webhook-secret`)",
    )?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!(
            "the secret decodes to {} bytes; use 24 to 64",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// A new random webhook secret: `whsec_` + base64 of 32 bytes from the OS generator.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// One API key's validated webhook. No `Debug`: it holds the secret.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The API key's name (`[[auth.keys]] name`).
    pub key: String,
    /// Where its events are POSTed.
    pub url: reqwest::Url,
    /// The HMAC key (the decoded secret).
    pub secret: Vec<u8>,
}

/// `[webhooks]`: how events are delivered (every value has a default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Longest wait for the receiver's answer, milliseconds (default 10,000).
    pub timeout_ms: u64,
    /// Wait before the second attempt, milliseconds (default 5,000); it doubles after every
    /// failed attempt up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, milliseconds (default 3,600,000 = 1 h).
    pub max_backoff_ms: u64,
    /// An event not delivered this long after it was written is dead-lettered, seconds
    /// (default 86,400 = 24 h).
    pub give_up_after_seconds: u64,
    /// How often an idle worker looks for due events (retries, events of other replicas),
    /// milliseconds (default 250; each look is one Redis script). Events this process writes
    /// wake its worker at once.
    pub poll_interval_ms: u64,
    /// Most events one worker claims and sends at once (default 32).
    pub batch: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 10_000,
            initial_backoff_ms: 5_000,
            max_backoff_ms: 3_600_000,
            give_up_after_seconds: 24 * 3600,
            poll_interval_ms: 250,
            batch: 32,
        }
    }
}

/// The environment variable holding the webhook secret of the key named `name`:
/// `X402_WEBHOOK_SECRET_` + the name upper-cased, `-` and `.` as `_` (`shop-a` →
/// `X402_WEBHOOK_SECRET_SHOP_A`).
pub fn secret_env_var(name: &str) -> String {
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
    format!("X402_WEBHOOK_SECRET_{upper}")
}

/// Takes each key's webhook secret from its environment variable when set.
pub fn apply_env(auth: &mut AuthConfig, env: &HashMap<String, String>) {
    for key in &mut auth.keys {
        if let Some(secret) = env.get(&secret_env_var(&key.name)) {
            key.webhook_secret = Some(secret.as_str().into());
        }
    }
}

/// Checks every key's webhook and `[webhooks]` and returns each key's webhook; errors name the
/// key.
pub(super) fn validate(
    auth: &AuthConfig,
    webhooks: &WebhooksConfig,
) -> Result<Vec<WebhookTarget>, ConfigError> {
    let mut targets = Vec::new();
    for (i, key) in auth.keys.iter().enumerate() {
        let at = |k: &str| format!("auth.keys[{i}].{k}");
        match (&key.webhook_url, &key.webhook_secret) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(err(at("webhook_secret"), "set without webhook_url"));
            }
            (Some(url), secret) => {
                // The URL may carry a token: the error names the key, not the value.
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| err(at("webhook_url"), format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(err(at("webhook_url"), "must be an http:// or https:// URL"));
                }
                let Some(secret) = secret else {
                    return Err(err(
                        at("webhook_secret"),
                        format!(
                            "missing: set {} (or webhook_secret; see \
                             `x402-facilitator webhook-secret`)",
                            secret_env_var(&key.name)
                        ),
                    ));
                };
                let secret = decode_secret(secret.expose_secret())
                    .map_err(|e| err(at("webhook_secret"), e))?;
                targets.push(WebhookTarget {
                    key: key.name.clone(),
                    url: parsed,
                    secret,
                });
            }
        }
    }
    let w = webhooks;
    for (name, value) in [
        ("timeout_ms", w.timeout_ms),
        ("initial_backoff_ms", w.initial_backoff_ms),
        ("max_backoff_ms", w.max_backoff_ms),
        ("give_up_after_seconds", w.give_up_after_seconds),
        ("poll_interval_ms", w.poll_interval_ms),
        ("batch", w.batch as u64),
    ] {
        if value == 0 {
            return Err(err(format!("webhooks.{name}"), "must be at least 1"));
        }
    }
    if w.max_backoff_ms < w.initial_backoff_ms {
        return Err(err(
            "webhooks.max_backoff_ms",
            "must be at least initial_backoff_ms",
        ));
    }
    Ok(targets)
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
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn config(webhook: &str) -> Config {
        Config::from_toml(&format!(
            "[[auth.keys]]\nname = \"shop-a\"\nsha256 = \"{HASH}\"\nscopes = [\"settle\"]\n\
             {webhook}\n{NET}"
        ))
        .unwrap()
    }

    #[test]
    fn secret_from_env_or_config() {
        assert_eq!(secret_env_var("shop-a.eu"), "X402_WEBHOOK_SECRET_SHOP_A_EU");
        let mut c = config("webhook_url = \"https://shop.example/hooks\"");
        let e = c.validate().map(|_| ()).unwrap_err();
        assert_eq!(e.key, "auth.keys[0].webhook_secret");
        assert!(e.message.contains("X402_WEBHOOK_SECRET_SHOP_A"), "{e}");
        c.apply_env(&HashMap::from([(
            "X402_WEBHOOK_SECRET_SHOP_A".to_string(),
            SECRET.to_string(),
        )]));
        c.validate().unwrap();
        assert_eq!(
            c.auth.keys[0]
                .webhook_secret
                .as_ref()
                .map(|s| s.expose_secret()),
            Some(SECRET)
        );
        config(&format!(
            "webhook_url = \"http://127.0.0.1:9/x\"\nwebhook_secret = \"{SECRET}\""
        ))
        .validate()
        .unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let e = config(&format!(
            "webhook_url = \"ftp://x\"\nwebhook_secret = \"{SECRET}\""
        ))
        .validate()
        .map(|_| ())
        .unwrap_err();
        assert_eq!(e.key, "auth.keys[0].webhook_url");
        let e = config("webhook_url = \"https://x\"\nwebhook_secret = \"plain\"")
            .validate()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.key, "auth.keys[0].webhook_secret");
        let e = config(&format!("webhook_secret = \"{SECRET}\""))
            .validate()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.key, "auth.keys[0].webhook_secret");
        let mut c = config("");
        c.webhooks.max_backoff_ms = 1;
        assert_eq!(
            c.validate().map(|_| ()).unwrap_err().key,
            "webhooks.max_backoff_ms"
        );
    }
}
