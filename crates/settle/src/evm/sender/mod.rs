//! The EVM sender of one chain, shared by every EVM payment kind settled there (x402-reference
//! §7; one sender per chain: two payment kinds never run two nonce layers over one signer).
//!
//! It owns what is about the facilitator's own transactions, never about a payment:
//! - signer slots (at most `max_in_flight` settlements per signer between taking the signer and
//!   sending; none free within the signer wait → 503 before anything is reserved) and the
//!   signers' native balance floor;
//! - sender nonces (one Redis round trip, [`crate::nonces`]) and nonce repair ([`super::gaps`]);
//! - the fee cache ([`super::fees`]) and learnt gas limits ([`super::gas_limits`], per transfer
//!   method and asset);
//! - the settlement-time simulation of a call (`eth_call` under a learnt limit, else
//!   `eth_estimateGas`), signing at a fresh nonce, sending, re-sending and EIP-1559 replacement;
//! - the receipt poller ([`super::receipts`]): one per chain, whatever the kinds.
//!
//! What a payment is (its replay key, checks, call, landing and expiry) is its transfer
//! method's ([`super::methods`]); [`super::EvmFamily`] puts one method on the shared sender.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alloy::consensus::{Transaction as _, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use x402_chain::{ChainError, EvmChain, GAS_LIMIT_HEADROOM_PERCENT};

use super::{
    GasObserver, GasPricer, GasSampler, NonceLagObserver, fees, gaps, gas_limits, receipts,
};
use crate::SettleError;
use crate::SettleEvents;
use crate::clock::Clock;
use crate::family::Sent;
use crate::nonces::NonceStore;
use crate::record::{Broadcast, Cost, GasPaid, PaymentFacts, SentTx};
use crate::replay::ReplayStore;

/// Default gas cap of a contract-signature settlement before the method's ECDSA limit for the
/// asset is learnt, gas units.
pub const DEFAULT_CONTRACT_SIGNATURE_GAS_CAP: u64 = 300_000;

/// How many ECDSA settlement limits of the asset a contract-signature settlement may use by
/// default.
pub const CONTRACT_SIGNATURE_GAS_CAP_MULTIPLE: u64 = 3;

/// The signers' balance floor and the balances last read.
#[derive(Default)]
struct SignerFloor {
    /// Wei; zero disables the floor.
    min_wei: U256,
    max_age: Duration,
    seen: std::sync::Mutex<std::collections::HashMap<Address, (U256, tokio::time::Instant)>>,
    /// One balance read at a time: a burst of settlements waits for it instead of each asking.
    reading: tokio::sync::Mutex<()>,
}

/// A signer's nonces after [`EvmSender::sync_nonce`].
pub(crate) struct SyncedNonce {
    /// `eth_getTransactionCount(latest)`.
    pub(crate) mined: u64,
    /// `eth_getTransactionCount(pending)`, at least `mined`.
    pub(crate) pending: u64,
    /// The shared counter: the next nonce never handed out.
    pub(crate) next: u64,
}

/// A held signer slot: the address settlements sign with, and its in-flight slot (given back
/// when dropped).
pub struct Held {
    pub(crate) signer: Address,
    _slot: OwnedSemaphorePermit,
}

impl Held {
    /// The signer's address.
    pub fn signer(&self) -> Address {
        self.signer
    }
}

/// The one EVM sender of a chain (see the module docs).
pub struct EvmSender {
    chain: Arc<dyn EvmChain>,
    pub(crate) store: Arc<dyn ReplayStore>,
    pub(crate) nonces: Arc<dyn NonceStore>,
    key_prefix: String,
    pub(crate) signers: Vec<(Address, Arc<Semaphore>)>,
    next_signer: AtomicUsize,
    signer_wait: Duration,
    floor: SignerFloor,
    pub(crate) fees: Arc<fees::FeeCache>,
    gas_limits: gas_limits::GasLimits,
    receipts: OnceLock<receipts::ReceiptWatcher>,
    receipt_poll: Duration,
    pub(crate) gaps: gaps::GapRepair,
    gas_observer: Option<GasObserver>,
    gas_sampler: Option<GasSampler>,
    gas_pricer: Option<GasPricer>,
    pub(crate) nonce_lag_observer: Option<NonceLagObserver>,
    pub(crate) events: SettleEvents,
    pub(crate) clock: Clock,
    /// Gas cap of a contract-signature settlement per asset, gas units.
    contract_gas_caps: std::collections::HashMap<Address, u64>,
    /// Set once a family took the periodic repair (one repair per sender, not per kind).
    maintainer_taken: AtomicBool,
    /// WebSocket endpoint whose `newHeads` wake the receipt poller, and the time limit of
    /// opening its subscription.
    heads: Option<(String, Duration)>,
    /// Flashblock pre-confirmations, when enabled ([`super::preconfirm`]).
    preconfirmations: Option<super::preconfirm::Preconfirmations>,
}

/// What [`EvmSender::simulate`] found: the call ready to sign (fees and gas limit set), or
/// the chain's answer.
pub type Simulated = Result<TransactionRequest, ChainError>;

impl EvmSender {
    /// The sender of `chain`, recording under `key_prefix` in `store` and taking sender nonces
    /// from `nonces` (shared by every replica that shares the signing keys). At most
    /// `max_in_flight` settlements per signer are between taking the signer and sending; one
    /// that finds no slot within `signer_wait` is refused (503) before anything is reserved.
    pub fn new(
        chain: Arc<dyn EvmChain>,
        store: Arc<dyn ReplayStore>,
        nonces: Arc<dyn NonceStore>,
        key_prefix: impl Into<String>,
        signer_wait: Duration,
        max_in_flight: usize,
    ) -> Self {
        let signers = chain
            .signers()
            .iter()
            .map(|a| (*a, Arc::new(Semaphore::new(max_in_flight.max(1)))))
            .collect();
        let fees = fees::FeeCache::new(
            chain.clone(),
            Duration::from_secs(2),
            Duration::from_secs(30),
        );
        EvmSender {
            chain,
            store,
            nonces,
            key_prefix: key_prefix.into(),
            signers,
            next_signer: AtomicUsize::new(0),
            signer_wait,
            floor: SignerFloor::default(),
            fees,
            gas_limits: gas_limits::GasLimits::default(),
            receipts: OnceLock::new(),
            receipt_poll: Duration::from_millis(200),
            gaps: gaps::GapRepair::new(Duration::from_secs(10)),
            gas_observer: None,
            gas_sampler: None,
            gas_pricer: None,
            nonce_lag_observer: None,
            events: SettleEvents::default(),
            clock: Clock::system(),
            contract_gas_caps: std::collections::HashMap::new(),
            maintainer_taken: AtomicBool::new(false),
            heads: None,
            preconfirmations: None,
        }
    }

    /// Answers success at flashblock pre-confirmations ([`super::preconfirm`]): a request
    /// waiting for its transaction asks `chain` (a flashblocks-aware RPC) every `poll` for a
    /// receipt of it.
    pub fn with_preconfirmations(mut self, chain: Arc<dyn EvmChain>, poll: Duration) -> Self {
        self.preconfirmations = Some(super::preconfirm::Preconfirmations::new(chain, poll));
        self
    }

    /// The pre-confirmation source, when enabled.
    pub fn preconfirmations(&self) -> Option<&super::preconfirm::Preconfirmations> {
        self.preconfirmations.as_ref()
    }

    /// Wakes the receipt poller on every head the node at `ws_url` pushes
    /// (`eth_subscribe("newHeads")`, see [`receipts`]); opening the subscription gives up after
    /// `timeout` and is tried again. Without it the poller paces itself on the learnt block time.
    pub fn with_new_heads(mut self, ws_url: String, timeout: Duration) -> Self {
        self.heads = Some((ws_url, timeout));
        self
    }

    /// Reads new blocks' receipts every `interval` (default 200 ms; about a quarter of the
    /// block time is plenty).
    pub fn with_receipt_poll(mut self, interval: Duration) -> Self {
        self.receipt_poll = interval;
        self
    }

    /// Fills a nonce the node is missing after it has been missing for `after` (default 10 s):
    /// see [`gaps`].
    pub fn with_gap_fill_after(mut self, after: Duration) -> Self {
        self.gaps = gaps::GapRepair::new(after);
        self
    }

    /// Bounds the settlement gas of contract-wallet (ERC-1271 / ERC-6492) payments, whose cost
    /// depends on code the payer controls: `caps` per asset, gas units; an asset not listed gets
    /// [`CONTRACT_SIGNATURE_GAS_CAP_MULTIPLE`] × the method's learnt ECDSA limit for it, or
    /// [`DEFAULT_CONTRACT_SIGNATURE_GAS_CAP`] before one is learnt.
    pub fn with_contract_signature_gas_caps(
        mut self,
        caps: std::collections::HashMap<Address, u64>,
    ) -> Self {
        self.contract_gas_caps = caps;
        self
    }

    /// Reads wall time (`validBefore`, leases, what the receipt poller covers) from `clock`
    /// (default: the system clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reports each signer's nonce lag (handed out, not mined) after every repair look.
    pub fn with_nonce_lag_observer(mut self, observer: NonceLagObserver) -> Self {
        self.nonce_lag_observer = Some(observer);
        self
    }

    /// Signers whose native balance is below `min_wei` take no new settlements; when all are,
    /// `/settle` answers 503 before reserving. Balances are re-read at most every `max_age`.
    pub fn with_signer_floor(mut self, min_wei: U256, max_age: Duration) -> Self {
        self.floor = SignerFloor {
            min_wei,
            max_age,
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            reading: tokio::sync::Mutex::new(()),
        };
        self
    }

    /// Prices every mined settlement's fee in USDC into its record.
    pub fn with_gas_pricer(mut self, pricer: GasPricer) -> Self {
        self.gas_pricer = Some(pricer);
        self
    }

    /// Reports the asset, settlement call and `gasUsed` of every landed settlement to
    /// `sampler`.
    pub fn with_gas_sampler(mut self, sampler: GasSampler) -> Self {
        self.gas_sampler = Some(sampler);
        self
    }

    /// Reports the gas of every mined settlement to `observer` (metrics, accounting).
    pub fn with_gas_observer(mut self, observer: GasObserver) -> Self {
        self.gas_observer = Some(observer);
        self
    }

    /// Reports resends and nonce gap fills to `events` (the engine's event sink).
    pub fn with_events(mut self, events: SettleEvents) -> Self {
        self.events = events;
        self
    }

    /// The chain this sender signs for.
    pub fn chain(&self) -> &Arc<dyn EvmChain> {
        &self.chain
    }

    /// EIP-155 chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain.chain_id()
    }

    /// The replay store's key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The signers' addresses, in configuration order.
    pub fn signer_addresses(&self) -> Vec<Address> {
        self.signers.iter().map(|(a, _)| *a).collect()
    }

    /// The wall clock this sender reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether the caller is the first to ask: the first family built on this sender runs its
    /// periodic repair, the others do not (one nonce repair per sender).
    pub(crate) fn take_maintenance(&self) -> bool {
        !self.maintainer_taken.swap(true, Ordering::SeqCst)
    }

    /// Starts the receipt poller now (when there is a runtime to run it): it covers
    /// transactions sent after it started.
    pub fn start(&self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.receipts();
        }
    }

    /// The network's receipt poller (started by the first use).
    pub(crate) fn receipts(&self) -> &receipts::ReceiptWatcher {
        self.receipts.get_or_init(|| {
            let signers = self.signer_addresses();
            let watcher = receipts::ReceiptWatcher::spawn_with_clock(
                self.chain.clone(),
                &signers,
                self.receipt_poll,
                (self.receipt_poll * 10).max(Duration::from_secs(5)),
                self.clock.clone(),
            );
            if let Some((url, timeout)) = &self.heads {
                watcher.follow_heads(url.clone(), *timeout);
            }
            watcher
        })
    }

    /// Whether `signer` is at or above the balance floor (an unreadable balance counts as
    /// funded: signing then fails on its own if the RPC is down).
    async fn funded(&self, signer: Address) -> bool {
        if self.floor.min_wei.is_zero() {
            return true;
        }
        let cached = || {
            let seen = self.floor.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get(&signer)
                .filter(|(_, at)| at.elapsed() < self.floor.max_age)
                .map(|(wei, _)| *wei)
        };
        let mut known = cached();
        let _reading = if known.is_none() {
            let guard = self.floor.reading.lock().await;
            // Another request may have read it meanwhile.
            known = cached();
            Some(guard)
        } else {
            None
        };
        let wei = match known {
            Some(wei) => wei,
            None => match self.chain.balance(signer).await {
                Ok(wei) => {
                    self.floor
                        .seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(signer, (wei, tokio::time::Instant::now()));
                    wei
                }
                Err(_) => return true,
            },
        };
        if wei < self.floor.min_wei {
            tracing::warn!(signer = %signer, balance_wei = %wei, floor_wei = %self.floor.min_wei, "signer below the balance floor takes no settlements");
        }
        wei >= self.floor.min_wei
    }

    /// Ok when at least one signer is above the balance floor; else
    /// [`SettleError::NoFundedSigner`] (a 503 before anything is reserved).
    pub async fn ready(&self) -> Result<(), SettleError> {
        for (addr, _) in &self.signers {
            if self.funded(*addr).await {
                return Ok(());
            }
        }
        Err(SettleError::NoFundedSigner(format!(
            "every signer on eip155:{} is below {} wei",
            self.chain_id(),
            self.floor.min_wei
        )))
    }

    /// A slot of signer `signer` (a payment that names its sender: `upto`'s
    /// `witness.facilitator`) within the wait. Errors: [`SettleError::NoFundedSigner`] when it
    /// is not one of this chain's signers or is below the balance floor,
    /// [`SettleError::SignerBusy`].
    pub async fn take_slot_of(&self, signer: Address) -> Result<Held, SettleError> {
        let Some((_, slots)) = self.signers.iter().find(|(a, _)| *a == signer) else {
            return Err(SettleError::NoFundedSigner(format!(
                "{signer} is not a signer on eip155:{}",
                self.chain_id()
            )));
        };
        if !self.funded(signer).await {
            return Err(SettleError::NoFundedSigner(format!(
                "signer {signer} is below the balance floor of {} wei",
                self.floor.min_wei
            )));
        }
        match tokio::time::timeout(self.signer_wait, slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Held {
                signer,
                _slot: slot,
            }),
            _ => Err(SettleError::SignerBusy(format!(
                "no slot of signer {signer} free within {:?}",
                self.signer_wait
            ))),
        }
    }

    /// A free slot of a funded signer now, else one of the next in round-robin order within
    /// the wait. Errors: [`SettleError::NoFundedSigner`], [`SettleError::SignerBusy`].
    pub async fn take_slot(&self) -> Result<Held, SettleError> {
        let mut funded = Vec::with_capacity(self.signers.len());
        for (addr, slots) in &self.signers {
            if self.funded(*addr).await {
                funded.push((*addr, slots));
            }
        }
        let n = funded.len();
        if n == 0 {
            return Err(SettleError::NoFundedSigner(
                "every signer is below the balance floor".into(),
            ));
        }
        let start = self.next_signer.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let (addr, slots) = &funded[(start + k) % n];
            if let Ok(slot) = (*slots).clone().try_acquire_owned() {
                return Ok(Held {
                    signer: *addr,
                    _slot: slot,
                });
            }
        }
        let (addr, slots) = &funded[start % n];
        match tokio::time::timeout(self.signer_wait, (*slots).clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Held {
                signer: *addr,
                _slot: slot,
            }),
            _ => Err(SettleError::SignerBusy(format!(
                "no signer slot free within {:?}",
                self.signer_wait
            ))),
        }
    }

    /// The settlement-time simulation of `call` (from the held signer, `to` and calldata set)
    /// for transfer method `method` and `asset`: fees from the cache are set on it (code that
    /// answers differently when `tx.gasprice` is 0 must not pass the simulation and revert at
    /// our cost). An `ecdsa` payment whose gas is known for `(method, asset)` runs one
    /// `eth_call` under that limit; any other runs `eth_estimateGas`, whose gas (plus
    /// headroom) is its limit; the first estimate of a `(method, asset)` runs alone. A
    /// contract-signature payment above its gas cap is refused with `Ok(Err(message))`.
    pub async fn simulate(
        &self,
        mut call: TransactionRequest,
        method: &'static str,
        asset: Address,
        ecdsa: bool,
    ) -> Result<Result<TransactionRequest, String>, ChainError> {
        if let Ok(fees) = self.fees.current().await {
            call = call
                .max_fee_per_gas(fees.max_fee_per_gas)
                .max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        }
        let key = (method, asset);
        let mut cached = ecdsa.then(|| self.gas_limits.get(key)).flatten();
        let mut learning = None;
        if ecdsa && cached.is_none() {
            let guard = self.gas_limits.learning.lock().await;
            cached = self.gas_limits.get(key);
            if cached.is_none() {
                learning = Some(guard);
            }
        }
        let simulated = match cached {
            Some(limit) => self
                .chain
                .call(&call.clone().gas_limit(limit))
                .await
                .map(|_| limit),
            None => self.chain.estimate_gas(&call).await.map(|gas| {
                if ecdsa {
                    self.gas_limits.learn(key, gas);
                }
                gas + gas * GAS_LIMIT_HEADROOM_PERCENT / 100
            }),
        };
        drop(learning);
        let gas_limit = simulated?;
        if !ecdsa {
            // A contract wallet's code decides the gas: bounded by the asset's cap.
            let cap = self
                .contract_gas_caps
                .get(&asset)
                .copied()
                .or_else(|| {
                    self.gas_limits
                        .get(key)
                        .map(|limit| limit * CONTRACT_SIGNATURE_GAS_CAP_MULTIPLE)
                })
                .unwrap_or(DEFAULT_CONTRACT_SIGNATURE_GAS_CAP);
            if gas_limit > cap {
                tracing::warn!(%asset, method, gas_limit, cap, "contract-signature settlement above the gas cap refused");
                return Ok(Err(format!(
                    "the settlement of this contract-wallet payment needs {gas_limit} gas, \
                     above this facilitator's cap of {cap}"
                )));
            }
        }
        Ok(Ok(call.gas_limit(gas_limit)))
    }

    /// The next sender nonce of `signer` for the settlement under `key`: from the shared
    /// counter, set from the chain first if it is not yet.
    async fn next_nonce(&self, signer: Address, key: &str) -> Result<u64, SettleError> {
        let chain_id = self.chain_id();
        if let Some(n) = self.nonces.allocate(chain_id, signer, key).await? {
            return Ok(n);
        }
        self.sync_nonce(signer).await?;
        self.nonces
            .allocate(chain_id, signer, key)
            .await?
            .ok_or_else(|| SettleError::StoreUnavailable("nonce counter vanished".into()))
    }

    /// Raises `signer`'s counter to the node's pending nonce (at start and after a nonce error).
    /// Returns the chain's mined count, the node's pending nonce (at least the mined count) and
    /// the counter afterwards ([`gaps`] reads all three).
    pub(crate) async fn sync_nonce(&self, signer: Address) -> Result<SyncedNonce, SettleError> {
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let mined = self.chain.mined_nonce(signer).await.map_err(unavailable)?;
        let pending = self
            .chain
            .pending_nonce(signer)
            .await
            .map_err(unavailable)?
            .max(mined);
        let next = self
            .nonces
            .sync(self.chain_id(), signer, pending, mined)
            .await?;
        Ok(SyncedNonce {
            mined,
            pending,
            next,
        })
    }

    /// Signs `tx` (gas limit set) at a fresh nonce of `signer` for the record under `key`, with
    /// the cached fees when the simulation set none; the nonce is given back when signing fails.
    pub async fn sign_at_fresh_nonce(
        &self,
        signer: Address,
        key: &str,
        tx: TransactionRequest,
    ) -> Result<SentTx, SettleError> {
        let mut tx = tx;
        if tx.max_fee_per_gas.is_none()
            && let Ok(fees) = self.fees.current().await
        {
            tx = tx
                .max_fee_per_gas(fees.max_fee_per_gas)
                .max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        }
        let nonce = self.next_nonce(signer, key).await?;
        match self.chain.sign(tx.nonce(nonce)).await {
            Ok(signed) => Ok(SentTx::Evm {
                transaction: format!("{:#x}", signed.hash),
                raw: format!("{}", signed.raw),
                signer: signer.to_checksum(None),
                nonce: signed.nonce,
                max_fee_per_gas: String::new(),
                max_priority_fee_per_gas: String::new(),
            }),
            Err(e) => {
                self.give_back(signer, nonce).await;
                Err(SettleError::ChainUnavailable(e.into()))
            }
        }
    }

    /// Returns a never-sent nonce for reuse (a failure is logged: gap repair fills it).
    pub async fn give_back(&self, signer: Address, nonce: u64) {
        if let Err(e) = self.nonces.release(self.chain_id(), signer, nonce).await {
            tracing::warn!(%signer, nonce, error = %e, "could not give a nonce back; gap repair fills it");
        }
    }

    /// A signed transaction that will never be sent: its nonce back.
    pub async fn discard(&self, sent: &SentTx) {
        if let SentTx::Evm { signer, nonce, .. } = sent
            && let Ok(signer) = signer.parse::<Address>()
        {
            self.give_back(signer, *nonce).await;
        }
    }

    /// Sends (or re-sends) a recorded transaction.
    pub async fn send(&self, sent: &SentTx) -> Sent {
        let SentTx::Evm { raw, signer, .. } = sent else {
            return Sent::Refused("a Solana transaction on an EVM network".into());
        };
        let Ok(raw) = raw.parse::<Bytes>() else {
            return Sent::Refused("corrupt recorded transaction".into());
        };
        match self.chain.send_raw(&raw).await {
            // A node that has it already: a re-send of the same bytes (same hash).
            Ok(_) | Err(ChainError::AlreadyKnown(_)) => {
                // It may be mined already (a chain that mines on arrival) or in the next block.
                self.receipts().wake();
                Sent::Accepted
            }
            Err(e) if e.is_unavailable() => Sent::Unknown(e.to_string()),
            Err(e @ ChainError::NonceTooLow(_)) => {
                if let Ok(signer) = signer.parse::<Address>() {
                    // Someone else used the nonce: the counter must not hand it out again.
                    match self.sync_nonce(signer).await {
                        Ok(synced) => {
                            tracing::warn!(%signer, next = synced.next, "nonce too low: counter raised to the chain's")
                        }
                        Err(e) => {
                            tracing::warn!(%signer, error = %e, "nonce too low, and the counter could not be synced")
                        }
                    }
                }
                Sent::NonceUsed(e.to_string())
            }
            Err(e) => Sent::Refused(e.to_string()),
        }
    }

    /// The receipt of whichever of a broadcast's transactions was mined, if one was: from the
    /// poller's cache, or from the node when the poller does not cover the broadcast.
    pub async fn find_mined(
        &self,
        broadcast: &Broadcast,
    ) -> Result<Option<(String, TransactionReceipt)>, SettleError> {
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let sent = sent_hashes(broadcast)?;
        let watcher = self.receipts();
        for (tx, hash) in &sent {
            if let Some(mined) = watcher.receipt(hash) {
                return Ok(Some((tx.transaction().to_string(), mined)));
            }
        }
        if !watcher.covers(broadcast.first_sent_ms) {
            for (tx, hash) in &sent {
                if let Some(mined) = self.chain.receipt(*hash).await.map_err(unavailable)?
                    && self.in_a_block(&mined).await?
                {
                    return Ok(Some((tx.transaction().to_string(), mined)));
                }
            }
        }
        Ok(None)
    }

    /// Whether a receipt the node answered is of a block at or below its head: a
    /// flashblocks-aware node also answers receipts of the block it is still building
    /// (pre-confirmations, [`super::preconfirm`], numbered above the head), which are no block
    /// receipts. A receipt without a block number is taken as mined (as before this check).
    async fn in_a_block(&self, receipt: &TransactionReceipt) -> Result<bool, SettleError> {
        let Some(number) = receipt.block_number else {
            return Ok(true);
        };
        match self.chain.block_number().await {
            Ok(head) => Ok(number <= head),
            // A node without `eth_blockNumber` is no flashblocks node.
            Err(ChainError::Unsupported(_)) => Ok(true),
            Err(e) => Err(SettleError::ChainUnavailable(e.into())),
        }
    }

    /// With pre-confirmations enabled, the pre-confirmation receipt of whichever of a
    /// broadcast's transactions the flashblocks-aware RPC has one of, with that transaction.
    /// `None` when disabled, when it has none, or when it cannot be asked.
    pub async fn find_preconfirmed(
        &self,
        broadcast: &Broadcast,
    ) -> Option<(SentTx, TransactionReceipt)> {
        let pre = self.preconfirmations.as_ref()?;
        let sent = sent_hashes(broadcast).ok()?;
        let hashes: Vec<B256> = sent.iter().map(|(_, h)| *h).collect();
        let (i, receipt) = pre.receipt(&hashes).await?;
        Some((sent[i].0.clone(), receipt))
    }

    /// Whether a node still holds one of a broadcast's transactions.
    pub async fn node_knows(&self, broadcast: &Broadcast) -> Result<bool, SettleError> {
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let mut known = false;
        for (_, hash) in sent_hashes(broadcast)? {
            known |= self
                .chain
                .transaction_known(hash)
                .await
                .map_err(unavailable)?;
        }
        Ok(known)
    }

    /// The cost of a mined transaction (gas, and its USDC price with a pricer).
    pub fn cost_of(
        &self,
        payment: &PaymentFacts,
        transaction: &str,
        mined: &TransactionReceipt,
    ) -> Cost {
        let price = mined.effective_gas_price;
        let mut gas = GasPaid {
            transaction: transaction.to_string(),
            gas_used: mined.gas_used,
            effective_gas_price_wei: price,
            fee_wei: u128::from(mined.gas_used).saturating_mul(price),
            usdc: None,
        };
        gas.usdc = self.gas_pricer.as_ref().and_then(|p| p(payment, &gas));
        Cost {
            gas: Some(gas),
            svm_fee: None,
        }
    }

    /// Reports a landed settlement's gas to the observer and the sampler.
    pub fn observe_landed(&self, payment: &PaymentFacts, cost: &Cost) {
        if let (Some(observer), Some(gas)) = (&self.gas_observer, &cost.gas) {
            observer(gas);
        }
        if let (Some(sampler), Some(gas)) = (&self.gas_sampler, &cost.gas)
            && let Ok(asset) = payment.asset.parse::<Address>()
        {
            sampler(asset, payment.kind.as_deref().unwrap_or(""), gas.gas_used);
        }
    }

    /// Nonce repair of every signer ([`gaps`]).
    pub async fn maintain(&self) {
        gaps::repair(self).await
    }

    /// A replacement of a broadcast transaction that stays unmined (see
    /// [`crate::family::ChainFamily::replacement`]): the same call at the same nonce with
    /// EIP-1559 replacement fees, or at a new nonce when another transaction used the nonce.
    pub async fn replacement(
        &self,
        key: &str,
        broadcast: &Broadcast,
    ) -> Result<Option<SentTx>, SettleError> {
        let SentTx::Evm { raw, signer, .. } = &broadcast.sent else {
            return Ok(None);
        };
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let corrupt = || corrupt_record(broadcast);
        let bytes: Bytes = raw.parse().map_err(|_| corrupt())?;
        let env = TxEnvelope::decode_2718(&mut bytes.as_ref()).map_err(|_| corrupt())?;
        let signer: Address = signer.parse().map_err(|_| corrupt())?;
        let Some(to) = env.to() else {
            return Err(corrupt());
        };
        let call = TransactionRequest::default()
            .from(signer)
            .to(to)
            .input(env.input().clone().into())
            .gas_limit(env.gas_limit());
        if self.chain.mined_nonce(signer).await.map_err(unavailable)? > env.nonce() {
            // The sender nonce is used on chain. If by one of ours, the next lookup sees it;
            // else by another transaction, and this payment needs a new nonce.
            for (_, hash) in sent_hashes(broadcast)? {
                if self
                    .chain
                    .receipt(hash)
                    .await
                    .map_err(unavailable)?
                    .is_some()
                {
                    return Ok(None);
                }
            }
            tracing::warn!(%signer, nonce = env.nonce(), "settlement nonce used by another transaction: signing at a new nonce");
            return Ok(Some(self.sign_at_fresh_nonce(signer, key, call).await?));
        }
        // EIP-1559 replacement at the same nonce.
        let offered = fees::Fees {
            max_fee_per_gas: env.max_fee_per_gas(),
            max_priority_fee_per_gas: env.max_priority_fee_per_gas().unwrap_or(0),
        };
        let now = self.fees.fetch().await.map_err(unavailable)?;
        let fees::Fees {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
        } = offered.replacement(now);
        let tx = call
            .nonce(env.nonce())
            .max_fee_per_gas(max_fee)
            .max_priority_fee_per_gas(priority);
        let signed = self.chain.sign(tx).await.map_err(unavailable)?;
        Ok(Some(SentTx::Evm {
            transaction: format!("{:#x}", signed.hash),
            raw: format!("{}", signed.raw),
            signer: signer.to_checksum(None),
            nonce: signed.nonce,
            max_fee_per_gas: max_fee.to_string(),
            max_priority_fee_per_gas: priority.to_string(),
        }))
    }
}

/// Every transaction of a broadcast (the first, then its replacements) with its hash.
fn sent_hashes(broadcast: &Broadcast) -> Result<Vec<(&SentTx, B256)>, SettleError> {
    std::iter::once(&broadcast.sent)
        .chain(broadcast.replaced.iter())
        .map(|tx| {
            Ok((
                tx,
                tx.transaction()
                    .parse()
                    .map_err(|_| corrupt_record(broadcast))?,
            ))
        })
        .collect()
}

/// A broadcast record whose transaction does not decode: [`SettleError::Internal`], logged at
/// ERROR (a bug or tampering; retrying does not help).
pub fn corrupt_record(broadcast: &Broadcast) -> SettleError {
    tracing::error!(transaction = %broadcast.sent.transaction(), "corrupt EVM broadcast record");
    SettleError::Internal("corrupt EVM broadcast record".into())
}

/// The calldata of a broadcast's first transaction (what its transfer method decodes to find
/// the authorization it spends). `None` when it does not decode.
pub fn recorded_input(broadcast: &Broadcast) -> Option<Bytes> {
    let SentTx::Evm { raw, .. } = &broadcast.sent else {
        return None;
    };
    let bytes: Bytes = raw.parse().ok()?;
    let env = TxEnvelope::decode_2718(&mut bytes.as_ref()).ok()?;
    Some(env.input().clone())
}
