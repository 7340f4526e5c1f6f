//! x402 protocol version 2 shapes (x402 specification v2 §5; transports-v2/http.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::serde_util::decimal_string;

/// What a resource server asks to be paid: one entry of `accepts[]` (x402 v2 §5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Payment scheme, e.g. `"exact"`.
    pub scheme: String,
    /// CAIP-2 network, e.g. `"eip155:8453"`.
    pub network: String,
    /// Amount in atomic units of `asset` as a decimal string (USDC: 6 decimals, `"10000"` = 0.01 USDC).
    #[serde(deserialize_with = "decimal_string")]
    pub amount: String,
    /// Token contract address (EVM) or SPL mint (Solana).
    pub asset: String,
    /// Recipient address (EVM) or owner public key (Solana).
    pub pay_to: String,
    /// Longest time the resource server waits for settlement, in seconds.
    pub max_timeout_seconds: u64,
    /// Scheme-specific data: EVM `name`/`version` (EIP-712 domain), Solana `feePayer`/`memo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// The protected resource a 402 answer describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// URL of the resource.
    pub url: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the resource's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// The 402 answer, sent base64-encoded in the `PAYMENT-REQUIRED` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 2.
    pub x402_version: u8,
    /// Why payment is required (e.g. a previous payment's failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource being paid for.
    pub resource: ResourceInfo,
    /// The payment options; the client picks one.
    pub accepts: Vec<PaymentRequirements>,
    /// Protocol extensions, keyed by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// The client's signed payment, sent base64-encoded in the `PAYMENT-SIGNATURE` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Always 2.
    pub x402_version: u8,
    /// The resource being paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The `accepts[]` entry the client chose.
    pub accepted: PaymentRequirements,
    /// Scheme-specific payload (EVM: [`crate::evm::ExactEvmPayload`]; Solana: `{transaction}`).
    pub payload: Value,
    /// Protocol extensions, keyed by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payment_required_and_payload_round_trip() {
        let req = json!({"scheme": "exact", "network": "eip155:8453", "amount": "13938",
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": "0xabc",
            "maxTimeoutSeconds": 300,
            "extra": {"name": "USD Coin", "version": "2",
                      "breakdown": {"service_usdc": "0.012", "gas_usdc": "0.001938", "total_usdc": "0.013938"}}});
        let required = json!({"x402Version": 2, "error": "payment required",
            "resource": {"url": "https://api.example/v1/generate", "description": "one image", "mimeType": "application/json"},
            "accepts": [req.clone()], "extensions": {"bazaar": {}}});
        let parsed: PaymentRequired = serde_json::from_value(required.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), required);
        let payload = json!({"x402Version": 2, "resource": {"url": "https://api.example/v1/generate"},
            "accepted": req, "payload": {"transaction": "AQID"}});
        let parsed: PaymentPayload = serde_json::from_value(payload.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), payload);
        // The header codec carries it unchanged.
        let header = crate::header::encode(&parsed).unwrap();
        assert_eq!(
            crate::header::decode::<PaymentPayload>(&header).unwrap(),
            parsed
        );
    }
}
