//! Settlement webhooks end to end, on anvil with Circle's FiatTokenV2_2, a private Redis and a
//! local HTTP receiver, through the real facilitator over HTTP:
//! - one signed event per final state (`settled`, `expired`, `failed`), the Standard Webhooks
//!   HMAC checked here independently of the facilitator's code;
//! - a receiver that is down at first gets the event once it comes back (short backoff);
//! - a kill -9 of the real binary after settlement and a restart lose no event;
//! - `upto` (issue 17): the events carry the charge; a charge of 0 is `settled` with no
//!   transaction; a reverted upto settlement is `failed` with `invalid_upto_evm_transaction_failed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use prometheus_parse::{Scrape, Value as Metric};
use serde_json::Value;
use sha2::Sha256;
use x402_facilitator::auth::generate_key;
use x402_facilitator::webhooks::signing::generate_secret;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::http_sink::{HttpSink, Received};
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

/// Short deadlines; no re-send or replacement of a dropped transaction (the expired case).
const SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 1
poll_interval_ms = 50
rpc_timeout_seconds = 2
redis_timeout_ms = 1000
lease_seconds = 2
resend_after_seconds = 600
replace_after_seconds = 600
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
signer_wait_seconds = 5
"#;

/// anvil + USDC with the payer (account 2) funded with 100 USDC; the payee is account 3.
async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::spawn().await.expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 100_000_000u64)
        .await
        .expect("mint");
    (anvil, usdc)
}

/// The API key `shop` (settle + admin) whose webhook is `url`, signed with `secret`, and a fast
/// retry schedule giving up after `give_up_after_seconds`.
fn webhook_toml(key_sha256: &str, url: &str, secret: &str, give_up_after_seconds: u64) -> String {
    format!(
        r#"
[[auth.keys]]
name = "shop"
sha256 = "{key_sha256}"
scopes = ["settle", "admin"]
webhook_url = "{url}"
webhook_secret = "{secret}"

[webhooks]
timeout_ms = 2000
initial_backoff_ms = 200
max_backoff_ms = 400
poll_interval_ms = 100
give_up_after_seconds = {give_up_after_seconds}
"#
    )
}

/// Everything one test needs: chain, Redis, the receiver's URL, key and secret, and the config.
struct Setup {
    anvil: Anvil,
    usdc: Usdc,
    redis: RedisServer,
    key: String,
    secret: String,
    toml: String,
}

async fn setup(receiver_url: &str) -> Setup {
    setup_giving_up_after(receiver_url, 86_400).await
}

async fn setup_giving_up_after(receiver_url: &str, give_up_after_seconds: u64) -> Setup {
    let (anvil, usdc) = chain().await;
    let redis = RedisServer::spawn().await.unwrap();
    let (key, sha256) = generate_key().unwrap();
    let secret = generate_secret().unwrap();
    let toml = TestFacilitator::config_toml_custom(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
        SETTLE,
    ) + &webhook_toml(&sha256, receiver_url, &secret, give_up_after_seconds);
    Setup {
        anvil,
        usdc,
        redis,
        key,
        secret,
        toml,
    }
}

/// A payment of [`AMOUNT`] from account 2 to account 3 valid for `valid_for` seconds.
fn payment(anvil: &Anvil, valid_for: u64) -> Value {
    let mut req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    req.max_timeout_seconds = valid_for;
    let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
    v2_evm_payment_json(&req.v2_json(), &sig, &auth)
}

/// `POST {base}/settle` with the API key: the JSON answer (HTTP 200 expected).
async fn settle(base: &str, key: &str, body: &Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/settle"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Checks the Standard Webhooks headers of `r` against `secret` with our own HMAC (not the
/// facilitator's code): the signature over `{id}.{timestamp}.{body}`, a fresh timestamp, and
/// the id repeated in the payload. Returns the parsed payload.
fn verified(secret: &str, r: &Received) -> Value {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = r.header("webhook-id").expect("webhook-id");
    let timestamp = r.header("webhook-timestamp").expect("webhook-timestamp");
    let signatures = r.header("webhook-signature").expect("webhook-signature");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "signature {signatures} != {expected}"
    );
    let sent_at: u64 = timestamp.parse().unwrap();
    let now = x402_tests::eip3009::unix_now();
    assert!(now.abs_diff(sent_at) < 300, "stale timestamp {sent_at}");
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let payload: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(payload["data"]["eventId"], id, "{payload}");
    payload
}

/// `cmd` (e.g. `ZCARD`) summed over the shards of the index `key` (`key:{x402:N}`).
async fn redis_count(redis: &RedisServer, cmd: &str, key: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let shards: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{key}:{{*}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut total = 0;
    for shard in shards {
        let n: u64 = redis::cmd(cmd)
            .arg(shard)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += n;
    }
    total
}

/// `x402_webhook_deliveries_total{outcome}` from `/metrics` (admin key).
async fn deliveries(base: &str, key: &str, outcome: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "x402_webhook_deliveries_total" && s.labels.get("outcome") == Some(outcome)
        })
        .map(|s| match s.value {
            Metric::Counter(v) | Metric::Untyped(v) => v,
            _ => panic!("not a counter"),
        })
        .unwrap_or(0.0)
}

/// Three payments of the key `shop`: one lands (`settled`), one is dropped from the node and
/// its `validBefore` passes (`expired`), one reverts because the payer emptied its balance
/// first (`failed`). The receiver gets exactly one signed event for each, with the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_final_state_gets_exactly_one_signed_event() {
    let sink = HttpSink::start().await.unwrap();
    let s = setup(&sink.url("/x402/events")).await;
    let f = TestFacilitator::start_with_toml(&s.toml).await.unwrap();
    let provider = s.anvil.provider();

    // settled: mined at once.
    let first = settle(f.url(), &s.key, &payment(&s.anvil, 60)).await;
    assert_eq!(first["success"], true, "{first}");
    let settled_tx = first["transaction"].as_str().unwrap().to_string();

    // failed: broadcast; the payer moves its whole balance away with a higher tip, so the
    // settlement transaction reverts in the same block.
    s.anvil.set_automine(false).await.unwrap();
    let pending = settle(f.url(), &s.key, &payment(&s.anvil, 60)).await;
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let failed_tx = pending["transaction"].as_str().unwrap().to_string();
    let payer = s.anvil.address(2);
    let balance = s.usdc.balance_of(payer).await.unwrap();
    let drain = s
        .usdc
        .contract_with(s.anvil.wallet_provider(s.anvil.signer(2)))
        .transfer(s.anvil.address(4), balance)
        // No estimate: it would run after the pending settlement and revert.
        .gas(100_000)
        .max_priority_fee_per_gas(50_000_000_000)
        .max_fee_per_gas(100_000_000_000)
        .send()
        .await
        .unwrap();
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let drained = drain.get_receipt().await.unwrap();
    assert!(drained.status());
    assert_eq!(s.usdc.balance_of(payer).await.unwrap(), U256::ZERO);
    sink.wait_for(2, Duration::from_secs(30)).await;

    // expired: the payer is funded again; the settlement is broadcast, then lost by the node,
    // and no block is mined until its validBefore (9 s) has passed. Nonce repair re-sends a
    // dropped settlement of a stuck sender, so it is dropped again and again meanwhile.
    s.anvil.set_automine(true).await.unwrap();
    s.usdc.mint(payer, AMOUNT * 10).await.unwrap();
    s.anvil.set_automine(false).await.unwrap();
    let pending = settle(f.url(), &s.key, &payment(&s.anvil, 9)).await;
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let expired_tx = pending["transaction"].as_str().unwrap().to_string();
    let dropping = Arc::new(AtomicBool::new(true));
    let dropper = tokio::spawn({
        let (provider, dropping) = (provider.clone(), dropping.clone());
        let hash: alloy::primitives::B256 = expired_tx.parse().unwrap();
        async move {
            while dropping.load(Ordering::SeqCst) {
                let _: Result<Value, _> = provider
                    .raw_request("anvil_dropTransaction".into(), (hash,))
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let got = sink.wait_for(3, Duration::from_secs(40)).await;
    dropping.store(false, Ordering::SeqCst);
    dropper.await.unwrap();
    assert_eq!(got.len(), 3, "{got:#?}");
    // Nothing more arrives (each event once).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = sink.received();
    assert_eq!(got.len(), 3, "{got:#?}");

    let mut by_type = std::collections::HashMap::new();
    for r in &got {
        assert_eq!(r.path, "/x402/events");
        let payload = verified(&s.secret, r);
        let data = &payload["data"];
        assert_eq!(data["key"], "shop", "{payload}");
        assert_eq!(data["network"], "eip155:8453");
        assert_eq!(data["payer"], payer.to_checksum(None));
        assert_eq!(data["amount"], AMOUNT.to_string());
        assert_eq!(data["asset"], x402_tests::BASE_USDC.to_checksum(None));
        assert_eq!(data["payTo"], s.anvil.address(3).to_checksum(None));
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
        by_type.insert(payload["type"].as_str().unwrap().to_string(), payload);
    }
    let settled = &by_type["settlement.settled"]["data"];
    assert_eq!(settled["state"], "settled");
    assert_eq!(settled["transaction"], settled_tx.as_str());
    let expired = &by_type["settlement.expired"]["data"];
    assert_eq!(expired["state"], "expired");
    assert_eq!(expired["transaction"], expired_tx.as_str());
    assert_eq!(
        expired["errorReason"], "invalid_exact_evm_transaction_failed",
        "{expired}"
    );
    let failed = &by_type["settlement.failed"]["data"];
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["transaction"], failed_tx.as_str());
    assert!(failed["errorReason"].as_str().is_some(), "{failed}");

    // Delivered events leave the outbox; the metrics saw three deliveries.
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:outbox").await,
        0
    );
    assert_eq!(deliveries(f.url(), &s.key, "delivered").await, 3.0);
    assert_eq!(deliveries(f.url(), &s.key, "dead_lettered").await, 0.0);
}

/// The receiver refuses connections at first: the event is retried with backoff and delivered,
/// once, when the receiver listens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_at_first_gets_the_event_when_it_returns() {
    let port = x402_tests::net::free_port().unwrap();
    let s = setup(&format!("http://127.0.0.1:{port}/hook")).await;
    let f = TestFacilitator::start_with_toml(&s.toml).await.unwrap();
    let answer = settle(f.url(), &s.key, &payment(&s.anvil, 60)).await;
    assert_eq!(answer["success"], true, "{answer}");

    let start = Instant::now();
    while deliveries(f.url(), &s.key, "failed").await < 3.0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no failed attempts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:outbox").await,
        1
    );

    let sink = HttpSink::start_on(port).await.unwrap();
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let payload = verified(&s.secret, &got[0]);
    assert_eq!(payload["type"], "settlement.settled");
    assert_eq!(payload["data"]["transaction"], answer["transaction"]);
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:outbox").await,
        0
    );
    assert_eq!(deliveries(f.url(), &s.key, "delivered").await, 1.0);
}

/// A receiver that never comes back: after `give_up_after_seconds` the event is dead-lettered
/// (counted, moved to the dead set, out of the outbox) and no longer retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_never_delivered_is_dead_lettered_after_its_retry_period() {
    let port = x402_tests::net::free_port().unwrap();
    let s = setup_giving_up_after(&format!("http://127.0.0.1:{port}/hook"), 2).await;
    let f = TestFacilitator::start_with_toml(&s.toml).await.unwrap();
    let answer = settle(f.url(), &s.key, &payment(&s.anvil, 60)).await;
    assert_eq!(answer["success"], true, "{answer}");
    let start = Instant::now();
    while deliveries(f.url(), &s.key, "dead_lettered").await < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deliveries(f.url(), &s.key, "failed").await >= 1.0);
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:outbox").await,
        0
    );
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:dead").await,
        1
    );
    // Given up: a receiver that appears now gets nothing.
    let sink = HttpSink::start_on(port).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sink.received().is_empty());
    assert_eq!(deliveries(f.url(), &s.key, "dead_lettered").await, 1.0);
}

/// kill -9 of the real binary after a settlement whose webhook could not be delivered yet
/// (receiver down), then a restart: the event was in Redis, and it is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_settlement_and_restart_loses_no_event() {
    let port = x402_tests::net::free_port().unwrap();
    let s = setup(&format!("http://127.0.0.1:{port}/hook")).await;
    let mut a = FacilitatorProcess::start("webhook-kill9", &s.toml)
        .await
        .unwrap();
    let answer = settle(a.url(), &s.key, &payment(&s.anvil, 60)).await;
    assert_eq!(answer["success"], true, "{answer}");
    let tx = answer["transaction"].as_str().unwrap().to_string();
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:outbox").await,
        1
    );
    a.kill9();

    // The record names the key that settled it.
    let client = redis::Client::open(s.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("x402:replay:evm:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let raw: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let record: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(record["payment"]["key"], "shop", "{record}");

    let sink = HttpSink::start_on(port).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.received().is_empty(), "nobody was left to deliver");
    let b = FacilitatorProcess::start("webhook-kill9-restart", &s.toml)
        .await
        .unwrap();
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "{got:#?}\n{}", b.log_text());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let payload = verified(&s.secret, &got[0]);
    assert_eq!(payload["type"], "settlement.settled");
    assert_eq!(payload["data"]["transaction"], tx.as_str());
    assert_eq!(
        redis_count(&s.redis, "ZCARD", "x402:webhooks:outbox").await,
        0
    );
}

/// The outbox contract, on Redis and on the in-memory store alike: an event is written only by
/// the swap that moves the record (a lost compare-and-swap writes none), a claim leases it (no
/// second claim meanwhile), a stale claim can neither reschedule nor dead-letter it, a lapsed
/// lease makes it due again (a dead worker loses nothing), and completion removes it.
#[tokio::test]
async fn outbox_claims_lease_retry_dead_letter_and_complete_atomically() {
    use std::sync::Arc;
    use x402_settle::outbox::{Notify, SETTLED};
    use x402_settle::record::{Broadcast, Cost, PaymentFacts, SentTx, Settled, SettlementRecord};
    use x402_settle::replay::{Created, MemoryStore, RedisStore, ReplayStore};

    let redis = RedisServer::spawn().await.unwrap();
    let stores: Vec<Arc<dyn ReplayStore>> = vec![
        Arc::new(
            RedisStore::connect(&redis.url(), "x402", Duration::from_secs(2))
                .await
                .unwrap(),
        ),
        Arc::new(MemoryStore::new()),
    ];
    let notify = Notify::for_keys(["shop".to_string()]);
    for store in stores {
        let kind = store.kind();
        let facts = |n: u8| PaymentFacts {
            binding: format!("0x0{n}"),
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
        // A broadcast record moved to `delivered` with its event.
        let write = |n: u8| {
            let store = store.clone();
            let notify = notify.clone();
            async move {
                let key = format!("x402:replay:test:{n}");
                let broadcast = SettlementRecord::Broadcast(Broadcast {
                    payment: facts(n),
                    sent: SentTx::Svm {
                        transaction: format!("sig{n}"),
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
                    .create(&key, &broadcast, Duration::from_secs(60), &[])
                    .await
                    .unwrap()
                else {
                    panic!("not created")
                };
                let delivered = SettlementRecord::Delivered(Settled {
                    payment: facts(n),
                    transaction: format!("sig{n}"),
                    cost: Cost::default(),
                    settled_at: 3,
                    preconfirmed: None,
                });
                let event = notify
                    .event(&key, &delivered, x402_chain::clock::unix_ms())
                    .unwrap();
                let swapped = store
                    .swap_emitting(&key, &raw, &delivered, Some(&event))
                    .await
                    .unwrap();
                assert!(swapped.is_some());
                // The same move again loses the compare-and-swap and writes nothing.
                let again = store
                    .swap_emitting(&key, &raw, &delivered, Some(&event))
                    .await
                    .unwrap();
                assert!(again.is_none());
                event
            }
        };
        let event = write(1).await;
        assert_eq!(event.kind, SETTLED);
        assert_eq!(store.depth().await.unwrap().pending, 1, "{kind}");

        let lease = Duration::from_secs(30);
        let claimed = store.claim(10, lease, "a").await.unwrap();
        assert_eq!(claimed.len(), 1, "{kind}");
        assert_eq!(claimed[0].event, event, "{kind}");
        assert_eq!(claimed[0].attempts, 1);
        assert!(
            store.claim(10, lease, "b").await.unwrap().is_empty(),
            "{kind}: leased"
        );

        // A stale claim changes nothing; the holder reschedules it for now.
        store.retry(&event.id, "b", 0, "x").await.unwrap();
        assert!(
            store.claim(10, lease, "b").await.unwrap().is_empty(),
            "{kind}"
        );
        store.retry(&event.id, "a", 0, "HTTP 503").await.unwrap();
        let claimed = store.claim(10, lease, "c").await.unwrap();
        assert_eq!(claimed.len(), 1, "{kind}");
        assert_eq!(claimed[0].attempts, 2);
        store.dead_letter(&event.id, "a", "x").await.unwrap();
        assert_eq!(store.depth().await.unwrap().dead, 0, "{kind}: stale claim");
        store.dead_letter(&event.id, "c", "gave up").await.unwrap();
        let depth = store.depth().await.unwrap();
        assert_eq!((depth.pending, depth.dead), (0, 1), "{kind}");

        // A worker that dies holding a claim: the event is due again after the lease.
        let second = write(2).await;
        let claimed = store
            .claim(10, Duration::from_millis(300), "dead-worker")
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{kind}");
        assert!(store.claim(10, lease, "d").await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(400)).await;
        let claimed = store.claim(10, lease, "d").await.unwrap();
        assert_eq!(claimed.len(), 1, "{kind}");
        assert_eq!(claimed[0].event.id, second.id);
        assert_eq!(claimed[0].attempts, 2);
        store.complete(&second.id).await.unwrap();
        assert_eq!(store.depth().await.unwrap().pending, 0, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upto_events_carry_the_charge_and_a_revert_its_upto_reason() {
    use x402_tests::permit2::{Permit2Fixture, upto_settle_body, with_upto};
    const MAX: u64 = 30_000;
    const CHARGE: u64 = 7_000;
    let sink = HttpSink::start().await.unwrap();
    let redis = RedisServer::spawn().await.unwrap();
    let (key, sha256) = generate_key().unwrap();
    let secret = generate_secret().unwrap();
    let hook = webhook_toml(&sha256, &sink.url("/x402/events"), &secret, 86_400);
    let fx = Permit2Fixture::start_edited(Some(&redis.url()), |t| {
        with_upto(t).replace(
            "receipt_timeout_seconds = 10",
            "receipt_timeout_seconds = 1",
        ) + &hook
    })
    .await
    .unwrap();
    let base = fx.facilitator.url();

    // settled, with the charge.
    let (_, _, charged) = fx.plain_upto_payment(MAX);
    let first = settle(base, &key, &upto_settle_body(&charged, CHARGE)).await;
    assert_eq!(first["success"], true, "{first}");
    // settled with nothing to send.
    let (_, _, zero) = fx.plain_upto_payment(MAX);
    let nothing = settle(base, &key, &upto_settle_body(&zero, 0)).await;
    assert_eq!(nothing["success"], true, "{nothing}");
    assert_eq!(nothing["transaction"], "", "{nothing}");
    // failed on chain: broadcast, then the payer moves its whole balance away first.
    fx.anvil.set_automine(false).await.unwrap();
    let (_, _, doomed) = fx.plain_upto_payment(MAX);
    let pending = settle(base, &key, &upto_settle_body(&doomed, CHARGE)).await;
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let failed_tx = pending["transaction"].as_str().unwrap().to_string();
    let drain = fx
        .plain
        .drain_before_pending(&fx.anvil, &fx.payer, fx.anvil.address(4))
        .await
        .unwrap();
    let _: String = fx
        .anvil
        .provider()
        .raw_request("evm_mine".into(), ())
        .await
        .unwrap();
    assert!(drain.get_receipt().await.unwrap().status());

    let got = sink.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 3, "each event once");
    let events: Vec<Value> = got.iter().map(|r| verified(&secret, r)).collect();
    let data = |tx: &str| {
        events
            .iter()
            .map(|e| e["data"].clone())
            .find(|d| d["transaction"] == tx)
            .unwrap_or_else(|| panic!("no event of {tx:?}: {events:#?}"))
    };
    let settled = data(first["transaction"].as_str().unwrap());
    assert_eq!(settled["state"], "settled", "{settled}");
    assert_eq!(settled["amount"], CHARGE.to_string(), "{settled}");
    let zero = data("");
    assert_eq!(zero["state"], "settled", "{zero}");
    assert_eq!(zero["amount"], "0", "{zero}");
    let failed = data(&failed_tx);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["errorReason"], "invalid_upto_evm_transaction_failed",
        "{failed}"
    );
    assert_eq!(failed["amount"], CHARGE.to_string(), "{failed}");
}
