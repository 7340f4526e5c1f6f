//! Unit tests of the engine over a scripted chain family ([`scripted`]) and the in-memory
//! store, under paused tokio time: no Redis, no node, no network, a few seconds in all.

mod answers;
mod crash;
mod debits;
mod flows;
mod reconciler;
pub mod scripted;

use std::sync::Arc;
use std::time::Duration;

use x402_proto::SettleResponse;

use super::{Engine, SettleTiming};
use crate::SettleEvents;
use crate::clock::Clock;
use crate::record::SettlementRecord;
use crate::replay::{MemoryStore, ReplayStore};
use scripted::{Chain, Family, StepStore, Steps};

/// Unix ms at the start of every test.
pub const T0_MS: u64 = 1_800_000_000_000;

/// The timing of the tests (the production defaults).
pub fn timing() -> SettleTiming {
    SettleTiming::default()
}

/// One test's world: a scripted chain and one replay store, shared by every engine instance
/// (as replicas share a chain and Redis), and one clock following tokio's paused time.
pub struct Rig {
    pub chain: Chain,
    pub store: Arc<MemoryStore>,
    pub clock: Clock,
}

impl Rig {
    pub fn new() -> Self {
        let clock = Clock::following_tokio(T0_MS);
        Rig {
            chain: Chain::default(),
            store: Arc::new(MemoryStore::new().with_clock(clock.clone())),
            clock,
        }
    }

    /// An engine instance named `owner` whose steps are numbered by `steps`.
    pub fn engine(&self, owner: &str, steps: Arc<Steps>) -> Engine<Family> {
        self.engine_timed(owner, steps, timing())
    }

    /// [`Rig::engine`] with `timing`.
    pub fn engine_timed(
        &self,
        owner: &str,
        steps: Arc<Steps>,
        timing: SettleTiming,
    ) -> Engine<Family> {
        let store: Arc<dyn ReplayStore> = Arc::new(StepStore {
            inner: self.store.clone(),
            steps: steps.clone(),
        });
        let family = Family {
            chain: self.chain.clone(),
            steps,
        };
        Engine::new(family, store, timing, owner.into(), SettleEvents::default())
            .with_clock(self.clock.clone())
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// The record under `key`.
    pub async fn record(&self, key: &str) -> Option<SettlementRecord> {
        self.store.get(key).await.unwrap().map(|s| s.record)
    }

    /// Settles `req` with `engine`, now.
    pub async fn settle(
        &self,
        engine: &Engine<Family>,
        req: &x402_proto::PaymentRequest,
    ) -> SettleResponse {
        engine
            .settle(req, self.now())
            .await
            .expect("settle answers")
    }

    /// Lets `d` pass.
    pub async fn wait(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}
