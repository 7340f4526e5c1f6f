//! What a chain error may say about the RPC endpoint it came from, and nothing more.
//!
//! A hosted RPC URL carries the provider's API key in its path, query or user info
//! (`https://base-mainnet.example/v2/KEY`, `…?apikey=KEY`), and the HTTP clients put the whole URL
//! into their error text (`error sending request for url (…)`). Chain errors therefore never hold
//! upstream text of a transport failure: they name the endpoint ([`Endpoint`]: its index and its
//! `scheme://host:port`) and a generic [`Unreachable`] kind, and the full detail, with the URL cut
//! out ([`redacted_detail`]), goes to the logs only.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One configured RPC endpoint of a network, as errors and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Position in the network's `rpc_urls` (0-based); what answers show (`endpoint 0`).
    pub index: usize,
    /// `scheme://host[:port]` of its URL: no credentials, path or query (logs and `/health`).
    pub label: String,
}

impl Endpoint {
    /// The endpoint at position `index` whose URL is `url`.
    pub fn new(index: usize, url: &str) -> Self {
        Endpoint {
            index,
            label: redacted_url(url),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {}", self.index)
    }
}

/// Why an endpoint gave no usable answer, without any of the upstream text (which may hold the
/// URL). The outcome of the call is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// The connection could not be opened (refused, DNS, TLS).
    Connect,
    /// The endpoint answered with this HTTP status and no JSON-RPC answer.
    HttpStatus(u16),
    /// The endpoint limits this client's requests (HTTP 429, JSON-RPC `-32005`, "rate limit").
    RateLimited,
    /// The node says it is not serving (Solana: behind the cluster).
    NodeUnhealthy,
    /// The answer is not a JSON-RPC answer of the expected shape.
    BadAnswer,
    /// Any other transport failure (connection reset or closed mid-request, …).
    Transport,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Connect => f.write_str("connection failed"),
            Unreachable::HttpStatus(status) => write!(f, "HTTP status {status}"),
            Unreachable::RateLimited => f.write_str("rate limited"),
            Unreachable::NodeUnhealthy => f.write_str("node unhealthy"),
            Unreachable::BadAnswer => f.write_str("undecodable answer"),
            Unreachable::Transport => f.write_str("transport error"),
        }
    }
}

/// Logs a failed call to one endpoint: at WARN at most once per [`FailureLog::EVERY_MS`]
/// (with the number of failures logged at DEBUG since), else at DEBUG: an endpoint that is down
/// fails every call, and the receipt poller alone calls several times a second.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    last_warn_ms: AtomicU64,
    quiet: AtomicU64,
}

impl FailureLog {
    /// The least time between two warnings about one endpoint, milliseconds.
    pub(crate) const EVERY_MS: u64 = 10_000;

    /// Logs that `method` on `endpoint` failed with `what` (`timeout`, a kind, a node's refusal)
    /// and `detail` (already redacted).
    pub(crate) fn failed(&self, endpoint: &Endpoint, method: &str, what: &str, detail: &str) {
        let now = crate::clock::unix_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let warn = now.saturating_sub(last) >= Self::EVERY_MS
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if warn {
            let quiet = self.quiet.swap(0, Ordering::Relaxed);
            tracing::warn!(endpoint = %endpoint.label, index = endpoint.index, method, what, error = %detail, failures_logged_at_debug = quiet, "rpc call failed");
        } else {
            self.quiet.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(endpoint = %endpoint.label, index = endpoint.index, method, what, error = %detail, "rpc call failed");
        }
    }
}

/// `scheme://host[:port]` of `url` (`invalid-url` when it does not parse).
pub fn redacted_url(url: &str) -> String {
    match url.parse::<alloy::transports::http::reqwest::Url>() {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "invalid-url".into(),
    }
}

/// `error` and its sources joined by `": "`, with every secret-bearing part of `url` (the
/// whole URL, its user info, path and query) replaced by `…`: for logs.
pub fn redacted_detail(error: &(dyn std::error::Error + 'static), url: &str) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    scrub(&text, url)
}

/// `text` with `url`, its user info, path and query (and each query value) replaced by `…`.
pub fn scrub(text: &str, url: &str) -> String {
    let mut secrets: Vec<String> = vec![url.to_string(), url.trim_end_matches('/').to_string()];
    if let Ok(u) = url.parse::<alloy::transports::http::reqwest::Url>() {
        secrets.push(u.as_str().to_string());
        secrets.push(u.username().to_string());
        secrets.extend(u.password().map(str::to_string));
        if u.path() != "/" {
            secrets.push(u.path().to_string());
            secrets.extend(u.path_segments().into_iter().flatten().map(str::to_string));
        }
        if let Some(q) = u.query() {
            secrets.push(q.to_string());
            secrets.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
        }
    }
    // Longest first, so that a part of a longer secret does not break up its match; very short
    // parts (`v3`, `1`) would cut up ordinary words and are left alone.
    secrets.retain(|s| s.len() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut text = text.to_string();
    for secret in &secrets {
        text = text.replace(secret.as_str(), "…");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str =
        "https://user:SECRET-PW@rpc.example:8443/v3/SECRET-TOKEN-123?apikey=SECRET-KEY-9";

    #[test]
    fn label_keeps_scheme_host_and_port_only() {
        assert_eq!(redacted_url(URL), "https://rpc.example:8443");
        assert_eq!(
            redacted_url("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545"
        );
        assert_eq!(redacted_url("not a url"), "invalid-url");
        assert_eq!(Endpoint::new(2, URL).to_string(), "endpoint 2");
    }

    #[test]
    fn scrub_removes_every_secret_part() {
        let text = format!(
            "error sending request for url ({URL}): path /v3/SECRET-TOKEN-123 key SECRET-KEY-9 pw SECRET-PW"
        );
        let clean = scrub(&text, URL);
        for secret in ["SECRET-TOKEN-123", "SECRET-KEY-9", "SECRET-PW"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(
            clean.starts_with("error sending request for url (…)"),
            "{clean}"
        );
    }
}
