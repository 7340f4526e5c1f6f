//! The `exact` scheme's EVM payload for EIP-3009 `transferWithAuthorization`
//! (specs/schemes/exact/scheme_exact_evm.md).

use serde::{Deserialize, Serialize};

use crate::serde_util::decimal_string;

/// `paymentPayload.payload` of an EVM `exact` payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    /// 0x-hex signature: 65 bytes (r,s,v), 64 bytes (EIP-2098), or longer (ERC-1271 / ERC-6492).
    pub signature: String,
    /// The signed EIP-3009 authorization.
    pub authorization: Eip3009Authorization,
}

/// The fields of EIP-3009 `TransferWithAuthorization`, as sent on the wire.
///
/// Integers are decimal strings (JSON numbers are accepted too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Eip3009Authorization {
    /// Payer address (0x, 20 bytes).
    pub from: String,
    /// Recipient address (0x, 20 bytes); must equal `payTo`.
    pub to: String,
    /// Amount in atomic token units (USDC: 6 decimals).
    #[serde(deserialize_with = "decimal_string")]
    pub value: String,
    /// Unix time in seconds after which the authorization is valid (exclusive in EIP-3009).
    #[serde(deserialize_with = "decimal_string")]
    pub valid_after: String,
    /// Unix time in seconds before which the authorization is valid (exclusive in EIP-3009).
    #[serde(deserialize_with = "decimal_string")]
    pub valid_before: String,
    /// Unique 32-byte nonce, 0x-hex.
    pub nonce: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_numbers_and_strings() {
        let p: ExactEvmPayload = serde_json::from_value(serde_json::json!({
            "signature": "0x00",
            "authorization": {"from": "0x1", "to": "0x2", "value": 10000, "validAfter": "0",
                              "validBefore": 1740672154u64, "nonce": "0x00", "unknown": 1}
        }))
        .unwrap();
        assert_eq!(p.authorization.value, "10000");
        assert_eq!(p.authorization.valid_before, "1740672154");
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["authorization"]["validAfter"], "0");
    }

    #[test]
    fn refuses_negative_or_fractional() {
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("1e3"),
        ] {
            let r: Result<ExactEvmPayload, _> = serde_json::from_value(serde_json::json!({
                "signature": "0x00",
                "authorization": {"from": "0x1", "to": "0x2", "value": bad, "validAfter": "0",
                                  "validBefore": "1", "nonce": "0x00"}
            }));
            assert!(r.is_err());
        }
    }
}
