//! One receipt poller per network: reads each new block's receipts once
//! (`eth_blockNumber`, then `eth_getBlockReceipts` for every block not read yet, never skipping
//! one), keeps those of the facilitator's signers, and wakes the settlements waiting for them,
//! instead of one `eth_getTransactionReceipt` loop per transaction.
//!
//! Absence is proved too: a transaction first sent after the poller started covering
//! ([`ReceiptWatcher::covers`]) and not in the cache was not mined in any block read so far, so
//! a lookup needs no RPC call. While the poller is behind or failing (`eth_getBlockReceipts`
//! unsupported, RPC down) it proves nothing and lookups ask the node per transaction.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::rpc::types::TransactionReceipt;
use tokio::sync::watch;
use x402_chain::EvmChain;

use crate::clock::unix_ms;

/// Most blocks read in one poll (a poller that fell behind catches up over several).
const BLOCKS_PER_POLL: u64 = 32;

/// How long a receipt stays cached (settlements resolve within seconds of their block).
const RETENTION: Duration = Duration::from_secs(600);

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
}

struct Inner {
    state: Mutex<State>,
    news: watch::Sender<u64>,
    stale_after: Duration,
}

/// The poller of one network (stops when dropped).
pub struct ReceiptWatcher {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReceiptWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReceiptWatcher {
    /// Starts polling `chain` every `interval` for the transactions of `signers`. It counts as
    /// behind (proves nothing) when it has not read up to the head for `stale_after`.
    pub fn spawn(
        chain: Arc<dyn EvmChain>,
        signers: &[Address],
        interval: Duration,
        stale_after: Duration,
    ) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            news: watch::channel(0).0,
            stale_after,
        });
        let signers: HashSet<Address> = signers.iter().copied().collect();
        let task = tokio::spawn({
            let inner = inner.clone();
            async move {
                loop {
                    inner.poll(&*chain, &signers).await;
                    tokio::time::sleep(interval).await;
                }
            }
        });
        ReceiptWatcher { inner, task }
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

    /// Waits until the poller reads a new block, at most `max`.
    pub async fn next_block(&self, max: Duration) {
        let mut rx = self.inner.news.subscribe();
        let _ = tokio::time::timeout(max, rx.changed()).await;
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
        let first = {
            let mut state = self.lock();
            match state.next_block {
                Some(n) => n,
                None => {
                    // Blocks after `head` are made after now: cover from now on.
                    state.next_block = Some(head + 1);
                    state.covered_since_ms = Some(unix_ms());
                    state.last_ok = Some(Instant::now());
                    return;
                }
            }
        };
        let last = head.min(first + BLOCKS_PER_POLL - 1);
        for number in first..=last {
            let receipts = match chain.block_receipts(number).await {
                Ok(Some(receipts)) => receipts,
                // Not served yet (a lagging endpoint), or failed: read it next time.
                Ok(None) | Err(_) => return,
            };
            let mut state = self.lock();
            let now = Instant::now();
            for r in receipts.into_iter().filter(|r| signers.contains(&r.from)) {
                state.receipts.insert(r.transaction_hash, (r, now));
            }
            state.next_block = Some(number + 1);
            drop(state);
            self.news.send_replace(number);
        }
        let mut state = self.lock();
        if last == head {
            state.last_ok = Some(Instant::now());
        }
        let before = state.receipts.len();
        state.receipts.retain(|_, (_, at)| at.elapsed() < RETENTION);
        if state.receipts.len() < before {
            // Dropped receipts were cached before this: only later sends stay provable.
            let horizon = unix_ms().saturating_sub(RETENTION.as_millis() as u64);
            state.covered_since_ms = state.covered_since_ms.map(|s| s.max(horizon));
        }
    }
}
