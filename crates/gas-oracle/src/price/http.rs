//! An HTTP JSON price API, read with a timeout.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{NativePrice, PriceError, PriceSource, unix_now};

/// USD price of the native token from an HTTP JSON API: `GET url`, then the value at a JSON
/// pointer (RFC 6901) is the price in USD. The value must be a decimal string (`"3000.12"`) or
/// an integer; a JSON number with a fraction is refused because it would pass through a float.
/// The whole request (connect, answer, body) is bounded by `timeout`; a non-2xx status, a
/// timeout or a missing value is a failure. Observed at the time of the answer.
pub struct HttpPriceSource {
    client: reqwest::Client,
    url: String,
    pointer: String,
    name: String,
    /// `(pointer, value)`: when the answer has a value at `pointer`, it must equal `value`.
    currency: Option<(String, String)>,
}

impl HttpPriceSource {
    /// A source reading `url` and taking the price at `json_pointer` (e.g. `/data/amount`).
    /// Its name is `http:<url>`.
    pub fn new(url: &str, json_pointer: &str, timeout: Duration) -> Result<Self, PriceError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| PriceError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(HttpPriceSource {
            client,
            url: url.to_owned(),
            pointer: json_pointer.to_owned(),
            name: format!("http:{url}"),
            currency: None,
        })
    }

    /// A Coinbase-style spot price API: `GET {base_url}/v2/prices/{pair}/spot` answering
    /// `{"data":{"amount":"3000.12","base":"ETH","currency":"USD"}}`; `pair` e.g. `ETH-USD`.
    /// An answer whose `data.currency` is present and not `USD` is refused.
    pub fn coinbase(base_url: &str, pair: &str, timeout: Duration) -> Result<Self, PriceError> {
        let url = format!("{}/v2/prices/{pair}/spot", base_url.trim_end_matches('/'));
        let mut source = Self::new(&url, "/data/amount", timeout)?;
        source.currency = Some(("/data/currency".into(), "USD".into()));
        Ok(source)
    }

    /// The URL read.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The price text at `pointer` in `body`: a JSON string, or an integer JSON number.
fn price_text(body: &Value, pointer: &str) -> Result<String, PriceError> {
    match body.pointer(pointer) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(PriceError::Invalid(format!(
            "{pointer} is {other}, not a decimal string or an integer"
        ))),
        None => Err(PriceError::Invalid(format!("no value at {pointer}"))),
    }
}

#[async_trait]
impl PriceSource for HttpPriceSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn price(&self) -> Result<NativePrice, PriceError> {
        // The error names no URL: a price API's URL may hold its key, and this text reaches
        // `/quote` answers as the last refresh error.
        let unavailable = |e: reqwest::Error| {
            let what = if e.is_timeout() {
                "timeout"
            } else {
                "request failed"
            };
            PriceError::Unavailable(format!("{what}: {}", e.without_url()))
        };
        let resp = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(PriceError::Unavailable(format!("HTTP status {status}")));
        }
        let body = resp.bytes().await.map_err(unavailable)?;
        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| PriceError::Invalid(format!("answer is not JSON: {e}")))?;
        if let Some((pointer, want)) = &self.currency
            && let Some(got) = json.pointer(pointer)
            && got.as_str() != Some(want.as_str())
        {
            return Err(PriceError::Invalid(format!(
                "{pointer} is {got}, expected {want:?}"
            )));
        }
        let text = price_text(&json, &self.pointer)?;
        NativePrice::from_decimal_str(&text, unix_now(), self.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coinbase_url_and_price_text() {
        let src =
            HttpPriceSource::coinbase("http://127.0.0.1:9/", "ETH-USD", Duration::from_secs(1))
                .unwrap();
        assert_eq!(src.url(), "http://127.0.0.1:9/v2/prices/ETH-USD/spot");
        assert_eq!(src.name(), "http:http://127.0.0.1:9/v2/prices/ETH-USD/spot");
        let body = json!({"data": {"amount": "3000.12", "base": "ETH", "currency": "USD"}});
        assert_eq!(price_text(&body, "/data/amount").unwrap(), "3000.12");
        assert_eq!(price_text(&json!({"usd": 3000}), "/usd").unwrap(), "3000");
        assert!(price_text(&json!({"usd": 3000.5}), "/usd").is_err());
        assert!(price_text(&json!({"usd": -3}), "/usd").is_err());
        assert!(price_text(&body, "/data/price").is_err());
    }
}
