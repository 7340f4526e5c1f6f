//! Gas limits of ECDSA-signed settlements per transfer method and asset, learnt from `eth_estimateGas`, so that later
//! settlements of the asset simulate with one `eth_call` (one execution on the node) instead of
//! a gas search (several executions).
//!
//! The limit covers the largest estimate seen plus [`STORAGE_ALLOWANCE`] (a first transfer to an
//! empty balance writes a fresh storage slot: 20,000 more than one to a funded balance), plus
//! [`GAS_LIMIT_HEADROOM_PERCENT`]. Unused gas is not charged (EIP-1559 charges gas used). Contract
//! (ERC-1271 / ERC-6492) signatures always get their own estimate: their cost depends on the
//! wallet.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::Address;
use x402_chain::GAS_LIMIT_HEADROOM_PERCENT;

/// Gas added to the largest estimate for storage writes the estimate did not see.
pub const STORAGE_ALLOWANCE: u64 = 25_000;

/// A transfer method's name ([`super::methods::TransferMethod::NAME`]) and the asset.
pub type GasKey = (&'static str, Address);

/// Learnt limits by transfer method and asset.
#[derive(Default)]
pub struct GasLimits {
    by_asset: Mutex<HashMap<GasKey, u64>>,
    /// Held while the first estimate of an asset runs: a burst waits for it, then simulates
    /// with `eth_call`.
    pub learning: tokio::sync::Mutex<()>,
}

impl GasLimits {
    /// The limit for an ECDSA settlement of `key`, once one was estimated.
    pub fn get(&self, key: GasKey) -> Option<u64> {
        let limits = self.by_asset.lock().unwrap_or_else(|p| p.into_inner());
        limits.get(&key).copied()
    }

    /// Learns from an estimate of `gas` units for `key`.
    pub fn learn(&self, key: GasKey, gas: u64) {
        let covered = gas + STORAGE_ALLOWANCE;
        let limit = covered + covered * GAS_LIMIT_HEADROOM_PERCENT / 100;
        let mut limits = self.by_asset.lock().unwrap_or_else(|p| p.into_inner());
        let entry = limits.entry(key).or_insert(limit);
        *entry = (*entry).max(limit);
    }
}
