//! EVM `exact` settlement (x402-reference §5 "Settle", §7 replay and idempotency).
//!
//! One payment, step by step: identity → existing record? answer from it → verify (no
//! simulation: `eth_estimateGas` simulates) → reserve (`SET NX`) → lock a signer → nonce → sign
//! (estimate reverts: diagnose, release, fail) → record `broadcast` → send raw → wait for the
//! receipt → record `done`. No receipt in time → `settlement_pending` with the hash.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolEvent;
use x402_chain::{ChainError, EvmChain};
use x402_proto::{PaymentRequest, Reason, SettleResponse};
use x402_verify::Verdict;
use x402_verify::evm::token::IEip3009Token;
use x402_verify::evm::{EvmPayment, ExactEvmVerifier};

use crate::SettleError;
use crate::replay::keys::{
    SIGNER_LEASE_SECONDS, evm_replay_key, evm_signer_lease_key, replay_ttl_seconds,
};
use crate::replay::{
    GasInUsdc, GasPaid, ReplayStore, SettlementRecord, release_or_expire, wait_while_reserved,
};

/// Timing of receipt waits.
#[derive(Debug, Clone)]
pub struct EvmSettleTiming {
    /// Longest wait for a receipt in one `/settle` call before answering `settlement_pending`.
    pub receipt_timeout: Duration,
    /// Interval between `eth_getTransactionReceipt` polls.
    pub poll_interval: Duration,
    /// How long a request that finds a payment reserved (not yet signed) by another request
    /// waits for it to be broadcast before answering `duplicate_settlement`.
    pub reserved_wait: Duration,
    /// A broadcast transaction still without receipt after this long is re-sent (same bytes).
    pub resend_after: Duration,
}

impl Default for EvmSettleTiming {
    fn default() -> Self {
        EvmSettleTiming {
            receipt_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            reserved_wait: Duration::from_secs(10),
            resend_after: Duration::from_secs(15),
        }
    }
}

/// Settles EVM `exact` payments on one chain.
pub struct EvmSettler {
    verifier: Arc<ExactEvmVerifier>,
    store: Arc<dyn ReplayStore>,
    key_prefix: String,
    signer_locks: Vec<(Address, tokio::sync::Mutex<()>)>,
    next_signer: AtomicUsize,
    timing: EvmSettleTiming,
    gas_observer: Option<GasObserver>,
    gas_pricer: Option<GasPricer>,
}

/// Prices a mined settlement's fee in USDC for its record (see [`GasInUsdc`]).
pub type GasPricer = Arc<dyn Fn(&GasPaid) -> Option<GasInUsdc> + Send + Sync>;

/// Called once per mined settlement with its gas cost (by the request that saw the receipt).
pub type GasObserver = Arc<dyn Fn(&GasPaid) + Send + Sync>;

/// Result of signing and sending under the signer lock.
enum Sent {
    /// Final answer without waiting (refused before broadcast, or outcome unknown).
    Done(SettleResponse),
    /// Broadcast: wait for the receipt of this record.
    Broadcast(SettlementRecord),
}

/// What the caller asked for, kept for the answer.
struct Ctx<'a> {
    network: &'a str,
    payer: String,
    key: String,
    fingerprint: String,
}

impl EvmSettler {
    /// A settler sending from the verifier's chain signers, recording in `store` under `key_prefix`.
    pub fn new(
        verifier: Arc<ExactEvmVerifier>,
        store: Arc<dyn ReplayStore>,
        key_prefix: impl Into<String>,
        timing: EvmSettleTiming,
    ) -> Self {
        let signer_locks = verifier
            .chain()
            .signers()
            .iter()
            .map(|a| (*a, tokio::sync::Mutex::new(())))
            .collect();
        EvmSettler {
            verifier,
            store,
            key_prefix: key_prefix.into(),
            signer_locks,
            next_signer: AtomicUsize::new(0),
            timing,
            gas_observer: None,
            gas_pricer: None,
        }
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

    /// Settles the payment in `req` at Unix time `now` (seconds); idempotent per payment.
    ///
    /// Answers (HTTP 200): success with the transaction; a verification reason with
    /// `transaction: ""` (nothing broadcast); `settlement_pending` with the transaction (broadcast,
    /// not yet confirmed: retry); `duplicate_settlement` (another request holds it and has not
    /// signed yet); `invalid_exact_evm_transaction_failed` with the transaction (reverted).
    /// Errors: [`SettleError`], nothing broadcast.
    pub async fn settle(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<SettleResponse, SettleError> {
        let id = self.verifier.payment_id(req)?;
        let ctx = Ctx {
            network: req.network_wire(),
            payer: id.from.to_checksum(None),
            key: evm_replay_key(&self.key_prefix, id.chain_id, id.asset, id.from, id.nonce),
            fingerprint: format!("{:#x}", id.fingerprint),
        };
        if let Some(record) = self.store.get(&ctx.key).await? {
            return self.answer_from_record(&ctx, record).await;
        }
        let payment = match self.verifier.verify(req, now, false).await? {
            Verdict::Valid(p) => p,
            Verdict::Invalid(inv) => {
                return Ok(SettleResponse::failed(
                    inv.reason,
                    inv.message,
                    String::new(),
                    ctx.network.into(),
                    inv.payer,
                ));
            }
        };
        let reservation = SettlementRecord::Reserved {
            fingerprint: ctx.fingerprint.clone(),
            at: now,
        };
        let ttl = Duration::from_secs(replay_ttl_seconds(id.valid_before, now));
        if !self.store.reserve(&ctx.key, &reservation, ttl).await? {
            let record = self.store.get(&ctx.key).await?;
            return match record {
                Some(record) => self.answer_from_record(&ctx, record).await,
                None => Err(SettleError::StoreUnavailable("reservation vanished".into())),
            };
        }
        self.broadcast(&ctx, req, &payment, now).await
    }

    /// Signs, records and sends the reserved payment under the signer's local lock and
    /// cross-replica lease, then waits for its receipt.
    async fn broadcast(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        payment: &EvmPayment,
        now: u64,
    ) -> Result<SettleResponse, SettleError> {
        let Some((signer, lock)) = self.pick_signer() else {
            self.release(&ctx.key).await;
            return Err(SettleError::ChainUnavailable(
                "no signer configured for this network".into(),
            ));
        };
        let guard = lock.lock().await;
        let lease = evm_signer_lease_key(&self.key_prefix, self.chain().chain_id(), signer);
        if let Err(e) = self.take_lease(&lease, &ctx.fingerprint).await {
            drop(guard);
            self.release(&ctx.key).await;
            return Err(e);
        }
        let outcome = self.sign_record_send(ctx, req, payment, signer, now).await;
        if let Err(e) = self.store.end_lease(&lease, &ctx.fingerprint).await {
            tracing::warn!(lease, error = %e, "could not end signer lease; it expires by itself");
        }
        drop(guard);
        match outcome? {
            Sent::Done(response) => Ok(response),
            Sent::Broadcast(record) => self.await_receipt(ctx, &record).await,
        }
    }

    /// Waits (up to the lease lifetime) for the cross-replica lease of a signer.
    async fn take_lease(&self, lease: &str, holder: &str) -> Result<(), SettleError> {
        let ttl = Duration::from_secs(SIGNER_LEASE_SECONDS);
        let deadline = tokio::time::Instant::now() + ttl;
        while !self.store.try_lease(lease, holder, ttl).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(SettleError::ChainUnavailable(format!(
                    "signer busy: {lease} held for {ttl:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// With the signer held: nonce, sign (a reverting estimate is diagnosed and the reservation
    /// released), record `broadcast`, send.
    async fn sign_record_send(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        payment: &EvmPayment,
        signer: Address,
        now: u64,
    ) -> Result<Sent, SettleError> {
        let signed = match self.sign(signer, payment).await {
            Ok(signed) => signed,
            Err(ChainError::Reverted { message, .. }) => {
                self.release(&ctx.key).await;
                let (name, version) = (
                    req.extra_str("name").unwrap_or(""),
                    req.extra_str("version").unwrap_or(""),
                );
                let inv = self
                    .verifier
                    .diagnose(payment, name, version, message)
                    .await?;
                return Ok(Sent::Done(SettleResponse::failed(
                    inv.reason,
                    inv.message,
                    String::new(),
                    ctx.network.into(),
                    inv.payer,
                )));
            }
            Err(e) => {
                self.release(&ctx.key).await;
                return Err(SettleError::ChainUnavailable(e.to_string()));
            }
        };
        let transaction = format!("{:#x}", signed.hash);
        let receipt = SettleResponse::settled(
            transaction.clone(),
            ctx.network.to_string(),
            ctx.payer.clone(),
            payment.authorization.value.to_string(),
        );
        let record = SettlementRecord::Broadcast {
            fingerprint: ctx.fingerprint.clone(),
            transaction: transaction.clone(),
            raw: format!("{}", signed.raw),
            signer: signer.to_checksum(None),
            nonce: signed.nonce,
            receipt,
            at: now,
        };
        if let Err(e) = self.store.update(&ctx.key, &record).await {
            // Not recorded, so not sent: the payment stays unbroadcast.
            self.release(&ctx.key).await;
            return Err(e.into());
        }
        match self.chain().send_raw(&signed.raw).await {
            Ok(_) => Ok(Sent::Broadcast(record)),
            Err(ChainError::Unavailable(msg)) => {
                tracing::warn!(%transaction, error = %msg, "broadcast outcome unknown");
                let message = format!("broadcast outcome unknown: {msg}");
                Ok(Sent::Done(pending(ctx, transaction, message)))
            }
            Err(e) => {
                // The node refused the transaction: it is in no mempool and cannot land.
                tracing::warn!(%transaction, error = %e, "broadcast refused");
                self.release(&ctx.key).await;
                Ok(Sent::Done(SettleResponse::failed(
                    Reason::EvmTransactionFailed,
                    Some(format!("node refused the settlement transaction: {e}")),
                    String::new(),
                    ctx.network.into(),
                    Some(ctx.payer.clone()),
                )))
            }
        }
    }

    async fn sign(
        &self,
        signer: Address,
        payment: &EvmPayment,
    ) -> Result<x402_chain::SignedTx, ChainError> {
        let nonce = self.chain().pending_nonce(signer).await?;
        let tx = TransactionRequest::default()
            .from(signer)
            .to(payment.asset)
            .input(payment.settlement_calldata().into())
            .nonce(nonce);
        self.chain().sign(tx).await
    }

    /// Answers a request that found the payment's record.
    async fn answer_from_record(
        &self,
        ctx: &Ctx<'_>,
        record: SettlementRecord,
    ) -> Result<SettleResponse, SettleError> {
        if record.fingerprint() != ctx.fingerprint {
            return Ok(SettleResponse::failed(
                Reason::EvmNonceAlreadyUsed,
                Some(
                    "another payment with this authorization nonce is already settled or settling"
                        .into(),
                ),
                String::new(),
                ctx.network.into(),
                Some(ctx.payer.clone()),
            ));
        }
        let waited = wait_while_reserved(
            self.store.as_ref(),
            &ctx.key,
            record,
            self.timing.reserved_wait,
            self.timing.poll_interval,
        )
        .await?;
        // Released: the other request failed before broadcast.
        let Some(record) = waited else {
            return Ok(SettleResponse::failed(
                Reason::DuplicateSettlement,
                Some(
                    "a concurrent settlement of this payment failed before broadcast; retry".into(),
                ),
                String::new(),
                ctx.network.into(),
                Some(ctx.payer.clone()),
            ));
        };
        match record {
            SettlementRecord::Reserved { .. } => Ok(SettleResponse::failed(
                Reason::DuplicateSettlement,
                Some("this payment is being settled by another request".into()),
                String::new(),
                ctx.network.into(),
                Some(ctx.payer.clone()),
            )),
            SettlementRecord::Done { response, .. } => Ok(response),
            broadcast @ SettlementRecord::Broadcast { .. } => {
                self.await_receipt(ctx, &broadcast).await
            }
            SettlementRecord::SvmBroadcast { .. } => Err(SettleError::StoreUnavailable(
                "a Solana record under an EVM replay key".into(),
            )),
        }
    }

    /// Waits for the receipt of a broadcast record; re-sends its raw transaction when it has
    /// been missing for long; records and returns the final answer, or `settlement_pending`.
    async fn await_receipt(
        &self,
        ctx: &Ctx<'_>,
        record: &SettlementRecord,
    ) -> Result<SettleResponse, SettleError> {
        let SettlementRecord::Broadcast {
            transaction,
            raw,
            receipt,
            at,
            ..
        } = record
        else {
            unreachable!("await_receipt takes a broadcast record");
        };
        let hash: B256 = transaction
            .parse()
            .map_err(|_| SettleError::StoreUnavailable("corrupt tx hash".into()))?;
        let deadline = tokio::time::Instant::now() + self.timing.receipt_timeout;
        let mut resent = false;
        loop {
            match self.chain().receipt(hash).await {
                Ok(Some(mined)) => {
                    let response = self.final_response(ctx, receipt, &mined);
                    let gas_used = mined.gas_used;
                    let price = mined.effective_gas_price;
                    let mut gas = GasPaid {
                        transaction: transaction.clone(),
                        gas_used,
                        effective_gas_price_wei: price,
                        fee_wei: u128::from(gas_used).saturating_mul(price),
                        usdc: None,
                    };
                    gas.usdc = self.gas_pricer.as_ref().and_then(|p| p(&gas));
                    let done = SettlementRecord::Done {
                        fingerprint: ctx.fingerprint.clone(),
                        response: response.clone(),
                        gas: Some(gas.clone()),
                        svm_fee: None,
                    };
                    match self.store.finish(&ctx.key, &done).await {
                        Ok(true) => {
                            if let Some(observer) = &self.gas_observer {
                                observer(&gas);
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(%transaction, error = %e, "could not record confirmation; a retry re-reads the chain")
                        }
                    }
                    return Ok(response);
                }
                Ok(None) => {
                    let age = unix_now().saturating_sub(*at);
                    if !resent && age >= self.timing.resend_after.as_secs() {
                        resent = true;
                        if let Ok(raw) = raw.parse::<Bytes>()
                            && let Err(e) = self.chain().send_raw(&raw).await
                        {
                            tracing::warn!(%transaction, error = %e, "re-send failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(%transaction, error = %e, "receipt poll failed"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(pending(
                    ctx,
                    transaction.clone(),
                    "not confirmed yet; retry /settle".into(),
                ));
            }
            tokio::time::sleep(self.timing.poll_interval).await;
        }
    }

    /// The answer for a mined settlement: success only if it did not revert and logged the
    /// expected `Transfer(from, to, value)`.
    fn final_response(
        &self,
        ctx: &Ctx<'_>,
        expected: &SettleResponse,
        mined: &TransactionReceipt,
    ) -> SettleResponse {
        let transaction = expected.transaction.clone();
        let fail = |reason: Reason, msg: &str| {
            SettleResponse::failed(
                reason,
                Some(msg.into()),
                transaction.clone(),
                ctx.network.into(),
                Some(ctx.payer.clone()),
            )
        };
        if !mined.status() {
            return fail(
                Reason::EvmTransactionFailed,
                "settlement transaction reverted",
            );
        }
        let payer: Address = ctx.payer.parse().unwrap_or_default();
        let value = expected.amount.as_deref().unwrap_or_default();
        let transferred = mined.logs().iter().any(|log| {
            IEip3009Token::Transfer::decode_log(&log.inner)
                .map(|ev| ev.from == payer && ev.value.to_string() == value)
                .unwrap_or(false)
        });
        if !transferred {
            return fail(
                Reason::EvmTransferEventMismatch,
                "no matching Transfer event in the receipt",
            );
        }
        expected.clone()
    }

    /// A signer that is free right now if any, else the next in round-robin order.
    fn pick_signer(&self) -> Option<(Address, &tokio::sync::Mutex<()>)> {
        if let Some((addr, lock)) = self
            .signer_locks
            .iter()
            .find(|(_, lock)| lock.try_lock().is_ok())
        {
            return Some((*addr, lock));
        }
        let n = self.signer_locks.len();
        let (addr, lock) = self
            .signer_locks
            .get(self.next_signer.fetch_add(1, Ordering::Relaxed) % n.max(1))?;
        Some((*addr, lock))
    }

    async fn release(&self, key: &str) {
        release_or_expire(self.store.as_ref(), key).await;
    }
}

fn pending(ctx: &Ctx<'_>, transaction: String, message: String) -> SettleResponse {
    SettleResponse::failed(
        Reason::SettlementPending,
        Some(message),
        transaction,
        ctx.network.into(),
        Some(ctx.payer.clone()),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
