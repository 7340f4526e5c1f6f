//! The reconciler's pass ([`crate::reconciler::pass`]) over scripted engines: it resolves what
//! no request waits for, routes each record to the engine that owns its key, runs in one
//! replica at a time, and reports the open records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Rig;
use super::scripted::{SendScript, Steps, key_of, reason, request};
use crate::SettleEvents;
use crate::SettleObserver;
use crate::reconciler::{Reconcile, pass};
use crate::record::SettlementRecord;
use crate::replay::ReplayStore;

const FAR: u64 = super::T0_MS / 1000 + 3_600;
const LOCK: &str = "t:lock:reconciler";

/// Records what the pass reports.
#[derive(Default)]
struct Seen(Mutex<Vec<(usize, u64)>>);

impl SettleObserver for Seen {
    fn open_records(&self, count: usize, oldest_age_seconds: u64) {
        self.0.lock().unwrap().push((count, oldest_age_seconds));
    }
}

async fn run_pass(rig: &Rig, engines: &[Arc<dyn Reconcile>], holder: &str, seen: &Arc<Seen>) {
    pass(
        rig.store.as_ref(),
        LOCK,
        holder,
        engines,
        Duration::from_secs(2),
        Duration::from_secs(5),
        &SettleEvents::new(seen.clone()),
    )
    .await
    .expect("a pass");
}

/// A payment answered `settlement_pending` whose request went away is resolved by a pass
/// (`confirmed`), reported open until then, and the next request gets its one success.
#[tokio::test(start_paused = true)]
async fn a_pass_resolves_what_no_request_waits_for() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = Arc::new(rig.engine("a", Steps::none()));
    let req = request("p1", "10", FAR);
    let answer = rig.settle(&engine, &req).await;
    assert_eq!(
        reason(&answer),
        x402_proto::Reason::SettlementPending.as_str()
    );
    let engines: Vec<Arc<dyn Reconcile>> = vec![engine.clone()];
    let seen = Arc::new(Seen::default());
    run_pass(&rig, &engines, "r1", &seen).await;
    assert_eq!(
        seen.0.lock().unwrap().last().map(|s| s.0),
        Some(1),
        "one open"
    );
    rig.chain.with(|s| s.stalled = false);
    rig.chain.mine();
    run_pass(&rig, &engines, "r1", &seen).await;
    assert_eq!(seen.0.lock().unwrap().last(), Some(&(0, 0)), "none open");
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Confirmed(_))
    ));
    assert!(rig.settle(&engine, &req).await.success);
}

/// While another replica holds the reconciler lease, a pass touches no record.
#[tokio::test(start_paused = true)]
async fn a_pass_waits_for_the_lease_holder() {
    let rig = Rig::new();
    rig.chain
        .with(|s| s.send_script.push_back(SendScript::Lose));
    let engine = Arc::new(rig.engine("a", Steps::none()));
    let req = request("p1", "10", FAR);
    rig.settle(&engine, &req).await;
    rig.chain.with(|s| s.stalled = true);
    assert!(
        rig.store
            .try_lease(LOCK, "other", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let engines: Vec<Arc<dyn Reconcile>> = vec![engine.clone()];
    let seen = Arc::new(Seen::default());
    rig.wait(Duration::from_secs(20)).await; // a re-send is due
    run_pass(&rig, &engines, "r1", &seen).await;
    assert!(seen.0.lock().unwrap().is_empty(), "no pass ran");
    let sends = rig.chain.with(|s| s.sends.len());
    assert_eq!(sends, 1, "nothing re-sent by a replica without the lease");
    rig.store.end_lease(LOCK, "other").await.unwrap();
    run_pass(&rig, &engines, "r1", &seen).await;
    assert_eq!(
        rig.chain.with(|s| s.sends.len()),
        2,
        "re-sent by the holder"
    );
}

/// Open records whose key no engine owns (another network) are left alone.
#[tokio::test(start_paused = true)]
async fn a_pass_routes_records_by_key_space() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = Arc::new(rig.engine("a", Steps::none()));
    rig.settle(&engine, &request("p1", "10", FAR)).await;
    let stranger = "x:replay:other:1";
    let foreign = rig.record(&key_of("p1")).await.unwrap();
    rig.store
        .create(stranger, &foreign, Duration::from_secs(600), &[])
        .await
        .unwrap();
    rig.chain.with(|s| s.stalled = false);
    rig.chain.mine();
    let engines: Vec<Arc<dyn Reconcile>> = vec![engine.clone()];
    let seen = Arc::new(Seen::default());
    run_pass(&rig, &engines, "r1", &seen).await;
    assert!(matches!(
        rig.record(&key_of("p1")).await,
        Some(SettlementRecord::Confirmed(_))
    ));
    assert!(matches!(
        rig.record(stranger).await,
        Some(SettlementRecord::Broadcast(_))
    ));
    assert_eq!(seen.0.lock().unwrap().last().map(|s| s.0), Some(1));
}

/// A record that does not decode does not stop the pass: it is skipped (logged at ERROR) and
/// the records behind it are still resolved; the request for it answers an internal error.
#[tokio::test(start_paused = true)]
async fn a_corrupt_record_is_skipped_not_a_stop() {
    let rig = Rig::new();
    rig.chain.with(|s| s.stalled = true);
    let engine = Arc::new(rig.engine("a", Steps::none()));
    let (first, second) = (request("p1", "10", FAR), request("p2", "10", FAR));
    rig.settle(&engine, &first).await;
    rig.settle(&engine, &second).await;
    rig.store
        .overwrite_raw(&key_of("p1"), "{\"state\":\"broadcast\",");
    rig.chain.with(|s| s.stalled = false);
    rig.chain.mine();
    let engines: Vec<Arc<dyn Reconcile>> = vec![engine.clone()];
    let seen = Arc::new(Seen::default());
    run_pass(&rig, &engines, "r1", &seen).await;
    assert!(matches!(
        rig.record(&key_of("p2")).await,
        Some(SettlementRecord::Confirmed(_))
    ));
    let err = engine
        .settle_as(&first, rig.now(), None)
        .await
        .expect_err("a corrupt record is an error");
    assert!(
        matches!(&err, crate::SettleError::Internal(m) if m.contains("corrupt settlement record")),
        "{err:?}"
    );
}
