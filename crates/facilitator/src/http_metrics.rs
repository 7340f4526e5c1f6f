//! Operational metrics (HTTP requests, Redis calls, refusals, signer balances, dependency
//! health, build info) and the outermost middleware: a request id, one span per request
//! (`request_id`, `method`, `route`, `key`; and `network`, `payer`, `transaction` as the
//! payment routes learn them) and one summary log line, at DEBUG for answers
//! below 500 and at WARN for 5xx, never with the body.
//!
//! Label sets are bounded, whatever a caller sends: `route` is the pattern of a registered
//! route or `other` ([`route_label`]), `method` one of the standard methods or `other`
//! ([`method_label`]), `key` a configured key name or `anonymous`, and `network` a configured
//! network or `other` ([`network_label`]; `signer` comes from the configuration too).

use std::sync::Arc;
use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use tracing::Instrument;
use x402_proto::SupportedResponse;

use crate::auth::KeyName;

/// Header carrying the request id (taken from the request when well-formed, else generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The operational metrics (registered next to the payment metrics of [`crate::metrics`]).
#[derive(Clone)]
pub struct OpsMetrics {
    /// `x402_http_requests_total{route,method,status,key}`.
    pub http_requests: IntCounterVec,
    /// `x402_http_request_duration_seconds{route}`: time to the response head, seconds.
    pub http_duration: HistogramVec,
    /// `x402_redis_call_duration_seconds{op}`: Redis round trips, seconds: the rate limiter
    /// (`rate_limit`), readiness (`ping`) and the replay store (its operations, see
    /// [`x402_settle::replay::CallObserver`]).
    pub redis_call_duration: HistogramVec,
    /// `x402_redis_call_errors_total{op}`: failed Redis calls.
    pub redis_call_errors: IntCounterVec,
    /// `x402_rpc_call_duration_seconds{network,method}`: every chain JSON-RPC call to one
    /// endpoint (a failover retry counts again), seconds; `method` is the JSON-RPC method
    /// (`eth_call`, `eth_getTransactionReceipt`, `sendTransaction`, …; `sign` on EVM: fee and
    /// gas fill plus local signing).
    pub rpc_call_duration: HistogramVec,
    /// `x402_rpc_call_errors_total{network,method}`: calls that got no answer (transport
    /// failure or timeout).
    pub rpc_call_errors: IntCounterVec,
    /// `x402_rate_limited_requests_total{route,limit}`: 429 answers; `limit` = `ip` or `key`.
    pub rate_limited: IntCounterVec,
    /// `x402_unauthorized_requests_total{route,reason}`: 401/403 answers; `reason` =
    /// `missing`, `invalid` or `forbidden`.
    pub unauthorized: IntCounterVec,
    /// `x402_signer_balance_native{network,signer}`: native balance of each signer / fee payer
    /// in whole tokens (ETH on EVM networks, SOL on Solana), from the last readiness check.
    pub signer_balance: GaugeVec,
    /// `x402_dependency_up{dependency,network}`: 1 when the last check passed, else 0;
    /// `dependency` = `replay_store` (network ""), `rpc` or `funded_signer`.
    pub dependency_up: IntGaugeVec,
    /// `x402_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `x402_redis_node_up{address,role}`: 1 when the Redis node answered the last readiness
    /// check (a replica: linked and online), else 0; `role` = `primary`, `replica`,
    /// `sentinel` or `unknown`.
    pub redis_node_up: IntGaugeVec,
}

impl OpsMetrics {
    /// Creates the metrics without registering them (see [`OpsMetrics::register`]).
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric")
        };
        let m = OpsMetrics {
            http_requests: counter(
                "x402_http_requests_total",
                "HTTP requests by route, method, status and API key name",
                &["route", "method", "status", "key"],
            ),
            http_duration: histogram(
                "x402_http_request_duration_seconds",
                "HTTP request duration in seconds by route",
                &["route"],
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            ),
            redis_call_duration: histogram(
                "x402_redis_call_duration_seconds",
                "Redis round trips of the facilitator's own calls in seconds, by operation",
                &["op"],
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                ],
            ),
            redis_call_errors: counter(
                "x402_redis_call_errors_total",
                "Failed Redis calls by operation",
                &["op"],
            ),
            rpc_call_duration: histogram(
                "x402_rpc_call_duration_seconds",
                "Chain JSON-RPC calls in seconds, by network and method",
                &["network", "method"],
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            rpc_call_errors: counter(
                "x402_rpc_call_errors_total",
                "Chain JSON-RPC calls without an answer (transport failure, timeout)",
                &["network", "method"],
            ),
            rate_limited: counter(
                "x402_rate_limited_requests_total",
                "Requests answered 429 by route and exhausted limit (ip or key)",
                &["route", "limit"],
            ),
            unauthorized: counter(
                "x402_unauthorized_requests_total",
                "Requests answered 401 or 403 by route and reason",
                &["route", "reason"],
            ),
            signer_balance: GaugeVec::new(
                Opts::new(
                    "x402_signer_balance_native",
                    "Native balance of each signer in whole tokens (ETH, SOL)",
                ),
                &["network", "signer"],
            )
            .expect("valid metric"),
            dependency_up: IntGaugeVec::new(
                Opts::new(
                    "x402_dependency_up",
                    "1 when the dependency passed its last readiness check, else 0",
                ),
                &["dependency", "network"],
            )
            .expect("valid metric"),
            build_info: IntGaugeVec::new(
                Opts::new("x402_build_info", "Build information; always 1"),
                &["version"],
            )
            .expect("valid metric"),
            redis_node_up: IntGaugeVec::new(
                Opts::new(
                    "x402_redis_node_up",
                    "1 when the Redis node answered the last readiness check, by address and role",
                ),
                &["address", "role"],
            )
            .expect("valid metric"),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Registers every metric in `registry` and creates the zero-valued series of the
    /// refusal counters on `/verify` and `/settle` (so alerts see them before the first one).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.http_requests.clone()))?;
        registry.register(Box::new(self.http_duration.clone()))?;
        registry.register(Box::new(self.redis_call_duration.clone()))?;
        registry.register(Box::new(self.redis_call_errors.clone()))?;
        registry.register(Box::new(self.rpc_call_duration.clone()))?;
        registry.register(Box::new(self.rpc_call_errors.clone()))?;
        registry.register(Box::new(self.rate_limited.clone()))?;
        registry.register(Box::new(self.unauthorized.clone()))?;
        registry.register(Box::new(self.signer_balance.clone()))?;
        registry.register(Box::new(self.dependency_up.clone()))?;
        registry.register(Box::new(self.build_info.clone()))?;
        registry.register(Box::new(self.redis_node_up.clone()))?;
        for route in ["/verify", "/settle"] {
            for limit in ["ip", "key"] {
                self.rate_limited.with_label_values(&[route, limit]);
            }
            for reason in ["missing", "invalid", "forbidden"] {
                self.unauthorized.with_label_values(&[route, reason]);
            }
        }
        Ok(())
    }
}

impl Default for OpsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The bounded `route` label: the matched route's pattern (see
/// [`crate::guard::route_pattern`]), `other` when no route matches.
pub fn route_label(pattern: Option<&str>) -> &str {
    pattern.unwrap_or(crate::guard::OTHER_ROUTE)
}

/// The bounded `method` label: `GET`, `POST`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `PATCH`, or
/// `other` for any other (extension) method.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The bounded `network` label of a payment request's `paymentRequirements.network` (`wire`):
/// itself when it names a network this facilitator serves (a CAIP-2 id or a v1 name listed
/// in `supported`), else `other`.
pub fn network_label<'a>(supported: &SupportedResponse, wire: &'a str) -> &'a str {
    if supported.kinds.iter().any(|k| k.network == wire) {
        wire
    } else {
        "other"
    }
}

fn request_id(req: &ServiceRequest) -> String {
    let given = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    match given {
        Some(id) => id.to_string(),
        None => {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            hex::encode(bytes)
        }
    }
}

/// The outermost middleware: request id, span, metrics and the summary log line.
pub async fn observe(
    metrics: Arc<OpsMetrics>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = method_label(req.method());
    let pattern = crate::guard::route_pattern(&req);
    let route = route_label(pattern.as_deref());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = method,
        route = tracing::field::Empty,
        key = tracing::field::Empty,
        network = tracing::field::Empty,
        payer = tracing::field::Empty,
        transaction = tracing::field::Empty,
    );
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    let mut res = match result {
        Ok(res) => res,
        Err(e) => {
            tracing::warn!(route, error = %e, "request failed");
            return Err(e);
        }
    };
    let key = res
        .request()
        .extensions()
        .get::<KeyName>()
        .map(|k| k.0.to_string())
        .unwrap_or_else(|| "anonymous".to_string());
    span.record("route", route);
    span.record("key", key.as_str());
    let status = res.status();
    let elapsed = started.elapsed();
    metrics
        .http_requests
        .with_label_values(&[route, method, status.as_str(), &key])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    let ms = elapsed.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), elapsed_ms = ms, "request");
    } else {
        tracing::debug!(status = status.as_u16(), elapsed_ms = ms, "request");
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(route_label(Some("/verify")), "/verify");
        assert_eq!(
            route_label(Some("/settlements/{transaction}")),
            "/settlements/{transaction}"
        );
        assert_eq!(route_label(None), "other");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::CONNECT), "other");
        assert_eq!(
            method_label(&Method::from_bytes(b"X-ANYTHING-42").unwrap()),
            "other"
        );
        let supported = SupportedResponse {
            kinds: vec![x402_proto::SupportedKind {
                x402_version: 1,
                scheme: "exact".into(),
                network: "base".into(),
                extra: None,
            }],
            extensions: Vec::new(),
            signers: Default::default(),
        };
        assert_eq!(network_label(&supported, "base"), "base");
        assert_eq!(network_label(&supported, "eip155:8453"), "other");
        assert_eq!(network_label(&supported, &"x".repeat(65_536)), "other");
    }

    #[test]
    fn registration_creates_zero_series() {
        let registry = Registry::new();
        OpsMetrics::new().register(&registry).unwrap();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("x402_rate_limited_requests_total{limit=\"ip\",route=\"/settle\"} 0")
        );
        assert!(text.contains("x402_build_info{version="));
    }
}
