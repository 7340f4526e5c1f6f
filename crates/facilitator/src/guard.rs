//! The access middleware in front of the routes: the per-IP limit (on `/verify` and
//! `/settle`), then the API key and its scope (when keys are configured), then the per-key
//! limit. Refusals are 401 / 403 / 429 with the x402-shaped bodies of [`crate::auth`]; 429
//! carries `Retry-After` (whole seconds).

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};

use crate::auth::{ApiKeys, Denial, KeyName, refusal_body, required_scope};
use crate::http_metrics::{OpsMetrics, route_label};
use crate::rate_limit::{Decision, RateLimiter, retry_after_seconds};

/// What the middleware checks.
pub struct Guard {
    /// The configured keys (none → no authentication).
    pub keys: ApiKeys,
    /// The limits (none → no limits).
    pub limiter: Option<RateLimiter>,
    /// Client IP from `Forwarded` / `X-Forwarded-For` instead of the TCP peer.
    pub trust_forwarded_for: bool,
    /// Where refusals are counted.
    pub metrics: OpsMetrics,
}

fn limited_path(path: &str) -> bool {
    matches!(path, "/verify" | "/settle")
}

impl Guard {
    fn client_ip(&self, req: &ServiceRequest) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let info = req.connection_info();
            if let Some(ip) = info.realip_remote_addr().and_then(parse_ip) {
                return Some(ip);
            }
        }
        req.peer_addr().map(|a| a.ip())
    }

    fn refuse(
        &self,
        req: ServiceRequest,
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
        let body = refusal_body(req.path(), reason, message);
        req.into_response(resp.json(body))
    }

    fn limited(
        &self,
        req: ServiceRequest,
        which: &str,
        retry_after: std::time::Duration,
    ) -> ServiceResponse<BoxBody> {
        let route = route_label(req.path(), None);
        self.metrics
            .rate_limited
            .with_label_values(&[&route, which])
            .inc();
        let seconds = retry_after_seconds(retry_after);
        let message = format!("rate limit per {which} exceeded; retry after {seconds} s");
        self.refuse(
            req,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &message,
            Some(seconds),
        )
    }
}

/// Accepts a bare IP or `ip:port` (IPv6 in brackets).
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The middleware function (see the module documentation).
pub async fn guard(
    guard: Arc<Guard>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = req.path().to_string();
    let limited = limited_path(&path);
    if limited
        && let Some(limiter) = &guard.limiter
        && let Some(ip) = guard.client_ip(&req)
        && let Decision::Limited { retry_after } = limiter.check_ip(ip).await
    {
        return Ok(guard.limited(req, "ip", retry_after));
    }
    if guard.keys.enabled()
        && let Some(scope) = required_scope(&path)
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
                    return Ok(guard.limited(req, "key", retry_after));
                }
            }
            Err(denial) => {
                let route = route_label(&path, None);
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
                return Ok(guard.refuse(req, status, reason, &message, None));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_parse_with_or_without_port() {
        assert_eq!(parse_ip("10.1.2.3"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(parse_ip("10.1.2.3:5555"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(parse_ip("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("unknown"), None);
    }
}
