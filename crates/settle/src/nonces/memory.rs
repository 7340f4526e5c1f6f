//! In-memory [`NonceStore`]: one process only (the default without Redis).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use alloy::primitives::Address;
use async_trait::async_trait;

use super::{NonceStore, SignerNonces};
use crate::replay::StoreError;

#[derive(Default)]
struct Signer {
    next: Option<u64>,
    free: BTreeSet<u64>,
    owners: BTreeMap<u64, Vec<String>>,
}

/// Counters behind one mutex.
#[derive(Default)]
pub struct MemoryNonceStore {
    signers: Mutex<HashMap<(u64, Address), Signer>>,
}

impl MemoryNonceStore {
    /// No counters yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, chain_id: u64, signer: Address, f: impl FnOnce(&mut Signer) -> T) -> T {
        let mut all = self.signers.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry((chain_id, signer)).or_default())
    }
}

#[async_trait]
impl NonceStore for MemoryNonceStore {
    async fn allocate(
        &self,
        chain_id: u64,
        signer: Address,
        owner: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.with(chain_id, signer, |s| {
            let nonce = match s.free.pop_first() {
                Some(n) => n,
                None => {
                    let n = s.next?;
                    s.next = Some(n + 1);
                    n
                }
            };
            s.owners.entry(nonce).or_default().push(owner.to_string());
            Some(nonce)
        }))
    }

    async fn release(&self, chain_id: u64, signer: Address, nonce: u64) -> Result<(), StoreError> {
        self.with(chain_id, signer, |s| {
            s.owners.remove(&nonce);
            s.free.insert(nonce);
        });
        Ok(())
    }

    async fn sync(
        &self,
        chain_id: u64,
        signer: Address,
        pending: u64,
        mined: u64,
    ) -> Result<u64, StoreError> {
        Ok(self.with(chain_id, signer, |s| {
            let next = s.next.unwrap_or(0).max(pending);
            s.next = Some(next);
            s.free = s.free.split_off(&mined);
            s.owners = s.owners.split_off(&mined);
            next
        }))
    }

    async fn take_free(
        &self,
        chain_id: u64,
        signer: Address,
        nonce: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(chain_id, signer, |s| s.free.remove(&nonce)))
    }

    async fn state(&self, chain_id: u64, signer: Address) -> Result<SignerNonces, StoreError> {
        Ok(self.with(chain_id, signer, |s| SignerNonces {
            next: s.next,
            free: s.free.iter().copied().collect(),
            owners: s
                .owners
                .iter()
                .flat_map(|(n, keys)| keys.iter().map(|k| (*n, k.clone())))
                .collect(),
        }))
    }
}
