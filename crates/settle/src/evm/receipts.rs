//! One receipt poller per network: reads each new block's receipts once
//! (`eth_blockNumber`, then `eth_getBlockReceipts` for every block not read yet, never skipping
//! one), keeps those of the facilitator's signers, and wakes the settlements waiting for them,
//! instead of one `eth_getTransactionReceipt` loop per transaction.
//!
//! Absence is proved too: a transaction first sent after the poller started covering
//! ([`ReceiptWatcher::covers`]) and not in the cache was not mined in any block read so far, so
//! a lookup needs no RPC call. While the poller is behind or failing (`eth_getBlockReceipts`
//! unsupported, RPC down) it proves nothing and lookups ask the node per transaction.
//!
//! Reorgs: each block's hashes are read with it (`eth_getBlockByNumber`). A block whose parent
//! is not the block read before it means the chain changed under what was read: the poller walks
//! back to the last block whose hash still matches (at most [`MAX_REORG_DEPTH`]), forgets the
//! receipts of the blocks after it, reads them again, and proves nothing until it has caught up.
//! A reorg deeper than that forgets everything and covers only what is sent afterwards.
//!
//! Pace: the poller learns the chain's block time (the mean time between new heads over the
//! last blocks it saw) and polls at a quarter of it, between [`MIN_INTERVAL`] and the
//! configured interval (`[settle] poll_interval_ms`, the ceiling: slow chains cost no more RPC
//! calls than before); and it polls at once after each send ([`ReceiptWatcher::wake`]), so
//! a chain that mines on arrival (or a transaction that made it into the next block) is seen
//! without waiting for the next tick.
//!
//! Pushed heads: with a WebSocket endpoint ([`ReceiptWatcher::follow_heads`], `[[evm]] ws_url`)
//! the poller also polls as soon as the node announces a block (`eth_subscribe("newHeads")`),
//! and while that subscription is live it needs no fast pace: it polls on each head and
//! otherwise only at the configured interval, as a safety net. The blocks are still read over
//! HTTP; the subscription only says when. A subscription that fails or ends is opened again
//! with a growing delay (1 s to 30 s), the learnt pace covering the gap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::rpc::types::TransactionReceipt;
use tokio::sync::watch;
use tokio::time::Instant;
use x402_chain::{BlockHashes, EvmChain};

use crate::clock::Clock;

/// Most blocks read in one poll (a poller that fell behind catches up over several).
const BLOCKS_PER_POLL: u64 = 32;

/// How long a receipt stays cached (settlements resolve within seconds of their block).
const RETENTION: Duration = Duration::from_secs(600);

/// Fastest polling pace, whatever the block time.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// The poll pace is this fraction of the learnt block time.
const BLOCK_TIME_FRACTION: u32 = 4;

/// Head changes remembered to learn the block time.
const BLOCK_TIME_SAMPLES: usize = 16;

/// Deepest reorg the poller repairs by reading blocks again; also how many block hashes it keeps.
pub const MAX_REORG_DEPTH: u64 = 64;

#[derive(Default)]
struct State {
    /// Receipts of the signers' transactions → (receipt, when cached).
    receipts: HashMap<B256, (TransactionReceipt, Instant)>,
    /// The next block to read; `None` before the first poll.
    next_block: Option<u64>,
    /// Unix ms since when every transaction first sent is covered (see the module docs).
    covered_since_ms: Option<u64>,
    /// When the poller last read up to the head.
    last_ok: Option<Instant>,
    /// Hashes of the last blocks read (at most [`MAX_REORG_DEPTH`]): block number → hash.
    hashes: BTreeMap<u64, B256>,
    /// The last heads seen change: (head, when first seen), oldest first.
    heads: std::collections::VecDeque<(u64, Instant)>,
}

impl State {
    /// Notes the head seen now.
    fn saw_head(&mut self, head: u64, now: Instant) {
        if self.heads.back().is_some_and(|(h, _)| *h >= head) {
            return;
        }
        self.heads.push_back((head, now));
        while self.heads.len() > BLOCK_TIME_SAMPLES {
            self.heads.pop_front();
        }
    }

    /// The learnt block time at `now`: the mean time per block from the oldest remembered head
    /// change to `now` (so a chain that stops producing blocks, e.g. one that mines only on
    /// arrival, is paced back down to the ceiling while idle); `None` before two were seen.
    fn block_time(&self, now: Instant) -> Option<Duration> {
        let (first, at_first) = self.heads.front()?;
        let (last, _) = self.heads.back()?;
        let blocks = last.checked_sub(*first).filter(|b| *b > 0)?;
        Some(now.duration_since(*at_first) / blocks.min(u32::MAX as u64) as u32)
    }
}

/// The pace for a learnt `block_time` under the configured `ceiling`.
fn pace(block_time: Option<Duration>, ceiling: Duration) -> Duration {
    match block_time {
        Some(t) => (t / BLOCK_TIME_FRACTION).clamp(MIN_INTERVAL.min(ceiling), ceiling),
        None => ceiling,
    }
}

struct Inner {
    state: Mutex<State>,
    news: watch::Sender<u64>,
    /// Polls at once ([`ReceiptWatcher::wake`]).
    kick: tokio::sync::Notify,
    stale_after: Duration,
    clock: Clock,
    /// A `newHeads` subscription is live ([`ReceiptWatcher::follow_heads`]).
    heads_live: AtomicBool,
}

/// The poller of one network (stops when dropped).
pub struct ReceiptWatcher {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    heads_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ReceiptWatcher {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(task) = self
            .heads_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// First delay before a failed `newHeads` subscription is opened again; it doubles up to
/// [`HEADS_RETRY_MAX`].
const HEADS_RETRY_MIN: Duration = Duration::from_secs(1);

/// Longest delay between attempts to open a `newHeads` subscription.
const HEADS_RETRY_MAX: Duration = Duration::from_secs(30);

impl ReceiptWatcher {
    /// Starts polling `chain` every `interval` for the transactions of `signers`. It counts as
    /// behind (proves nothing) when it has not read up to the head for `stale_after`.
    pub fn spawn(
        chain: Arc<dyn EvmChain>,
        signers: &[Address],
        interval: Duration,
        stale_after: Duration,
    ) -> Self {
        Self::spawn_with_clock(chain, signers, interval, stale_after, Clock::system())
    }

    /// [`ReceiptWatcher::spawn`] reading wall time (what it covers since) from `clock`.
    pub fn spawn_with_clock(
        chain: Arc<dyn EvmChain>,
        signers: &[Address],
        interval: Duration,
        stale_after: Duration,
        clock: Clock,
    ) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            news: watch::channel(0).0,
            kick: tokio::sync::Notify::new(),
            stale_after,
            clock,
            heads_live: AtomicBool::new(false),
        });
        let signers: HashSet<Address> = signers.iter().copied().collect();
        let task = tokio::spawn({
            let inner = inner.clone();
            async move {
                loop {
                    inner.poll(&*chain, &signers).await;
                    let wait = if inner.heads_live.load(Ordering::Relaxed) {
                        interval
                    } else {
                        pace(inner.lock().block_time(Instant::now()), interval)
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = inner.kick.notified() => {}
                    }
                }
            }
        });
        ReceiptWatcher {
            inner,
            task,
            heads_task: Mutex::new(None),
        }
    }

    /// Also polls on every head the node at `ws_url` pushes (`eth_subscribe("newHeads")`; see
    /// the module docs), opening the subscription again whenever it fails or ends. Each
    /// attempt gives up after `timeout`. Replaces an earlier call's subscription.
    pub fn follow_heads(&self, ws_url: String, timeout: Duration) {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let mut retry = HEADS_RETRY_MIN;
            loop {
                match x402_chain::NewHeads::subscribe(&ws_url, timeout).await {
                    Ok(mut heads) => {
                        tracing::info!(endpoint = %x402_chain::redacted_url(&ws_url), "following newHeads");
                        retry = HEADS_RETRY_MIN;
                        inner.heads_live.store(true, Ordering::Relaxed);
                        while let Some(head) = heads.next().await {
                            inner.lock().saw_head(head, Instant::now());
                            inner.kick.notify_one();
                        }
                        inner.heads_live.store(false, Ordering::Relaxed);
                        tracing::warn!(endpoint = %x402_chain::redacted_url(&ws_url), "newHeads subscription ended; polling at the learnt pace");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "cannot follow newHeads; polling at the learnt pace");
                    }
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(HEADS_RETRY_MAX);
            }
        });
        let old = self
            .heads_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Whether a `newHeads` subscription is live ([`ReceiptWatcher::follow_heads`]).
    pub fn following_heads(&self) -> bool {
        self.inner.heads_live.load(Ordering::Relaxed)
    }

    /// The cached receipt of `hash`, if its block was read.
    pub fn receipt(&self, hash: &B256) -> Option<TransactionReceipt> {
        let state = self.inner.lock();
        state.receipts.get(hash).map(|(r, _)| r.clone())
    }

    /// Whether a transaction first sent at Unix ms `sent_ms` (0: unknown) would be in the cache
    /// if it had been mined in a block read so far (the poller is current and covered that
    /// time).
    pub fn covers(&self, sent_ms: u64) -> bool {
        if sent_ms == 0 {
            return false;
        }
        let state = self.inner.lock();
        let current = state
            .last_ok
            .is_some_and(|at| at.elapsed() < self.inner.stale_after);
        current && state.covered_since_ms.is_some_and(|since| sent_ms >= since)
    }

    /// Polls at once (after a send: the transaction may be in the next block already); a wake
    /// during a poll makes one more poll right after it.
    pub fn wake(&self) {
        self.inner.kick.notify_one();
    }

    /// The block time learnt so far (`None` before two new heads were seen).
    pub fn block_time(&self) -> Option<Duration> {
        self.inner.lock().block_time(Instant::now())
    }

    /// How many blocks the poller has read so far (a mark for [`ReceiptWatcher::next_block`]).
    pub fn mark(&self) -> u64 {
        *self.inner.news.borrow()
    }

    /// Waits until the poller reads a block after `mark` ([`ReceiptWatcher::mark`]; at once
    /// if it already has), at most `max`.
    pub async fn next_block(&self, mark: u64, max: Duration) {
        let mut rx = self.inner.news.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|read| *read != mark)).await;
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn poll(&self, chain: &dyn EvmChain, signers: &HashSet<Address>) {
        let Ok(head) = chain.block_number().await else {
            return;
        };
        self.lock().saw_head(head, Instant::now());
        let Some(first) = self.lock().next_block else {
            // Blocks after `head` are made after now: cover from now on. The head's hash is the
            // base a reorg of the next blocks is noticed against.
            let Ok(Some(base)) = chain.block_hashes(head).await else {
                return;
            };
            let mut state = self.lock();
            state.next_block = Some(head + 1);
            state.hashes.insert(head, base.hash);
            state.covered_since_ms = Some(self.clock.unix_ms());
            state.last_ok = Some(Instant::now());
            return;
        };
        let last = head.min(first + BLOCKS_PER_POLL - 1);
        for number in first..=last {
            // Not served yet (a lagging endpoint), or failed: read it next time.
            let Ok(Some(hashes)) = chain.block_hashes(number).await else {
                return;
            };
            let known_parent = self.lock().hashes.get(&number.wrapping_sub(1)).copied();
            if known_parent.is_some_and(|parent| parent != hashes.parent) {
                self.rewind(chain, number - 1).await;
                return;
            }
            let receipts = match chain.block_receipts(number).await {
                Ok(Some(receipts)) => receipts,
                Ok(None) | Err(_) => return,
            };
            if receipts
                .iter()
                .any(|r| r.block_hash.is_some_and(|h| h != hashes.hash))
            {
                // The block changed between the two calls: read it again next time.
                return;
            }
            let mut state = self.lock();
            let now = Instant::now();
            for r in receipts.into_iter().filter(|r| signers.contains(&r.from)) {
                state.receipts.insert(r.transaction_hash, (r, now));
            }
            state.next_block = Some(number + 1);
            state.hashes.insert(number, hashes.hash);
            while state.hashes.len() as u64 > MAX_REORG_DEPTH {
                state.hashes.pop_first();
            }
            drop(state);
            self.news.send_modify(|read| *read = read.wrapping_add(1));
        }
        let mut state = self.lock();
        if last == head {
            state.last_ok = Some(Instant::now());
        }
        let before = state.receipts.len();
        state.receipts.retain(|_, (_, at)| at.elapsed() < RETENTION);
        if state.receipts.len() < before {
            // Dropped receipts were cached before this: only later sends stay provable.
            let horizon = self
                .clock
                .unix_ms()
                .saturating_sub(RETENTION.as_millis() as u64);
            state.covered_since_ms = state.covered_since_ms.map(|s| s.max(horizon));
        }
    }

    /// The block after `read` does not build on the block read as `read`: finds the last block
    /// whose hash the node still has, forgets what was read after it, and reads on from there.
    /// Lookups ask the node until the poller has caught up again.
    async fn rewind(&self, chain: &dyn EvmChain, read: u64) {
        let known: Vec<(u64, B256)> = {
            let state = self.lock();
            state
                .hashes
                .range(..=read)
                .rev()
                .map(|(n, h)| (*n, *h))
                .collect()
        };
        let mut fork = None;
        for (number, hash) in known {
            match chain.block_hashes(number).await {
                Ok(Some(BlockHashes { hash: now, .. })) if now == hash => {
                    fork = Some(number);
                    break;
                }
                Ok(_) => {}
                // Cannot tell now: try again at the next poll (nothing changed yet).
                Err(_) => return,
            }
        }
        let mut state = self.lock();
        state.last_ok = None;
        match fork {
            Some(fork) => {
                tracing::warn!(
                    fork,
                    depth = read - fork,
                    "chain reorganised under blocks already read: reading them again"
                );
                state
                    .receipts
                    .retain(|_, (r, _)| r.block_number.is_some_and(|b| b <= fork));
                state.hashes.retain(|n, _| *n <= fork);
                state.next_block = Some(fork + 1);
            }
            None => {
                tracing::warn!(
                    read,
                    "chain reorganised deeper than the blocks kept: starting over"
                );
                *state = State::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_is_a_fraction_of_the_learnt_block_time_under_the_ceiling() {
        let ceiling = Duration::from_millis(200);
        assert_eq!(pace(None, ceiling), ceiling);
        let mut state = State::default();
        let t0 = Instant::now();
        for n in 0..=8u64 {
            state.saw_head(100 + n, t0 + Duration::from_millis(250) * n as u32);
        }
        state.saw_head(105, t0 + Duration::from_secs(5)); // an older head from a lagging node
        let now = t0 + Duration::from_millis(2_000);
        assert_eq!(state.block_time(now), Some(Duration::from_millis(250)));
        assert_eq!(
            pace(state.block_time(now), ceiling),
            Duration::from_micros(62_500)
        );
        // 2 s blocks: the ceiling; 10 ms blocks: the floor.
        assert_eq!(pace(Some(Duration::from_secs(2)), ceiling), ceiling);
        assert_eq!(pace(Some(Duration::from_millis(10)), ceiling), MIN_INTERVAL);
        // Idle (no block for a minute): paced back up to the ceiling.
        let idle = t0 + Duration::from_secs(62);
        assert_eq!(pace(state.block_time(idle), ceiling), ceiling);
    }
}
