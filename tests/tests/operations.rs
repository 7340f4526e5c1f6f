//! Operations: API keys, rate limits (in-process and shared through Redis), liveness vs
//! readiness while Redis and the RPC stop and come back, `/metrics` parsed with a Prometheus
//! exposition parser after real verifies and settles, and the packaging (Compose file,
//! Kubernetes manifests, dashboard and alert rules naming only exported metrics).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{Value, json};
use x402_facilitator::auth::generate_key;
use x402_tests::eip3009::v2_evm_payment_json;
use x402_tests::facilitator::{EvmFixture, TestFacilitator};
use x402_tests::tools::repo_root;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer};

/// One HTTP answer: status, `Retry-After` / `WWW-Authenticate` headers, body (JSON if it parses).
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

async fn call(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<Answer> {
    let client = reqwest::Client::new();
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(key) = bearer {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (retry_after, www_authenticate) = (header("retry-after"), header("www-authenticate"));
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        retry_after,
        www_authenticate,
        body,
    })
}

/// A facilitator on `anvil` (no token needed: nothing here settles) with `extra_toml` appended.
async fn facilitator(
    anvil: &Anvil,
    signer_key: &str,
    redis: Option<&str>,
    extra_toml: &str,
) -> anyhow::Result<TestFacilitator> {
    let toml = TestFacilitator::config_toml(anvil, signer_key, redis) + extra_toml;
    TestFacilitator::start_with_toml(&toml).await
}

fn auth_toml(keys: &[(&str, &str, &str)]) -> String {
    keys.iter()
        .map(|(name, key, scopes)| {
            format!(
                "\n[[auth.keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n",
                x402_facilitator::auth::sha256_hex(key)
            )
        })
        .collect()
}

fn parse_scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition text parses")
}

fn samples<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The value of the one counter / gauge sample `name{labels}` (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, name, labels);
    assert!(
        found.len() <= 1,
        "{name}{labels:?} matches {} series",
        found.len()
    );
    match found.first().map(|s| &s.value) {
        None => 0.0,
        Some(Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v)) => *v,
        Some(other) => panic!("{name} is not a counter or gauge: {other:?}"),
    }
}

/// The observation count of histogram `name{labels}` (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, name, labels);
    assert_eq!(found.len(), 1, "{name}{labels:?}");
    match &found[0].value {
        Metric::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .expect("+Inf bucket"),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

async fn scrape(url: &str, bearer: Option<&str>) -> anyhow::Result<Scrape> {
    let a = call("GET", &format!("{url}/metrics"), bearer, None).await?;
    anyhow::ensure!(
        a.status == 200,
        "/metrics answered {}: {}",
        a.status,
        a.body
    );
    Ok(parse_scrape(a.body.as_str().context("metrics text")?))
}

/// Polls `GET path` until `accept` holds for the answer (up to `timeout`).
async fn poll_until(
    url: &str,
    timeout: Duration,
    accept: impl Fn(&Answer) -> bool,
) -> anyhow::Result<Answer> {
    let start = Instant::now();
    loop {
        // A process just spawned may not listen yet: a refused connection is asked again.
        match call("GET", url, None, None).await {
            Ok(a) if accept(&a) => return Ok(a),
            Ok(a) if start.elapsed() > timeout => {
                bail!("{url}: still {} {} after {timeout:?}", a.status, a.body)
            }
            Err(e) if start.elapsed() > timeout => {
                return Err(e.context(format!("{url}: no answer after {timeout:?}")));
            }
            Ok(_) | Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn api_keys_missing_wrong_right_and_wrong_scope() {
    let (verifier, _) = generate_key().unwrap();
    let (settler, _) = generate_key().unwrap();
    let (admin, _) = generate_key().unwrap();
    let keys = auth_toml(&[
        ("verifier", &verifier, "[\"verify\"]"),
        ("settler", &settler, "[\"verify\", \"settle\"]"),
        ("ops", &admin, "[\"admin\"]"),
    ]);
    // The configuration carries hashes only: the key itself in `sha256` is refused.
    assert!(!keys.contains(&verifier));
    let bad = x402_facilitator::config::Config::from_toml(&format!(
        "[[evm]]\nchain_id = 1\nrpc_url = \"http://127.0.0.1:1\"\nsigner_private_keys = [\"{}\"]\n[[evm.assets]]\naddress = \"{}\"\nname = \"USD Coin\"\nversion = \"2\"\n[[auth.keys]]\nname = \"a\"\nsha256 = \"{verifier}\"\nscopes = [\"verify\"]\n",
        DEV_PRIVATE_KEYS[1],
        x402_tests::BASE_USDC
    ))
    .unwrap()
    .validate()
    .err()
    .expect("the key itself is not a hash");
    assert_eq!(bad.key, "auth.keys[0].sha256");

    let fx = EvmFixture::start_custom(Anvil::spawn().await.unwrap(), None, 10, &keys)
        .await
        .unwrap();
    let url = fx.facilitator.url().to_string();
    let req = fx.requirements(10_000);
    let (auth, sig) = req.authorize(&fx.payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let verify = format!("{url}/verify");
    let settle = format!("{url}/settle");

    let a = call("POST", &verify, None, Some(&body)).await.unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.body["isValid"], false);
    assert_eq!(a.body["invalidReason"], "unauthorized");
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));

    let a = call("POST", &verify, Some("x402k_wrong"), Some(&body))
        .await
        .unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.body["invalidMessage"], "unknown API key");

    let before = fx.signer_tx_count().await.unwrap();
    let a = call("POST", &settle, Some(&verifier), Some(&body))
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body["success"], false);
    assert_eq!(a.body["errorReason"], "forbidden");
    assert_eq!(a.body["transaction"], "");
    assert_eq!(fx.signer_tx_count().await.unwrap(), before, "403 broadcast");

    let a = call("POST", &verify, Some(&verifier), Some(&body))
        .await
        .unwrap();
    assert_eq!((a.status, &a.body["isValid"]), (200, &json!(true)), "{a:?}");
    let a = call("POST", &settle, Some(&settler), Some(&body))
        .await
        .unwrap();
    assert_eq!((a.status, &a.body["success"]), (200, &json!(true)), "{a:?}");
    assert_eq!(
        fx.payee_balance().await.unwrap(),
        alloy::primitives::U256::from(10_000)
    );

    // Public routes stay open; /metrics needs admin.
    for path in ["/supported", "/health/live", "/health/ready", "/health"] {
        let a = call("GET", &format!("{url}{path}"), None, None)
            .await
            .unwrap();
        assert!(!matches!(a.status, 401 | 403), "{path}: {a:?}");
    }
    let a = call("GET", &format!("{url}/metrics"), Some(&settler), None)
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    let m = scrape(&url, Some(&admin)).await.unwrap();
    let unauthorized = "x402_unauthorized_requests_total";
    assert_eq!(
        value(
            &m,
            unauthorized,
            &[("route", "/verify"), ("reason", "missing")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            unauthorized,
            &[("route", "/verify"), ("reason", "invalid")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            unauthorized,
            &[("route", "/settle"), ("reason", "forbidden")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            unauthorized,
            &[("route", "/metrics"), ("reason", "forbidden")]
        ),
        1.0
    );
    let requests = "x402_http_requests_total";
    let by = |route, status, key| {
        [
            ("route", route),
            ("method", "POST"),
            ("status", status),
            ("key", key),
        ]
    };
    assert_eq!(value(&m, requests, &by("/settle", "200", "settler")), 1.0);
    assert_eq!(value(&m, requests, &by("/verify", "200", "verifier")), 1.0);
    assert_eq!(value(&m, requests, &by("/verify", "401", "anonymous")), 2.0);
}

#[tokio::test]
async fn a_burst_gets_429_with_retry_after_then_recovers() {
    let anvil = Anvil::spawn().await.unwrap();
    // One request every 4 s after a burst of 3: slow enough that a loaded machine does not
    // refill the budget between the burst and the 4th request.
    let limits = "\n[rate_limit]\nper_ip = { requests_per_second = 0.25, burst = 3 }\n";
    let f = facilitator(&anvil, DEV_PRIVATE_KEYS[1], None, limits)
        .await
        .unwrap();
    let verify = format!("{}/verify", f.url());
    // Malformed bodies: cheap, and still counted against the budget.
    for i in 0..3 {
        let a = call("POST", &verify, None, Some(&json!({}))).await.unwrap();
        assert_eq!(a.status, 400, "request {i}: {a:?}");
    }
    let a = call("POST", &verify, None, Some(&json!({}))).await.unwrap();
    assert_eq!(a.status, 429, "{a:?}");
    let retry: u64 = a.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry), "Retry-After {retry}");
    assert_eq!(a.body["invalidReason"], "rate_limited");
    let a = call(
        "POST",
        &format!("{}/settle", f.url()),
        None,
        Some(&json!({})),
    )
    .await
    .unwrap();
    assert_eq!(
        (a.status, &a.body["errorReason"]),
        (429, &json!("rate_limited"))
    );
    // Other routes are not limited.
    let a = call("GET", &format!("{}/supported", f.url()), None, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    // The budget refills: a request passes again (after about 4 s).
    let start = Instant::now();
    loop {
        let a = call("POST", &verify, None, Some(&json!({}))).await.unwrap();
        if a.status == 400 {
            break;
        }
        assert_eq!(a.status, 429, "{a:?}");
        assert!(start.elapsed() < Duration::from_secs(20), "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = scrape(f.url(), None).await.unwrap();
    let limited = value(
        &m,
        "x402_rate_limited_requests_total",
        &[("route", "/verify"), ("limit", "ip")],
    );
    assert!(limited >= 1.0, "{limited}");
}

#[tokio::test]
async fn two_replicas_sharing_redis_share_the_budget() {
    let redis = RedisServer::spawn().await.unwrap();
    let anvil = Anvil::spawn().await.unwrap();
    let (shop, _) = generate_key().unwrap();
    let (other, _) = generate_key().unwrap();
    // Slow refill (one per 100 s): only the burst passes during the test.
    let toml = auth_toml(&[
        ("shop", &shop, "[\"verify\"]"),
        ("other", &other, "[\"verify\"]"),
    ]) + "\n[rate_limit]\nper_ip = { requests_per_second = 0.01, burst = 4 }\nper_key = { requests_per_second = 0.01, burst = 2 }\n";
    let a = facilitator(&anvil, DEV_PRIVATE_KEYS[1], Some(&redis.url()), &toml)
        .await
        .unwrap();
    let b = facilitator(&anvil, DEV_PRIVATE_KEYS[1], Some(&redis.url()), &toml)
        .await
        .unwrap();
    let verify = |f: &TestFacilitator| format!("{}/verify", f.url());

    // Per key: 2 between both replicas, then 429 naming the key limit; another key passes.
    assert_eq!(
        call("POST", &verify(&a), Some(&shop), Some(&json!({})))
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        call("POST", &verify(&b), Some(&shop), Some(&json!({})))
            .await
            .unwrap()
            .status,
        400
    );
    let refused = call("POST", &verify(&a), Some(&shop), Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused.body["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("per key"),
        "{refused:?}"
    );
    let retry: u64 = refused.retry_after.unwrap().parse().unwrap();
    assert!((90..=100).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        call("POST", &verify(&b), Some(&other), Some(&json!({})))
            .await
            .unwrap()
            .status,
        400
    );

    // Per IP: 4 requests passed the IP budget so far (3 above + the refused one, which took
    // its IP token before the key check); every further one is refused on either replica.
    for f in [&a, &b, &a, &b] {
        let r = call("POST", &verify(f), Some(&other), Some(&json!({})))
            .await
            .unwrap();
        assert_eq!(r.status, 429, "{r:?}");
        assert!(
            r.body["invalidMessage"]
                .as_str()
                .unwrap()
                .contains("per ip"),
            "{r:?}"
        );
    }
    // The budgets are Redis keys.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:ratelimit:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let keys: BTreeSet<String> = keys.into_iter().collect();
    assert!(keys.contains("x402:ratelimit:ip:127.0.0.1"), "{keys:?}");
    assert!(keys.contains("x402:ratelimit:key:shop"), "{keys:?}");
}

#[tokio::test]
async fn ready_follows_redis_and_rpc_while_live_stays_up() {
    let mut redis = RedisServer::spawn().await.unwrap();
    let mut anvil = Anvil::spawn().await.unwrap();
    let fast = "\n[health]\ncheck_timeout_ms = 1000\nrefresh_seconds = 1\n";
    let f = facilitator(&anvil, DEV_PRIVATE_KEYS[1], Some(&redis.url()), fast)
        .await
        .unwrap();
    let ready = format!("{}/health/ready", f.url());
    let live = format!("{}/health/live", f.url());
    let wait = Duration::from_secs(20);

    let a = poll_until(&ready, wait, |a| a.status == 200).await.unwrap();
    assert_eq!(a.body["replayStore"]["kind"], "redis");
    let net = &a.body["networks"][0];
    assert_eq!(net["network"], "eip155:8453");
    assert_eq!(
        (net["rpcOk"].clone(), net["fundedSigner"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(net["signers"][0]["balance"], "10000000000000000000000");
    // /health is the same check.
    poll_until(&format!("{}/health", f.url()), wait, |a| a.status == 200)
        .await
        .unwrap();

    redis.stop().await.unwrap();
    // Unready because of Redis alone: the network stays fine.
    poll_until(&ready, wait, |a| {
        a.status == 503
            && a.body["replayStore"]["ok"] == false
            && a.body["networks"][0]["ok"] == true
    })
    .await
    .unwrap();
    assert_eq!(call("GET", &live, None, None).await.unwrap().status, 200);
    redis.restart().await.unwrap();
    poll_until(&ready, wait, |a| a.status == 200).await.unwrap();

    anvil.stop().await.unwrap();
    // Unready because of the RPC alone: Redis stays fine.
    poll_until(&ready, wait, |a| {
        a.status == 503
            && a.body["replayStore"]["ok"] == true
            && a.body["networks"][0]["rpcOk"] == false
    })
    .await
    .unwrap();
    assert_eq!(call("GET", &live, None, None).await.unwrap().status, 200);
    anvil.restart().await.unwrap();
    poll_until(&ready, wait, |a| a.status == 200).await.unwrap();

    let m = scrape(f.url(), None).await.unwrap();
    let up = |dep, net| {
        value(
            &m,
            "x402_dependency_up",
            &[("dependency", dep), ("network", net)],
        )
    };
    assert_eq!(up("replay_store", ""), 1.0);
    assert_eq!(up("rpc", "eip155:8453"), 1.0);
    assert!(histogram_count(&m, "x402_redis_call_duration_seconds", &[("op", "ping")]) >= 4.0);
    assert!(value(&m, "x402_redis_call_errors_total", &[("op", "ping")]) >= 1.0);
}

#[tokio::test]
async fn a_network_without_a_funded_signer_is_not_ready() {
    let anvil = Anvil::spawn().await.unwrap();
    // A fresh key holds no ETH on anvil.
    let unfunded = "0x1111111111111111111111111111111111111111111111111111111111111111";
    let f = facilitator(&anvil, unfunded, None, "").await.unwrap();
    // Polled until the RPC answered (a loaded machine may time a check out): then only the
    // balance keeps it unready.
    let a = poll_until(
        &format!("{}/health/ready", f.url()),
        Duration::from_secs(20),
        |a| a.body["networks"][0]["rpcOk"] == true,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 503, "{a:?}");
    let net = &a.body["networks"][0];
    assert_eq!(
        (net["rpcOk"].clone(), net["fundedSigner"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(net["signers"][0]["balance"], "0");
    assert_eq!(a.body["replayStore"]["kind"], "memory");
}

/// Metric names used in PromQL `expr` strings (histogram series reduced to their family).
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(pos) = e[i..].find("x402_") {
            let start = i + pos;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = e[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(e.len(), |n| start + n);
            if boundary {
                let name = &e[start..end];
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                names.insert(family.to_string());
            }
            i = end;
        }
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let path = repo_root().join("deploy/grafana/dashboards/x402-facilitator.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    exprs
}

/// The `expr` of every rule of `deploy/prometheus/alerts.yml`, read with PyYAML.
fn alert_exprs() -> Vec<String> {
    x402_tests::peers::ensure_installed().unwrap();
    let path = repo_root().join("deploy/prometheus/alerts.yml");
    let out = std::process::Command::new(x402_tests::peers::venv_bin("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules: Value = serde_json::from_slice(&out.stdout).unwrap();
    let exprs: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap())
        .map(|r| {
            assert!(
                r["alert"].is_string() && r["labels"]["severity"].is_string(),
                "{r}"
            );
            r["expr"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    exprs
}

#[tokio::test]
async fn metrics_move_with_verifies_and_settles_and_cover_dashboard_and_alerts() {
    let redis = RedisServer::spawn().await.unwrap();
    let refresh = "\n[health]\nrefresh_seconds = 1\n";
    let fx = EvmFixture::start_custom(
        Anvil::spawn().await.unwrap(),
        Some(&redis.url()),
        10,
        refresh,
    )
    .await
    .unwrap();
    let url = fx.facilitator.url().to_string();
    let net = "eip155:8453";
    let req = fx.requirements(20_000);
    let mut payments = Vec::new();
    for _ in 0..2 {
        let (auth, sig) = req.authorize(&fx.payer).unwrap();
        payments.push(v2_evm_payment_json(&req.v2_json(), &sig, &auth));
    }
    for p in &payments {
        let (s, a) = fx.facilitator.post("/verify", p).await.unwrap();
        assert_eq!((s, &a["isValid"]), (200, &json!(true)), "{a}");
    }
    // An underpayment: valid shape, refused check.
    let cheap = fx.requirements(1);
    let (auth, sig) = cheap.authorize(&fx.payer).unwrap();
    let mut under = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    under["paymentPayload"]["accepted"] = req.v2_json();
    let (s, a) = fx.facilitator.post("/verify", &under).await.unwrap();
    assert_eq!((s, &a["isValid"]), (200, &json!(false)), "{a}");
    let invalid_reason = a["invalidReason"].as_str().unwrap().to_string();
    let (s, _) = fx
        .facilitator
        .post("/verify", &json!({"x402Version": 2}))
        .await
        .unwrap();
    assert_eq!(s, 400);
    for p in &payments {
        let (s, a) = fx.facilitator.post("/settle", p).await.unwrap();
        assert_eq!((s, &a["success"]), (200, &json!(true)), "{a}");
    }
    // The background readiness check (every second here) fills the balance and dependency
    // gauges.
    // Polled until a check that ran after the settlements (the signer paid gas).
    poll_until(
        &format!("{url}/health/ready"),
        Duration::from_secs(20),
        |a| {
            a.status == 200
                && a.body["networks"][0]["signers"][0]["balance"] != "10000000000000000000000"
        },
    )
    .await
    .unwrap();

    let m = scrape(&url, None).await.unwrap();
    assert_eq!(
        value(
            &m,
            "x402_verify_total",
            &[("network", net), ("result", "valid")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "x402_verify_total",
            &[("network", net), ("result", &invalid_reason)]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "x402_settle_total",
            &[("network", net), ("result", "success")]
        ),
        2.0
    );
    assert_eq!(
        histogram_count(&m, "x402_settle_duration_seconds", &[("network", net)]),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "x402_request_errors_total",
            &[("endpoint", "verify"), ("kind", "malformed")]
        ),
        1.0
    );
    let http = |route, status| {
        value(
            &m,
            "x402_http_requests_total",
            &[
                ("route", route),
                ("method", "POST"),
                ("status", status),
                ("key", "anonymous"),
            ],
        )
    };
    assert_eq!(
        (
            http("/verify", "200"),
            http("/verify", "400"),
            http("/settle", "200")
        ),
        (3.0, 1.0, 2.0)
    );
    assert_eq!(
        histogram_count(
            &m,
            "x402_http_request_duration_seconds",
            &[("route", "/verify")]
        ),
        4.0
    );
    assert_eq!(
        histogram_count(
            &m,
            "x402_http_request_duration_seconds",
            &[("route", "/settle")]
        ),
        2.0
    );
    assert!(value(&m, "x402_settle_gas_used_total", &[("network", net)]) > 40_000.0);
    let signer = fx.facilitator_signer.to_checksum(None);
    let eth = value(
        &m,
        "x402_signer_balance_native",
        &[("network", net), ("signer", &signer)],
    );
    assert!(eth > 9_999.0 && eth < 10_000.0, "{eth}");
    assert_eq!(
        value(
            &m,
            "x402_dependency_up",
            &[("dependency", "replay_store"), ("network", "")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "x402_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(histogram_count(&m, "x402_redis_call_duration_seconds", &[("op", "ping")]) >= 1.0);
    // Counters are `_total`, every family is documented.
    for s in &m.samples {
        if matches!(s.value, Metric::Counter(_)) {
            assert!(
                s.metric.ends_with("_total"),
                "counter {} without _total",
                s.metric
            );
        }
    }

    // Every metric the dashboard and the alert rules name is in this scrape.
    let exported: BTreeSet<String> = m
        .samples
        .iter()
        .map(|s| {
            ["_count", "_sum"]
                .iter()
                .find_map(|x| s.metric.strip_suffix(x).filter(|b| m.docs.contains_key(*b)))
                .unwrap_or(&s.metric)
                .to_string()
        })
        .collect();
    for (what, exprs) in [("dashboard", dashboard_exprs()), ("alerts", alert_exprs())] {
        let named = metric_names(&exprs);
        assert!(named.len() >= 5, "{what}: {named:?}");
        let missing: Vec<_> = named.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} names metrics not exported: {missing:?}"
        );
    }
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let names = metric_names(&[
        "histogram_quantile(0.95, sum by (le) (rate(x402_settle_duration_seconds_bucket[5m])))"
            .into(),
        "x402_a_total / x402_b_count + my_x402_c".into(),
    ]);
    let want: BTreeSet<String> = ["x402_settle_duration_seconds", "x402_a_total", "x402_b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}

/// Runs a tool of the peers' venv; returns (success, combined output).
fn venv_tool(tool: &str, args: &[&std::path::Path], flags: &[&str]) -> (bool, String) {
    x402_tests::peers::ensure_installed().unwrap();
    let out = std::process::Command::new(x402_tests::peers::venv_bin(tool))
        .args(flags)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn compose_file_follows_the_compose_specification() {
    let compose = repo_root().join("docker-compose.yml");
    let flags = ["--builtin-schema", "vendor.compose-spec"];
    let (ok, out) = venv_tool("check-jsonschema", &[compose.as_path()], &flags);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&compose).unwrap();
    for needed in [
        "profiles: [\"monitoring\"]",
        "prom/prometheus",
        "grafana/grafana",
    ] {
        assert!(text.contains(needed), "docker-compose.yml lacks {needed}");
    }
    // The check can fail: a misspelt service key is refused.
    let dir = std::env::temp_dir().join(format!("x402-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("docker-compose.yml");
    std::fs::write(
        &broken,
        text.replace("restart: unless-stopped", "restrat: unless-stopped"),
    )
    .unwrap();
    let (ok, out) = venv_tool("check-jsonschema", &[broken.as_path()], &flags);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "a broken compose file passed: {out}");
}

#[test]
fn kubernetes_manifests_validate() {
    let dir = repo_root().join("deploy/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let (ok, out) = venv_tool("kubernetes-validate", &refs, &["--strict"]);
    assert!(ok, "{out}");
    let passed = out.matches(" passed for resource ").count();
    assert!(passed >= 8, "{out}");
    let deployment = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    for needed in [
        "path: /health/live",
        "path: /health/ready",
        "kind: PodDisruptionBudget",
        "replicas: 2",
        "secretKeyRef",
    ] {
        assert!(
            deployment.contains(needed),
            "deployment.yaml lacks {needed}"
        );
    }
    // The check can fail: an unknown field is refused in strict mode.
    let tmp = std::env::temp_dir().join(format!("x402-k8s-{}.yaml", std::process::id()));
    std::fs::write(&tmp, deployment.replace("replicas: 2", "replicaz: 2")).unwrap();
    let (ok, out) = venv_tool("kubernetes-validate", &[tmp.as_path()], &["--strict"]);
    let _ = std::fs::remove_file(&tmp);
    assert!(!ok, "a broken manifest passed: {out}");
}

/// The real `x402-facilitator` binary of this build (`scripts/test.sh` builds it before the
/// tests; a test never runs cargo itself).
fn facilitator_bin() -> std::path::PathBuf {
    x402_tests::process::facilitator_binary().expect("x402-facilitator built")
}

#[tokio::test]
async fn sigterm_stops_accepting_and_finishes_the_settle_in_flight() {
    use alloy::providers::Provider;
    let bin = facilitator_bin();
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = x402_tests::Usdc::deploy(&anvil, anvil.signer(0))
        .await
        .unwrap();
    let payer = anvil.signer(2);
    usdc.mint(payer.address(), 1_000_000).await.unwrap();
    let provider = anvil.provider();
    anvil.set_automine(false).await.unwrap();

    let port = x402_tests::net::free_port().unwrap();
    let toml = format!(
        "shutdown_timeout_seconds = 20\nlog_format = \"json\"\n{}",
        TestFacilitator::config_toml_with_timeout(&anvil, DEV_PRIVATE_KEYS[1], None, 30)
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let dir = std::env::temp_dir().join(format!("x402-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(dir.join("facilitator.log")).unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info,x402_facilitator=debug")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    poll_until(
        &format!("{url}/health/live"),
        Duration::from_secs(30),
        |a| a.status == 200,
    )
    .await
    .unwrap();

    // A malformed body with a request id: answered 400, the id echoed, logged at DEBUG only.
    let resp = reqwest::Client::new()
        .post(format!("{url}/verify"))
        .header("x-request-id", "ops-test-4xx")
        .json(&json!({"x402Version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["x-request-id"], "ops-test-4xx");

    let req = x402_tests::eip3009::ExactEvmRequirements::base_usdc(10_000u64, anvil.address(3));
    let (auth, sig) = req.authorize(&payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let settle_url = format!("{url}/settle");
    let in_flight = tokio::spawn(async move { call("POST", &settle_url, None, Some(&body)).await });
    // Wait until the settlement is broadcast (in the mempool, not mined).
    let signer = anvil.address(1);
    let start = Instant::now();
    while provider
        .get_transaction_count(signer)
        .pending()
        .await
        .unwrap()
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "settlement never broadcast"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    // The listener closes at once, while the process waits for its in-flight settlement.
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before finishing the settlement"
    );
    assert!(!in_flight.is_finished());

    let _: Value = provider
        .raw_request("evm_mine".into(), Vec::<Value>::new())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("settle answered")
        .unwrap()
        .unwrap();
    assert_eq!(
        (answer.status, &answer.body["success"]),
        (200, &json!(true)),
        "{answer:?}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exited after the settlement")
        .unwrap();
    let log_text = std::fs::read_to_string(dir.join("facilitator.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(exit.success(), "exit {exit}: {log_text}");
    // log_format = "json": every line is one JSON object; the 400 is one DEBUG line carrying
    // the request id, route and key from the request's span, and nothing above DEBUG.
    let lines: Vec<Value> = log_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_4xx: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "ops-test-4xx")
        .collect();
    assert!(!of_4xx.is_empty(), "{log_text}");
    for l in &of_4xx {
        assert_eq!(l["level"], "DEBUG", "{l}");
    }
    let summary = of_4xx
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("{log_text}"));
    assert_eq!(summary["fields"]["status"], 400, "{summary}");
    assert_eq!(summary["span"]["route"], "/verify", "{summary}");
    assert_eq!(summary["span"]["key"], "anonymous", "{summary}");
    assert!(
        !summary.to_string().contains("x402Version"),
        "body logged: {summary}"
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        alloy::primitives::U256::from(10_000)
    );
}

#[tokio::test]
async fn keygen_prints_a_key_and_the_config_entry_that_accepts_it() {
    let out = std::process::Command::new(facilitator_bin())
        .args(["keygen", "--name", "shop-b", "--scopes", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find(|l| l.starts_with(x402_facilitator::auth::KEY_PREFIX))
        .unwrap_or_else(|| panic!("no key in:\n{text}"))
        .to_string();
    let entry = &text[text.find("[[auth.keys]]").expect("config entry")..];
    assert!(
        !entry.contains(&key),
        "the entry holds the key itself:\n{entry}"
    );
    assert!(
        entry.contains(&x402_facilitator::auth::sha256_hex(&key)),
        "{entry}"
    );

    // The printed entry, pasted into a config, admits the key on /verify and nowhere else.
    let anvil = Anvil::spawn().await.unwrap();
    let f = facilitator(&anvil, DEV_PRIVATE_KEYS[1], None, &format!("\n{entry}"))
        .await
        .unwrap();
    let verify = format!("{}/verify", f.url());
    let a = call("POST", &verify, Some(&key), Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    let a = call(
        "POST",
        &format!("{}/settle", f.url()),
        Some(&key),
        Some(&json!({})),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 403, "{a:?}");

    let bad = std::process::Command::new(facilitator_bin())
        .args(["keygen", "--scopes", "verify,root"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--scopes"),
        "{bad:?}"
    );
}
