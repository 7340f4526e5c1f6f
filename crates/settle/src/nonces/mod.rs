//! EVM sender nonces handed out from a counter shared by replicas, so that settlements of one
//! facilitator signer sign in parallel and never take one nonce twice.
//!
//! Per `(chainId, signer)` the store keeps (Redis layout in [`crate::replay::keys`]):
//! - the counter: the next nonce never handed out;
//! - the free nonces: handed out, never sent, given back ([`NonceStore::release`]); they are
//!   handed out again before the counter moves, so the sender's nonce sequence has no hole;
//! - the owners: which replay key took which nonce, so that gap repair
//!   ([`crate::evm::gaps`]) can tell a recorded transaction a node dropped (re-send it) from a
//!   nonce nobody will ever send (fill it).
//!
//! The counter starts from the chain (`eth_getTransactionCount(pending)`) and is raised to it
//! after any nonce error ([`NonceStore::sync`]); it never goes down.

mod memory;
mod redis;

use alloy::primitives::Address;
use async_trait::async_trait;

pub use memory::MemoryNonceStore;
pub use redis::RedisNonceStore;

use crate::replay::StoreError;

/// What the store holds for one signer ([`NonceStore::state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignerNonces {
    /// The next nonce never handed out; `None` before the first [`NonceStore::sync`].
    pub next: Option<u64>,
    /// Nonces handed back for reuse, ascending.
    pub free: Vec<u64>,
    /// `(nonce, replay key)` of the nonces handed out and not yet below the chain's mined count.
    pub owners: Vec<(u64, String)>,
}

/// Shared nonce counters of facilitator signers (every operation atomic).
#[async_trait]
pub trait NonceStore: Send + Sync {
    /// Hands `signer` on `chain_id` a nonce for the settlement under replay key `owner`: the
    /// lowest free nonce, else the counter (then raised by one). `Ok(None)`: no counter yet
    /// ([`NonceStore::sync`] first).
    async fn allocate(
        &self,
        chain_id: u64,
        signer: Address,
        owner: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Gives back a nonce that was handed out and never sent, for the next settlement.
    async fn release(&self, chain_id: u64, signer: Address, nonce: u64) -> Result<(), StoreError>;

    /// Raises the counter to at least `pending` (the node's next nonce), and forgets free
    /// nonces and owners below `mined` (the chain's mined count: used for good). Returns the
    /// counter.
    async fn sync(
        &self,
        chain_id: u64,
        signer: Address,
        pending: u64,
        mined: u64,
    ) -> Result<u64, StoreError>;

    /// Takes `nonce` out of the free nonces (to fill it with a no-op transaction): `true` when
    /// it was free and this call took it.
    async fn take_free(
        &self,
        chain_id: u64,
        signer: Address,
        nonce: u64,
    ) -> Result<bool, StoreError>;

    /// The counter, free nonces and owners of `signer`.
    async fn state(&self, chain_id: u64, signer: Address) -> Result<SignerNonces, StoreError>;
}
