//! EVM settlement (x402-reference §5 "Settle", §7): the [`ChainFamily`] of EVM payments, one
//! [`EvmFamily`] per transfer method on a chain, all on the chain's one [`sender::EvmSender`].
//!
//! - [`sender`]: signer slots and balance floor, sender nonces, fees, gas limits, the
//!   settlement-time simulation, signing, sending, re-sending and replacement, the receipt
//!   poller ([`receipts`]) and nonce repair ([`gaps`]): shared by every kind on the chain.
//! - [`methods`]: what a payment is under each transfer method ([`methods::eip3009`],
//!   [`methods::permit2`]): replay key, checks, call, landing, expiry, conflict reason.
//!
//! Signing pipeline: the method's checks, then the sender's simulation of the method's call
//! (which also gives the gas limit) before any shared state is touched; the sender nonce is one
//! Redis round trip ([`crate::nonces`]); signing is local; the send happens after the record,
//! with nothing held.
//!
//! Routing: each method's replay keys live in their own key space
//! ([`methods::TransferMethod::key_space`]), and the reconciler hands a record to the engine
//! whose family's key space its key starts with; the EIP-3009 key layout is the one of the
//! releases before the split, so records already stored are reconciled after an upgrade.

pub mod fees;
pub mod gaps;
pub mod gas_limits;
pub mod methods;
pub mod preconfirm;
pub mod rebuild;
pub mod receipts;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use x402_chain::ChainError;
use x402_chain::eip3009::IEip3009Token;
use x402_proto::{PaymentRequest, Reason};
use x402_verify::Invalid;

use crate::engine::{Engine, SettleTiming};
use crate::family::{ChainFamily, Identified, Identity, Lookup, Probe, Sent, Signed};
use crate::record::{Broadcast, Cost, GasInUsdc, GasPaid, PaymentFacts, SentTx};
use crate::replay::ReplayStore;
use crate::{SettleError, SettleEvents};
use methods::{Revert, TransferMethod};
use sender::{EvmSender, Held};

pub use methods::eip3009::Eip3009;
pub use methods::permit2::Permit2Exact;
pub use sender::{CONTRACT_SIGNATURE_GAS_CAP_MULTIPLE, DEFAULT_CONTRACT_SIGNATURE_GAS_CAP};

/// Prices a mined settlement's fee in USDC for its record (see [`GasInUsdc`]), against the
/// quote of its payment's asset and settlement call ([`PaymentFacts::kind`]).
pub type GasPricer = Arc<dyn Fn(&PaymentFacts, &GasPaid) -> Option<GasInUsdc> + Send + Sync>;

/// Called once per mined settlement with its gas cost.
pub type GasObserver = Arc<dyn Fn(&GasPaid) + Send + Sync>;

/// Called once per landed settlement with its asset, its settlement call
/// ([`crate::record::PaymentFacts::kind`]: `""` for EIP-3009, `"permit2"`, `"upto"`) and its
/// receipt `gasUsed` (what the gas oracle prices gas units from, per kind).
pub type GasSampler = Arc<dyn Fn(alloy::primitives::Address, &str, u64) + Send + Sync>;

/// Called after each nonce repair look with `(signer, nonces handed out but not mined)`.
pub type NonceLagObserver = Arc<dyn Fn(alloy::primitives::Address, u64) + Send + Sync>;

/// Settles EVM `exact` EIP-3009 payments on one chain.
pub type EvmSettler = Engine<EvmFamily<Eip3009>>;

/// Settles EVM `exact` Permit2 payments on one chain.
pub type Permit2Settler = Engine<EvmFamily<Permit2Exact>>;

/// Default most settlements per signer between taking the signer and sending.
pub const DEFAULT_MAX_IN_FLIGHT_PER_SIGNER: usize = 64;

/// One transfer method `M` on its chain's shared sender.
pub struct EvmFamily<M: TransferMethod> {
    sender: Arc<EvmSender>,
    method: M,
    /// Whether this family runs the sender's periodic repair (the first built on the sender).
    maintains: bool,
}

impl<M: TransferMethod> EvmFamily<M> {
    /// `method` on `sender` (the chain's one sender, shared with its other kinds).
    pub fn new(sender: Arc<EvmSender>, method: M) -> Self {
        let maintains = sender.take_maintenance();
        EvmFamily {
            sender,
            method,
            maintains,
        }
    }

    /// The shared sender.
    pub fn sender(&self) -> &Arc<EvmSender> {
        &self.sender
    }

    /// The transfer method.
    pub fn method(&self) -> &M {
        &self.method
    }

    /// [`EvmFamily::mined`], and for a reverted settlement, whether an earlier transaction of
    /// ours settled the same payment (sent before its record was lost): then
    /// [`Lookup::SettledBefore`] ([`TransferMethod::settled_before`]).
    async fn outcome(
        &self,
        broadcast: &Broadcast,
        transaction: &str,
        mined: &TransactionReceipt,
    ) -> Lookup {
        let lookup = self.mined(broadcast, transaction, mined);
        if mined.status() {
            return lookup;
        }
        match self.method.settled_before(broadcast).await {
            Some(landed)
                if landed.receipt.status()
                    && !broadcast.transactions().any(|t| {
                        t.parse::<alloy::primitives::B256>().ok() == Some(landed.transaction)
                    }) =>
            {
                let other = format!("{:#x}", landed.transaction);
                tracing::warn!(reverted = %transaction, settled_by = %other, gas_wasted_wei = u128::from(mined.gas_used).saturating_mul(mined.effective_gas_price), "settlement reverted: the payment was settled by an earlier transaction of ours (its record was lost)");
                Lookup::SettledBefore {
                    cost: self
                        .sender
                        .cost_of(&broadcast.payment, &other, &landed.receipt),
                    transaction: other,
                }
            }
            _ => lookup,
        }
    }

    /// The outcome of a mined settlement: landed only if it did not revert and the method
    /// finds what it requires in the receipt.
    fn mined(
        &self,
        broadcast: &Broadcast,
        transaction: &str,
        mined: &TransactionReceipt,
    ) -> Lookup {
        let cost = self.sender.cost_of(&broadcast.payment, transaction, mined);
        let failed = |reason: Reason, message: String| Lookup::Failed {
            transaction: transaction.to_string(),
            reason,
            message,
            cost: cost.clone(),
        };
        if !mined.status() {
            return failed(
                self.method.transaction_failed(broadcast),
                "settlement transaction reverted".into(),
            );
        }
        if let Some((reason, message)) = self.method.landed(&broadcast.payment, mined) {
            return failed(reason, message);
        }
        Lookup::Landed {
            transaction: transaction.to_string(),
            cost,
        }
    }
}

#[async_trait]
impl<M: TransferMethod> ChainFamily for EvmFamily<M> {
    type Payment = M::Payment;
    type Signer = Held;

    fn key_space(&self) -> String {
        self.method.key_space()
    }

    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError> {
        self.method.identify(req, now).await
    }

    async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Result<M::Payment, Invalid>, SettleError> {
        self.method.verify(req, now).await
    }

    /// A refused payment that one of this network's signers settled before its record was lost
    /// (the method finds it, [`rebuild`] for EIP-3009): restored as `delivered` with that
    /// transaction, never answered as a plain failure nor as a second success.
    async fn recover_lost(
        &self,
        req: &PaymentRequest,
        id: &Identity,
        invalid: &Invalid,
        now: u64,
    ) -> Option<crate::record::SettlementRecord> {
        let landed = self.method.recover_lost(req, invalid).await?;
        if !landed.receipt.status() {
            return None;
        }
        let transaction = format!("{:#x}", landed.transaction);
        let cost = self
            .sender
            .cost_of(&id.facts, &transaction, &landed.receipt);
        Some(crate::record::SettlementRecord::Delivered(
            crate::record::Settled {
                payment: id.facts.clone(),
                transaction,
                cost,
                settled_at: now,
                preconfirmed: None,
            },
        ))
    }

    async fn ready_to_settle(&self, _payment: &M::Payment) -> Result<(), SettleError> {
        self.sender.ready().await
    }

    fn payer_of(&self, payment: &M::Payment) -> String {
        self.method.payer(payment).to_checksum(None)
    }

    /// `balanceOf(payer)` at the latest block against the amount plus the in-flight debits;
    /// with none in flight the settlement-time simulation in [`ChainFamily::sign`] checks the
    /// same balance (no extra call); a charge of 0 sends nothing, so has nothing to cover.
    async fn check_funds(
        &self,
        payment: &M::Payment,
        amount: u128,
        in_flight: u128,
    ) -> Result<Option<Invalid>, SettleError> {
        if in_flight == 0 || amount == 0 {
            return Ok(None);
        }
        let payer = self.method.payer(payment);
        let call = TransactionRequest::default()
            .to(self.method.asset(payment))
            .input(
                IEip3009Token::balanceOfCall { account: payer }
                    .abi_encode()
                    .into(),
            );
        let unavailable = |e: ChainError| SettleError::ChainUnavailable(e.into());
        let ret = self.sender.chain().call(&call).await.map_err(unavailable)?;
        let balance = IEip3009Token::balanceOfCall::abi_decode_returns(&ret).map_err(|e| {
            SettleError::ChainUnavailable(x402_chain::ChainUnavailable::Other(format!(
                "balanceOf answered {ret}: {e}"
            )))
        })?;
        let needed = U256::from(amount) + U256::from(in_flight);
        Ok((balance < needed).then(|| {
            Invalid::new(
                self.method.insufficient_funds(),
                format!(
                    "balance {balance} does not cover value {amount} on top of {in_flight} \
                     in settlements in flight"
                ),
                Some(payer.to_checksum(None)),
            )
        }))
    }

    /// The signer the payment names ([`TransferMethod::signer`]), else any free one.
    async fn acquire_signer(&self, payment: &M::Payment) -> Result<Held, SettleError> {
        if let Some(signer) = self.method.signer(payment) {
            return self.sender.take_slot_of(signer).await;
        }
        self.sender.take_slot().await
    }

    async fn release_signer(&self, held: Held) {
        drop(held);
    }

    async fn sign(
        &self,
        held: &Held,
        key: &str,
        req: &PaymentRequest,
        payment: &M::Payment,
    ) -> Result<Signed, SettleError> {
        let signer = held.signer();
        if self.method.settles_nothing(payment) {
            return Ok(Signed::Nothing);
        }
        let (to, data) = self.method.call(payment);
        let call = TransactionRequest::default()
            .from(signer)
            .to(to)
            .input(data.into());
        let simulated = self
            .sender
            .simulate(
                call,
                self.method.gas_key(payment),
                self.method.asset(payment),
                self.method.ecdsa(payment),
            )
            .await;
        let tx = match simulated {
            Ok(Ok(tx)) => tx,
            Ok(Err(over_cap)) => {
                return Ok(Signed::Refused(Invalid::new(
                    self.method.blocked_payer(),
                    over_cap,
                    Some(self.payer_of(payment)),
                )));
            }
            Err(ChainError::Reverted { message, data }) => {
                let inv = self
                    .method
                    .diagnose(req, payment, Revert { message, data })
                    .await?;
                return Ok(Signed::Refused(inv));
            }
            Err(e) => return Err(SettleError::ChainUnavailable(e.into())),
        };
        Ok(Signed::Tx(
            self.sender.sign_at_fresh_nonce(signer, key, tx).await?,
        ))
    }

    async fn discard(&self, sent: &SentTx) {
        self.sender.discard(sent).await
    }

    async fn send(&self, sent: &SentTx) -> Sent {
        self.sender.send(sent).await
    }

    async fn lookup(
        &self,
        broadcast: &Broadcast,
        probe: Probe,
        now: u64,
    ) -> Result<Lookup, SettleError> {
        if let Some((transaction, mined)) = self.sender.find_mined(broadcast).await? {
            return Ok(self.outcome(broadcast, &transaction, &mined).await);
        }
        if let Some((sent, receipt)) = self.sender.find_preconfirmed(broadcast).await {
            let transaction = sent.transaction().to_string();
            // Only a success is taken from a pre-confirmation; a failure waits for its block.
            match self.mined(broadcast, &transaction, &receipt) {
                Lookup::Landed { transaction, cost } => {
                    return Ok(Lookup::Preconfirmed {
                        transaction,
                        cost,
                        sent,
                    });
                }
                Lookup::Failed {
                    reason, message, ..
                } => {
                    tracing::debug!(%transaction, reason = reason.as_str(), %message, "the pre-confirmation says the settlement fails: waiting for its block");
                }
                _ => {}
            }
        }
        if probe == Probe::LandedOnly {
            return Ok(Lookup::NotYet { known: true });
        }
        let known = self.sender.node_knows(broadcast).await?;
        if !known
            && now > broadcast.payment.valid_until
            && let Some(message) = self.method.expired(broadcast).await?
        {
            return Ok(Lookup::Expired { message });
        }
        Ok(Lookup::NotYet { known })
    }

    fn news_mark(&self) -> u64 {
        self.sender.receipts().mark()
    }

    /// With pre-confirmations, at most their poll interval: a waiting request asks again.
    async fn wait_for_news(&self, mark: u64, max: Duration) {
        let max = self
            .sender
            .preconfirmations()
            .map_or(max, |p| max.min(p.poll_interval()));
        self.sender.receipts().next_block(mark, max).await
    }

    async fn maintain(&self) {
        if self.maintains {
            self.sender.maintain().await
        }
    }

    async fn replacement(
        &self,
        key: &str,
        broadcast: &Broadcast,
    ) -> Result<Option<SentTx>, SettleError> {
        self.sender.replacement(key, broadcast).await
    }

    fn transaction_failed(&self, broadcast: &Broadcast) -> Reason {
        self.method.transaction_failed(broadcast)
    }

    fn blocked_payer(&self) -> Reason {
        self.method.blocked_payer()
    }

    fn conflict_reason(&self) -> Reason {
        self.method.conflict_reason()
    }

    fn observe_landed(&self, payment: &PaymentFacts, cost: &Cost) {
        self.sender.observe_landed(payment, cost)
    }
}

/// A settler: `family` under the state machine, with the sender's clock. Starts the chain's
/// receipt poller (it covers transactions sent after it started).
pub fn settler<M: TransferMethod>(
    family: EvmFamily<M>,
    store: Arc<dyn ReplayStore>,
    timing: SettleTiming,
    events: SettleEvents,
) -> Engine<EvmFamily<M>> {
    let clock = family.sender.clock().clone();
    family.sender.start();
    Engine::new(family, store, timing, crate::instance_id(), events).with_clock(clock)
}
