//! Hardening of the HTTP layer (issue 21): bounded metric labels under random methods and
//! networks, a keyless start on all interfaces refused, JSON routes requiring
//! `application/json`, limits and scopes decided on the decoded route (`/s%65ttle`), client
//! addresses behind trusted proxies (spoofed `X-Forwarded-For`, IPv6 /64 budgets),
//! `/health/ready` served from the background check, and a bounded fuzz of methods,
//! percent-encoded paths and headers.
//!
//! Requests go over raw TCP to 127.0.0.1 (an HTTP client would normalize paths and refuse
//! odd methods); every loop is bounded.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_parse::Scrape;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x402_facilitator::auth::{generate_key, sha256_hex};
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer};

/// One raw answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends one HTTP/1.1 request as written (method, path and headers untouched) to the
/// facilitator at `url` (`http://127.0.0.1:port`) and reads the answer until the server closes.
async fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<Answer> {
    let addr = url.strip_prefix("http://").expect("http URL");
    anyhow::ensure!(addr.starts_with("127.0.0.1:"), "loopback only: {addr}");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // One write: the server reads the whole request even when it answers without the body
    // (a 404, a refusal), so closing leaves no unread bytes that would reset the connection.
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    // The answer is complete when its framing says so (the server may hold
                    // the connection a moment before closing it).
                    if answer_complete(&buf, method == "HEAD") {
                        return Ok(());
                    }
                }
                // A reset after the answer arrived (the server closed with bytes unread).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Whether `buf` holds a whole answer: its head, and the body its `Content-Length` or
/// chunked encoding announces (none for HEAD).
fn answer_complete(buf: &[u8], head_only: bool) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    if head_only {
        return true;
    }
    let head = text[..end].to_ascii_lowercase();
    let body = &text[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return buf.len() >= end + 4 + len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    false
}

fn hdr(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn json_ct() -> (String, String) {
    hdr("Content-Type", "application/json")
}

fn bearer(key: &str) -> (String, String) {
    hdr("Authorization", &format!("Bearer {key}"))
}

/// POSTs `body` as JSON to `path` with `extra` headers.
async fn post(url: &str, path: &str, extra: &[(String, String)], body: &Value) -> Answer {
    let mut headers = vec![json_ct()];
    headers.extend_from_slice(extra);
    raw(url, "POST", path, &headers, body.to_string().as_bytes())
        .await
        .unwrap()
}

/// A small deterministic generator (xorshift64*), seeded and printed so a failure can be
/// replayed.
struct Rng(u64);

impl Rng {
    fn seeded(name: &str) -> Self {
        let seed = std::env::var("X402_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{name}: X402_FUZZ_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// `len` characters of `alphabet`.
    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| *self.pick(alphabet) as char)
            .collect::<String>()
    }
}

const TOKEN: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
const VISIBLE: &[u8] =
    b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
const STANDARD_METHODS: &[&str] = &["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"];
/// Paths of every route, and some that match none.
const PATHS: &[&str] = &[
    "/verify",
    "/settle",
    "/supported",
    "/quote",
    "/requirements",
    "/metrics",
    "/health",
    "/health/live",
    "/health/ready",
    "/settlements/lookup",
    "/settlements/0xabc",
    "/nowhere",
];

/// A well-formed v2 payment body naming `network` (in `accepted` and the requirements).
fn payment_on(network: &str) -> Value {
    let req = ExactEvmRequirements::base_usdc(10_000u64, x402_tests::dev_signer(3).address());
    let (auth, sig) = req.authorize(&x402_tests::dev_signer(2)).unwrap();
    let mut requirements = req.v2_json();
    requirements["network"] = json!(network);
    v2_evm_payment_json(&requirements, &sig, &auth)
}

/// Every series (`name{labels}`) of the metrics a request can create: HTTP, payment
/// results, refusals (not the background RPC / Redis / balance metrics).
fn request_series(scrape: &Scrape) -> BTreeSet<String> {
    const PREFIXES: &[&str] = &[
        "x402_http_",
        "x402_verify_total",
        "x402_settle_total",
        "x402_settle_duration_seconds",
        "x402_request_errors_total",
        "x402_unauthorized_requests_total",
        "x402_rate_limited_requests_total",
    ];
    scrape
        .samples
        .iter()
        .filter(|s| PREFIXES.iter().any(|p| s.metric.starts_with(p)))
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            labels.sort();
            format!("{}{{{}}}", s.metric, labels.join(","))
        })
        .collect()
}

async fn scrape(url: &str, admin: Option<&str>) -> Scrape {
    let headers: Vec<(String, String)> = admin.map(bearer).into_iter().collect();
    let a = raw(url, "GET", "/metrics", &headers, b"").await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    Scrape::parse(a.body.lines().map(|l| Ok(l.to_string()))).expect("exposition text parses")
}

/// Every label value of the request metrics is from a known set.
fn assert_labels_bounded(scrape: &Scrape, keys: &[&str]) {
    let routes: BTreeSet<&str> = [
        "/verify",
        "/settle",
        "/supported",
        "/quote",
        "/requirements",
        "/metrics",
        "/health",
        "/health/live",
        "/health/ready",
        "/settlements/lookup",
        "/settlements/{transaction}",
        "other",
    ]
    .into();
    let methods: BTreeSet<&str> = STANDARD_METHODS.iter().copied().chain(["other"]).collect();
    let networks: BTreeSet<&str> = ["eip155:8453", "base", "other"].into();
    for s in &scrape.samples {
        for (k, v) in s.labels.iter() {
            let ok = match k.as_str() {
                "route" if s.metric.starts_with("x402_http_") || s.metric.contains("requests") => {
                    routes.contains(v.as_str())
                }
                "method" if s.metric.starts_with("x402_http_") => methods.contains(v.as_str()),
                "network"
                    if s.metric.starts_with("x402_verify")
                        || s.metric.starts_with("x402_settle_total")
                        || s.metric.starts_with("x402_settle_duration") =>
                {
                    networks.contains(v.as_str())
                }
                "key" if s.metric.starts_with("x402_http_") => {
                    v == "anonymous" || keys.contains(&v.as_str())
                }
                _ => true,
            };
            assert!(ok, "{}: label {k}={v:?} is not from a known set", s.metric);
        }
    }
}

async fn facilitator(anvil: &Anvil, redis: Option<&str>, extra: &str) -> TestFacilitator {
    let toml = TestFacilitator::config_toml(anvil, DEV_PRIVATE_KEYS[1], redis) + extra;
    TestFacilitator::start_with_toml(&toml).await.unwrap()
}

fn key_toml(name: &str, key: &str, scopes: &str) -> String {
    format!(
        "\n[[auth.keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n",
        sha256_hex(key)
    )
}

#[tokio::test]
async fn random_methods_and_networks_add_no_metric_series() {
    let anvil = Anvil::spawn().await.unwrap();
    let f = facilitator(&anvil, None, "").await;
    let url = f.url();
    // Every shape once: each method (a standard one or an extension) on each path, and a
    // payment on an unknown network to /verify and /settle.
    for path in PATHS {
        for method in STANDARD_METHODS.iter().chain(&["FROBNICATE"]) {
            raw(url, method, path, &[], b"").await.unwrap();
        }
    }
    for path in ["/verify", "/settle"] {
        let a = post(url, path, &[], &payment_on("warm-up:1")).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let before = request_series(&scrape(url, None).await);

    let mut rng = Rng::seeded("labels");
    for i in 0..1000 {
        if i % 2 == 0 {
            let method = if rng.chance(30) {
                rng.pick(STANDARD_METHODS).to_string()
            } else {
                let len = 1 + rng.below(12);
                rng.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", len)
            };
            let path = rng.pick(PATHS);
            raw(url, &method, path, &[], b"").await.unwrap();
        } else {
            let network = match rng.below(3) {
                0 => format!("eip155:{}", rng.next() % 1_000_000_000),
                1 => format!(
                    "solana:{}",
                    rng.string(b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabc", 32)
                ),
                _ => {
                    let len = 1 + rng.below(200);
                    rng.string(VISIBLE, len)
                }
            };
            let path = if rng.chance(50) { "/verify" } else { "/settle" };
            let a = post(url, path, &[], &payment_on(&network)).await;
            assert_eq!(a.status, 200, "{network:?}: {a:?}");
        }
    }
    let after_scrape = scrape(url, None).await;
    let after = request_series(&after_scrape);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:#?}");
    assert_labels_bounded(&after_scrape, &[]);
}

#[tokio::test]
async fn json_routes_require_application_json() {
    let anvil = Anvil::spawn().await.unwrap();
    let f = facilitator(&anvil, None, "").await;
    let body = payment_on("eip155:8453").to_string();
    for path in ["/verify", "/settle", "/settlements/lookup", "/requirements"] {
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let headers: Vec<(String, String)> =
                ct.map(|c| hdr("Content-Type", c)).into_iter().collect();
            let a = raw(f.url(), "POST", path, &headers, body.as_bytes())
                .await
                .unwrap();
            assert_eq!(a.status, 415, "{path} {ct:?}: {a:?}");
        }
        // JSON with parameters is accepted (the malformed body is then 400).
        let a = raw(
            f.url(),
            "POST",
            path,
            &[hdr("Content-Type", "application/json; charset=utf-8")],
            b"[]",
        )
        .await
        .unwrap();
        assert_eq!(a.status, 400, "{path}: {a:?}");
    }
    // Nothing was broadcast or verified for the refused bodies.
    let m = scrape(f.url(), None).await;
    assert!(
        !m.samples
            .iter()
            .any(|s| s.metric == "x402_verify_total" || s.metric == "x402_settle_total"),
        "a text/plain body reached a handler"
    );
}

#[tokio::test]
async fn keyless_start_on_all_interfaces_is_refused() {
    let anvil = Anvil::spawn().await.unwrap();
    let toml = TestFacilitator::config_toml(&anvil, DEV_PRIVATE_KEYS[1], None);
    let config = x402_facilitator::config::Config::from_toml(&toml)
        .unwrap()
        .validate()
        .unwrap();
    // The start function refuses before it connects or serves anything.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let e = match x402_facilitator::start(&config, listener).await {
        Ok(_) => panic!("a keyless start on 0.0.0.0 was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("allow_unauthenticated"), "{e}");
    assert!(e.contains("auth.keys"), "{e}");

    // The real binary's --check says the same; allow_unauthenticated or a key lets it pass.
    let dir = std::env::temp_dir().join(format!("x402-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    let check = |text: String| {
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(x402_tests::process::facilitator_binary().unwrap())
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .env("X402_LISTEN", "0.0.0.0:8402")
            .output()
            .unwrap()
    };
    let out = check(toml.clone());
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_unauthenticated"),
        "{out:?}"
    );
    let out = check(format!("allow_unauthenticated = true\n{toml}"));
    assert!(out.status.success(), "{out:?}");
    let (key, _) = generate_key().unwrap();
    let out = check(format!(
        "{toml}\n{}",
        key_toml("shop", &key, "[\"verify\"]")
    ));
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_encoded_path_is_limited_and_authenticated_as_its_route() {
    let anvil = Anvil::spawn().await.unwrap();
    let (verifier, _) = generate_key().unwrap();
    let (settler, _) = generate_key().unwrap();
    let extra = key_toml("verifier", &verifier, "[\"verify\"]")
        + &key_toml("settler", &settler, "[\"settle\"]")
        + "\n[rate_limit]\nper_ip = { requests_per_second = 0.01, burst = 3 }\n";
    let f = facilitator(&anvil, None, &extra).await;
    let url = f.url();
    let enc = "/s%65ttle";
    // Scope: no key → 401, a key without `settle` → 403 (each takes an IP token first).
    let a = post(url, enc, &[], &json!({})).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.json()["errorReason"], "unauthorized", "{a:?}");
    let a = post(url, enc, &[bearer(&verifier)], &json!({})).await;
    assert_eq!(a.status, 403, "{a:?}");
    // The settle handler is reached (400 names the field), with the third token.
    let a = post(url, enc, &[bearer(&settler)], &json!({})).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.json()["field"].is_string(), "{a:?}");
    // The budget is shared with /settle, both ways.
    for path in ["/settle", enc, "/%73ettle"] {
        let a = post(url, path, &[bearer(&settler)], &json!({})).await;
        assert_eq!(a.status, 429, "{path}: {a:?}");
        assert_eq!(a.json()["errorReason"], "rate_limited", "{a:?}");
        assert!(
            a.head.to_ascii_lowercase().contains("retry-after:"),
            "{a:?}"
        );
    }
    // Other encoded routes keep their scope too.
    let a = raw(url, "GET", "/m%65trics", &[], b"").await.unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    let a = raw(url, "GET", "/m%65trics", &[bearer(&settler)], b"")
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");

    let (admin, _) = generate_key().unwrap();
    drop(f);
    let f = facilitator(
        &anvil,
        None,
        &(extra + &key_toml("ops", &admin, "[\"admin\"]")),
    )
    .await;
    post(f.url(), enc, &[], &json!({})).await;
    let m = scrape(f.url(), Some(&admin)).await;
    let http = request_series(&m);
    assert!(
        http.iter()
            .any(|s| s.starts_with("x402_http_requests_total")
                && s.contains("route=\"/settle\"")
                && s.contains("status=\"401\"")),
        "{http:#?}"
    );
    let unauthorized = m
        .samples
        .iter()
        .find(|s| {
            s.metric == "x402_unauthorized_requests_total"
                && s.labels.get("route") == Some("/settle")
                && s.labels.get("reason") == Some("missing")
        })
        .expect("refusal counted on /settle");
    assert!(
        matches!(unauthorized.value, prometheus_parse::Value::Counter(v) if v == 1.0),
        "{unauthorized:?}"
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let anvil = Anvil::spawn().await.unwrap();
    let limits = |proxies: &str| {
        format!("\n[rate_limit]\nper_ip = {{ requests_per_second = 0.01, burst = 2 }}\n{proxies}\n")
    };
    let xff = |v: &str| vec![hdr("X-Forwarded-For", v)];
    let statuses = |answers: Vec<Answer>| answers.iter().map(|a| a.status).collect::<Vec<_>>();

    // Behind a trusted proxy (the loopback peer): the client is the rightmost untrusted entry;
    // what the client wrote to its left changes nothing.
    let f = facilitator(
        &anvil,
        None,
        &limits("trusted_proxies = [\"127.0.0.1/32\"]"),
    )
    .await;
    let mut answers = Vec::new();
    for i in 0..4 {
        let spoof = format!("198.51.100.{i}, 203.0.113.7");
        answers.push(post(f.url(), "/verify", &xff(&spoof), &json!({})).await);
    }
    assert_eq!(statuses(answers), [400, 400, 429, 429]);
    // Another client behind the same proxy has its own budget.
    let a = post(f.url(), "/verify", &xff("203.0.113.8"), &json!({})).await;
    assert_eq!(a.status, 400, "{a:?}");
    // IPv6: one budget per /64.
    let mut answers = Vec::new();
    for client in [
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff::2",
        "2001:db8:1:2:abcd::3",
    ] {
        answers.push(post(f.url(), "/verify", &xff(client), &json!({})).await);
    }
    assert_eq!(statuses(answers), [400, 400, 429]);
    let a = post(f.url(), "/verify", &xff("2001:db8:1:3::1"), &json!({})).await;
    assert_eq!(a.status, 400, "another /64: {a:?}");

    // The peer is not a trusted proxy: the header is ignored, the peer's budget counts.
    let f = facilitator(&anvil, None, &limits("trusted_proxies = [\"10.0.0.0/8\"]")).await;
    let mut answers = Vec::new();
    for i in 0..3 {
        let spoof = format!("198.51.100.{i}");
        answers.push(post(f.url(), "/verify", &xff(&spoof), &json!({})).await);
    }
    assert_eq!(statuses(answers), [400, 400, 429]);

    // Deprecated trust_forwarded_for: the proxy's own (rightmost) entry, not the leftmost.
    let f = facilitator(&anvil, None, &limits("trust_forwarded_for = true")).await;
    let mut answers = Vec::new();
    for i in 0..3 {
        let spoof = format!("198.51.100.{i}, 203.0.113.9");
        answers.push(post(f.url(), "/verify", &xff(&spoof), &json!({})).await);
    }
    assert_eq!(statuses(answers), [400, 400, 429]);
    let f = facilitator(&anvil, None, &limits("trust_forwarded_for = true")).await;
    let forwarded = vec![hdr(
        "Forwarded",
        "for=198.51.100.1, for=\"[2001:db8:9::1]:443\"",
    )];
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(post(f.url(), "/verify", &forwarded, &json!({})).await);
    }
    assert_eq!(statuses(answers), [400, 400, 429]);
}

fn counter_sum(scrape: &Scrape, metric: &str, label: (&str, &str)) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            prometheus_parse::Value::Counter(v) => *v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn health_ready_answers_from_the_background_check() {
    let redis = RedisServer::spawn().await.unwrap();
    let anvil = Anvil::spawn().await.unwrap();
    let f = facilitator(
        &anvil,
        Some(&redis.url()),
        "\n[health]\nrefresh_seconds = 3600\n",
    )
    .await;
    // The first call waits for the first report.
    let a = raw(f.url(), "GET", "/health/ready", &[], b"")
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let first = a.json();
    assert!(first["checkedAt"].as_u64().unwrap() > 0, "{a:?}");
    let before = scrape(f.url(), None).await;
    for i in 0..60 {
        let path = if i % 3 == 0 {
            "/health"
        } else {
            "/health/ready"
        };
        let a = raw(f.url(), "GET", path, &[], b"").await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json()["checkedAt"], first["checkedAt"], "{a:?}");
    }
    let after = scrape(f.url(), None).await;
    let balance = |s: &Scrape| {
        counter_sum(
            s,
            "x402_rpc_call_duration_seconds",
            ("method", "eth_getBalance"),
        )
    };
    let ping = |s: &Scrape| counter_sum(s, "x402_redis_call_duration_seconds", ("op", "ping"));
    // The settlement path re-reads signer balances on its own every 10 s: one read may land
    // in the window; 60 probes used to cost 60.
    assert!(
        balance(&after) - balance(&before) <= 1.0,
        "getBalance {} → {}",
        balance(&before),
        balance(&after)
    );
    assert_eq!(ping(&after), ping(&before), "a probe pinged Redis");
}

/// Random methods, percent-encoded paths and random headers and bodies, with keys, limits
/// and trusted proxies configured: every request is answered, no 5xx except the expected
/// 503s (`/quote` and `/requirements` without gas pricing, readiness), the server stays up,
/// and every metric label stays within its known set.
#[tokio::test]
async fn fuzzed_requests_are_answered_without_faults_or_new_labels() {
    let anvil = Anvil::spawn().await.unwrap();
    let (client, _) = generate_key().unwrap();
    let (admin, _) = generate_key().unwrap();
    let extra = key_toml("client", &client, "[\"verify\", \"settle\", \"quote\"]")
        + &key_toml("ops", &admin, "[\"admin\"]")
        + "\n[rate_limit]\nper_ip = { requests_per_second = 1000, burst = 100000 }\n\
           per_key = { requests_per_second = 1000, burst = 100000 }\n\
           trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n";
    let f = facilitator(&anvil, None, &extra).await;
    let url = f.url();
    let mut rng = Rng::seeded("fuzz");
    let encode = |rng: &mut Rng, path: &str| -> String {
        path.bytes()
            .map(|b| {
                if b != b'/' && rng.chance(25) {
                    format!("%{b:02X}")
                } else if b != b'/' && rng.chance(3) {
                    format!("%{b:02x}")
                } else {
                    (b as char).to_string()
                }
            })
            .collect()
    };
    let suffixes = [
        "",
        "/",
        "//",
        "/..",
        "/%2F",
        "%2F..",
        "?a=1",
        "?network=%00",
        "#x",
        "/%",
        "%zz",
    ];
    for i in 0..600 {
        let method = match rng.below(4) {
            0 | 1 => rng.pick(STANDARD_METHODS).to_string(),
            2 => rng
                .pick(&["get", "post", "PROPFIND", "CONNECTX", "M-SEARCH"])
                .to_string(),
            _ => {
                let len = 1 + rng.below(16);
                rng.string(TOKEN, len)
            }
        };
        let base = rng.pick(PATHS).to_string();
        let mut path = encode(&mut rng, &base);
        let suffix = rng.pick::<&str>(&suffixes);
        path.push_str(suffix);
        let mut headers = Vec::new();
        for _ in 0..rng.below(6) {
            let value_len = rng.below(80);
            let value = rng.string(VISIBLE, value_len).trim().to_string();
            let name = match rng.below(8) {
                0 => "Authorization".to_string(),
                1 => "X-Forwarded-For".to_string(),
                2 => "Forwarded".to_string(),
                3 => "X-Request-Id".to_string(),
                4 => "Content-Type".to_string(),
                _ => {
                    let len = 1 + rng.below(20);
                    format!(
                        "x-fuzz-{}",
                        rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789-", len)
                    )
                }
            };
            headers.push((name, value));
        }
        if rng.chance(40) {
            headers.push(bearer(if rng.chance(80) { &client } else { &admin }));
        }
        if rng.chance(60) {
            headers.push(json_ct());
        }
        let body: Vec<u8> = match rng.below(4) {
            0 => Vec::new(),
            1 => b"{}".to_vec(),
            2 => {
                let len = rng.below(300);
                rng.string(VISIBLE, len).into_bytes()
            }
            _ => {
                let network = if rng.chance(20) {
                    "eip155:8453".to_string()
                } else {
                    let len = 1 + rng.below(40);
                    rng.string(VISIBLE, len)
                };
                payment_on(&network).to_string().into_bytes()
            }
        };
        let a = raw(url, &method, &path, &headers, &body)
            .await
            .unwrap_or_else(|e| panic!("request {i} {method} {path} {headers:?}: {e}"));
        let expected_503 = matches!(
            base.as_str(),
            "/quote" | "/requirements" | "/health" | "/health/ready"
        ) && a.status == 503;
        assert!(
            a.status < 500 || expected_503,
            "request {i}: {method} {path} {headers:?} → {a:?}"
        );
    }
    let a = raw(url, "GET", "/health/live", &[], b"").await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let m = scrape(url, Some(&admin)).await;
    assert_labels_bounded(&m, &["client", "ops"]);
    let series = request_series(&m);
    assert!(series.len() < 800, "{} request series", series.len());
}
