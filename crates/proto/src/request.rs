//! The body of `POST /verify` and `POST /settle`:
//! `{ "x402Version", "paymentPayload", "paymentRequirements" }` (x402 v2 §7 facilitator API),
//! parsed for either protocol version and normalized into [`PaymentRequest`].

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::network::Network;
use crate::{v1, v2};

/// x402 protocol version of a request. The payload's `x402Version` decides the shapes; the
/// envelope's, when present, must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum X402Version {
    /// Version 1: `maxAmountRequired`, v1 network names.
    V1,
    /// Version 2: `amount`, CAIP-2 networks, `accepted`.
    V2,
}

impl X402Version {
    /// The number on the wire.
    pub fn number(self) -> u8 {
        match self {
            X402Version::V1 => 1,
            X402Version::V2 => 2,
        }
    }
}

/// A malformed request body: `field` is the JSON path of the offending field
/// (e.g. `paymentRequirements.payTo`), `message` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    /// Dotted JSON path of the bad field (`body` when the whole body is unusable).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// A parse error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ParseError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The requirements of a request, in the shape of its version.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirements {
    /// v1 shape.
    V1(v1::PaymentRequirements),
    /// v2 shape.
    V2(v2::PaymentRequirements),
}

/// The payload of a request, in the shape of its version.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// v1 shape.
    V1(v1::PaymentPayload),
    /// v2 shape (boxed: it carries the whole `accepted` requirements).
    V2(Box<v2::PaymentPayload>),
}

/// A parsed `/verify` or `/settle` body with version-independent accessors.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRequest {
    /// Protocol version of payload and requirements.
    pub version: X402Version,
    /// `paymentPayload`.
    pub payload: Payload,
    /// `paymentRequirements`.
    pub requirements: Requirements,
}

impl PaymentRequest {
    /// Parses a request body.
    ///
    /// Errors: [`ParseError`] naming the field (`body`, `x402Version`,
    /// `paymentPayload.accepted.amount`, `paymentRequirements.payTo`, …). Unknown fields are ignored.
    ///
    /// A well-formed body is deserialized straight into the typed shapes (no intermediate JSON
    /// tree); anything unusual (a malformed field, `null` versions, duplicate keys, …) is parsed
    /// again through [`PaymentRequest::from_value`], whose outcome and error messages are the
    /// reference: both paths give the same result.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        if let Some(req) = Self::parse_direct(body) {
            return Ok(req);
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError::new("body", format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// The fast path of [`PaymentRequest::parse`]: `None` whenever it is not sure to give what
    /// [`PaymentRequest::from_value`] gives.
    fn parse_direct(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(rename = "x402Version", borrow, default, deserialize_with = "present")]
            version: Option<&'a RawValue>,
            #[serde(rename = "paymentPayload", borrow)]
            payload: &'a RawValue,
            #[serde(rename = "paymentRequirements", borrow)]
            requirements: &'a RawValue,
        }
        #[derive(serde::Deserialize)]
        struct Versioned<'a> {
            #[serde(rename = "x402Version", borrow, default, deserialize_with = "present")]
            version: Option<&'a RawValue>,
        }
        /// `Some` for any value present, `null` included (a plain `Option` maps `null` to `None`).
        fn present<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<&'de RawValue>, D::Error> {
            <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
        }
        fn version(raw: Option<&RawValue>) -> Result<Option<X402Version>, ()> {
            match raw.map(RawValue::get) {
                None => Ok(None),
                Some("1") => Ok(Some(X402Version::V1)),
                Some("2") => Ok(Some(X402Version::V2)),
                Some(_) => Err(()),
            }
        }
        let env: Envelope = serde_json::from_slice(body).ok()?;
        let inner: Versioned = serde_json::from_str(env.payload.get()).ok()?;
        let version = match (version(env.version).ok()?, version(inner.version).ok()?) {
            (Some(e), Some(p)) if e != p => return None,
            (_, Some(v)) | (Some(v), None) => v,
            (None, None) => return None,
        };
        let (payload, requirements) = match version {
            X402Version::V1 => (
                Payload::V1(serde_json::from_str(env.payload.get()).ok()?),
                Requirements::V1(serde_json::from_str(env.requirements.get()).ok()?),
            ),
            X402Version::V2 => (
                Payload::V2(Box::new(serde_json::from_str(env.payload.get()).ok()?)),
                Requirements::V2(serde_json::from_str(env.requirements.get()).ok()?),
            ),
        };
        Some(PaymentRequest {
            version,
            payload,
            requirements,
        })
    }

    /// Like [`PaymentRequest::parse`] from an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let Value::Object(mut obj) = value else {
            return Err(ParseError::new("body", "expected a JSON object"));
        };
        let payload = obj
            .remove("paymentPayload")
            .ok_or_else(|| ParseError::new("paymentPayload", "missing field"))?;
        let requirements = obj
            .remove("paymentRequirements")
            .ok_or_else(|| ParseError::new("paymentRequirements", "missing field"))?;
        let payload_version = match payload.get("x402Version") {
            Some(v) => Some(version_of(v, "paymentPayload.x402Version")?),
            None => None,
        };
        let envelope_version = match obj.get("x402Version") {
            Some(v) => Some(version_of(v, "x402Version")?),
            None => None,
        };
        let version = match (envelope_version, payload_version) {
            (Some(e), Some(p)) if e != p => {
                return Err(ParseError::new(
                    "x402Version",
                    format!(
                        "is {} but paymentPayload.x402Version is {}",
                        e.number(),
                        p.number()
                    ),
                ));
            }
            (_, Some(v)) | (Some(v), None) => v,
            (None, None) => {
                return Err(ParseError::new(
                    "paymentPayload.x402Version",
                    "missing field",
                ));
            }
        };
        let (payload, requirements) = match version {
            X402Version::V1 => (
                Payload::V1(typed(payload, "paymentPayload")?),
                Requirements::V1(typed(requirements, "paymentRequirements")?),
            ),
            X402Version::V2 => (
                Payload::V2(Box::new(typed(payload, "paymentPayload")?)),
                Requirements::V2(typed(requirements, "paymentRequirements")?),
            ),
        };
        Ok(PaymentRequest {
            version,
            payload,
            requirements,
        })
    }

    /// `paymentRequirements.scheme`.
    pub fn scheme(&self) -> &str {
        match &self.requirements {
            Requirements::V1(r) => &r.scheme,
            Requirements::V2(r) => &r.scheme,
        }
    }

    /// `paymentRequirements.network` exactly as sent (CAIP-2 in v2, a v1 name in v1): the value
    /// echoed in `SettleResponse.network`.
    pub fn network_wire(&self) -> &str {
        match &self.requirements {
            Requirements::V1(r) => &r.network,
            Requirements::V2(r) => &r.network,
        }
    }

    /// `paymentRequirements.network` as CAIP-2, if it is a known v1 name or a CAIP-2 identifier.
    pub fn network(&self) -> Option<Network> {
        Network::parse(self.network_wire())
    }

    /// The required amount in atomic units (v2 `amount`, v1 `maxAmountRequired`), decimal digits.
    pub fn amount(&self) -> &str {
        match &self.requirements {
            Requirements::V1(r) => &r.max_amount_required,
            Requirements::V2(r) => &r.amount,
        }
    }

    /// The JSON path of the required amount, for errors: `paymentRequirements.amount` (v2) or
    /// `paymentRequirements.maxAmountRequired` (v1).
    pub fn amount_field(&self) -> &'static str {
        match self.version {
            X402Version::V1 => "paymentRequirements.maxAmountRequired",
            X402Version::V2 => "paymentRequirements.amount",
        }
    }

    /// `paymentRequirements.asset`.
    pub fn asset(&self) -> &str {
        match &self.requirements {
            Requirements::V1(r) => &r.asset,
            Requirements::V2(r) => &r.asset,
        }
    }

    /// `paymentRequirements.payTo`.
    pub fn pay_to(&self) -> &str {
        match &self.requirements {
            Requirements::V1(r) => &r.pay_to,
            Requirements::V2(r) => &r.pay_to,
        }
    }

    /// `paymentRequirements.maxTimeoutSeconds`, in seconds.
    pub fn max_timeout_seconds(&self) -> u64 {
        match &self.requirements {
            Requirements::V1(r) => r.max_timeout_seconds,
            Requirements::V2(r) => r.max_timeout_seconds,
        }
    }

    /// `paymentRequirements.extra`.
    pub fn extra(&self) -> Option<&Map<String, Value>> {
        match &self.requirements {
            Requirements::V1(r) => r.extra.as_ref(),
            Requirements::V2(r) => r.extra.as_ref(),
        }
    }

    /// A string entry of `paymentRequirements.extra` (e.g. `name`, `version`, `feePayer`).
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra()?.get(key)?.as_str()
    }

    /// The scheme the client paid with (v2 `accepted.scheme`, v1 `paymentPayload.scheme`).
    pub fn accepted_scheme(&self) -> &str {
        match &self.payload {
            Payload::V1(p) => &p.scheme,
            Payload::V2(p) => &p.accepted.scheme,
        }
    }

    /// The network the client paid on, as sent (v2 `accepted.network`, v1 `paymentPayload.network`).
    pub fn accepted_network_wire(&self) -> &str {
        match &self.payload {
            Payload::V1(p) => &p.network,
            Payload::V2(p) => &p.accepted.network,
        }
    }

    /// `paymentPayload.payload`: the scheme-specific part.
    pub fn scheme_payload(&self) -> &Value {
        match &self.payload {
            Payload::V1(p) => &p.payload,
            Payload::V2(p) => &p.payload,
        }
    }

    /// Parses `paymentPayload.payload` into a scheme's payload type.
    /// Errors name the field under `paymentPayload.payload`.
    pub fn scheme_payload_as<T: DeserializeOwned>(&self) -> Result<T, ParseError> {
        typed_ref(self.scheme_payload(), "paymentPayload.payload")
    }
}

fn version_of(v: &Value, field: &str) -> Result<X402Version, ParseError> {
    match v.as_u64() {
        Some(1) => Ok(X402Version::V1),
        Some(2) => Ok(X402Version::V2),
        _ => Err(ParseError::new(
            field,
            format!("unsupported x402 version {v}; expected 1 or 2"),
        )),
    }
}

/// Deserializes `value` into `T`; an error names the field by its dotted path under `prefix`
/// (`""` for the top level), including a missing field's own name.
pub fn typed<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(e, prefix))
}

/// [`typed`] from a borrowed value (no copy of the JSON tree; same errors).
pub fn typed_ref<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(e, prefix))
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> ParseError {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let join = |parts: &[&str]| {
        parts
            .iter()
            .filter(|p| !p.is_empty() && **p != ".")
            .copied()
            .collect::<Vec<_>>()
            .join(".")
    };
    // serde reports a missing field at its parent; put its name into the path.
    let (field, message) = match missing_field_name(&inner) {
        Some(name) => (join(&[prefix, &path, name]), "missing field".to_string()),
        None => (join(&[prefix, &path]), inner),
    };
    let field = if field.is_empty() {
        "body".to_string()
    } else {
        field
    };
    ParseError::new(field, message)
}

fn missing_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v2_req() -> Value {
        json!({"scheme": "exact", "network": "eip155:8453", "amount": "10000",
               "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
               "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
               "extra": {"name": "USD Coin", "version": "2"}})
    }

    #[test]
    fn parses_v2_and_round_trips() {
        let body = json!({"x402Version": 2,
            "paymentPayload": {"x402Version": 2, "accepted": v2_req(), "payload": {"x": 1}, "unknownField": true},
            "paymentRequirements": v2_req()});
        let r = PaymentRequest::from_value(body).unwrap();
        assert_eq!(r.version, X402Version::V2);
        assert_eq!(r.amount(), "10000");
        assert_eq!(r.network().unwrap().as_str(), "eip155:8453");
        assert_eq!(r.extra_str("name"), Some("USD Coin"));
        let Requirements::V2(req) = &r.requirements else {
            panic!()
        };
        assert_eq!(serde_json::to_value(req).unwrap(), v2_req());
    }

    #[test]
    fn parses_v1_and_maps_network() {
        let req = json!({"scheme": "exact", "network": "base", "maxAmountRequired": 5,
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": "0xabc",
            "resource": "https://x/y", "description": "", "mimeType": "application/json",
            "maxTimeoutSeconds": 30});
        let body = json!({"x402Version": 1,
            "paymentPayload": {"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}},
            "paymentRequirements": req});
        let r = PaymentRequest::from_value(body).unwrap();
        assert_eq!(r.version, X402Version::V1);
        assert_eq!(r.amount(), "5");
        assert_eq!(r.network_wire(), "base");
        assert_eq!(r.network().unwrap().as_str(), "eip155:8453");
    }

    #[test]
    fn missing_fields_are_named() {
        let mut req = v2_req();
        req.as_object_mut().unwrap().remove("payTo");
        let body = json!({"x402Version": 2,
            "paymentPayload": {"x402Version": 2, "accepted": v2_req(), "payload": {}},
            "paymentRequirements": req});
        let e = PaymentRequest::from_value(body).unwrap_err();
        assert_eq!(e.field, "paymentRequirements.payTo");

        let mut acc = v2_req();
        acc["amount"] = json!("ten");
        let body = json!({"paymentPayload": {"x402Version": 2, "accepted": acc, "payload": {}},
            "paymentRequirements": v2_req()});
        let e = PaymentRequest::from_value(body).unwrap_err();
        assert_eq!(e.field, "paymentPayload.accepted.amount");

        let e = PaymentRequest::from_value(json!({"paymentPayload": {}})).unwrap_err();
        assert_eq!(e.field, "paymentRequirements");
        let e = PaymentRequest::parse(b"{nope").unwrap_err();
        assert_eq!(e.field, "body");
    }

    #[test]
    fn version_disagreement_and_unknown_versions_are_refused() {
        let body = json!({"x402Version": 1,
            "paymentPayload": {"x402Version": 2, "accepted": v2_req(), "payload": {}},
            "paymentRequirements": v2_req()});
        assert_eq!(
            PaymentRequest::from_value(body).unwrap_err().field,
            "x402Version"
        );
        let body = json!({"x402Version": 3, "paymentPayload": {}, "paymentRequirements": {}});
        assert_eq!(
            PaymentRequest::from_value(body).unwrap_err().field,
            "x402Version"
        );
    }

    /// The direct path and the JSON-tree path agree on every body, good or bad.
    #[test]
    fn direct_parse_equals_tree_parse() {
        let evm = json!({"signature": "0xab", "authorization": {"from": "0x1", "to": "0x2",
            "value": 10000, "validAfter": "0", "validBefore": 1740672154u64, "nonce": "0x00"}});
        let v1_req = json!({"scheme": "exact", "network": "base", "maxAmountRequired": 5,
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": "0xabc",
            "maxTimeoutSeconds": 30, "extra": null, "other": [1, {"a": "ü \" \\u00fc"}]});
        let mut bodies = vec![
            json!({"x402Version": 2,
                "paymentPayload": {"x402Version": 2, "accepted": v2_req(), "payload": evm,
                    "resource": {"url": "https://x/y"}, "extensions": {"e": 1}},
                "paymentRequirements": v2_req()}),
            json!({"paymentPayload": {"x402Version": 2, "accepted": v2_req(), "payload": {}},
                "paymentRequirements": v2_req()}),
            json!({"x402Version": 1,
                "paymentPayload": {"x402Version": 1, "scheme": "exact", "network": "base",
                    "payload": {"transaction": "AQID"}},
                "paymentRequirements": v1_req}),
            json!({"x402Version": 1, "paymentPayload": {"scheme": "exact", "network": "base",
                "payload": null}, "paymentRequirements": v1_req}),
        ];
        for bad in [
            json!(null),
            json!(2),
            json!("x"),
            json!(1.5),
            json!(-1),
            json!(2.0),
            json!("2"),
        ] {
            let mut b = bodies[0].clone();
            b["paymentRequirements"]["amount"] = bad.clone();
            bodies.push(b);
            let mut b = bodies[0].clone();
            b["x402Version"] = bad.clone();
            bodies.push(b);
            let mut b = bodies[0].clone();
            b["paymentPayload"]["x402Version"] = bad.clone();
            bodies.push(b);
            let mut b = bodies[0].clone();
            b["paymentPayload"] = bad.clone();
            bodies.push(b);
            let mut b = bodies[0].clone();
            b["paymentRequirements"]["extra"] = bad;
            bodies.push(b);
        }
        for good in &bodies[..3] {
            let text = good.to_string();
            assert!(
                PaymentRequest::parse_direct(text.as_bytes()).is_some(),
                "the direct path must take a well-formed body: {text}"
            );
        }
        let mut texts: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
        texts.extend(
            [
                "{nope",
                "[]",
                "{}",
                r#"{"x402Version": 2, "x402Version": 1, "paymentPayload": {"x402Version": 1}, "paymentRequirements": {}}"#,
            ]
            .map(String::from),
        );
        // Duplicate keys: the tree keeps the last one; the direct path must not differ.
        let dup = texts[0].replacen(r#""amount":"10000""#, r#""amount":"1","amount":"10000""#, 1);
        assert_ne!(dup, texts[0]);
        texts.push(dup);
        for text in texts {
            let tree = serde_json::from_slice::<Value>(text.as_bytes())
                .map_err(|e| ParseError::new("body", format!("not valid JSON: {e}")))
                .and_then(PaymentRequest::from_value);
            assert_eq!(PaymentRequest::parse(text.as_bytes()), tree, "{text}");
            if let Some(direct) = PaymentRequest::parse_direct(text.as_bytes()) {
                assert_eq!(Ok(direct), tree, "{text}");
            }
        }
    }

    #[test]
    fn scheme_payload_errors_are_prefixed() {
        let body = json!({"x402Version": 2,
            "paymentPayload": {"x402Version": 2, "accepted": v2_req(),
                "payload": {"signature": "0x", "authorization": {"from": "0x1"}}},
            "paymentRequirements": v2_req()});
        let r = PaymentRequest::from_value(body).unwrap();
        let e = r
            .scheme_payload_as::<crate::evm::ExactEvmPayload>()
            .unwrap_err();
        assert_eq!(e.field, "paymentPayload.payload.authorization.to");
    }
}
