//! A scripted chain family for the engine's unit tests: no node, no Redis, no network.
//!
//! This is a fake of the [`ChainFamily`] trait (no real chain runs inside a unit test); the
//! real families are tested against anvil and a local Solana RPC in `tests/`. It models what
//! the engine relies on: sender nonces handed out from one shared counter, a mempool, blocks
//! mined when the test (or [`ChainFamily::wait_for_news`]) says so, an authorization that
//! transfers at most once (a second transaction using it reverts), and a nonce that is mined at
//! most once (its other transactions drop). Chain outcomes and send answers can be queued to
//! script faults. Every call of the family and of the store is a numbered step, so a test can
//! "crash" an engine at any await point ([`Steps`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use x402_proto::{PaymentRequest, Reason, SettleResponse};
use x402_verify::Invalid;

use crate::SettleError;
use crate::family::{ChainFamily, Identified, Identity, Lookup, Probe, Sent, Signed};
use crate::outbox::{ClaimedEvent, Outbox, OutboxDepth, OutboxEvent};
use crate::record::{Broadcast, Cost, PaymentFacts, SentTx, Settled, SettlementRecord};
use crate::replay::{Created, MemoryStore, ReplayStore, Standing, StoreError, Stored};

/// Where a crash hits a step: before its effect, or after its effect with the answer lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// The step never runs.
    Before,
    /// The step runs; its caller never sees the answer.
    After,
}

/// Numbers the await points of one engine instance and crashes it at one of them: the call
/// then never returns, and the test drops the engine's future (as a killed process would
/// stop).
#[derive(Default)]
pub struct Steps {
    count: AtomicUsize,
    crash: Option<(usize, CrashMode)>,
    names: Mutex<Vec<&'static str>>,
    crashed: tokio::sync::Notify,
    did_crash: std::sync::atomic::AtomicBool,
    delays: Mutex<HashMap<&'static str, Duration>>,
}

impl Steps {
    /// Crashes at step `k` (1-based).
    pub fn crash_at(k: usize, mode: CrashMode) -> Arc<Self> {
        Arc::new(Steps {
            crash: Some((k, mode)),
            ..Steps::default()
        })
    }

    /// Never crashes.
    pub fn none() -> Arc<Self> {
        Arc::new(Steps::default())
    }

    /// Delays the next step named `name` by `by` (a slow process: a pause, a slow node).
    pub fn delay(&self, name: &'static str, by: Duration) {
        self.delays.lock().unwrap().insert(name, by);
    }

    /// Runs `effect` as the next step. Every step first yields to the runtime, so that
    /// concurrent requests interleave at every await point.
    pub async fn run<T>(&self, name: &'static str, effect: impl Future<Output = T>) -> T {
        let k = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        self.names.lock().unwrap().push(name);
        tokio::task::yield_now().await;
        let delay = self.delays.lock().unwrap().remove(name);
        if let Some(by) = delay {
            tokio::time::sleep(by).await;
        }
        if self.crash == Some((k, CrashMode::Before)) {
            self.die().await;
        }
        let out = effect.await;
        if self.crash == Some((k, CrashMode::After)) {
            self.die().await;
        }
        out
    }

    async fn die(&self) {
        self.did_crash.store(true, Ordering::SeqCst);
        self.crashed.notify_one();
        std::future::pending::<()>().await
    }

    /// Resolves once the crash happened.
    pub async fn crashed(&self) {
        self.crashed.notified().await
    }

    /// Whether the crash happened.
    pub fn did_crash(&self) -> bool {
        self.did_crash.load(Ordering::SeqCst)
    }

    /// The names of the steps run so far.
    pub fn names(&self) -> Vec<&'static str> {
        self.names.lock().unwrap().clone()
    }
}

/// What a scripted `send` answers.
#[derive(Debug, Clone)]
pub enum SendScript {
    /// Accepted into the pool.
    Accept,
    /// Lost on the way: `Sent::Unknown`, the pool never sees it.
    Lose,
    /// Refused by the node (`Sent::Refused`), not pooled.
    Refuse,
    /// Refused: its nonce is used (`Sent::NonceUsed`).
    NonceUsed,
}

/// One transaction of the scripted chain.
#[derive(Debug, Clone)]
pub struct Tx {
    pub hash: String,
    pub payment: String,
    pub nonce: u64,
    pub fee: u64,
}

/// What a mined transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mined {
    Transferred,
    Reverted,
}

/// The shared chain state (one per test, shared by every engine instance).
#[derive(Default)]
pub struct ChainState {
    /// The shared sender nonce counter (as the Redis nonce store).
    pub next_nonce: u64,
    /// Nonces given back (never sent), handed out first.
    pub given_back: Vec<u64>,
    /// Every transaction signed, in order.
    pub signed: Vec<Tx>,
    /// Every send call (hash).
    pub sends: Vec<String>,
    /// The node's pool.
    pub pool: BTreeMap<String, Tx>,
    /// Mined transactions.
    pub mined: HashMap<String, Mined>,
    /// Mined nonces and the transaction that used each.
    pub nonce_used_by: HashMap<u64, String>,
    /// Authorizations used on chain: payment → transaction.
    pub authorization_used: HashMap<String, String>,
    /// Transfers per payment.
    pub transfers: HashMap<String, u32>,
    /// Queued send answers (default: accept).
    pub send_script: VecDeque<SendScript>,
    /// Queued lookup answers, taken before the model is consulted.
    pub lookup_script: VecDeque<Lookup>,
    /// Payments whose verification fails.
    pub invalid: HashSet<String>,
    /// Payments whose transaction reverts when mined (e.g. the payer moved the funds).
    pub reverts: HashSet<String>,
    /// Mine every transaction as soon as it is accepted.
    pub instant: bool,
    /// Mine nothing (blocks are full, or the fees offered are too low).
    pub stalled: bool,
    /// Restore a landed payment that has no record ([`ChainFamily::recover_lost`]).
    pub recovers_lost: bool,
    /// Signers currently held.
    pub held: usize,
    /// Token balances of payers (absent: unlimited). A transfer takes its amount; one the
    /// balance does not cover reverts.
    pub balances: HashMap<String, u128>,
    /// What each verified payment transfers: id → (payer, amount).
    pub payments: HashMap<String, (String, u128)>,
}

/// The scripted chain, shared by every engine instance of a test.
#[derive(Clone, Default)]
pub struct Chain(pub Arc<Mutex<ChainState>>);

impl Chain {
    /// Runs `f` on the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut ChainState) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// Mines every pooled transaction (one block).
    pub fn mine(&self) {
        self.with(|s| {
            if s.stalled {
                return;
            }
            let pooled: Vec<Tx> = s.pool.values().cloned().collect();
            for tx in pooled {
                s.mine_tx(&tx);
            }
        })
    }

    /// Transfers of `payment` on chain.
    pub fn transfers(&self, payment: &str) -> u32 {
        self.with(|s| s.transfers.get(payment).copied().unwrap_or(0))
    }

    /// Checks that no sender nonce was given to two payments, and that no payment transferred
    /// twice.
    pub fn assert_invariants(&self) {
        self.with(|s| {
            let mut owners: HashMap<u64, HashSet<&str>> = HashMap::new();
            for tx in &s.signed {
                owners.entry(tx.nonce).or_default().insert(&tx.payment);
            }
            for (nonce, payments) in owners {
                assert!(
                    payments.len() <= 1,
                    "nonce {nonce} was signed for several payments: {payments:?}"
                );
            }
            for (payment, n) in &s.transfers {
                assert!(*n <= 1, "payment {payment} transferred {n} times");
            }
        })
    }
}

impl ChainState {
    fn mine_tx(&mut self, tx: &Tx) {
        self.pool.remove(&tx.hash);
        if self.nonce_used_by.contains_key(&tx.nonce) {
            return; // its nonce is used: it can never be mined
        }
        self.nonce_used_by.insert(tx.nonce, tx.hash.clone());
        // The transactions sharing its nonce drop.
        self.pool.retain(|_, other| other.nonce != tx.nonce);
        let (payer, amount) = self.payments.get(&tx.payment).cloned().unwrap_or_default();
        let uncovered = self.balances.get(&payer).is_some_and(|b| *b < amount);
        let outcome = if self.authorization_used.contains_key(&tx.payment)
            || self.reverts.contains(&tx.payment)
            || uncovered
        {
            Mined::Reverted
        } else {
            if let Some(b) = self.balances.get_mut(&payer) {
                *b -= amount;
            }
            self.authorization_used
                .insert(tx.payment.clone(), tx.hash.clone());
            *self.transfers.entry(tx.payment.clone()).or_default() += 1;
            Mined::Transferred
        };
        self.mined.insert(tx.hash.clone(), outcome);
    }

    fn sign(&mut self, payment: &str, nonce: Option<u64>, fee: u64) -> Tx {
        let nonce = nonce.unwrap_or_else(|| {
            self.given_back.pop().unwrap_or_else(|| {
                self.next_nonce += 1;
                self.next_nonce - 1
            })
        });
        let tx = Tx {
            hash: format!("0x{payment}-n{nonce}-f{fee}"),
            payment: payment.to_string(),
            nonce,
            fee,
        };
        self.signed.push(tx.clone());
        tx
    }
}

/// A verified scripted payment.
pub struct Payment {
    id: String,
    payer: String,
    /// Atomic units; 0 settles with nothing to send (as `upto` charging 0).
    amount: u128,
}

impl ChainState {
    /// Reverted transactions mined so far.
    pub fn reverted(&self) -> usize {
        self.mined
            .values()
            .filter(|m| **m == Mined::Reverted)
            .count()
    }
}

/// A held scripted signer (counted while held).
pub struct Held(Chain);

/// The scripted family of one engine instance.
pub struct Family {
    pub chain: Chain,
    pub steps: Arc<Steps>,
}

/// The replay key prefix of scripted payments.
pub const KEY_SPACE: &str = "t:replay:test:";

/// The payment id of a scripted request.
fn payment_id(req: &PaymentRequest) -> Result<String, SettleError> {
    req.scheme_payload()
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| x402_proto::ParseError::new("paymentPayload.payload.id", "missing").into())
}

/// A scripted `/settle` request for payment `id` of `amount`, valid until `valid_before`.
pub fn request(id: &str, amount: &str, valid_before: u64) -> PaymentRequest {
    PaymentRequest::from_value(request_body(id, amount, valid_before))
        .expect("a scripted request parses")
}

fn request_body(id: &str, amount: &str, valid_before: u64) -> serde_json::Value {
    let requirements = serde_json::json!({
        "scheme": "exact", "network": "eip155:8453", "amount": amount,
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"}});
    serde_json::json!({"x402Version": 2,
        "paymentPayload": {"x402Version": 2, "accepted": requirements,
            "payload": {"id": id, "payer": format!("0xPAYER{id}"), "validBefore": valid_before}},
        "paymentRequirements": requirements})
}

/// A scripted `/settle` request for payment `id` of `amount` by `payer` (several payments may
/// share a payer, and with it a balance: [`ChainState::balances`]).
pub fn request_from(id: &str, payer: &str, amount: &str, valid_before: u64) -> PaymentRequest {
    let mut body = request_body(id, amount, valid_before);
    body["paymentPayload"]["payload"]["payer"] = payer.into();
    PaymentRequest::from_value(body).expect("a scripted request parses")
}

/// The payer a scripted request names.
fn payer_of_request(req: &PaymentRequest, id: &str) -> String {
    req.scheme_payload()
        .get("payer")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("0xPAYER{id}"))
}

/// The replay key of scripted payment `id`.
pub fn key_of(id: &str) -> String {
    format!("{KEY_SPACE}{id}")
}

fn tx_of(sent: &SentTx) -> (String, u64) {
    match sent {
        SentTx::Evm {
            transaction, nonce, ..
        } => (transaction.clone(), *nonce),
        SentTx::Svm { transaction, .. } => (transaction.clone(), 0),
    }
}

fn sent_tx(tx: &Tx) -> SentTx {
    SentTx::Evm {
        transaction: tx.hash.clone(),
        raw: tx.hash.clone(),
        signer: "0xSIGNER".into(),
        nonce: tx.nonce,
        max_fee_per_gas: tx.fee.to_string(),
        max_priority_fee_per_gas: "0".into(),
    }
}

#[async_trait]
impl ChainFamily for Family {
    type Payment = Payment;
    type Signer = Held;

    fn key_space(&self) -> String {
        KEY_SPACE.into()
    }

    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError> {
        self.steps
            .run("identify", async {
                let id = payment_id(req)?;
                let valid_before = req
                    .scheme_payload()
                    .get("validBefore")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(u64::MAX);
                Ok(Identified::Payment(Box::new(Identity {
                    key: key_of(&id),
                    facts: PaymentFacts {
                        binding: format!("{id}|{}|{}", req.amount(), req.pay_to()),
                        network: "eip155:8453".into(),
                        payer: String::new(),
                        amount: req.amount().to_string(),
                        asset: req.asset().to_string(),
                        pay_to: req.pay_to().to_string(),
                        created_at: now,
                        valid_until: valid_before,
                        key: None,
                        answer_keys: vec![],
                        kind: None,
                    },
                    ttl_seconds: 3_600,
                    claims: vec![],
                })))
            })
            .await
    }

    async fn verify(
        &self,
        req: &PaymentRequest,
        _now: u64,
    ) -> Result<Result<Payment, Invalid>, SettleError> {
        self.steps
            .run("verify", async {
                let id = payment_id(req)?;
                let payer = payer_of_request(req, &id);
                let amount: u128 = req.amount().parse().unwrap_or(u128::MAX);
                let invalid = |reason: Reason| {
                    Err(Invalid {
                        reason,
                        message: Some("scripted".into()),
                        payer: Some(payer.clone()),
                    })
                };
                Ok(self.chain.with(|s| {
                    // The simulation at the latest block: the balance covers this payment.
                    let uncovered = s.balances.get(&payer).is_some_and(|b| *b < amount);
                    if s.invalid.contains(&id) || uncovered {
                        invalid(Reason::EvmInsufficientBalance)
                    } else if s.authorization_used.contains_key(&id) {
                        invalid(Reason::EvmNonceAlreadyUsed)
                    } else {
                        s.payments.insert(id.clone(), (payer.clone(), amount));
                        Ok(Payment {
                            id: id.clone(),
                            payer: payer.clone(),
                            amount,
                        })
                    }
                }))
            })
            .await
    }

    async fn recover_lost(
        &self,
        req: &PaymentRequest,
        id: &Identity,
        _invalid: &Invalid,
        now: u64,
    ) -> Option<SettlementRecord> {
        self.steps
            .run("recover_lost", async {
                let payment = payment_id(req).ok()?;
                let transaction = self.chain.with(|s| {
                    s.recovers_lost
                        .then(|| s.authorization_used.get(&payment).cloned())
                        .flatten()
                })?;
                Some(SettlementRecord::Delivered(Settled {
                    payment: id.facts.clone(),
                    transaction,
                    cost: Cost::default(),
                    settled_at: now,
                    preconfirmed: None,
                }))
            })
            .await
    }

    async fn ready_to_settle(&self, _payment: &Payment) -> Result<(), SettleError> {
        self.steps.run("ready_to_settle", async { Ok(()) }).await
    }

    fn payer_of(&self, payment: &Payment) -> String {
        payment.payer.clone()
    }

    async fn check_funds(
        &self,
        payment: &Payment,
        amount: u128,
        in_flight: u128,
    ) -> Result<Option<Invalid>, SettleError> {
        self.steps
            .run("check_funds", async {
                let balance = self.chain.with(|s| s.balances.get(&payment.payer).copied());
                Ok(balance
                    .filter(|b| *b < amount.saturating_add(in_flight))
                    .map(|b| {
                        Invalid::new(
                            Reason::EvmInsufficientBalance,
                            format!("balance {b} < {amount} + {in_flight} in flight"),
                            Some(payment.payer.clone()),
                        )
                    }))
            })
            .await
    }

    async fn acquire_signer(&self, _payment: &Payment) -> Result<Held, SettleError> {
        self.steps
            .run("acquire_signer", async {
                self.chain.with(|s| s.held += 1);
                Ok(Held(self.chain.clone()))
            })
            .await
    }

    async fn release_signer(&self, signer: Held) {
        self.steps
            .run("release_signer", async {
                signer.0.with(|s| s.held -= 1);
            })
            .await
    }

    async fn sign(
        &self,
        _signer: &Held,
        _key: &str,
        _req: &PaymentRequest,
        payment: &Payment,
    ) -> Result<Signed, SettleError> {
        self.steps
            .run("sign", async {
                if payment.amount == 0 {
                    return Ok(Signed::Nothing);
                }
                let tx = self.chain.with(|s| s.sign(&payment.id, None, 1));
                Ok(Signed::Tx(sent_tx(&tx)))
            })
            .await
    }

    async fn discard(&self, sent: &SentTx) {
        self.steps
            .run("discard", async {
                let (_, nonce) = tx_of(sent);
                self.chain.with(|s| s.given_back.push(nonce));
            })
            .await
    }

    async fn send(&self, sent: &SentTx) -> Sent {
        self.steps
            .run("send", async {
                let (hash, _) = tx_of(sent);
                self.chain.with(|s| {
                    s.sends.push(hash.clone());
                    let tx = s.signed.iter().find(|t| t.hash == hash).cloned();
                    let Some(tx) = tx else {
                        return Sent::Refused("unknown transaction".into());
                    };
                    if s.mined.contains_key(&hash) {
                        return Sent::Accepted; // already known
                    }
                    if s.nonce_used_by.contains_key(&tx.nonce) {
                        return Sent::NonceUsed("nonce too low".into());
                    }
                    match s.send_script.pop_front().unwrap_or(SendScript::Accept) {
                        SendScript::Accept => {
                            // A higher fee at the same nonce replaces what the pool holds.
                            if s.pool
                                .values()
                                .any(|o| o.nonce == tx.nonce && o.fee > tx.fee)
                            {
                                return Sent::Refused("replacement underpriced".into());
                            }
                            s.pool.retain(|_, o| o.nonce != tx.nonce);
                            s.pool.insert(hash, tx.clone());
                            if s.instant {
                                s.mine_tx(&tx);
                            }
                            Sent::Accepted
                        }
                        SendScript::Lose => Sent::Unknown("connection reset".into()),
                        SendScript::Refuse => Sent::Refused("underpriced".into()),
                        SendScript::NonceUsed => Sent::NonceUsed("nonce too low".into()),
                    }
                })
            })
            .await
    }

    async fn replacement(
        &self,
        _key: &str,
        broadcast: &Broadcast,
    ) -> Result<Option<SentTx>, SettleError> {
        self.steps
            .run("replacement", async {
                let (hash, nonce) = tx_of(&broadcast.sent);
                Ok(self.chain.with(|s| {
                    let tx = s.signed.iter().find(|t| t.hash == hash).cloned()?;
                    let used = s.nonce_used_by.get(&nonce).cloned();
                    let ours = std::iter::once(&broadcast.sent)
                        .chain(&broadcast.replaced)
                        .any(|t| Some(t.transaction()) == used.as_deref());
                    if ours {
                        return None; // one of ours landed: the next lookup sees it
                    }
                    let next = match used {
                        // Used by another transaction: a new nonce.
                        Some(_) => s.sign(&tx.payment, None, tx.fee + 1),
                        None => s.sign(&tx.payment, Some(nonce), tx.fee + 1),
                    };
                    Some(sent_tx(&next))
                }))
            })
            .await
    }

    async fn lookup(
        &self,
        broadcast: &Broadcast,
        probe: Probe,
        now: u64,
    ) -> Result<Lookup, SettleError> {
        self.steps
            .run("lookup", async {
                Ok(self.chain.with(|s| {
                    if let Some(scripted) = s.lookup_script.pop_front() {
                        return scripted;
                    }
                    let sent: Vec<String> = std::iter::once(&broadcast.sent)
                        .chain(&broadcast.replaced)
                        .map(|t| t.transaction().to_string())
                        .collect();
                    for hash in &sent {
                        match s.mined.get(hash) {
                            Some(Mined::Transferred) => {
                                return Lookup::Landed {
                                    transaction: hash.clone(),
                                    cost: Cost::default(),
                                };
                            }
                            Some(Mined::Reverted) => {
                                return Lookup::Failed {
                                    transaction: hash.clone(),
                                    reason: Reason::EvmTransactionFailed,
                                    message: "reverted".into(),
                                    cost: Cost::default(),
                                };
                            }
                            None => {}
                        }
                    }
                    if probe == Probe::LandedOnly {
                        return Lookup::NotYet { known: true };
                    }
                    let known = sent.iter().any(|h| s.pool.contains_key(h));
                    let payment = &broadcast.payment;
                    if !known
                        && now > payment.valid_until
                        && !s.authorization_used.contains_key(&tx_payment(s, &sent))
                    {
                        return Lookup::Expired {
                            message: "validBefore passed".into(),
                        };
                    }
                    Lookup::NotYet { known }
                }))
            })
            .await
    }

    async fn wait_for_news(&self, _mark: u64, max: Duration) {
        self.steps
            .run("wait_for_news", async {
                tokio::time::sleep(max).await;
                self.chain.mine();
            })
            .await
    }

    fn transaction_failed(&self, _broadcast: &Broadcast) -> Reason {
        Reason::EvmTransactionFailed
    }

    fn conflict_reason(&self) -> Reason {
        Reason::EvmNonceAlreadyUsed
    }

    fn blocked_payer(&self) -> Reason {
        Reason::EvmSimulationFailed
    }
}

fn tx_payment(s: &ChainState, sent: &[String]) -> String {
    sent.iter()
        .find_map(|h| s.signed.iter().find(|t| &t.hash == h))
        .map(|t| t.payment.clone())
        .unwrap_or_default()
}

/// The in-memory store behind numbered steps.
pub struct StepStore {
    pub inner: Arc<MemoryStore>,
    pub steps: Arc<Steps>,
}

#[async_trait]
impl Outbox for StepStore {
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        claim: &str,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        self.inner.claim(limit, lease, claim).await
    }
    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        self.inner.complete(id).await
    }
    async fn retry(
        &self,
        id: &str,
        claim: &str,
        at_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.inner.retry(id, claim, at_ms, error).await
    }
    async fn dead_letter(&self, id: &str, claim: &str, error: &str) -> Result<(), StoreError> {
        self.inner.dead_letter(id, claim, error).await
    }
    async fn depth(&self) -> Result<OutboxDepth, StoreError> {
        self.inner.depth().await
    }
}

#[async_trait]
impl ReplayStore for StepStore {
    async fn create(
        &self,
        key: &str,
        record: &SettlementRecord,
        ttl: Duration,
        claims: &[String],
    ) -> Result<Created, StoreError> {
        self.steps
            .run("store.create", self.inner.create(key, record, ttl, claims))
            .await
    }
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        self.steps.run("store.get", self.inner.get(key)).await
    }
    async fn swap_emitting(
        &self,
        key: &str,
        expected: &str,
        next: &SettlementRecord,
        event: Option<&OutboxEvent>,
    ) -> Result<Option<String>, StoreError> {
        let name = match next {
            SettlementRecord::Reserved(_) => "store.swap(reserved)",
            SettlementRecord::Broadcast(_) => "store.swap(broadcast)",
            SettlementRecord::Confirmed(_) => "store.swap(confirmed)",
            SettlementRecord::Delivered(_) => "store.swap(delivered)",
            SettlementRecord::Failed(_) => "store.swap(failed)",
            SettlementRecord::Expired(_) => "store.swap(expired)",
        };
        self.steps
            .run(name, self.inner.swap_emitting(key, expected, next, event))
            .await
    }
    async fn remove(
        &self,
        key: &str,
        expected: &str,
        claims: &[String],
    ) -> Result<bool, StoreError> {
        self.steps
            .run("store.remove", self.inner.remove(key, expected, claims))
            .await
    }
    async fn standing(&self, key: &str, payment: &PaymentFacts) -> Result<Standing, StoreError> {
        self.steps
            .run("store.standing", self.inner.standing(key, payment))
            .await
    }
    async fn payer_reverted(
        &self,
        payment: &PaymentFacts,
        limit: u32,
        window: Duration,
        block: Duration,
    ) -> Result<bool, StoreError> {
        self.inner
            .payer_reverted(payment, limit, window, block)
            .await
    }
    async fn open_keys(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.open_keys(limit).await
    }
    async fn forget_open(&self, key: &str) -> Result<(), StoreError> {
        self.inner.forget_open(key).await
    }
    async fn key_of_transaction(&self, transaction: &str) -> Result<Option<String>, StoreError> {
        self.inner.key_of_transaction(transaction).await
    }
    fn answer_key(&self, scoped_id: &str) -> String {
        self.inner.answer_key(scoped_id)
    }
    async fn claim_holder(&self, claim: &str) -> Result<Option<String>, StoreError> {
        self.steps
            .run("store.claim_holder", self.inner.claim_holder(claim))
            .await
    }
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.try_lease(key, holder, ttl).await
    }
    async fn end_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.end_lease(key, holder).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Whether `answer` is a success.
pub fn is_success(answer: &SettleResponse) -> bool {
    answer.success
}

/// The reason of a failure answer (`""` for a success).
pub fn reason(answer: &SettleResponse) -> &str {
    answer.error_reason.as_deref().unwrap_or("")
}
