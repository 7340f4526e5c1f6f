//! The EVM payloads: `exact` with EIP-3009 `transferWithAuthorization` or Permit2
//! `permitWitnessTransferFrom` (specs/schemes/exact/scheme_exact_evm.md §1, §2), and `upto`,
//! always Permit2 (specs/schemes/upto/scheme_upto_evm.md §1: the same payload shape, its witness
//! carrying `facilitator`).

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

/// `paymentPayload.payload` of an EVM `exact` payment over Permit2
/// (specs/schemes/exact/scheme_exact_evm.md §2): the payer's signature of Permit2
/// `PermitWitnessTransferFrom` (EIP-712, domain `Permit2` on the chain, verifying contract the
/// canonical Permit2) whose spender is `x402ExactPermit2Proxy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactPermit2Payload {
    /// 0x-hex signature: 65 bytes (r,s,v), 64 bytes (EIP-2098), or longer (ERC-1271 / ERC-6492).
    pub signature: String,
    /// The signed Permit2 message.
    pub permit2_authorization: Permit2Authorization,
}

/// The fields of Permit2 `PermitWitnessTransferFrom` with the x402 witness, as sent on the wire.
/// Integers are decimal strings (JSON numbers are accepted too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permit2Authorization {
    /// The payer (Permit2's `owner`), 0x 20 bytes.
    pub from: String,
    /// Token and maximum amount.
    pub permitted: Permit2Permitted,
    /// Who may spend: the x402 Permit2 proxy, 0x 20 bytes.
    pub spender: String,
    /// Permit2 unordered nonce (uint256, decimal).
    #[serde(deserialize_with = "decimal_string")]
    pub nonce: String,
    /// Unix seconds after which Permit2 refuses the signature.
    #[serde(deserialize_with = "decimal_string")]
    pub deadline: String,
    /// The x402 witness the proxy enforces.
    pub witness: Permit2Witness,
}

/// Permit2 `TokenPermissions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Permit2Permitted {
    /// ERC-20 token, 0x 20 bytes.
    pub token: String,
    /// Atomic token units (decimal).
    #[serde(deserialize_with = "decimal_string")]
    pub amount: String,
}

/// The x402 witness: `Witness(address to,uint256 validAfter)` of `x402ExactPermit2Proxy`, or
/// `Witness(address to,address facilitator,uint256 validAfter)` of `x402UptoPermit2Proxy`
/// (specs/schemes/upto/scheme_upto_evm.md §1), which carries `facilitator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permit2Witness {
    /// Recipient (must equal `payTo`), 0x 20 bytes.
    pub to: String,
    /// `upto` only: the facilitator signer allowed to settle (the proxy reverts
    /// `UnauthorizedFacilitator` for any other sender), 0x 20 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facilitator: Option<String>,
    /// Unix seconds before which the proxy refuses to settle.
    #[serde(deserialize_with = "decimal_string")]
    pub valid_after: String,
}

/// The `eip2612GasSponsoring` extension's name (specs/extensions/eip2612_gas_sponsoring.md):
/// the key in `paymentPayload.extensions` and in `/supported` `extensions`.
pub const EIP2612_GAS_SPONSORING: &str = "eip2612GasSponsoring";

/// `paymentPayload.extensions.eip2612GasSponsoring.info`: the payer's EIP-2612 permit of the
/// token to Permit2, which the facilitator submits with the settlement (`settleWithPermit`).
/// Every field a string: addresses 0x-hex, `amount` (atomic units), `nonce` (the token's permit
/// nonce) and `deadline` (Unix seconds) decimal, `signature` 0x-hex (65 bytes r‖s‖v),
/// `version` the extension's version (`"1"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip2612GasSponsoringInfo {
    /// The payer.
    pub from: String,
    /// The token.
    pub asset: String,
    /// Who is approved: Permit2.
    pub spender: String,
    /// Approved amount.
    pub amount: String,
    /// The token's EIP-2612 nonce of `from`.
    pub nonce: String,
    /// Permit deadline.
    pub deadline: String,
    /// The permit signature.
    pub signature: String,
    /// Extension version.
    pub version: String,
}

impl Eip2612GasSponsoringInfo {
    /// The extension of `req`'s payload, as the reference reads it: `None` when absent, or when
    /// a field is missing or empty (the payment then goes without it); v1 has no extensions.
    pub fn of(req: &crate::PaymentRequest) -> Option<Self> {
        let crate::request::Payload::V2(p) = &req.payload else {
            return None;
        };
        let info = p
            .extensions
            .as_ref()?
            .get(EIP2612_GAS_SPONSORING)?
            .get("info")?
            .as_object()?;
        let field = |k: &str| -> Option<String> {
            match info.get(k)? {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        Some(Eip2612GasSponsoringInfo {
            from: field("from")?,
            asset: field("asset")?,
            spender: field("spender")?,
            amount: field("amount")?,
            nonce: field("nonce")?,
            deadline: field("deadline")?,
            signature: field("signature")?,
            version: field("version")?,
        })
    }

    /// Whether every field has its format: addresses `0x` + 40 hex, `amount`, `nonce` and
    /// `deadline` decimal digits, `signature` `0x` + hex, `version` dotted digits.
    pub fn well_formed(&self) -> bool {
        let address = |s: &str| {
            s.len() == 42 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let hex = |s: &str| {
            s.len() > 2 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
        };
        let version = |s: &str| s.split('.').all(digits);
        address(&self.from)
            && address(&self.asset)
            && address(&self.spender)
            && digits(&self.amount)
            && digits(&self.nonce)
            && digits(&self.deadline)
            && hex(&self.signature)
            && version(&self.version)
    }
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
