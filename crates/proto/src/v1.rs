//! x402 protocol version 1 shapes (transports-v1/http.md): `X-PAYMENT` header, v1 network names.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::serde_util::decimal_string;

/// v1 payment requirements: like v2's but with `maxAmountRequired` and the resource inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Payment scheme, e.g. `"exact"`.
    pub scheme: String,
    /// v1 network name, e.g. `"base"`, `"solana-devnet"`.
    pub network: String,
    /// Amount in atomic units of `asset` as a decimal string (the `exact` scheme requires exactly it).
    #[serde(deserialize_with = "decimal_string")]
    pub max_amount_required: String,
    /// Token contract address (EVM) or SPL mint (Solana).
    pub asset: String,
    /// Recipient.
    pub pay_to: String,
    /// URL of the resource (informational; empty when absent).
    #[serde(default)]
    pub resource: String,
    /// Human description (informational).
    #[serde(default)]
    pub description: String,
    /// MIME type of the resource (informational).
    #[serde(default)]
    pub mime_type: String,
    /// JSON schema of the resource's answer (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Longest time the resource server waits for settlement, in seconds.
    pub max_timeout_seconds: u64,
    /// Scheme-specific data (EVM `name`/`version`; Solana `feePayer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// The v1 402 answer body: `{x402Version: 1, error, accepts[]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 1.
    pub x402_version: u8,
    /// Why payment is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The payment options; the client picks one.
    pub accepts: Vec<PaymentRequirements>,
}

/// v1 payment payload (the decoded `X-PAYMENT` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Always 1.
    pub x402_version: u8,
    /// Payment scheme the client used.
    pub scheme: String,
    /// v1 network name the client used.
    pub network: String,
    /// Scheme-specific payload.
    pub payload: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payment_required_round_trips() {
        let v = json!({"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [{
            "scheme": "exact", "network": "base", "maxAmountRequired": "13938",
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": "0xabc",
            "resource": "https://api.example/v1/generate", "description": "one image",
            "mimeType": "application/json", "outputSchema": {"type": "object"},
            "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"}}]});
        let parsed: PaymentRequired = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(parsed.accepts[0].max_amount_required, "13938");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), v);
    }
}
