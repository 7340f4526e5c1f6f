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
