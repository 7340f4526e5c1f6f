//! The access middleware in front of the routes: the per-IP limit (on `/verify` and
//! `/settle`), then the API key and its scope (when keys are configured), then the per-key
//! limit. Refusals are 401 / 403 / 429 with the x402-shaped bodies of [`crate::auth`]; 429
//! carries `Retry-After` (whole seconds).
//!
//! Every decision is made on the route the request will reach: the pattern of the resource
//! matching the *decoded* path, exactly as the router decodes it ([`route_pattern`]), never
//! on the raw path. So `POST /s%65ttle` is `/settle` for limits and scopes too. A path no
//! route matches is `other` and needs the `admin` scope, so a route added later is closed
//! until [`crate::auth::required_scope`] maps it.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};

use crate::auth::{ApiKeys, Denial, KeyName, refusal_body, required_scope};
use crate::client_ip::ClientIp;
use crate::http_metrics::OpsMetrics;
use crate::rate_limit::{Decision, RateLimiter, retry_after_seconds};

/// What the middleware checks.
pub struct Guard {
    /// The configured keys (none → no authentication).
    pub keys: ApiKeys,
    /// The limits (none → no limits).
    pub limiter: Option<RateLimiter>,
    /// How the client address of the per-IP limit is found (TCP peer, or forwarding headers
    /// of trusted proxies).
    pub client_ip: ClientIp,
    /// Where refusals are counted.
    pub metrics: OpsMetrics,
}

/// Label of a request no route matches.
pub const OTHER_ROUTE: &str = "other";

/// The pattern of the route `req` will be routed to (`/settle`, `/settlements/{transaction}`),
/// matched on the path as the router decodes it (percent-escapes of unreserved characters
/// decoded: `/s%65ttle` is `/settle`); `None` when no route matches.
pub fn route_pattern(req: &ServiceRequest) -> Option<String> {
    req.resource_map().match_pattern(req.match_info().as_str())
}

fn limited_route(route: &str) -> bool {
    matches!(route, "/verify" | "/settle")
}

impl Guard {
    fn refuse(
        &self,
        req: ServiceRequest,
        route: &str,
        status: StatusCode,
        reason: &str,
        message: &str,
        retry_after: Option<u64>,
    ) -> ServiceResponse<BoxBody> {
        let mut resp = HttpResponse::build(status);
        if let Some(seconds) = retry_after {
            resp.insert_header(("Retry-After", seconds.to_string()));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        let body = refusal_body(route, reason, message);
        req.into_response(resp.json(body))
    }

    fn limited(
        &self,
        req: ServiceRequest,
        route: &str,
        which: &str,
        retry_after: std::time::Duration,
    ) -> ServiceResponse<BoxBody> {
        self.metrics
            .rate_limited
            .with_label_values(&[route, which])
            .inc();
        let seconds = retry_after_seconds(retry_after);
        let message = format!("rate limit per {which} exceeded; retry after {seconds} s");
        self.refuse(
            req,
            route,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &message,
            Some(seconds),
        )
    }
}

/// The middleware function (see the module documentation).
pub async fn guard(
    guard: Arc<Guard>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let route = route_pattern(&req).unwrap_or_else(|| OTHER_ROUTE.to_string());
    let limited = limited_route(&route);
    if limited
        && let Some(limiter) = &guard.limiter
        && let Some(ip) = guard
            .client_ip
            .resolve(req.peer_addr().map(|a| a.ip()), req.headers())
        && let Decision::Limited { retry_after } = limiter.check_ip(ip).await
    {
        return Ok(guard.limited(req, &route, "ip", retry_after));
    }
    if guard.keys.enabled()
        && let Some(scope) = required_scope(&route)
    {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match guard.keys.check(header, scope) {
            Ok(key) => {
                req.extensions_mut().insert(KeyName(key.name.clone()));
                tracing::Span::current().record("key", &*key.name);
                if limited
                    && let Some(limiter) = &guard.limiter
                    && let Decision::Limited { retry_after } = limiter.check_key(&key.name).await
                {
                    return Ok(guard.limited(req, &route, "key", retry_after));
                }
            }
            Err(denial) => {
                guard
                    .metrics
                    .unauthorized
                    .with_label_values(&[&route, denial.as_str()])
                    .inc();
                let (status, reason, message) = match denial {
                    Denial::Missing => (
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing API key: send Authorization: Bearer <key>".to_string(),
                    ),
                    Denial::Invalid => (
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "unknown API key".to_string(),
                    ),
                    Denial::Forbidden => (
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("this API key lacks the {:?} scope", scope.as_str()),
                    ),
                };
                return Ok(guard.refuse(req, &route, status, reason, &message, None));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
