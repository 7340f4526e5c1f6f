//! EVM `exact` settlement (x402-reference §5 "Settle", §7): the [`ChainFamily`] of EIP-3009
//! `transferWithAuthorization` payments, driven by the [`Engine`].
//!
//! - Identity: `(chainId, asset, from, nonce)`; binding: keccak256 of chain id, asset, the whole
//!   authorization, the signature and the requirements' `payTo` and amount.
//! - Signing pipeline: `eth_estimateGas` (the settlement-time simulation, which also gives the
//!   gas limit) runs before any shared state is touched; fees come from the network's
//!   [`fees::FeeCache`]; the sender nonce is one Redis round trip ([`crate::nonces`]); signing is
//!   local; the send happens after the record, with nothing held. Settlements of one signer
//!   thus sign in parallel, across replicas, and several signers are used round-robin.
//! - Signer slots: at most `max_in_flight` settlements per signer between taking the signer and
//!   sending; none free within the signer wait → 503 before anything is reserved.
//! - Lookup: [`receipts::ReceiptWatcher`] (one block-receipt poller per network); success needs
//!   the matching `Transfer` event; no receipt after `validBefore` while `authorizationState` is
//!   still unused → expired.
//! - Nonce repair: [`gaps`] fills or re-sends a nonce the node is missing below the counter.

pub mod fees;
pub mod gaps;
pub mod gas_limits;
pub mod rebuild;
pub mod receipts;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alloy::consensus::{Transaction as _, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use x402_chain::eip3009::IEip3009Token;
use x402_chain::{ChainError, EvmChain, GAS_LIMIT_HEADROOM_PERCENT};
use x402_proto::{PaymentRequest, Reason};
use x402_verify::evm::signature::PayerSignature;
use x402_verify::evm::{EvmPayment, ExactEvmVerifier};
use x402_verify::{Invalid, Verdict};

use crate::clock::Clock;
use crate::engine::{Engine, SettleTiming};
use crate::family::{ChainFamily, Identified, Identity, Lookup, Probe, Sent, Signed};
use crate::nonces::NonceStore;
use crate::record::{Broadcast, Cost, GasInUsdc, GasPaid, PaymentFacts, SentTx};
use crate::replay::ReplayStore;
use crate::replay::keys::{evm_replay_key, replay_ttl_seconds};
use crate::{SettleError, SettleEvents};

/// Prices a mined settlement's fee in USDC for its record (see [`GasInUsdc`]).
pub type GasPricer = Arc<dyn Fn(&GasPaid) -> Option<GasInUsdc> + Send + Sync>;

/// Called once per mined settlement with its gas cost.
pub type GasObserver = Arc<dyn Fn(&GasPaid) + Send + Sync>;

/// Called once per landed settlement with its asset and receipt `gasUsed` (what the gas
/// oracle prices gas units from).
pub type GasSampler = Arc<dyn Fn(Address, u64) + Send + Sync>;

/// Called after each nonce repair look with `(signer, nonces handed out but not mined)`.
pub type NonceLagObserver = Arc<dyn Fn(Address, u64) + Send + Sync>;

/// Settles EVM `exact` payments on one chain.
pub type EvmSettler = Engine<EvmFamily>;

/// Default most settlements per signer between taking the signer and sending.
pub const DEFAULT_MAX_IN_FLIGHT_PER_SIGNER: usize = 64;

/// The EVM `exact` chain family on one chain.
pub struct EvmFamily {
    verifier: Arc<ExactEvmVerifier>,
    store: Arc<dyn ReplayStore>,
    nonces: Arc<dyn NonceStore>,
    key_prefix: String,
    signers: Vec<(Address, Arc<Semaphore>)>,
    next_signer: AtomicUsize,
    signer_wait: Duration,
    floor: SignerFloor,
    fees: Arc<fees::FeeCache>,
    gas_limits: gas_limits::GasLimits,
    receipts: OnceLock<receipts::ReceiptWatcher>,
    receipt_poll: Duration,
    gaps: gaps::GapRepair,
    gas_observer: Option<GasObserver>,
    gas_sampler: Option<GasSampler>,
    gas_pricer: Option<GasPricer>,
    nonce_lag_observer: Option<NonceLagObserver>,
    events: SettleEvents,
    clock: Clock,
    /// Gas cap of a contract-signature settlement per asset, gas units (see
    /// [`EvmFamily::with_contract_signature_gas_caps`]).
    contract_gas_caps: std::collections::HashMap<Address, u64>,
    /// Blocks searched back for a lost payment's landing ([`rebuild`]).
    lost_lookback_blocks: u64,
    /// WebSocket endpoint whose `newHeads` wake the receipt poller, and the time limit of
    /// opening its subscription.
    heads: Option<(String, Duration)>,
}

/// Default gas cap of a contract-signature settlement before the asset's ECDSA limit is
/// learnt, gas units.
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

/// A signer's nonces after [`EvmFamily::sync_nonce`].
struct SyncedNonce {
    /// `eth_getTransactionCount(latest)`.
    mined: u64,
    /// `eth_getTransactionCount(pending)`, at least `mined`.
    pending: u64,
    /// The shared counter: the next nonce never handed out.
    next: u64,
}

/// A held signer slot: the address settlements sign with, and its in-flight slot (given back
/// when dropped).
pub struct Held {
    signer: Address,
    _slot: OwnedSemaphorePermit,
}

impl EvmFamily {
    /// The family for the verifier's chain, recording in `store` under `key_prefix` and taking
    /// sender nonces from `nonces` (shared by every replica that shares the signing keys).
    /// At most `max_in_flight` settlements per signer are between taking the signer and
    /// sending; one that finds no slot within `signer_wait` is refused (503) before anything is
    /// reserved.
    pub fn new(
        verifier: Arc<ExactEvmVerifier>,
        store: Arc<dyn ReplayStore>,
        nonces: Arc<dyn NonceStore>,
        key_prefix: impl Into<String>,
        signer_wait: Duration,
        max_in_flight: usize,
    ) -> Self {
        let signers = verifier
            .chain()
            .signers()
            .iter()
            .map(|a| (*a, Arc::new(Semaphore::new(max_in_flight.max(1)))))
            .collect();
        let fees = fees::FeeCache::new(
            verifier.chain().clone(),
            Duration::from_secs(2),
            Duration::from_secs(30),
        );
        EvmFamily {
            verifier,
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
            lost_lookback_blocks: rebuild::DEFAULT_LOOKBACK_BLOCKS,
            heads: None,
        }
    }

    /// Wakes the receipt poller on every head the node at `ws_url` pushes
    /// (`eth_subscribe("newHeads")`, see [`receipts`]); opening the subscription gives up after
    /// `timeout` and is tried again. Without it the poller paces itself on the learnt block time.
    pub fn with_new_heads(mut self, ws_url: String, timeout: Duration) -> Self {
        self.heads = Some((ws_url, timeout));
        self
    }

    /// How many blocks back from the latest a payment whose record was lost is searched for
    /// (default [`rebuild::DEFAULT_LOOKBACK_BLOCKS`]; 0 disables rebuilding records from the
    /// chain).
    pub fn with_lost_record_lookback(mut self, blocks: u64) -> Self {
        self.lost_lookback_blocks = blocks;
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
    /// [`CONTRACT_SIGNATURE_GAS_CAP_MULTIPLE`] × its learnt ECDSA limit, or
    /// [`DEFAULT_CONTRACT_SIGNATURE_GAS_CAP`] before one is learnt. (Refusing them outright is
    /// the verifier's `with_contract_signatures(false)`.)
    pub fn with_contract_signature_gas_caps(
        mut self,
        caps: std::collections::HashMap<Address, u64>,
    ) -> Self {
        self.contract_gas_caps = caps;
        self
    }

    /// The gas cap of a contract-signature settlement of `asset`, gas units.
    fn contract_signature_gas_cap(&self, asset: Address) -> u64 {
        self.contract_gas_caps
            .get(&asset)
            .copied()
            .or_else(|| {
                self.gas_limits
                    .get(asset)
                    .map(|limit| limit * CONTRACT_SIGNATURE_GAS_CAP_MULTIPLE)
            })
            .unwrap_or(DEFAULT_CONTRACT_SIGNATURE_GAS_CAP)
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
            None => match self.chain().balance(signer).await {
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

    /// Prices every mined settlement's fee in USDC into its record.
    pub fn with_gas_pricer(mut self, pricer: GasPricer) -> Self {
        self.gas_pricer = Some(pricer);
        self
    }

    /// Reports the asset and `gasUsed` of every landed settlement to `sampler`.
    pub fn with_gas_sampler(mut self, sampler: GasSampler) -> Self {
        self.gas_sampler = Some(sampler);
        self
    }

    /// Reports the gas of every mined settlement to `observer` (metrics, accounting).
    pub fn with_gas_observer(mut self, observer: GasObserver) -> Self {
        self.gas_observer = Some(observer);
        self
    }

    fn chain(&self) -> &Arc<dyn EvmChain> {
        self.verifier.chain()
    }

    fn chain_id(&self) -> u64 {
        self.chain().chain_id()
    }

    /// The network's receipt poller (started by the first lookup).
    fn receipts(&self) -> &receipts::ReceiptWatcher {
        self.receipts.get_or_init(|| {
            let signers: Vec<Address> = self.signers.iter().map(|(a, _)| *a).collect();
            let watcher = receipts::ReceiptWatcher::spawn_with_clock(
                self.chain().clone(),
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

    /// A free slot of a funded signer now, else one of the next in round-robin order within
    /// the wait.
    async fn take_slot(&self) -> Result<Held, SettleError> {
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
    async fn sync_nonce(&self, signer: Address) -> Result<SyncedNonce, SettleError> {
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let mined = self
            .chain()
            .mined_nonce(signer)
            .await
            .map_err(unavailable)?;
        let pending = self
            .chain()
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

    /// Signs `tx` (gas limit set) at a fresh nonce of `signer` with the cached fees; the nonce
    /// is given back when signing fails.
    async fn sign_at_fresh_nonce(
        &self,
        signer: Address,
        key: &str,
        tx: TransactionRequest,
    ) -> Result<SentTx, SettleError> {
        let mut tx = tx;
        // Fees already set by the simulation are kept (the same cached values); without cached
        // fees the chain fills them itself (one more round trip).
        if tx.max_fee_per_gas.is_none()
            && let Ok(fees) = self.fees.current().await
        {
            tx = tx
                .max_fee_per_gas(fees.max_fee_per_gas)
                .max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        }
        let nonce = self.next_nonce(signer, key).await?;
        match self.chain().sign(tx.nonce(nonce)).await {
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
    async fn give_back(&self, signer: Address, nonce: u64) {
        if let Err(e) = self.nonces.release(self.chain_id(), signer, nonce).await {
            tracing::warn!(%signer, nonce, error = %e, "could not give a nonce back; gap repair fills it");
        }
    }
}

/// A broadcast record whose transaction does not decode: [`SettleError::Internal`], logged at
/// ERROR (a bug or tampering; retrying does not help).
fn corrupt_record(broadcast: &Broadcast) -> SettleError {
    tracing::error!(transaction = %broadcast.sent.transaction(), "corrupt EVM broadcast record");
    SettleError::Internal("corrupt EVM broadcast record".into())
}

/// `authorization.from` and `nonce` from a recorded settlement transaction.
fn authorization_of(raw: &str) -> Option<(Address, B256)> {
    rebuild::authorization_in(raw).map(|a| (a.from, a.nonce))
}

#[async_trait]
impl ChainFamily for EvmFamily {
    type Payment = EvmPayment;
    type Signer = Held;

    fn key_space(&self) -> String {
        format!(
            "{}:replay:evm:{}:",
            self.key_prefix,
            self.chain().chain_id()
        )
    }

    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError> {
        let id = self.verifier.payment_id(req)?;
        let network = x402_proto::Network::evm(id.chain_id).to_string();
        Ok(Identified::Payment(Box::new(Identity {
            key: evm_replay_key(&self.key_prefix, id.chain_id, id.asset, id.from, id.nonce),
            facts: PaymentFacts {
                binding: format!("{:#x}", id.fingerprint),
                network,
                payer: id.from.to_checksum(None),
                amount: req.amount().to_string(),
                asset: id.asset.to_checksum(None),
                pay_to: req.pay_to().to_string(),
                created_at: now,
                valid_until: id.valid_before,
                key: None,
                answer_keys: vec![],
            },
            ttl_seconds: replay_ttl_seconds(id.valid_before, now),
            claims: vec![],
        })))
    }

    async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Result<EvmPayment, Invalid>, SettleError> {
        Ok(match self.verifier.verify(req, now, false).await? {
            Verdict::Valid(p) => Ok(p),
            Verdict::Invalid(inv) => Err(inv),
        })
    }

    /// A payment refused because its authorization is used (or its `validBefore` passed) that
    /// one of this network's signers settled: restored as `delivered` with that transaction
    /// ([`rebuild`]), never answered as a plain failure. Any RPC error leaves the refusal as it is.
    async fn recover_lost(
        &self,
        req: &PaymentRequest,
        id: &Identity,
        invalid: &Invalid,
        now: u64,
    ) -> Option<crate::record::SettlementRecord> {
        if self.lost_lookback_blocks == 0
            || !matches!(
                invalid.reason,
                Reason::EvmNonceAlreadyUsed | Reason::EvmValidBefore
            )
        {
            return None;
        }
        let auth = self.verifier.payment_id(req).ok()?;
        let chain = self.chain().as_ref();
        let looked = async {
            if !rebuild::authorization_used(chain, &auth).await? {
                return Ok(None);
            }

            rebuild::find_landed(chain, chain.signers(), &auth, self.lost_lookback_blocks).await
        };
        let landed = match looked.await {
            Ok(landed) => landed?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for a lost payment on chain");
                return None;
            }
        };
        if !landed.receipt.status() {
            return None;
        }
        let transaction = format!("{:#x}", landed.transaction);
        let cost = self.cost_of(&transaction, &landed.receipt);
        // Its success may have been answered already: restored as delivered, never a second
        // success (and never a plain failure).
        Some(crate::record::SettlementRecord::Delivered(
            crate::record::Settled {
                payment: id.facts.clone(),
                transaction,
                cost,
                settled_at: now,
            },
        ))
    }

    async fn ready_to_settle(&self, _payment: &EvmPayment) -> Result<(), SettleError> {
        for (addr, _) in &self.signers {
            if self.funded(*addr).await {
                return Ok(());
            }
        }
        Err(SettleError::NoFundedSigner(format!(
            "every signer on eip155:{} is below {} wei",
            self.chain().chain_id(),
            self.floor.min_wei
        )))
    }

    fn payer_of(&self, payment: &EvmPayment) -> String {
        payment.payer_string()
    }

    /// `balanceOf(from)` at the latest block against the amount plus the in-flight debits;
    /// with none in flight the settlement-time simulation in [`ChainFamily::sign`] checks the
    /// same balance (no extra call).
    async fn check_funds(
        &self,
        payment: &EvmPayment,
        amount: u128,
        in_flight: u128,
    ) -> Result<Option<Invalid>, SettleError> {
        if in_flight == 0 {
            return Ok(None);
        }
        let call = TransactionRequest::default().to(payment.asset).input(
            IEip3009Token::balanceOfCall {
                account: payment.payer,
            }
            .abi_encode()
            .into(),
        );
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let ret = self.chain().call(&call).await.map_err(unavailable)?;
        let balance = IEip3009Token::balanceOfCall::abi_decode_returns(&ret).map_err(|e| {
            SettleError::ChainUnavailable(x402_chain::ChainUnavailable::Other(format!(
                "balanceOf answered {ret}: {e}"
            )))
        })?;
        let needed = U256::from(amount) + U256::from(in_flight);
        Ok((balance < needed).then(|| {
            Invalid::new(
                Reason::EvmInsufficientBalance,
                format!(
                    "balance {balance} does not cover value {amount} on top of {in_flight} \
                     in settlements in flight"
                ),
                Some(payment.payer_string()),
            )
        }))
    }

    async fn acquire_signer(&self) -> Result<Held, SettleError> {
        self.take_slot().await
    }

    async fn release_signer(&self, held: Held) {
        drop(held);
    }

    async fn sign(
        &self,
        held: &Held,
        key: &str,
        req: &PaymentRequest,
        payment: &EvmPayment,
    ) -> Result<Signed, SettleError> {
        let signer = held.signer;
        // Contract signatures refused by configuration never get here: the settlement-time
        // verification (the same verifier) refuses them.
        let ecdsa = matches!(payment.signature, PayerSignature::Ecdsa(_));
        let mut call = TransactionRequest::default()
            .from(signer)
            .to(payment.asset)
            .input(payment.settlement_calldata().into());
        // The simulation carries the fee fields the transaction will carry: code that answers
        // differently when `tx.gasprice` is 0 (a wallet's `isValidSignature`, an EIP-7702
        // delegate) must not pass the simulation and then revert at our cost. Without cached
        // fees the chain fills them at signing (one more round trip) and the call goes without.
        if let Ok(fees) = self.fees.current().await {
            call = call
                .max_fee_per_gas(fees.max_fee_per_gas)
                .max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        }
        // The settlement-time simulation. An ECDSA payment of an asset whose gas is known runs
        // one `eth_call` (the node executes it once) under the asset's cached limit; any other
        // runs `eth_estimateGas` (a search over several executions), whose gas is its limit.
        let mut cached = ecdsa.then(|| self.gas_limits.get(payment.asset)).flatten();
        // The first estimate of an asset runs alone; a burst waits for it and then simulates
        // with `eth_call`.
        let mut learning = None;
        if ecdsa && cached.is_none() {
            let guard = self.gas_limits.learning.lock().await;
            cached = self.gas_limits.get(payment.asset);
            if cached.is_none() {
                learning = Some(guard);
            }
        }
        let simulated = match cached {
            Some(limit) => self
                .chain()
                .call(&call.clone().gas_limit(limit))
                .await
                .map(|_| limit),
            None => self.chain().estimate_gas(&call).await.map(|gas| {
                if ecdsa {
                    self.gas_limits.learn(payment.asset, gas);
                }
                gas + gas * GAS_LIMIT_HEADROOM_PERCENT / 100
            }),
        };
        drop(learning);
        let gas_limit = match simulated {
            Ok(limit) => limit,
            Err(ChainError::Reverted { message, .. }) => {
                let (name, version) = (
                    req.extra_str("name").unwrap_or(""),
                    req.extra_str("version").unwrap_or(""),
                );
                let inv = self
                    .verifier
                    .diagnose(payment, name, version, message)
                    .await?;
                return Ok(Signed::Refused(inv));
            }
            Err(e) => return Err(SettleError::ChainUnavailable(e.into())),
        };
        if !ecdsa {
            // A contract wallet's code decides the gas: bounded by the asset's cap.
            let cap = self.contract_signature_gas_cap(payment.asset);
            if gas_limit > cap {
                tracing::warn!(payer = %payment.payer, asset = %payment.asset, gas_limit, cap, "contract-signature settlement above the gas cap refused");
                return Ok(Signed::Refused(Invalid::new(
                    Reason::EvmSimulationFailed,
                    format!(
                        "the settlement of this contract-wallet payment needs {gas_limit} gas, \
                         above this facilitator's cap of {cap}"
                    ),
                    Some(payment.payer_string()),
                )));
            }
        }
        let tx = call.gas_limit(gas_limit);
        Ok(Signed::Tx(self.sign_at_fresh_nonce(signer, key, tx).await?))
    }

    async fn discard(&self, sent: &SentTx) {
        if let SentTx::Evm { signer, nonce, .. } = sent
            && let Ok(signer) = signer.parse::<Address>()
        {
            self.give_back(signer, *nonce).await;
        }
    }

    async fn send(&self, sent: &SentTx) -> Sent {
        let SentTx::Evm { raw, signer, .. } = sent else {
            return Sent::Refused("a Solana transaction on an EVM network".into());
        };
        let Ok(raw) = raw.parse::<Bytes>() else {
            return Sent::Refused("corrupt recorded transaction".into());
        };
        match self.chain().send_raw(&raw).await {
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

    async fn lookup(
        &self,
        broadcast: &Broadcast,
        probe: Probe,
        now: u64,
    ) -> Result<Lookup, SettleError> {
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let corrupt = || corrupt_record(broadcast);
        let sent: Vec<(&SentTx, B256)> = std::iter::once(&broadcast.sent)
            .chain(broadcast.replaced.iter())
            .map(|tx| Ok((tx, tx.transaction().parse().map_err(|_| corrupt())?)))
            .collect::<Result<_, SettleError>>()?;
        let watcher = self.receipts();
        for (tx, hash) in &sent {
            if let Some(mined) = watcher.receipt(hash) {
                return Ok(self.outcome(broadcast, tx.transaction(), &mined).await);
            }
        }
        if !watcher.covers(broadcast.first_sent_ms) {
            for (tx, hash) in &sent {
                if let Some(mined) = self.chain().receipt(*hash).await.map_err(unavailable)? {
                    return Ok(self.outcome(broadcast, tx.transaction(), &mined).await);
                }
            }
        }
        if probe == Probe::LandedOnly {
            return Ok(Lookup::NotYet { known: true });
        }
        let mut known = false;
        for (_, hash) in &sent {
            known |= self
                .chain()
                .transaction_known(*hash)
                .await
                .map_err(unavailable)?;
        }
        if !known && now > broadcast.payment.valid_until {
            // validBefore passed and no node has the transaction: it can only revert now, and
            // only if the authorization is still unused was nothing transferred.
            let SentTx::Evm { raw, .. } = &broadcast.sent else {
                return Err(corrupt());
            };
            let (from, nonce) = authorization_of(raw).ok_or_else(corrupt)?;
            let asset: Address = broadcast.payment.asset.parse().map_err(|_| corrupt())?;
            let call = TransactionRequest::default().to(asset).input(
                IEip3009Token::authorizationStateCall {
                    authorizer: from,
                    nonce,
                }
                .abi_encode()
                .into(),
            );
            let used = self.chain().call(&call).await.map_err(unavailable)?;
            if used.iter().all(|b| *b == 0) {
                return Ok(Lookup::Expired {
                    message: "validBefore passed before the settlement transaction landed; \
                              nothing was transferred"
                        .into(),
                });
            }
        }
        Ok(Lookup::NotYet { known })
    }

    fn news_mark(&self) -> u64 {
        self.receipts().mark()
    }

    async fn wait_for_news(&self, mark: u64, max: Duration) {
        self.receipts().next_block(mark, max).await
    }

    async fn maintain(&self) {
        gaps::repair(self).await
    }

    async fn replacement(
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
        if self
            .chain()
            .mined_nonce(signer)
            .await
            .map_err(unavailable)?
            > env.nonce()
        {
            // The sender nonce is used on chain. If by one of ours, the next lookup sees it;
            // else by another transaction, and this payment needs a new nonce.
            let sent = std::iter::once(&broadcast.sent).chain(broadcast.replaced.iter());
            for tx in sent {
                let hash: B256 = tx.transaction().parse().map_err(|_| corrupt())?;
                if self
                    .chain()
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
        let signed = self.chain().sign(tx).await.map_err(unavailable)?;
        Ok(Some(SentTx::Evm {
            transaction: format!("{:#x}", signed.hash),
            raw: format!("{}", signed.raw),
            signer: signer.to_checksum(None),
            nonce: signed.nonce,
            max_fee_per_gas: max_fee.to_string(),
            max_priority_fee_per_gas: priority.to_string(),
        }))
    }

    fn transaction_failed(&self) -> Reason {
        Reason::EvmTransactionFailed
    }

    fn blocked_payer(&self) -> Reason {
        Reason::EvmSimulationFailed
    }

    /// Another payment under the same `(from, nonce)`: its authorization nonce is taken.
    fn conflict_reason(&self) -> Reason {
        Reason::EvmNonceAlreadyUsed
    }

    fn observe_landed(&self, payment: &PaymentFacts, cost: &Cost) {
        if let (Some(observer), Some(gas)) = (&self.gas_observer, &cost.gas) {
            observer(gas);
        }
        if let (Some(sampler), Some(gas)) = (&self.gas_sampler, &cost.gas)
            && let Ok(asset) = payment.asset.parse::<Address>()
        {
            sampler(asset, gas.gas_used);
        }
    }
}

impl EvmFamily {
    /// [`EvmFamily::mined`], and for a reverted settlement whose authorization is used on
    /// chain, whether another transaction of this network's signers used it first (sent for
    /// the same payment before its record was lost): then [`Lookup::SettledBefore`]. RPC
    /// errors leave the failure as it is (the payment is then answered as failed, as before).
    async fn outcome(
        &self,
        broadcast: &Broadcast,
        transaction: &str,
        mined: &TransactionReceipt,
    ) -> Lookup {
        let lookup = self.mined(broadcast, transaction, mined);
        if mined.status() || self.lost_lookback_blocks == 0 {
            return lookup;
        }
        let SentTx::Evm { raw, .. } = &broadcast.sent else {
            return lookup;
        };
        let Some(auth) = rebuild::authorization_in(raw) else {
            return lookup;
        };
        let chain = self.chain().as_ref();
        let found =
            rebuild::find_landed(chain, chain.signers(), &auth, self.lost_lookback_blocks).await;
        match found {
            Ok(Some(landed))
                if landed.receipt.status()
                    && !broadcast
                        .transactions()
                        .any(|t| t.parse::<B256>().ok() == Some(landed.transaction)) =>
            {
                let other = format!("{:#x}", landed.transaction);
                tracing::warn!(reverted = %transaction, settled_by = %other, gas_wasted_wei = u128::from(mined.gas_used).saturating_mul(mined.effective_gas_price), "settlement reverted: the payment was settled by an earlier transaction of ours (its record was lost)");
                Lookup::SettledBefore {
                    cost: self.cost_of(&other, &landed.receipt),
                    transaction: other,
                }
            }
            Ok(_) => lookup,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for an earlier settlement of a reverted payment");
                lookup
            }
        }
    }

    /// What mined `transaction` cost: `gasUsed × effectiveGasPrice` (wei), and in USDC at the
    /// quote's price when a pricer is set.
    fn cost_of(&self, transaction: &str, mined: &TransactionReceipt) -> Cost {
        let price = mined.effective_gas_price;
        let mut gas = GasPaid {
            transaction: transaction.to_string(),
            gas_used: mined.gas_used,
            effective_gas_price_wei: price,
            fee_wei: u128::from(mined.gas_used).saturating_mul(price),
            usdc: None,
        };
        gas.usdc = self.gas_pricer.as_ref().and_then(|p| p(&gas));
        Cost {
            gas: Some(gas),
            svm_fee: None,
        }
    }

    /// The outcome of a mined settlement: landed only if it did not revert and logged the
    /// expected `Transfer(from, to, value)`.
    fn mined(
        &self,
        broadcast: &Broadcast,
        transaction: &str,
        mined: &TransactionReceipt,
    ) -> Lookup {
        let cost = self.cost_of(transaction, mined);
        let failed = |reason: Reason, message: &str| Lookup::Failed {
            transaction: transaction.to_string(),
            reason,
            message: message.into(),
            cost: cost.clone(),
        };
        if !mined.status() {
            return failed(
                Reason::EvmTransactionFailed,
                "settlement transaction reverted",
            );
        }
        let payer: Address = broadcast.payment.payer.parse().unwrap_or_default();
        let transferred = mined.logs().iter().any(|log| {
            IEip3009Token::Transfer::decode_log(&log.inner)
                .map(|ev| ev.from == payer && ev.value.to_string() == broadcast.payment.amount)
                .unwrap_or(false)
        });
        if !transferred {
            return failed(
                Reason::EvmTransferEventMismatch,
                "no matching Transfer event in the receipt",
            );
        }
        Lookup::Landed {
            transaction: transaction.to_string(),
            cost,
        }
    }
}

/// An EVM settler: the [`EvmFamily`] under the state machine.
pub fn settler(
    mut family: EvmFamily,
    store: Arc<dyn ReplayStore>,
    timing: SettleTiming,
    events: SettleEvents,
) -> EvmSettler {
    family.events = events.clone();
    let clock = family.clock.clone();
    // The receipt poller covers transactions sent after it started: start it now, before the
    // first settlement is sent (when there is a runtime to run it).
    if tokio::runtime::Handle::try_current().is_ok() {
        family.receipts();
    }
    Engine::new(family, store, timing, crate::instance_id(), events).with_clock(clock)
}
