//! Serde helpers for fields that clients send either as decimal strings or as JSON numbers.

use serde::{Deserialize, Deserializer};

/// Accepts `"123"` or `123` (non-negative integer) and yields the decimal string.
///
/// x402 sends amounts and timestamps as decimal strings; some clients send JSON numbers.
/// Digits only: signs, fractions and exponents are refused.
pub(crate) fn decimal_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(serde_json::Number),
    }
    let s = match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::N(n) => n.to_string(),
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(format!(
            "expected a non-negative integer as a decimal string, got {s:?}"
        )));
    }
    Ok(s)
}
