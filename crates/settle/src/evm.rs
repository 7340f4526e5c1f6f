//! EVM `exact` settlement (x402-reference §5 "Settle", §7): the [`ChainFamily`] of EIP-3009
//! `transferWithAuthorization` payments, driven by the [`Engine`].
//!
//! - Identity: `(chainId, asset, from, nonce)`; binding: keccak256 of chain id, asset, the whole
//!   authorization, the signature and the requirements' `payTo` and amount.
//! - Signer: a local lock and a cross-replica lease per facilitator address (bounded waits),
//!   held from `eth_getTransactionCount` to `eth_sendRawTransaction`.
//! - Lookup: the receipt of the transaction (success needs the matching `Transfer` event); no
//!   receipt after `validBefore` while `authorizationState` is still unused → expired.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy::consensus::{Transaction as _, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};
use x402_chain::{ChainError, EvmChain};
use x402_proto::{PaymentRequest, Reason};
use x402_verify::evm::token::IEip3009Token;
use x402_verify::evm::{EvmPayment, ExactEvmVerifier};
use x402_verify::{Invalid, Verdict};

use crate::engine::{Engine, SettleTiming};
use crate::family::{ChainFamily, Identified, Identity, Lookup, Sent, Signed, SignerGuard};
use crate::record::{Broadcast, Cost, GasInUsdc, GasPaid, PaymentFacts, SentTx};
use crate::replay::ReplayStore;
use crate::replay::keys::{evm_replay_key, evm_signer_lease_key, replay_ttl_seconds};
use crate::{SettleError, SettleEvents};

/// Prices a mined settlement's fee in USDC for its record (see [`GasInUsdc`]).
pub type GasPricer = Arc<dyn Fn(&GasPaid) -> Option<GasInUsdc> + Send + Sync>;

/// Called once per mined settlement with its gas cost.
pub type GasObserver = Arc<dyn Fn(&GasPaid) + Send + Sync>;

/// Settles EVM `exact` payments on one chain.
pub type EvmSettler = Engine<EvmFamily>;

/// The EVM `exact` chain family on one chain.
pub struct EvmFamily {
    verifier: Arc<ExactEvmVerifier>,
    store: Arc<dyn ReplayStore>,
    key_prefix: String,
    signers: Vec<(Address, Arc<Mutex<()>>)>,
    next_signer: AtomicUsize,
    signer_wait: Duration,
    signer_lease: Duration,
    floor: SignerFloor,
    gas_observer: Option<GasObserver>,
    gas_pricer: Option<GasPricer>,
}

/// The signers' balance floor and the balances last read.
#[derive(Default)]
struct SignerFloor {
    /// Wei; zero disables the floor.
    min_wei: U256,
    max_age: Duration,
    seen: std::sync::Mutex<std::collections::HashMap<Address, (U256, std::time::Instant)>>,
}

/// A held signer: its local lock and its cross-replica lease.
struct Held {
    signer: Address,
    lease: String,
    holder: String,
    _local: OwnedMutexGuard<()>,
}

impl EvmFamily {
    /// The family for the verifier's chain, recording in `store` under `key_prefix`; a
    /// settlement waits at most `signer_wait` for a free signer (then 503). A signer's
    /// cross-replica lease lasts `signer_lease` (it must cover nonce, gas estimate, fees and
    /// send: a few RPC timeouts); a replica that dies holding it blocks that signer that long.
    pub fn new(
        verifier: Arc<ExactEvmVerifier>,
        store: Arc<dyn ReplayStore>,
        key_prefix: impl Into<String>,
        signer_wait: Duration,
        signer_lease: Duration,
    ) -> Self {
        let signers = verifier
            .chain()
            .signers()
            .iter()
            .map(|a| (*a, Arc::new(Mutex::new(()))))
            .collect();
        EvmFamily {
            verifier,
            store,
            key_prefix: key_prefix.into(),
            signers,
            next_signer: AtomicUsize::new(0),
            signer_wait,
            signer_lease,
            floor: SignerFloor::default(),
            gas_observer: None,
            gas_pricer: None,
        }
    }

    /// Signers whose native balance is below `min_wei` take no new settlements; when all are,
    /// `/settle` answers 503 before reserving. Balances are re-read at most every `max_age`.
    pub fn with_signer_floor(mut self, min_wei: U256, max_age: Duration) -> Self {
        self.floor = SignerFloor {
            min_wei,
            max_age,
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        };
        self
    }

    /// Whether `signer` is at or above the balance floor (an unreadable balance counts as
    /// funded: signing then fails on its own if the RPC is down).
    async fn funded(&self, signer: Address) -> bool {
        if self.floor.min_wei.is_zero() {
            return true;
        }
        let cached = {
            let seen = self.floor.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get(&signer)
                .filter(|(_, at)| at.elapsed() < self.floor.max_age)
                .map(|(wei, _)| *wei)
        };
        let wei = match cached {
            Some(wei) => wei,
            None => match self.chain().balance(signer).await {
                Ok(wei) => {
                    self.floor
                        .seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(signer, (wei, std::time::Instant::now()));
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

    /// Reports the gas of every mined settlement to `observer` (metrics, accounting).
    pub fn with_gas_observer(mut self, observer: GasObserver) -> Self {
        self.gas_observer = Some(observer);
        self
    }

    fn chain(&self) -> &Arc<dyn EvmChain> {
        self.verifier.chain()
    }

    /// A free signer's lock now, else the next in round-robin order within the wait.
    async fn lock_signer(&self) -> Result<(Address, OwnedMutexGuard<()>), SettleError> {
        let mut funded = Vec::with_capacity(self.signers.len());
        for (addr, lock) in &self.signers {
            if self.funded(*addr).await {
                funded.push((*addr, lock));
            }
        }
        for (addr, lock) in &funded {
            if let Ok(guard) = (*lock).clone().try_lock_owned() {
                return Ok((*addr, guard));
            }
        }
        let n = funded.len();
        let (addr, lock) = funded
            .get(self.next_signer.fetch_add(1, Ordering::Relaxed) % n.max(1))
            .ok_or_else(|| {
                SettleError::NoFundedSigner("every signer is below the balance floor".into())
            })?;
        match tokio::time::timeout(self.signer_wait, (*lock).clone().lock_owned()).await {
            Ok(guard) => Ok((*addr, guard)),
            Err(_) => Err(SettleError::SignerBusy(format!(
                "no signer free within {:?}",
                self.signer_wait
            ))),
        }
    }
}

/// `authorization.from`, `nonce` and `validBefore` from a recorded settlement transaction.
fn authorization_of(raw: &str) -> Option<(Address, B256)> {
    let bytes: Bytes = raw.parse().ok()?;
    let env = TxEnvelope::decode_2718(&mut bytes.as_ref()).ok()?;
    let input = env.input();
    if let Ok(call) = IEip3009Token::transferWithAuthorization_0Call::abi_decode(input) {
        return Some((call.from, call.nonce));
    }
    IEip3009Token::transferWithAuthorization_1Call::abi_decode(input)
        .ok()
        .map(|call| (call.from, call.nonce))
}

#[async_trait]
impl ChainFamily for EvmFamily {
    type Payment = EvmPayment;

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

    async fn acquire_signer(&self) -> Result<SignerGuard, SettleError> {
        let (signer, local) = self.lock_signer().await?;
        let lease = evm_signer_lease_key(&self.key_prefix, self.chain().chain_id(), signer);
        let holder = crate::instance_id();
        let ttl = self.signer_lease;
        let deadline = tokio::time::Instant::now() + self.signer_wait;
        while !self.store.try_lease(&lease, &holder, ttl).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(SettleError::SignerBusy(format!(
                    "signer lease {lease} held by another replica for {:?}",
                    self.signer_wait
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Box::new(Held {
            signer,
            lease,
            holder,
            _local: local,
        }))
    }

    async fn release_signer(&self, guard: SignerGuard) {
        let Ok(held) = (guard as Box<dyn Any + Send + Sync>).downcast::<Held>() else {
            return;
        };
        if let Err(e) = self.store.end_lease(&held.lease, &held.holder).await {
            tracing::warn!(lease = %held.lease, error = %e, "could not end signer lease; it expires by itself");
        }
    }

    async fn sign(
        &self,
        guard: &SignerGuard,
        req: &PaymentRequest,
        payment: &EvmPayment,
    ) -> Result<Signed, SettleError> {
        let signer = guard
            .downcast_ref::<Held>()
            .map(|h| h.signer)
            .ok_or_else(|| {
                SettleError::ChainUnavailable("signer guard of another family".into())
            })?;
        let signed = async {
            let nonce = self.chain().pending_nonce(signer).await?;
            let tx = TransactionRequest::default()
                .from(signer)
                .to(payment.asset)
                .input(payment.settlement_calldata().into())
                .nonce(nonce);
            self.chain().sign(tx).await
        }
        .await;
        match signed {
            Ok(signed) => Ok(Signed::Tx(SentTx::Evm {
                transaction: format!("{:#x}", signed.hash),
                raw: format!("{}", signed.raw),
                signer: signer.to_checksum(None),
                nonce: signed.nonce,
                max_fee_per_gas: String::new(),
                max_priority_fee_per_gas: String::new(),
            })),
            Err(ChainError::Reverted { message, .. }) => {
                let (name, version) = (
                    req.extra_str("name").unwrap_or(""),
                    req.extra_str("version").unwrap_or(""),
                );
                let inv = self
                    .verifier
                    .diagnose(payment, name, version, message)
                    .await?;
                Ok(Signed::Refused(inv))
            }
            Err(e) => Err(SettleError::ChainUnavailable(e.to_string())),
        }
    }

    async fn send(&self, sent: &SentTx) -> Sent {
        let SentTx::Evm { raw, .. } = sent else {
            return Sent::Refused("a Solana transaction on an EVM network".into());
        };
        let Ok(raw) = raw.parse::<Bytes>() else {
            return Sent::Refused("corrupt recorded transaction".into());
        };
        match self.chain().send_raw(&raw).await {
            Ok(_) => Sent::Accepted,
            Err(ChainError::Unavailable(m)) => Sent::Unknown(m),
            Err(e) => Sent::Refused(e.to_string()),
        }
    }

    async fn lookup(&self, broadcast: &Broadcast) -> Result<Lookup, SettleError> {
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.to_string());
        let corrupt = || SettleError::StoreUnavailable("corrupt EVM broadcast record".into());
        let mut known = false;
        let sent = std::iter::once(&broadcast.sent).chain(broadcast.replaced.iter());
        for tx in sent {
            let hash: B256 = tx.transaction().parse().map_err(|_| corrupt())?;
            if let Some(mined) = self.chain().receipt(hash).await.map_err(unavailable)? {
                return Ok(self.mined(broadcast, tx.transaction(), &mined));
            }
            known |= self
                .chain()
                .transaction_known(hash)
                .await
                .map_err(unavailable)?;
        }
        if !known && crate::clock::unix_now() > broadcast.payment.valid_until {
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

    async fn replacement(&self, broadcast: &Broadcast) -> Result<Option<SentTx>, SettleError> {
        let SentTx::Evm { raw, signer, .. } = &broadcast.sent else {
            return Ok(None);
        };
        let corrupt = || SettleError::StoreUnavailable("corrupt EVM broadcast record".into());
        let bytes: Bytes = raw.parse().map_err(|_| corrupt())?;
        let env = TxEnvelope::decode_2718(&mut bytes.as_ref()).map_err(|_| corrupt())?;
        let signer: Address = signer.parse().map_err(|_| corrupt())?;
        let Some(to) = env.to() else {
            return Err(corrupt());
        };
        // EIP-1559 replacement: both caps up by at least 12.5 % (nodes ask for 10 %), and at
        // least what the node would ask now.
        let bump = |fee: u128| fee + fee / 8 + 1;
        let (mut max_fee, mut priority) = (
            bump(env.max_fee_per_gas()),
            bump(env.max_priority_fee_per_gas().unwrap_or(0)),
        );
        let history = self
            .chain()
            .fee_history(1, &[50.0])
            .await
            .map_err(|e| SettleError::ChainUnavailable(e.to_string()))?;
        if let Some(next_base) = history.base_fee_per_gas.last() {
            max_fee = max_fee.max(next_base.saturating_mul(2).saturating_add(priority));
        }
        priority = priority.min(max_fee);
        let tx = TransactionRequest::default()
            .from(signer)
            .to(to)
            .input(env.input().clone().into())
            .nonce(env.nonce())
            .gas_limit(env.gas_limit())
            .max_fee_per_gas(max_fee)
            .max_priority_fee_per_gas(priority);
        let signed = self
            .chain()
            .sign(tx)
            .await
            .map_err(|e| SettleError::ChainUnavailable(e.to_string()))?;
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

    /// Another payment under the same `(from, nonce)`: its authorization nonce is taken.
    fn conflict_reason(&self) -> Reason {
        Reason::EvmNonceAlreadyUsed
    }

    fn observe_landed(&self, cost: &Cost) {
        if let (Some(observer), Some(gas)) = (&self.gas_observer, &cost.gas) {
            observer(gas);
        }
    }
}

impl EvmFamily {
    /// The outcome of a mined settlement: landed only if it did not revert and logged the
    /// expected `Transfer(from, to, value)`.
    fn mined(
        &self,
        broadcast: &Broadcast,
        transaction: &str,
        mined: &TransactionReceipt,
    ) -> Lookup {
        let price = mined.effective_gas_price;
        let mut gas = GasPaid {
            transaction: transaction.to_string(),
            gas_used: mined.gas_used,
            effective_gas_price_wei: price,
            fee_wei: u128::from(mined.gas_used).saturating_mul(price),
            usdc: None,
        };
        gas.usdc = self.gas_pricer.as_ref().and_then(|p| p(&gas));
        let cost = Cost {
            gas: Some(gas),
            svm_fee: None,
        };
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
    family: EvmFamily,
    store: Arc<dyn ReplayStore>,
    timing: SettleTiming,
    events: SettleEvents,
) -> EvmSettler {
    Engine::new(family, store, timing, crate::instance_id(), events)
}
