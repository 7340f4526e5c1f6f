//! Base64 codecs of the x402 HTTP headers (`PAYMENT-REQUIRED`, `PAYMENT-SIGNATURE`,
//! `PAYMENT-RESPONSE` in v2; `X-PAYMENT`, `X-PAYMENT-RESPONSE` in v1): standard alphabet,
//! padded on output, padded or unpadded accepted on input.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::{Serialize, de::DeserializeOwned};

/// v2 header carrying the base64 JSON `PaymentRequired` of a 402 answer.
pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// v2 header carrying the client's base64 JSON `PaymentPayload`.
pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
/// v2 receipt header: base64 JSON `SettleResponse`.
pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
/// v1 payment header.
pub const X_PAYMENT: &str = "X-PAYMENT";
/// v1 receipt header.
pub const X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors of [`decode`].
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The header is not standard base64.
    #[error("header is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded bytes are not the expected JSON.
    #[error("header JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
}

/// Serializes `value` to JSON and base64-encodes it (padded standard alphabet).
pub fn encode<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    Ok(STANDARD.encode(serde_json::to_vec(value)?))
}

/// Decodes a base64 header (padded or not) and parses its JSON.
pub fn decode<T: DeserializeOwned>(header: &str) -> Result<T, HeaderError> {
    let bytes = LENIENT.decode(header.trim())?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unpadded() {
        let v = serde_json::json!({"success": true, "transaction": "0xab"});
        let enc = encode(&v).unwrap();
        assert!(enc.ends_with('='));
        assert_eq!(decode::<serde_json::Value>(&enc).unwrap(), v);
        let unpadded = enc.trim_end_matches('=');
        assert_eq!(decode::<serde_json::Value>(unpadded).unwrap(), v);
        assert!(decode::<serde_json::Value>("!!!").is_err());
    }
}
