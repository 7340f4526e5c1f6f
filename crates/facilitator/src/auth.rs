//! API keys: `Authorization: Bearer <key>` checked against the SHA-256 hashes of
//! `[[auth.keys]]`, per-route scopes, and the x402-shaped 401 / 403 / 429 bodies.
//!
//! The configuration holds only hashes; `x402-facilitator keygen` prints a new key and its
//! hash. Keys are 32 random bytes, hex, behind the prefix [`KEY_PREFIX`].

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::ops::{AuthConfig, Scope};

/// Prefix of generated keys (makes them recognisable to secret scanners).
pub const KEY_PREFIX: &str = "x402k_";

/// An accepted key: its name and what it may call.
#[derive(Debug)]
pub struct ApiKey {
    /// The configured name (metric label, log field).
    pub name: Arc<str>,
    scopes: Vec<Scope>,
}

impl ApiKey {
    /// Whether this key may call routes of `scope` (`admin` may call everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// The name of the key that authenticated a request, kept in the request's extensions.
#[derive(Debug, Clone)]
pub struct KeyName(pub Arc<str>);

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// A key that matches no configured hash (401).
    Invalid,
    /// A known key without the route's scope (403).
    Forbidden,
}

impl Denial {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Invalid => "invalid",
            Denial::Forbidden => "forbidden",
        }
    }
}

/// The configured keys, by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Arc<ApiKey>>,
}

impl ApiKeys {
    /// Builds the table from a validated `[auth]` (hashes already checked as 64 hex chars).
    pub fn from_config(config: &AuthConfig) -> Self {
        let by_hash = config
            .keys
            .iter()
            .filter_map(|k| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&k.sha256, &mut hash).ok()?;
                let key = ApiKey {
                    name: Arc::from(k.name.as_str()),
                    scopes: k.scopes.clone(),
                };
                Some((hash, Arc::new(key)))
            })
            .collect();
        ApiKeys { by_hash }
    }

    /// Whether authentication is on (at least one key configured).
    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// Checks the `Authorization` header value (if any) for a route of `scope`.
    pub fn check(&self, authorization: Option<&str>, scope: Scope) -> Result<Arc<ApiKey>, Denial> {
        let token = authorization
            .and_then(|h| {
                let (kind, token) = h.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Denial::Missing)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let key = self.by_hash.get(&hash).ok_or(Denial::Invalid)?;
        if key.allows(scope) {
            Ok(key.clone())
        } else {
            Err(Denial::Forbidden)
        }
    }
}

/// The scope a route needs, by the matched route pattern (`/settle`,
/// `/settlements/{transaction}`; `other` when none matches, see [`crate::guard`]); `None` for
/// the public routes (`/supported`, `/health*`). Unknown routes need `admin`, so a route added
/// later is closed until mapped here.
pub fn required_scope(route: &str) -> Option<Scope> {
    match route {
        "/supported" | "/health" | "/health/live" | "/health/ready" => None,
        "/verify" => Some(Scope::Verify),
        "/settle" => Some(Scope::Settle),
        "/quote" | "/requirements" => Some(Scope::Quote),
        p if p == "/settlements" || p.starts_with("/settlements/") => Some(Scope::Settle),
        _ => Some(Scope::Admin),
    }
}

/// Whether the service may start on `listen` with the configured keys: a non-loopback
/// address without any `[[auth.keys]]` is refused unless `allow_unauthenticated` says so
/// (anyone who reaches the port could then settle payments at the operator's gas cost, read
/// `/metrics` and every settlement). Returns whether the service runs unauthenticated on a
/// non-loopback address (the caller logs a WARN at every start).
pub fn check_exposure(
    listen: std::net::SocketAddr,
    keys_configured: bool,
    allow_unauthenticated: bool,
) -> Result<bool, crate::config::ConfigError> {
    if keys_configured || listen.ip().is_loopback() {
        return Ok(false);
    }
    if allow_unauthenticated {
        return Ok(true);
    }
    Err(crate::config::ConfigError {
        key: "auth.keys".into(),
        message: format!(
            "listen address {listen} is not loopback and no API key is configured: anyone \
             reaching it could call /settle (the facilitator pays the gas), /metrics and \
             /settlements. Add [[auth.keys]] (see `x402-facilitator keygen`), listen on \
             127.0.0.1, or set allow_unauthenticated = true"
        ),
    })
}

/// Lower-case hex SHA-256 of `key`, the value of `[[auth.keys]].sha256`.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key (`x402k_` + 64 hex characters from the OS generator) and its SHA-256.
pub fn generate_key() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let hash = sha256_hex(&key);
    Ok((key, hash))
}

/// The JSON body of a refused request in the shape of the route's normal answer: a
/// `VerifyResponse` on `/verify` (`isValid:false`, `invalidReason`), a `SettleResponse` on
/// `/settle` (`success:false`, `errorReason`, empty `transaction`), else `{"error"}`.
/// `reason` is `unauthorized`, `forbidden` or `rate_limited`.
pub fn refusal_body(path: &str, reason: &str, message: &str) -> Value {
    match path {
        "/verify" => json!({"isValid": false, "invalidReason": reason, "invalidMessage": message}),
        "/settle" => json!({
            "success": false, "errorReason": reason, "errorMessage": message,
            "transaction": "", "network": ""
        }),
        _ => json!({"error": message, "reason": reason}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ops::ApiKeyConfig;

    fn keys(scopes: Vec<Scope>) -> (ApiKeys, String) {
        let (key, sha256) = generate_key().unwrap();
        let config = AuthConfig {
            keys: vec![ApiKeyConfig {
                name: "shop".into(),
                sha256,
                scopes,
                webhook_url: None,
                webhook_secret: None,
            }],
        };
        (ApiKeys::from_config(&config), key)
    }

    #[test]
    fn generated_keys_differ_and_hash_to_64_hex() {
        let (a, ha) = generate_key().unwrap();
        let (b, _) = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert_eq!(ha, sha256_hex(&a));
        assert_eq!(
            sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn missing_wrong_right_and_scope() {
        let (keys, key) = keys(vec![Scope::Verify]);
        assert!(keys.enabled());
        assert_eq!(
            keys.check(None, Scope::Verify).unwrap_err(),
            Denial::Missing
        );
        assert_eq!(
            keys.check(Some("Basic abc"), Scope::Verify).unwrap_err(),
            Denial::Missing
        );
        assert_eq!(
            keys.check(Some("Bearer x402k_00"), Scope::Verify)
                .unwrap_err(),
            Denial::Invalid
        );
        let bearer = format!("bearer {key}");
        assert_eq!(
            &*keys.check(Some(&bearer), Scope::Verify).unwrap().name,
            "shop"
        );
        assert_eq!(
            keys.check(Some(&bearer), Scope::Settle).unwrap_err(),
            Denial::Forbidden
        );
        let (admin, key) = keys_admin();
        assert!(
            admin
                .check(Some(&format!("Bearer {key}")), Scope::Settle)
                .is_ok()
        );
    }

    fn keys_admin() -> (ApiKeys, String) {
        keys(vec![Scope::Admin])
    }

    #[test]
    fn keyless_start_is_refused_off_loopback() {
        let any: std::net::SocketAddr = "0.0.0.0:8402".parse().unwrap();
        let v6_any: std::net::SocketAddr = "[::]:8402".parse().unwrap();
        let lo: std::net::SocketAddr = "127.0.0.1:8402".parse().unwrap();
        let lo6: std::net::SocketAddr = "[::1]:8402".parse().unwrap();
        let e = check_exposure(any, false, false).unwrap_err();
        assert_eq!(e.key, "auth.keys");
        assert!(e.message.contains("allow_unauthenticated"), "{e}");
        assert!(check_exposure(v6_any, false, false).is_err());
        assert!(check_exposure(any, false, true).unwrap());
        assert!(!check_exposure(any, true, false).unwrap());
        assert!(!check_exposure(lo, false, false).unwrap());
        assert!(!check_exposure(lo6, false, false).unwrap());
    }

    #[test]
    fn scopes_of_routes() {
        assert_eq!(required_scope("/health/ready"), None);
        assert_eq!(required_scope("/supported"), None);
        assert_eq!(required_scope("/settle"), Some(Scope::Settle));
        assert_eq!(
            required_scope("/settlements/{transaction}"),
            Some(Scope::Settle)
        );
        assert_eq!(required_scope("/settlements/lookup"), Some(Scope::Settle));
        assert_eq!(required_scope("other"), Some(Scope::Admin));
        assert_eq!(required_scope("/requirements"), Some(Scope::Quote));
        assert_eq!(required_scope("/metrics"), Some(Scope::Admin));
        assert_eq!(required_scope("/anything-new"), Some(Scope::Admin));
    }
}
