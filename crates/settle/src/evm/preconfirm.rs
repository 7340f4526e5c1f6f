//! Flashblock pre-confirmations (`[[evm]] preconfirmations`, Base and other OP-stack chains
//! with flashblocks): a flashblocks-aware RPC answers `eth_getTransactionReceipt` for a
//! transaction already in the block the sequencer is building (a "flashblock", every ~200 ms),
//! before that block is sealed (2 s on Base). With the option on, a `/settle` request waiting
//! for its transaction asks that RPC every [`Preconfirmations::poll_interval`] for a receipt of
//! each of the payment's transactions the block poller ([`super::receipts`]) has not seen in a
//! block yet; a receipt that succeeded and carries the transfer the method requires answers
//! success at once ([`crate::family::Lookup::Preconfirmed`]).
//!
//! A pre-confirmation is the sequencer's promise, not a block: a sequencer failover or an
//! unsafe-head reorg can drop it. Hence:
//! - only success is taken from it; a reverted pre-confirmation (or one without the transfer)
//!   decides nothing: the block does, through the block poller, as without the option;
//! - only a waiting request takes it; the reconciler waits for the block;
//! - the record keeps the pre-confirmed transaction's signed bytes
//!   ([`crate::record::Settled::preconfirmed`]): if the sequencer drops it, nonce repair
//!   ([`super::gaps`]) finds the signer stuck at its nonce and sends the same bytes again
//!   (until the authorization's `validBefore`), instead of filling the nonce;
//! - an unreachable or failing pre-confirmation RPC is skipped (logged at DEBUG): the block
//!   poller still answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use alloy::primitives::B256;
use alloy::rpc::types::TransactionReceipt;
use x402_chain::EvmChain;

/// Default pace of pre-confirmation lookups (`[[evm]] preconfirmation_poll_ms`): Base's
/// flashblock interval.
pub const DEFAULT_POLL: Duration = Duration::from_millis(200);

/// Transactions remembered for pacing before the old ones are forgotten.
const ASKED_KEPT: usize = 4096;

/// Where and how often pre-confirmations are asked for, on one network.
pub struct Preconfirmations {
    chain: Arc<dyn EvmChain>,
    poll: Duration,
    /// When each transaction was last asked for (whoever asks: requests and the reconciler).
    asked: Mutex<HashMap<B256, Instant>>,
}

impl Preconfirmations {
    /// Pre-confirmations from `chain` (a flashblocks-aware RPC), asked for every `poll` while a
    /// request waits.
    pub fn new(chain: Arc<dyn EvmChain>, poll: Duration) -> Self {
        Preconfirmations {
            chain,
            poll,
            asked: Mutex::new(HashMap::new()),
        }
    }

    /// How often a waiting request asks.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// The receipt the RPC has for the first of `hashes` it knows (pre-confirmed or mined),
    /// with its index in `hashes`. A transaction asked for less than three quarters of
    /// [`Preconfirmations::poll_interval`] ago is not asked again yet (the engine may look at
    /// the chain more often: `[settle] poll_interval_ms`). Errors are logged and answered
    /// `None`.
    pub async fn receipt(&self, hashes: &[B256]) -> Option<(usize, TransactionReceipt)> {
        if !self.due(hashes) {
            return None;
        }
        for (i, hash) in hashes.iter().enumerate() {
            match self.chain.receipt(*hash).await {
                Ok(Some(receipt)) => return Some((i, receipt)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(transaction = %hash, error = %e, "pre-confirmation lookup failed; the block poller still answers");
                    return None;
                }
            }
        }
        None
    }

    /// Whether `hashes` are due to be asked for now; if so, notes that they are asked now.
    fn due(&self, hashes: &[B256]) -> bool {
        let Some(first) = hashes.first() else {
            return false;
        };
        let now = Instant::now();
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        if asked
            .get(first)
            .is_some_and(|at| now.duration_since(*at) < self.poll * 3 / 4)
        {
            return false;
        }
        if asked.len() >= ASKED_KEPT {
            let horizon = self.poll * 10;
            asked.retain(|_, at| now.duration_since(*at) < horizon);
            if asked.len() >= ASKED_KEPT {
                asked.clear();
            }
        }
        asked.insert(*first, now);
        true
    }
}
