//! `redis-cli --cluster reshard` during a burst (issue 20): 2 replicas of the real
//! `x402-facilitator` binary sharing two signer keys on a Redis Cluster of 3 primaries + 3
//! replicas, anvil with Circle's FiatTokenV2_2 and 2 s blocks; half of one primary's hash slots,
//! with their keys, move to another primary while 200 payments settle.
//!
//! Part of the nextest group `redis-multi-node` (`.config/nextest.toml`): one at a time.

mod failover;

use std::time::{Duration, Instant};

use failover::{BURST, chain, config, finish_burst, start_burst, tx_count};
use x402_settle::replay::keys::{DEFAULT_SHARDS, Layout, debits_key, evm_nonce_keys};
use x402_tests::process::FacilitatorProcess;
use x402_tests::redis_group::RedisCluster;
use x402_tests::{Anvil, BASE_USDC};

/// The hash slots of the keys a burst writes: the record and index shards (`{x402:s}`), both
/// signers' nonce keys and the payer's in-flight debits.
async fn burst_slots(cluster: &RedisCluster, anvil: &Anvil) -> Vec<u16> {
    let layout = Layout::new("x402", DEFAULT_SHARDS);
    let mut keys: Vec<String> = (0..layout.shards()).map(|s| layout.open_index(s)).collect();
    for signer in [1, 4] {
        keys.push(evm_nonce_keys("x402", 8453, anvil.address(signer)).next);
    }
    keys.push(debits_key(
        "x402",
        "eip155:8453",
        &format!("{BASE_USDC:#x}"),
        &format!("{:#x}", anvil.address(2)),
    ));
    let mut slots = Vec::new();
    for k in keys {
        slots.push(cluster.keyslot(&k).await.unwrap());
    }
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// `redis-cli --cluster reshard` during a burst over 2 replicas: half of one primary's slots
/// (a sixth of the key space, the one holding the most of the burst's record, index, nonce
/// and debit slots) move to another primary while payments settle. Every payment settles
/// exactly once, none gets two successes, every transaction is found by the status API, and
/// no payment is answered a failure (503 while a slot moves is allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_reshard_during_burst_settles_every_payment_exactly_once() {
    let (anvil, usdc) = chain().await;
    let cluster = RedisCluster::spawn(3, 1).await.unwrap();
    let toml = config(&anvil, &cluster.redis_toml(1));
    let a = FacilitatorProcess::start("reshard-a", &toml).await.unwrap();
    let b = FacilitatorProcess::start("reshard-b", &toml).await.unwrap();
    // The move: of each primary's lower half of slots (redis-cli moves a source's lowest slots
    // first), the one holding the most of the burst's slots.
    let busy = burst_slots(&cluster, &anvil).await;
    let primaries = cluster.primaries().await;
    let mut plan = None;
    for (n, &from) in primaries.iter().enumerate() {
        let slots = cluster.slots_of(from).await.unwrap();
        let half = &slots[..slots.len() / 2];
        let moving: Vec<u16> = busy.iter().copied().filter(|s| half.contains(s)).collect();
        let to = primaries[(n + 1) % primaries.len()];
        if plan
            .as_ref()
            .is_none_or(|(_, _, _, m): &(usize, usize, usize, Vec<u16>)| moving.len() > m.len())
        {
            plan = Some((from, to, half.len(), moving));
        }
    }
    let (from, to, count, moving) = plan.unwrap();
    assert!(!moving.is_empty(), "no slot of the burst moves: {busy:?}");
    let to_before = cluster.slots_of(to).await.unwrap().len();

    let replicas = [a, b];
    let burst = start_burst(&anvil, &replicas, None).await;
    let sent_before = tx_count(&anvil, 1).await + tx_count(&anvil, 4).await;
    let t = Instant::now();
    cluster
        .reshard(from, to, count, Duration::from_secs(150))
        .await
        .unwrap();
    let sent_after = tx_count(&anvil, 1).await + tx_count(&anvil, 4).await;
    eprintln!(
        "moved {count} slots from node {from} to node {to} in {:?}, {} of them holding the \
         burst's keys ({moving:?} of {busy:?}); settlements sent: {sent_before} at the start, \
         {sent_after} at the end",
        t.elapsed(),
        moving.len()
    );
    assert!(
        (sent_before as usize) < BURST,
        "the burst was over before the move"
    );
    let to_slots = cluster.slots_of(to).await.unwrap();
    assert_eq!(to_slots.len(), to_before + count, "every slot moved");
    assert!(moving.iter().all(|s| to_slots.contains(s)));
    cluster.wait_healthy(Duration::from_secs(30)).await.unwrap();

    finish_burst(&anvil, &usdc, burst).await;
}
