//! In-memory replay store: the documented default for a single process when no Redis URL is
//! configured. Not shared between replicas, lost on restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;

use super::keys::{debits_key, payer_blocked_key, reverts_key};
use super::redis_store::TxIdCase;
use super::{
    ClaimedEvent, Created, Outbox, OutboxDepth, OutboxEvent, PaymentFacts, ReplayStore,
    SettlementRecord, Standing, StoreError, Stored, decode, encode,
};
use crate::clock::Clock;
use crate::debits::Debit;

/// One webhook event in the in-memory outbox.
struct Pending {
    event: OutboxEvent,
    /// Unix ms when it is due (pushed past the lease when claimed).
    due_ms: u64,
    attempts: u32,
    claim: String,
}

#[derive(Default)]
struct State {
    /// Records, claims and leases: key → (value, expiry).
    entries: HashMap<String, (String, Instant)>,
    /// Unresolved replay keys → Unix ms of their last change.
    open: HashMap<String, u64>,
    /// Transaction → replay key.
    transactions: HashMap<String, String>,
    /// Webhook events not delivered yet, by id.
    outbox: HashMap<String, Pending>,
    /// Dead-lettered webhook event ids → Unix ms given up.
    dead: HashMap<String, u64>,
    /// In-flight debits: payer's debits key → replay key → stored debit ([`crate::debits`]).
    debits: HashMap<String, HashMap<String, String>>,
    /// The order of the debits.
    debit_seq: u64,
    /// Reverted settlements per payer's reverts key: Unix ms of each.
    reverts: HashMap<String, Vec<u64>>,
    /// Blocked payers: blocked key → Unix ms the block ends.
    blocked: HashMap<String, u64>,
}

/// The debits key of the payer of `payment` (the in-memory store has no prefix).
fn debits_of(payment: &PaymentFacts) -> String {
    debits_key("", &payment.network, &payment.asset, &payment.payer)
}

impl State {
    /// Releases the in-flight debit of the record under `key` (if any).
    fn release_debit(&mut self, key: &str, payment: &PaymentFacts) {
        let hash = debits_of(payment);
        if let Some(debits) = self.debits.get_mut(&hash) {
            debits.remove(key);
            if debits.is_empty() {
                self.debits.remove(&hash);
            }
        }
    }
}

/// Maps behind one mutex; every operation is atomic. Expiry follows tokio's clock (a paused
/// test runtime moves it); index scores and outbox due times read the store's [`Clock`].
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    clock: Clock,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads index scores and outbox due times from `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn unix_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// Overwrites the stored value under `key` with `raw` (keeping its expiry): a corrupt
    /// record, for tests.
    #[cfg(test)]
    pub(crate) fn overwrite_raw(&self, key: &str, raw: &str) {
        self.with(|s| {
            if let Some((value, _)) = s.entries.get_mut(key) {
                *value = raw.to_string();
            }
        });
    }

    /// The debits in flight of every payer: its debits key ([`super::keys::debits_key`] with
    /// an empty prefix) → how many.
    pub fn debits_in_flight(&self) -> HashMap<String, usize> {
        self.with(|s| s.debits.iter().map(|(k, v)| (k.clone(), v.len())).collect())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.entries.retain(|_, (_, exp)| *exp > now);
        f(&mut state)
    }
}

#[async_trait]
impl ReplayStore for MemoryStore {
    async fn create(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
        claims: &[String],
    ) -> Result<Created, StoreError> {
        let raw = encode(record)?;
        Ok(self.with(|s| {
            if s.entries.contains_key(key) {
                return Created::Exists;
            }
            for c in claims {
                if let Some((holder, _)) = s.entries.get(c)
                    && holder != key
                {
                    return Created::Claimed {
                        claim: c.clone(),
                        holder: holder.clone(),
                    };
                }
            }
            let exp = Instant::now() + ttl;
            s.entries.insert(key.to_string(), (raw.clone(), exp));
            for c in claims {
                s.entries.insert(c.clone(), (key.to_string(), exp));
            }
            if !record.is_resolved() {
                let now_ms = self.unix_ms();
                s.open.insert(key.to_string(), now_ms);
                s.debit_seq += 1;
                let debit = Debit {
                    seq: s.debit_seq,
                    expires_ms: now_ms.saturating_add(ttl.as_millis() as u64),
                    amount: record.payment().amount.clone(),
                };
                s.debits
                    .entry(debits_of(record.payment()))
                    .or_default()
                    .insert(key.to_string(), debit.encode());
            }
            Created::Created(raw)
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let raw = self.with(|s| s.entries.get(key).map(|(v, _)| v.clone()));
        raw.map(|raw| {
            Ok(Stored {
                record: decode(&raw)?,
                raw,
            })
        })
        .transpose()
    }

    async fn swap_emitting(
        &self,
        key: &str,
        expected: &str,
        next: &SettlementRecord,
        event: Option<&OutboxEvent>,
    ) -> Result<Option<String>, StoreError> {
        let raw = encode(next)?;
        Ok(self.with(|s| {
            let entry = s.entries.get_mut(key)?;
            if entry.0 != expected {
                return None;
            }
            entry.0 = raw.clone();
            if next.is_resolved() {
                s.open.remove(key);
                s.release_debit(key, next.payment());
            } else {
                s.open.insert(key.to_string(), self.unix_ms());
            }
            for tx in next.all_transactions() {
                s.transactions
                    .insert(tx.to_ascii_lowercase_if_hex(), key.to_string());
            }
            if let Some(e) = event {
                s.outbox.entry(e.id.clone()).or_insert_with(|| Pending {
                    event: e.clone(),
                    due_ms: self.unix_ms(),
                    attempts: 0,
                    claim: String::new(),
                });
            }
            Some(raw)
        }))
    }

    async fn remove(
        &self,
        key: &str,
        expected: &str,
        claims: &[String],
    ) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            if s.entries.get(key).map(|(v, _)| v.as_str()) != Some(expected) {
                return false;
            }
            s.entries.remove(key);
            s.open.remove(key);
            if let Ok(record) = decode(expected) {
                s.release_debit(key, record.payment());
            }
            for c in claims {
                if s.entries.get(c).is_some_and(|(h, _)| h == key) {
                    s.entries.remove(c);
                }
            }
            true
        }))
    }

    async fn standing(&self, key: &str, payment: &PaymentFacts) -> Result<Standing, StoreError> {
        let hash = debits_of(payment);
        let blocked = payer_blocked_key("", &payment.network, &payment.payer);
        let now_ms = self.unix_ms();
        Ok(self.with(|s| {
            let blocked_ms = s
                .blocked
                .get(&blocked)
                .map_or(0, |until| until.saturating_sub(now_ms));
            let Some(debits) = s.debits.get_mut(&hash) else {
                return Standing {
                    ahead: Vec::new(),
                    blocked_ms,
                };
            };
            let (amounts, prune) = crate::debits::ahead(
                debits.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                key,
                self.unix_ms(),
            );
            for k in prune {
                debits.remove(&k);
            }
            Standing {
                ahead: amounts,
                blocked_ms,
            }
        }))
    }

    async fn payer_reverted(
        &self,
        payment: &PaymentFacts,
        limit: u32,
        window: Duration,
        block: Duration,
    ) -> Result<bool, StoreError> {
        let reverts = reverts_key("", &payment.network, &payment.payer);
        let blocked = payer_blocked_key("", &payment.network, &payment.payer);
        let now_ms = self.unix_ms();
        let since = now_ms.saturating_sub(window.as_millis() as u64);
        Ok(self.with(|s| {
            let times = s.reverts.entry(reverts).or_default();
            times.push(now_ms);
            times.retain(|t| *t > since);
            let count = times.len();
            s.blocked.retain(|_, until| *until > now_ms);
            if limit > 0 && count >= limit as usize && !s.blocked.contains_key(&blocked) {
                s.blocked
                    .insert(blocked, now_ms.saturating_add(block.as_millis() as u64));
                return true;
            }
            false
        }))
    }

    async fn open_keys(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.with(|s| {
            let mut keys: Vec<(u64, String)> =
                s.open.iter().map(|(k, at)| (*at, k.clone())).collect();
            keys.sort();
            keys.into_iter().take(limit).map(|(_, k)| k).collect()
        }))
    }

    async fn forget_open(&self, key: &str) -> Result<(), StoreError> {
        self.with(|s| s.open.remove(key));
        Ok(())
    }

    fn answer_key(&self, scoped_id: &str) -> String {
        super::keys::answer_index_key("memory", scoped_id)
    }

    async fn claim_holder(&self, claim: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| s.entries.get(claim).map(|(v, _)| v.clone())))
    }

    async fn key_of_transaction(&self, transaction: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| {
            let key = s
                .transactions
                .get(&transaction.to_ascii_lowercase_if_hex())?
                .clone();
            s.entries.contains_key(&key).then_some(key)
        }))
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            if s.entries.contains_key(key) {
                return false;
            }
            s.entries
                .insert(key.to_string(), (holder.to_string(), Instant::now() + ttl));
            true
        }))
    }

    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.with(|s| {
            if s.entries.get(key).is_some_and(|(v, _)| v == holder) {
                s.entries.remove(key);
            }
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        claim: &str,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = self.unix_ms();
        Ok(self.with(|s| {
            let mut due: Vec<&mut Pending> =
                s.outbox.values_mut().filter(|p| p.due_ms <= now).collect();
            due.sort_by_key(|p| p.due_ms);
            due.into_iter()
                .take(limit.max(1))
                .map(|p| {
                    p.due_ms = now + lease.as_millis() as u64;
                    p.attempts += 1;
                    p.claim = claim.to_string();
                    ClaimedEvent {
                        event: p.event.clone(),
                        attempts: p.attempts,
                    }
                })
                .collect()
        }))
    }

    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        self.with(|s| s.outbox.remove(id));
        Ok(())
    }

    async fn retry(
        &self,
        id: &str,
        claim: &str,
        at_ms: u64,
        _error: &str,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            if let Some(p) = s.outbox.get_mut(id).filter(|p| p.claim == claim) {
                p.due_ms = at_ms;
            }
        });
        Ok(())
    }

    async fn dead_letter(&self, id: &str, claim: &str, _error: &str) -> Result<(), StoreError> {
        let now = self.unix_ms();
        self.with(|s| {
            if s.outbox.get(id).is_some_and(|p| p.claim == claim) {
                s.outbox.remove(id);
                s.dead.insert(id.to_string(), now);
            }
            let cutoff = now.saturating_sub(crate::outbox::DEAD_RETENTION.as_millis() as u64);
            s.dead.retain(|_, at| *at > cutoff);
        });
        Ok(())
    }

    async fn depth(&self) -> Result<OutboxDepth, StoreError> {
        Ok(self.with(|s| OutboxDepth {
            pending: s.outbox.len() as u64,
            dead: s.dead.len() as u64,
        }))
    }
}
