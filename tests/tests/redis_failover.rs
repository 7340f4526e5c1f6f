//! Redis past one node (issue 20), on real multi-node Redis on 127.0.0.1 (Debian's
//! `redis-server`, `redis-server --sentinel`, `redis-cli --cluster create`), anvil with
//! Circle's FiatTokenV2_2 and 2 s blocks, and the real `x402-facilitator` binary:
//! - Redis Cluster (3 primaries + 3 replicas): a primary killed (SIGKILL) mid-burst, its
//!   replica promoted: every payment settles exactly once, no success is answered twice, no
//!   payment is answered `nonce_already_used`, every transaction is found by the status API,
//!   and (payments made through an API key with a webhook) every payment's
//!   `settlement.settled` event reaches the receiver, each event id exactly once;
//! - a Sentinel group (1 primary, 2 replicas, 3 sentinels): the same with the primary killed;
//! - a cluster primary paused (SIGSTOP): 503 with nothing broadcast, then recovery;
//! - x402-conformance F3 across two replicas on the cluster;
//! - `min_replicas_acked` that Redis cannot meet: refused (503) before anything is broadcast.
//!
//! A slot migration during a burst: `redis_reshard.rs`; Solana on the cluster:
//! `redis_cluster_svm.rs`; the burst helpers: `failover/mod.rs`. These tests start many
//! processes: they run one at a time (nextest group `redis-multi-node`,
//! `.config/nextest.toml`).

mod failover;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use failover::{
    AMOUNT, BURST, Replicas, Tally, assert_settled_once, chain, config, finish, finish_burst,
    payments, start_burst, tx_count,
};
use serde_json::Value;
use x402_facilitator::auth::generate_key;
use x402_facilitator::webhooks::signing::generate_secret;
use x402_settle::outbox::{SETTLED, event_id};
use x402_settle::replay::keys::{DEFAULT_SHARDS, Layout, evm_replay_key};
use x402_tests::eip3009::Authorization;
use x402_tests::facilitator::TestFacilitator;
use x402_tests::http_sink::{HttpSink, Received};
use x402_tests::process::FacilitatorProcess;
use x402_tests::redis_group::{RedisCluster, SentinelGroup};
use x402_tests::{Anvil, BASE_USDC, RedisServer, Usdc};

/// The `[redis]` table of a facilitator on the Sentinel group, `min_replicas_acked = 1`.
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

/// The API key `shop` (scope `settle`) whose settlement webhook is `url`, signed with
/// `secret`, retried every 200–400 ms and never given up within a test.
fn webhook_toml(key_sha256: &str, url: &str, secret: &str) -> String {
    format!(
        r#"
[[auth.keys]]
name = "shop"
sha256 = "{key_sha256}"
scopes = ["settle"]
webhook_url = "{url}"
webhook_secret = "{secret}"

[webhooks]
timeout_ms = 2000
initial_backoff_ms = 200
max_backoff_ms = 400
poll_interval_ms = 100
give_up_after_seconds = 86400
"#
    )
}

/// Pending webhook events in the cluster's outbox, summed over the shards.
async fn outbox_depth(cluster: &RedisCluster) -> u64 {
    let layout = Layout::new("x402", DEFAULT_SHARDS);
    let mut total = 0;
    for shard in 0..layout.shards() {
        total += cluster
            .query::<u64>(redis::cmd("ZCARD").arg(layout.outbox(shard)))
            .await
            .unwrap();
    }
    total
}

/// Every payment's `settlement.settled` event reached the receiver, no other event did, and
/// each event id was delivered exactly once: waits until the outbox is empty (an event whose
/// completion was lost would still be there, due again) and every event arrived, then
/// counts the deliveries per `webhook-id`.
async fn assert_each_event_delivered_once(
    cluster: &RedisCluster,
    sink: &HttpSink,
    payments: &[(Authorization, Value)],
    tally: &Tally,
) {
    let expected: HashMap<String, usize> = payments
        .iter()
        .enumerate()
        .map(|(i, (auth, _))| {
            let key = evm_replay_key("x402", 8453, BASE_USDC, auth.from, auth.nonce);
            (event_id(&key, SETTLED), i)
        })
        .collect();
    let ids = |got: &[Received]| -> HashSet<String> {
        got.iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect()
    };
    let start = Instant::now();
    loop {
        let depth = outbox_depth(cluster).await;
        let got = sink.received();
        if depth == 0 && ids(&got).len() >= expected.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{} of {} events delivered, {depth} pending in the outbox",
            ids(&got).len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anything still on its way (a claim of the old primary's) has time to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = sink.received();
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for r in &got {
        let id = r.header("webhook-id").expect("webhook-id").to_string();
        let payload: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(payload["data"]["eventId"], id.as_str(), "{payload}");
        let i = *expected
            .get(&id)
            .unwrap_or_else(|| panic!("an event of no payment's final state: {payload}"));
        assert_eq!(payload["type"], SETTLED, "{payload}");
        assert_eq!(payload["data"]["state"], "settled", "{payload}");
        assert_eq!(payload["data"]["key"], "shop", "{payload}");
        assert_eq!(
            payload["data"]["transaction"].as_str(),
            tally.transaction[i].as_deref(),
            "payment {i}: {payload}"
        );
        *deliveries.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "webhooks: {} deliveries of {} events, {} delivered more than once",
        got.len(),
        deliveries.len(),
        twice.len()
    );
    assert_eq!(deliveries.len(), expected.len(), "an event never arrived");
    assert!(
        twice.is_empty(),
        "events delivered more than once: {twice:?}"
    );
}

/// Redis Cluster primary killed mid-burst, payments made through an API key with a webhook:
/// every payment settles exactly once, and every payment's `settlement.settled` event is
/// delivered, each event id exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_primary_killed_mid_burst_settles_every_payment_exactly_once() {
    let (anvil, usdc) = chain().await;
    let mut cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let sink = HttpSink::start().await.unwrap();
    let (key, key_sha256) = generate_key().unwrap();
    let toml = config(&anvil, &cluster.redis_toml(1))
        + &webhook_toml(&key_sha256, &sink.url("/hook"), &generate_secret().unwrap());
    let a = FacilitatorProcess::start("cluster-a", &toml).await.unwrap();
    let b = FacilitatorProcess::start("cluster-b", &toml).await.unwrap();
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3);
    let victim = primaries[0];
    let replicas = [a, b];
    let burst = start_burst(&anvil, &replicas, Some(&key)).await;
    // Killed while events are being delivered and payments are still settling.
    let delivered = sink.wait_for(10, Duration::from_secs(30)).await.len();
    let sent = tx_count(&anvil, 1).await + tx_count(&anvil, 4).await;
    cluster.nodes[victim].kill9();
    eprintln!(
        "killed cluster primary {victim}: {sent} settlements sent, {delivered} events delivered"
    );
    assert!(delivered >= 10, "no event delivered before the kill");
    assert!(
        delivered < BURST && (sent as usize) < BURST,
        "the burst was over before the kill"
    );
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
    let payments = burst.payments.clone();
    let tally = finish_burst(&anvil, &usdc, burst).await;
    assert_each_event_delivered_once(&cluster, &sink, &payments, &tally).await;
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
    let burst = start_burst(&anvil, &replicas, None).await;
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
    let toml = config(&anvil, &cluster.redis_toml(1));
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
    let replicas = Replicas::of([fac.url().to_string()], None);
    finish(
        &replicas,
        &payments,
        &mut tally,
        &mut done,
        Duration::from_secs(120),
    )
    .await;
    assert_settled_once(&anvil, &usdc, &payments, &tally, &replicas).await;
}

/// x402-conformance F3 on the cluster: 30 concurrent settles of one payment across two
/// replicas give exactly one success and one transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_f3_thirty_concurrent_settles_across_two_replicas_succeed_once() {
    let (anvil, usdc) = chain().await;
    let cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let toml = config(&anvil, &cluster.redis_toml(1));
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

/// The outbox across a failover, made deterministic: the replica of the primary holding an
/// event's shard is paused (SIGSTOP), so that primary acknowledges writes its replica does not
/// hold, exactly what a failover would undo. A claim then hands out nothing (delivering it
/// could repeat it after a failover), and a completion fails; the worker's completion
/// (`complete_within`) repeats it until the replica is back, and it lands, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_claims_and_completions_wait_for_the_replicas() {
    use x402_facilitator::webhooks::delivery::complete_within;
    use x402_settle::outbox::{Notify, Outbox};
    use x402_settle::record::{Broadcast, Cost, PaymentFacts, SentTx, Settled, SettlementRecord};
    use x402_settle::redis_conn::{RedisConn, RedisMode, RedisTarget};
    use x402_settle::replay::{Created, RedisStore, ReplayStore, StoreOptions};

    let cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let conn = RedisConn::connect(&RedisTarget {
        mode: RedisMode::Cluster,
        urls: cluster.urls(),
        sentinel_master: None,
        username: None,
        password: None,
        timeout: Duration::from_millis(1500),
    })
    .await
    .unwrap();
    let store = RedisStore::open(
        conn,
        StoreOptions {
            min_replicas_acked: 1,
            ..StoreOptions::new("x402")
        },
    )
    .await
    .unwrap();

    // A broadcast record moved to `delivered`, with its event, while the replicas are up.
    let key = "x402:replay:test:outbox-wait";
    let facts = PaymentFacts {
        binding: "0x01".into(),
        network: "eip155:8453".into(),
        payer: "0xA".into(),
        amount: "1".into(),
        asset: "0xB".into(),
        pay_to: "0xC".into(),
        created_at: 1,
        valid_until: 2,
        key: Some("shop".into()),
        answer_keys: vec![],
        kind: None,
    };
    let broadcast = SettlementRecord::Broadcast(Broadcast {
        payment: facts.clone(),
        sent: SentTx::Svm {
            transaction: "sig".into(),
            raw: "AA==".into(),
            blockhash: "h".into(),
            fee_lamports: 0,
            rent_lamports: 0,
        },
        replaced: vec![],
        sent_at: 1,
        last_sent_ms: 1,
        first_sent_ms: 1,
        sent_since_ms: 1,
    });
    let Created::Created(raw) = store
        .create(key, &broadcast, Duration::from_secs(60), &[])
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    let delivered = SettlementRecord::Delivered(Settled {
        payment: facts,
        transaction: "sig".into(),
        cost: Cost::default(),
        settled_at: 3,
        preconfirmed: None,
    });
    let event = Notify::for_keys(["shop".to_string()])
        .event(key, &delivered, x402_chain::clock::unix_ms())
        .unwrap();
    assert!(
        store
            .swap_emitting(key, &raw, &delivered, Some(&event))
            .await
            .unwrap()
            .is_some()
    );

    // The replica of the event's primary stops answering.
    let layout = store.layout().clone();
    let slot = cluster
        .keyslot(&layout.outbox(layout.shard_of(key)))
        .await
        .unwrap();
    let primary = cluster.primary_of_slot(slot).await.unwrap();
    let replicas = cluster.replicas_of(primary).await;
    assert_eq!(replicas.len(), 1, "primary {primary}: {replicas:?}");
    let replica = &cluster.nodes[replicas[0]];
    replica.pause().unwrap();
    let lease = Duration::from_millis(300);
    let claimed = store.claim(10, lease, "a").await;
    assert!(
        claimed.as_ref().is_err(),
        "an unacknowledged claim was handed out: {claimed:?}"
    );
    replica.resume().unwrap();
    // Its lease (on the primary) lapses; acknowledged now, the claim hands it out.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let claimed = store.claim(10, Duration::from_secs(30), "b").await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.id, event.id);

    // Delivered; the completion is not acknowledged while the replica is paused.
    replica.pause().unwrap();
    let refused = store.complete(&event.id).await;
    assert!(refused.is_err(), "an unacknowledged completion succeeded");
    // The worker's completion repeats it: the replica comes back within the lease.
    let resume = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        replica.resume().unwrap();
    };
    let t = Instant::now();
    let (done, ()) = tokio::join!(
        complete_within(&store, &event.id, Instant::now() + Duration::from_secs(20)),
        resume
    );
    done.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    let depth = Outbox::depth(&store).await.unwrap();
    assert_eq!((depth.pending, depth.dead), (0, 0));
    assert!(store.claim(10, lease, "c").await.unwrap().is_empty());
}
