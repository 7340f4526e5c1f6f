//! HTTP API (x402 v2 §7 facilitator API) on actix-web:
//! `POST /verify`, `POST /settle`, `GET /supported`, `GET /metrics` (health: [`crate::health`]), and the gas
//! oracle's `GET /quote` and `POST /requirements`.
//!
//! Status codes: a well-formed request that fails a check is HTTP 200 with `isValid:false` /
//! `success:false`; an unparsable body is 400 `{"error", "field"}`; the facilitator's own faults
//! are 503 when they pass (Redis or RPC down) and 500 when they do not (a corrupt settlement
//! record), both with the same response shape and reason `unexpected_*_error`. `/quote` and
//! `/requirements` answer 404 `{"error"}` for a network or asset without pricing, 503 while its
//! quote is missing or stale.

use std::time::Instant;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::json;
use serde_json::value::RawValue;
use x402_proto::payment_identifier::{extension_response, payment_identifier};
use x402_proto::{ParseError, PaymentRequest, Reason, SettleResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_settle::engine::{AnswerId, AnswerIdKind, Caller};
use x402_verify::VerifyError;

use crate::auth::KeyName;
use crate::http_metrics::network_label;
use crate::requirements::RequirementsRequest;
use crate::scheme::QuoteLookupError;
use crate::state::AppState;

/// Registers every route and the JSON body limit of `body_limit_bytes`.
///
/// JSON bodies (`/verify`, `/settle`, `/requirements`, `/settlements/lookup`) must be sent
/// as `Content-Type: application/json` (or `…+json`): anything else is 415. A web page can
/// send `text/plain` to a loopback facilitator without a CORS preflight; it cannot send JSON.
pub fn configure(cfg: &mut web::ServiceConfig, body_limit_bytes: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(body_limit_bytes)
            .content_type_required(true)
            .error_handler(|e, _| {
                let status = match &e {
                    actix_web::error::JsonPayloadError::Overflow { .. }
                    | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                        actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                    }
                    actix_web::error::JsonPayloadError::ContentType => {
                        actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
                    }
                    _ => actix_web::http::StatusCode::BAD_REQUEST,
                };
                let body = json!({"error": format!("body: {e}"), "field": "body"});
                actix_web::error::InternalError::from_response(
                    e,
                    HttpResponse::build(status).json(body),
                )
                .into()
            }),
    )
    .route("/verify", web::post().to(verify))
    .route("/settle", web::post().to(settle))
    .route("/supported", web::get().to(supported))
    .route("/quote", web::get().to(quote))
    .route("/requirements", web::post().to(requirements))
    .route("/metrics", web::get().to(metrics))
    .configure(crate::settlements::configure);
}

// `/verify` and `/settle` take the body as checked JSON text (`RawValue`: same 400 / 413 answers as
// any JSON body) and parse it once, straight into the typed request: no intermediate JSON tree.

fn bad_request(state: &AppState, endpoint: &str, e: &ParseError) -> HttpResponse {
    state
        .metrics
        .request_errors
        .with_label_values(&[endpoint, "malformed"])
        .inc();
    HttpResponse::BadRequest().json(json!({"error": e.to_string(), "field": e.field}))
}

/// A caller-chosen value as a log / trace field: at most 80 characters (the network of a payment
/// may be up to the body limit, and the span's fields are repeated on every line it logs).
fn log_field(value: &str) -> &str {
    match value.char_indices().nth(80) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// Adds the payer and the transaction (when known) to the request's span, so the request's
/// log lines (and its trace) carry them.
fn record_outcome(span: &tracing::Span, payer: Option<&str>, transaction: &str) {
    if let Some(payer) = payer.filter(|p| !p.is_empty()) {
        span.record("payer", payer);
    }
    if !transaction.is_empty() {
        span.record("transaction", transaction);
    }
}

async fn verify(state: web::Data<AppState>, body: web::Json<Box<RawValue>>) -> HttpResponse {
    let req = match PaymentRequest::parse(body.get().as_bytes()) {
        Ok(r) => r,
        Err(e) => return bad_request(&state, "verify", &e),
    };
    // payment-identifier: `required: true` without an id (or a malformed id) is a 400 here too.
    if let Err(e) = payment_identifier(&req) {
        let rejected = extension_response(Some(&e.message));
        return with_extension_responses(bad_request(&state, "verify", &e), &rejected);
    }
    let span = tracing::Span::current();
    span.record("network", log_field(req.network_wire()));
    let network = network_label(state.facilitator.supported(), req.network_wire());
    match state.facilitator.verify(&req).await {
        Ok(resp) => {
            record_outcome(&span, resp.payer.as_deref(), "");
            let result = resp.invalid_reason.as_deref().unwrap_or("valid");
            state
                .metrics
                .verify_total
                .with_label_values(&[network, result])
                .inc();
            HttpResponse::Ok().json(resp)
        }
        Err(VerifyError::Malformed(e)) => bad_request(&state, "verify", &e),
        Err(VerifyError::ChainUnavailable(msg)) => {
            tracing::error!(error = %msg, "verify: chain unavailable");
            state
                .metrics
                .request_errors
                .with_label_values(&["verify", "unavailable"])
                .inc();
            HttpResponse::ServiceUnavailable().json(VerifyResponse::invalid(
                Reason::UnexpectedVerifyError,
                Some(format!("chain unavailable: {msg}")),
                None,
            ))
        }
    }
}

async fn settle(
    state: web::Data<AppState>,
    http: HttpRequest,
    body: web::Json<Box<RawValue>>,
) -> HttpResponse {
    let req = match PaymentRequest::parse(body.get().as_bytes()) {
        Ok(r) => r,
        Err(e) => return bad_request(&state, "settle", &e),
    };
    let span = tracing::Span::current();
    span.record("network", log_field(req.network_wire()));
    let network = network_label(state.facilitator.supported(), req.network_wire());
    let key = http.extensions().get::<KeyName>().map(|k| k.0.clone());
    // Answer ids, read before anything is verified (payment-identifier: "look the id up before
    // verifying"): a malformed one, or `required: true` without an id, is a 400.
    let payment_id = match payment_identifier(&req) {
        Ok(id) => id,
        Err(e) => {
            let rejected = extension_response(Some(&e.message));
            return with_extension_responses(bad_request(&state, "settle", &e), &rejected);
        }
    };
    let idempotency_key = match idempotency_key(&http) {
        Ok(k) => k,
        Err(e) => return bad_request(&state, "settle", &e),
    };
    let mut caller = Caller {
        key: key.as_deref(),
        answer_ids: Vec::new(),
    };
    if let Some(id) = &payment_id {
        caller.answer_ids.push(AnswerId {
            kind: AnswerIdKind::PaymentIdentifier,
            id: id.clone(),
        });
    }
    if let Some(k) = idempotency_key {
        caller.answer_ids.push(AnswerId {
            kind: AnswerIdKind::IdempotencyKey,
            id: k,
        });
    }
    let started = Instant::now();
    let outcome = state.facilitator.settle_for(&req, &caller).await;
    if let Ok(resp) = &outcome {
        record_outcome(&span, resp.payer.as_deref(), &resp.transaction);
    }
    state
        .metrics
        .settle_duration
        .with_label_values(&[network])
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok(resp) => {
            let result = if resp.success {
                "success"
            } else {
                resp.error_reason.as_deref().unwrap_or("unknown")
            };
            state
                .metrics
                .settle_total
                .with_label_values(&[network, result])
                .inc();
            if resp.success || resp.transaction.is_empty() {
                tracing::info!(network = log_field(req.network_wire()), result, transaction = %resp.transaction, "settle");
            } else {
                tracing::warn!(network = log_field(req.network_wire()), result, transaction = %resp.transaction, "settle");
            }
            let ok = HttpResponse::Ok().json(resp);
            match payment_id {
                Some(_) => with_extension_responses(ok, &extension_response(None)),
                None => ok,
            }
        }
        Err(SettleError::Malformed(e)) => bad_request(&state, "settle", &e),
        Err(e @ SettleError::Internal(_)) => {
            // Not an outage: retrying will not help, and a transaction of this payment may
            // have been broadcast before (the record says, and it does not decode).
            tracing::error!(error = %e, "settle failed on an internal error");
            state
                .metrics
                .request_errors
                .with_label_values(&["settle", "internal"])
                .inc();
            HttpResponse::InternalServerError().json(SettleResponse::failed(
                Reason::UnexpectedSettleError,
                Some(e.to_string()),
                String::new(),
                req.network_wire().to_string(),
                None,
            ))
        }
        Err(SettleError::AnswerIdConflict(msg)) => {
            tracing::warn!(error = %msg, "settle: answer id conflict, nothing done");
            state
                .metrics
                .request_errors
                .with_label_values(&["settle", "conflict"])
                .inc();
            let reason = if payment_id.is_some() && msg.starts_with("payment-identifier") {
                "payment_identifier_conflict"
            } else {
                "idempotency_key_conflict"
            };
            let body = SettleResponse {
                success: false,
                error_reason: Some(reason.into()),
                error_message: Some(msg.clone()),
                payer: None,
                transaction: String::new(),
                network: req.network_wire().to_string(),
                amount: None,
            };
            let conflict = HttpResponse::Conflict().json(body);
            match payment_id {
                Some(_) if reason == "payment_identifier_conflict" => {
                    with_extension_responses(conflict, &extension_response(Some(&msg)))
                }
                _ => conflict,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "settle refused, nothing broadcast");
            state
                .metrics
                .request_errors
                .with_label_values(&["settle", "unavailable"])
                .inc();
            HttpResponse::ServiceUnavailable().json(SettleResponse::failed(
                Reason::UnexpectedSettleError,
                Some(format!("{e}; nothing was broadcast")),
                String::new(),
                req.network_wire().to_string(),
                None,
            ))
        }
    }
}

/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_MAX_LENGTH: usize = 255;

/// The `Idempotency-Key` request header of `/settle`, if any: 1-255 visible ASCII characters,
/// else a 400 naming the header.
fn idempotency_key(http: &HttpRequest) -> Result<Option<String>, ParseError> {
    let mut values = http.headers().get_all("idempotency-key");
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = |m: &str| ParseError::new("Idempotency-Key", m);
    if values.next().is_some() {
        return Err(malformed("sent more than once"));
    }
    let value = value
        .to_str()
        .ok()
        .filter(|v| {
            (1..=IDEMPOTENCY_KEY_MAX_LENGTH).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            malformed("expected 1-255 visible ASCII characters (e.g. a UUID), no spaces")
        })?;
    Ok(Some(value.to_string()))
}

/// Adds the `EXTENSION-RESPONSES` header (x402 v2 §7.2.1: base64 of a JSON object keyed by
/// extension name) to `resp`.
fn with_extension_responses(mut resp: HttpResponse, outcome: &serde_json::Value) -> HttpResponse {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(outcome.to_string());
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&encoded) {
        resp.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("extension-responses"),
            value,
        );
    }
    resp
}

/// Query of `GET /quote`.
#[derive(serde::Deserialize)]
struct QuoteQuery {
    network: Option<String>,
    asset: Option<String>,
    /// Payment scheme (`exact`, `upto`); default: the first served on the network.
    scheme: Option<String>,
}

fn quote_error(state: &AppState, endpoint: &str, e: QuoteLookupError) -> HttpResponse {
    match e {
        QuoteLookupError::Malformed(p) => bad_request(state, endpoint, &p),
        QuoteLookupError::NotOffered(_) => {
            state
                .metrics
                .request_errors
                .with_label_values(&[endpoint, "not_offered"])
                .inc();
            HttpResponse::NotFound().json(json!({"error": e.to_string()}))
        }
        QuoteLookupError::Unavailable(_) | QuoteLookupError::Chain(_) => {
            state
                .metrics
                .request_errors
                .with_label_values(&[endpoint, "unavailable"])
                .inc();
            HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()}))
        }
    }
}

async fn quote(state: web::Data<AppState>, query: web::Query<QuoteQuery>) -> HttpResponse {
    let Some(network) = query.network.as_deref() else {
        return bad_request(
            &state,
            "quote",
            &ParseError::new("network", "missing query parameter"),
        );
    };
    match state
        .facilitator
        .quote(network, query.asset.as_deref(), query.scheme.as_deref())
    {
        Ok(q) => HttpResponse::Ok().json(q),
        Err(e) => quote_error(&state, "quote", e),
    }
}

async fn requirements(
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let req: RequirementsRequest = match x402_proto::request::typed(body.into_inner(), "") {
        Ok(r) => r,
        Err(e) => return bad_request(&state, "requirements", &e),
    };
    match state.facilitator.requirements(&req).await {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => quote_error(&state, "requirements", e),
    }
}

async fn supported(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.facilitator.supported())
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
