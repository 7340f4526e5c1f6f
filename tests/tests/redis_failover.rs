//! Redis past one node (issue 20), on real multi-node Redis on 127.0.0.1 (Debian's
//! `redis-server`, `redis-server --sentinel`, `redis-cli --cluster create`), anvil with
//! Circle's FiatTokenV2_2 and 2 s blocks, and the real `x402-facilitator` binary:
//! - Redis Cluster (3 primaries + 3 replicas): a primary killed (SIGKILL) mid-burst, its
//!   replica promoted: every payment settles exactly once, no success is answered twice, no
//!   payment is answered `nonce_already_used`, every transaction is found by the status API;
//! - a Sentinel group (1 primary, 2 replicas, 3 sentinels): the same with the primary killed;
//! - a cluster primary paused (SIGSTOP): 503 with nothing broadcast, then recovery;
//! - x402-conformance F3 across two replicas on the cluster;
//! - `min_replicas_acked` that Redis cannot meet: refused (503) before anything is broadcast.
//!
//! These tests start many processes: they run one at a time (nextest group `redis-multi-node`,
//! `.config/nextest.toml`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use serde_json::Value;
use x402_tests::eip3009::{Authorization, ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::process::FacilitatorProcess;
use x402_tests::redis_group::{RedisCluster, SentinelGroup};
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

/// Payments of a burst.
const BURST: usize = 200;

/// Short deadlines so that a failover resolves within a test's time.
const SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 8
answer_within_seconds = 8
poll_interval_ms = 100
rpc_timeout_seconds = 3
redis_timeout_ms = 1500
lease_seconds = 3
resend_after_seconds = 4
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
signer_wait_seconds = 10
"#;

/// anvil mining a block every 2 s, USDC with the payer (account 2) funded.
async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::builder()
        .arg("--block-time")
        .arg("2")
        .spawn()
        .await
        .expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 1_000_000_000u64)
        .await
        .expect("mint");
    (anvil, usdc)
}

/// A facilitator configuration with the `[redis]` table `redis` and both signer keys (accounts
/// 1 and 4) shared by every replica.
fn config(anvil: &Anvil, redis: &str) -> String {
    let base = TestFacilitator::config_toml_custom(
        anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        None,
        SETTLE,
    );
    let keys = format!(
        "signer_private_keys = [\"{}\", \"{}\"]",
        DEV_PRIVATE_KEYS[1], DEV_PRIVATE_KEYS[4]
    );
    // `[redis]` last: a table header ends the top-level keys.
    format!(
        "{}\n{redis}",
        base.replace(
            &format!("signer_private_keys = [\"{}\"]", DEV_PRIVATE_KEYS[1]),
            &keys
        )
    )
}

fn cluster_redis(cluster: &RedisCluster) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[redis]\nmode = \"cluster\"\nurls = [{}]\nmin_replicas_acked = 1\n",
        urls.join(", ")
    )
}

fn sentinel_redis(group: &SentinelGroup) -> String {
    let urls: Vec<String> = group
        .sentinel_urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect();
    format!(
        "[redis]\nmode = \"sentinel\"\nurls = [{}]\nsentinel_master = \"{}\"\nmin_replicas_acked = 1\n",
        urls.join(", "),
        SentinelGroup::MASTER
    )
}

/// `n` different payments of [`AMOUNT`] from account 2 to account 3.
fn payments(anvil: &Anvil, n: usize) -> Vec<(Authorization, Value)> {
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    (0..n)
        .map(|_| {
            let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
            (
                auth.clone(),
                v2_evm_payment_json(&req.v2_json(), &sig, &auth),
            )
        })
        .collect()
}

async fn tx_count(anvil: &Anvil, index: usize) -> u64 {
    anvil
        .provider()
        .get_transaction_count(anvil.address(index))
        .await
        .unwrap()
}

/// What the replicas answered each payment.
#[derive(Default)]
struct Tally {
    successes: Vec<usize>,
    transaction: Vec<Option<String>>,
    statuses: HashMap<u16, usize>,
    nonce_used: usize,
}

impl Tally {
    fn new(n: usize) -> Self {
        Tally {
            successes: vec![0; n],
            transaction: vec![None; n],
            ..Default::default()
        }
    }

    /// Records one answer of payment `i`; whether the payment is done (its success or its
    /// `duplicate_settlement` with the transaction).
    fn record(&mut self, i: usize, status: u16, answer: &Value) -> bool {
        *self.statuses.entry(status).or_default() += 1;
        let reason = answer["errorReason"].as_str().unwrap_or_default();
        if reason.contains("nonce_already_used") {
            self.nonce_used += 1;
        }
        let tx = answer["transaction"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if status == 503 {
            assert!(tx.is_none(), "a 503 names a transaction: {answer}");
        }
        if answer["success"] == true {
            self.successes[i] += 1;
            self.transaction[i] = tx;
            return true;
        }
        if reason == "duplicate_settlement"
            && let Some(tx) = tx
        {
            self.transaction[i].get_or_insert(tx);
            return true;
        }
        false
    }
}

/// Posts every payment once, spread over `urls`, all at once.
async fn burst(
    urls: &[String],
    payments: &[(Authorization, Value)],
) -> Vec<tokio::task::JoinHandle<Option<(u16, Value)>>> {
    payments
        .iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let url = format!("{}/settle", urls[i % urls.len()]);
            let body = body.clone();
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                let status = r.status().as_u16();
                Some((status, r.json::<Value>().await.ok()?))
            })
        })
        .collect()
}

/// Retries every payment not done yet until it is, within `within`.
async fn finish(
    urls: &[String],
    payments: &[(Authorization, Value)],
    tally: &mut Tally,
    done: &mut [bool],
    within: Duration,
) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut round = 0;
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "payments never settled: {:?}",
            done.iter()
                .enumerate()
                .filter(|(_, d)| !**d)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        );
        let pending: Vec<usize> = (0..payments.len()).filter(|i| !done[*i]).collect();
        let answers = futures::future::join_all(pending.iter().map(|&i| {
            let url = format!("{}/settle", urls[(i + round) % urls.len()]);
            let req = client.post(url).json(&payments[i].1).send();
            async move {
                let r = req.await.ok()?;
                let status = r.status().as_u16();
                Some((i, status, r.json::<Value>().await.ok()?))
            }
        }))
        .await;
        let mut sample = None;
        let sent = pending.len();
        let mut got = 0;
        for (i, status, answer) in answers.into_iter().flatten() {
            got += 1;
            if tally.record(i, status, &answer) {
                done[i] = true;
            } else {
                sample.get_or_insert((status, answer));
            }
        }
        if round % 5 == 0 {
            eprintln!(
                "round {round}: {got} of {sent} answered, {} left; e.g. {sample:?}",
                done.iter().filter(|d| !**d).count()
            );
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The end state every failover test asserts: each payment settled exactly once on chain, one
/// success at most per payment, none answered `nonce_already_used`, and the status API of
/// every replica finds each transaction, settled.
async fn assert_settled_once(
    anvil: &Anvil,
    usdc: &Usdc,
    payments: &[(Authorization, Value)],
    tally: &Tally,
    urls: &[String],
) {
    eprintln!("answers by HTTP status: {:?}", tally.statuses);
    assert!(
        tally.successes.iter().all(|s| *s <= 1),
        "a payment was answered success twice: {:?}",
        tally.successes
    );
    assert_eq!(
        tally.nonce_used, 0,
        "a paid payment was answered nonce_already_used"
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * payments.len() as u64),
        "the payee got every payment once"
    );
    for (auth, _) in payments {
        assert!(
            usdc.authorization_state(auth.from, auth.nonce)
                .await
                .unwrap()
        );
    }
    let client = reqwest::Client::new();
    for (i, tx) in tally.transaction.iter().enumerate() {
        let tx = tx
            .as_ref()
            .unwrap_or_else(|| panic!("payment {i} has no transaction"));
        let url = &urls[i % urls.len()];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = client
                .get(format!("{url}/settlements/{tx}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            if status == 200 && body["state"] == "settled" {
                assert_eq!(body["transaction"], tx.as_str(), "{body}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "payment {i}: {tx} not found settled by the status API: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A burst in flight over `replicas`.
struct Burst {
    urls: Vec<String>,
    payments: Vec<(Authorization, Value)>,
    tasks: Vec<tokio::task::JoinHandle<Option<(u16, Value)>>>,
}

/// Sends [`BURST`] payments over `replicas` and returns once the signers have sent a few
/// transactions (the moment for a fault).
async fn start_burst(anvil: &Anvil, replicas: &[FacilitatorProcess]) -> Burst {
    let urls: Vec<String> = replicas.iter().map(|r| r.url().to_string()).collect();
    let payments = payments(anvil, BURST);
    let tasks = burst(&urls, &payments).await;
    let start = Instant::now();
    while tx_count(anvil, 1).await + tx_count(anvil, 4).await < 10
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Burst {
        urls,
        payments,
        tasks,
    }
}

/// Collects the burst's answers, retries every payment until it is done, and asserts the end
/// state ([`assert_settled_once`]).
async fn finish_burst(anvil: &Anvil, usdc: &Usdc, burst: Burst) {
    let Burst {
        urls,
        payments,
        tasks,
    } = burst;
    let mut tally = Tally::new(payments.len());
    let mut done = vec![false; payments.len()];
    for (i, t) in tasks.into_iter().enumerate() {
        if let Some((status, answer)) = t.await.unwrap()
            && tally.record(i, status, &answer)
        {
            done[i] = true;
        }
    }
    eprintln!(
        "first answers: {} done, by status {:?}",
        done.iter().filter(|d| **d).count(),
        tally.statuses
    );
    finish(
        &urls,
        &payments,
        &mut tally,
        &mut done,
        Duration::from_secs(180),
    )
    .await;
    assert_settled_once(anvil, usdc, &payments, &tally, &urls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_primary_killed_mid_burst_settles_every_payment_exactly_once() {
    let (anvil, usdc) = chain().await;
    let mut cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let toml = config(&anvil, &cluster_redis(&cluster));
    let a = FacilitatorProcess::start("cluster-a", &toml).await.unwrap();
    let b = FacilitatorProcess::start("cluster-b", &toml).await.unwrap();
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3);
    let victim = primaries[0];
    let replicas = [a, b];
    let burst = start_burst(&anvil, &replicas).await;
    cluster.nodes[victim].kill9();
    eprintln!("killed cluster primary {victim}");
    // Its replica is promoted; with no replica left it cannot acknowledge writes
    // (min_replicas_acked = 1: its slots answer 503) until the killed node comes back, empty,
    // as the new primary's replica.
    cluster
        .wait_primaries(3, Duration::from_secs(30))
        .await
        .unwrap();
    cluster.nodes[victim].restart().await.unwrap();
    cluster.wait_healthy(Duration::from_secs(30)).await.unwrap();
    assert!(
        !cluster.primaries().await.contains(&victim),
        "the restarted node rejoined as a replica"
    );
    finish_burst(&anvil, &usdc, burst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_primary_killed_mid_burst_settles_every_payment_exactly_once() {
    let (anvil, usdc) = chain().await;
    let mut group = SentinelGroup::spawn(2, 3).await.unwrap();
    let toml = config(&anvil, &sentinel_redis(&group));
    let a = FacilitatorProcess::start("sentinel-a", &toml)
        .await
        .unwrap();
    let b = FacilitatorProcess::start("sentinel-b", &toml)
        .await
        .unwrap();
    let old = group.primary().await.unwrap();
    let replicas = [a, b];
    let burst = start_burst(&anvil, &replicas).await;
    group.data[old].kill9();
    eprintln!("killed the sentinel group's primary {old}");
    let new = group
        .wait_failover(old, Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(new, old, "a replica was promoted");
    finish_burst(&anvil, &usdc, burst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_primary_paused_refuses_with_503_then_recovers() {
    let (anvil, usdc) = chain().await;
    let cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let toml = config(&anvil, &cluster_redis(&cluster));
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let payments = payments(&anvil, 30);
    let victim = cluster.primaries().await[0];
    cluster.nodes[victim].pause().unwrap();
    let before = tx_count(&anvil, 1).await + tx_count(&anvil, 4).await;
    let t = Instant::now();
    let answers =
        futures::future::join_all(payments.iter().map(|(_, b)| fac.post("/settle", b))).await;
    let mut tally = Tally::new(payments.len());
    let mut done = vec![false; payments.len()];
    for (i, a) in answers.into_iter().enumerate() {
        let (status, answer) = a.unwrap();
        if tally.record(i, status, &answer) {
            done[i] = true;
        }
    }
    eprintln!(
        "answers with a primary paused: {:?} in {:?}",
        tally.statuses,
        t.elapsed()
    );
    let refused = tally.statuses.get(&503).copied().unwrap_or(0);
    assert!(
        refused > 0,
        "no payment touched the paused primary: {:?}",
        tally.statuses
    );
    let sent = tx_count(&anvil, 1).await + tx_count(&anvil, 4).await - before;
    assert!(
        sent as usize <= payments.len() - refused,
        "{sent} transactions for {} payments not refused",
        payments.len() - refused
    );
    cluster.nodes[victim].resume().unwrap();
    let urls = [fac.url().to_string()];
    finish(
        &urls,
        &payments,
        &mut tally,
        &mut done,
        Duration::from_secs(120),
    )
    .await;
    assert_settled_once(&anvil, &usdc, &payments, &tally, &urls).await;
}

/// x402-conformance F3 on the cluster: 30 concurrent settles of one payment across two
/// replicas give exactly one success and one transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_f3_thirty_concurrent_settles_across_two_replicas_succeed_once() {
    let (anvil, usdc) = chain().await;
    let cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let toml = config(&anvil, &cluster_redis(&cluster));
    let a = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let b = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, body) = payments(&anvil, 1).remove(0);
    let replicas = [&a, &b];
    let answers =
        futures::future::join_all((0..30).map(|i| replicas[i % 2].post("/settle", &body))).await;
    let answers: Vec<Value> = answers.into_iter().map(|a| a.unwrap().1).collect();
    assert_eq!(
        answers.iter().filter(|a| a["success"] == true).count(),
        1,
        "{answers:#?}"
    );
    for a in answers.iter().filter(|a| a["success"] != true) {
        let reason = a["errorReason"].as_str().unwrap_or_default();
        assert!(
            matches!(reason, "duplicate_settlement" | "settlement_pending"),
            "{a}"
        );
    }
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT)
    );
    assert_eq!(tx_count(&anvil, 1).await + tx_count(&anvil, 4).await, 1);
    // Readiness names every node of the cluster with its role.
    let (status, ready) = a.get("/health/ready").await.unwrap();
    assert_eq!(status, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let nodes = ready["replayStore"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(nodes.len(), 6, "{ready}");
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "primary").count(),
        3,
        "{ready}"
    );
    assert!(nodes.iter().all(|n| n["reachable"] == true), "{ready}");
}

/// `min_replicas_acked` that Redis cannot meet (a single node without replicas): the record
/// written before the broadcast is not acknowledged, so nothing is broadcast and `/settle`
/// answers 503 as with Redis down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_write_refuses_before_broadcast() {
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    usdc.mint(anvil.address(2), 1_000_000u64).await.unwrap();
    let redis = RedisServer::spawn().await.unwrap();
    let toml = config(
        &anvil,
        &format!(
            "[redis]\nurl = \"{}\"\nmin_replicas_acked = 1\n",
            redis.url()
        ),
    );
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (auth, body) = payments(&anvil, 1).remove(0);
    let (status, answer) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["transaction"], "", "{answer}");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("acknowledged by 0 of the 1 replicas"),
        "{answer}"
    );
    // The primary kept the record (unacknowledged): a retry sees it (pending at most, never a
    // success), and neither the retry nor the reconciler sends it, since every re-send is
    // recorded first and that write is not acknowledged either.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, again) = fac.post("/settle", &body).await.unwrap();
    assert_ne!(again["success"], true, "{status} {again}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tx_count(&anvil, 1).await + tx_count(&anvil, 4).await, 0);
    assert!(
        !usdc
            .authorization_state(auth.from, auth.nonce)
            .await
            .unwrap()
    );
}
