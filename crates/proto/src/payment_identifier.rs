//! The `payment-identifier` extension (x402-foundation/x402
//! `specs/extensions/payment_identifier.md`): the client puts an `id` (16–128 characters of
//! `[A-Za-z0-9_-]`) in `paymentPayload.extensions["payment-identifier"].info.id`; a facilitator
//! that sees the same `id` with the same payment again answers what it answered the first time.
//! `info.required: true` without an `id` is a 400.

use serde_json::{Map, Value, json};

use crate::request::{ParseError, Payload, PaymentRequest};

/// The extension's name, the key in `extensions` and in `EXTENSION-RESPONSES`.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";
/// Shortest `id`.
pub const ID_MIN_LENGTH: usize = 16;
/// Longest `id`.
pub const ID_MAX_LENGTH: usize = 128;

const FIELD: &str = "paymentPayload.extensions.payment-identifier";

/// The payment's identifier: `Ok(None)` when the payload carries no such extension (or v1, which
/// has no extensions) or carries it without an `id` and without `required: true`.
///
/// Errors (HTTP 400, naming the field): `required: true` without an `id`, an `id` that is not a
/// string of 16–128 characters `[A-Za-z0-9_-]`, an extension that is not an object.
pub fn payment_identifier(req: &PaymentRequest) -> Result<Option<String>, ParseError> {
    let Payload::V2(p) = &req.payload else {
        return Ok(None);
    };
    let Some(ext) = p
        .extensions
        .as_ref()
        .and_then(|e| e.get(PAYMENT_IDENTIFIER))
    else {
        return Ok(None);
    };
    let Some(ext) = ext.as_object() else {
        return Err(ParseError::new(FIELD, "expected an object"));
    };
    let info = match ext.get("info") {
        None | Some(Value::Null) => &Map::new(),
        Some(Value::Object(info)) => info,
        Some(_) => {
            return Err(ParseError::new(
                format!("{FIELD}.info"),
                "expected an object",
            ));
        }
    };
    let required = match info.get("required") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ParseError::new(
                format!("{FIELD}.info.required"),
                "expected a boolean",
            ));
        }
    };
    match info.get("id") {
        None | Some(Value::Null) if required => Err(ParseError::new(
            format!("{FIELD}.info.id"),
            "the payment identifier is required (info.required is true) but no id was given",
        )),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if valid_id(id) => Ok(Some(id.clone())),
        Some(_) => Err(ParseError::new(
            format!("{FIELD}.info.id"),
            format!(
                "expected a string of {ID_MIN_LENGTH}-{ID_MAX_LENGTH} characters A-Z, a-z, 0-9, '-', '_'"
            ),
        )),
    }
}

/// Whether `id` is a well-formed payment identifier.
pub fn valid_id(id: &str) -> bool {
    (ID_MIN_LENGTH..=ID_MAX_LENGTH).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `EXTENSION-RESPONSES` entry (x402 v2 §7.2.1, keyed object) for this extension:
/// `{"payment-identifier": {"status": "success"}}` or `{"status": "rejected", "rejectedReason"}`.
pub fn extension_response(rejected: Option<&str>) -> Value {
    match rejected {
        None => json!({ PAYMENT_IDENTIFIER: {"status": "success"} }),
        Some(reason) => {
            json!({ PAYMENT_IDENTIFIER: {"status": "rejected", "rejectedReason": reason} })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extensions: Value) -> PaymentRequest {
        let requirements = json!({"scheme": "exact", "network": "eip155:8453", "amount": "1",
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": "0xabc",
            "maxTimeoutSeconds": 60});
        PaymentRequest::from_value(json!({"x402Version": 2,
            "paymentPayload": {"x402Version": 2, "accepted": requirements, "payload": {},
                "extensions": extensions},
            "paymentRequirements": requirements}))
        .unwrap()
    }

    #[test]
    fn reads_validates_and_requires_the_id() {
        let id = "pay_7d5d747be160e280504c099d984bcfe0";
        let with = req(json!({"payment-identifier": {"info": {"required": false, "id": id}}}));
        assert_eq!(payment_identifier(&with).unwrap().as_deref(), Some(id));
        let without = req(json!({"payment-identifier": {"info": {"required": false}}}));
        assert_eq!(payment_identifier(&without).unwrap(), None);
        assert_eq!(
            payment_identifier(&req(json!({"bazaar": {}}))).unwrap(),
            None
        );
        let required = req(json!({"payment-identifier": {"info": {"required": true}}}));
        let e = payment_identifier(&required).unwrap_err();
        assert_eq!(
            e.field,
            "paymentPayload.extensions.payment-identifier.info.id"
        );
        for bad in [json!("short"), json!("has space in the middle!!"), json!(7)] {
            let r = req(json!({"payment-identifier": {"info": {"id": bad}}}));
            assert!(payment_identifier(&r).is_err(), "{bad}");
        }
        assert_eq!(
            extension_response(Some("x")),
            json!({"payment-identifier": {"status": "rejected", "rejectedReason": "x"}})
        );
    }
}
