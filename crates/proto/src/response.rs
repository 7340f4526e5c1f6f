//! Facilitator answers: `VerifyResponse`, `SettleResponse` (the receipt resource servers send in
//! `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`) and `SupportedResponse` (x402 v2 §7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::reason::Reason;

/// Answer of `POST /verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment would settle.
    pub is_valid: bool,
    /// Reason string when invalid (see [`Reason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Human-readable detail when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The payer (EVM `authorization.from`, Solana transfer authority), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

impl VerifyResponse {
    /// A valid payment by `payer`.
    pub fn valid(payer: impl Into<String>) -> Self {
        VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(payer.into()),
        }
    }

    /// An invalid payment.
    pub fn invalid(reason: Reason, message: Option<String>, payer: Option<String>) -> Self {
        VerifyResponse {
            is_valid: false,
            invalid_reason: Some(reason.as_str().to_string()),
            invalid_message: message,
            payer,
        }
    }
}

/// Answer of `POST /settle`; base64-encoded, the receipt header of the resource server.
///
/// `transaction` is empty only when nothing was broadcast. `errorReason` `settlement_pending`
/// (with the transaction) means "broadcast, outcome not known yet: retry `/settle`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the payment is settled on chain (confirmed).
    pub success: bool,
    /// Reason string when not successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Human-readable detail when not successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The payer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash (EVM, 0x-hex) or signature (Solana, base58); empty if nothing was broadcast.
    pub transaction: String,
    /// Network as in the requirements: CAIP-2 in v2, the v1 name in v1.
    pub network: String,
    /// Settled amount in atomic units, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

impl SettleResponse {
    /// A confirmed settlement.
    pub fn settled(transaction: String, network: String, payer: String, amount: String) -> Self {
        SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some(payer),
            transaction,
            network,
            amount: Some(amount),
        }
    }

    /// A settlement that did not happen (or, with [`Reason::SettlementPending`], may still land);
    /// `transaction` is empty when nothing was broadcast.
    pub fn failed(
        reason: Reason,
        message: Option<String>,
        transaction: String,
        network: String,
        payer: Option<String>,
    ) -> Self {
        SettleResponse {
            success: false,
            error_reason: Some(reason.as_str().to_string()),
            error_message: message,
            payer,
            transaction,
            network,
            amount: None,
        }
    }
}

/// One `(x402Version, scheme, network)` this facilitator handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Protocol version, 1 or 2.
    pub x402_version: u8,
    /// Scheme, e.g. `exact`.
    pub scheme: String,
    /// CAIP-2 for v2 kinds, the v1 name for v1 kinds.
    pub network: String,
    /// Scheme data, e.g. Solana `{"feePayer": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// Answer of `GET /supported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupportedResponse {
    /// Every kind handled.
    pub kinds: Vec<SupportedKind>,
    /// Extension names handled (none yet).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Signer addresses by CAIP-2 wildcard (`eip155:*`, `solana:*`).
    #[serde(default)]
    pub signers: BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_response_wire_names() {
        let v = serde_json::to_value(VerifyResponse::invalid(
            Reason::RecipientMismatch,
            None,
            Some("0xa".into()),
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"isValid": false, "invalidReason": "invalid_exact_evm_recipient_mismatch", "payer": "0xa"})
        );
        let v = serde_json::to_value(VerifyResponse::valid("0xa")).unwrap();
        assert_eq!(v, serde_json::json!({"isValid": true, "payer": "0xa"}));
    }

    #[test]
    fn settle_response_wire_names() {
        let r = SettleResponse::failed(
            Reason::SettlementPending,
            None,
            "0xab".into(),
            "eip155:8453".into(),
            Some("0xa".into()),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"success": false, "errorReason": "settlement_pending",
            "transaction": "0xab", "network": "eip155:8453", "payer": "0xa"})
        );
        let back: SettleResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
