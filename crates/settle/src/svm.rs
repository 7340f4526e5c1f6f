//! Solana `exact` settlement (x402-reference §6 "Settle", §7 replay and idempotency).
//!
//! One payment, step by step: identity (the fee payer's signature of the message) → existing
//! record? answer from it → verify with simulation → reserve (`SET NX`, TTL ≥ 120 s) → record
//! `svm_broadcast` (signed bytes) → send → poll `getSignatureStatuses` until `confirmed`,
//! re-sending the same bytes meanwhile → record `done`. If the blockhash expires first and the
//! transaction never landed, that is terminal (`invalid_exact_svm_transaction_failed`: nothing
//! moved, safe to pay again with a new transaction); if time runs out first, `settlement_pending`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use solana_hash::Hash;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::{SvmChain, SvmChainError};
use x402_proto::{PaymentRequest, Reason, SettleResponse, X402Version};
use x402_verify::Verdict;
use x402_verify::svm::programs::associated_token_account_len;
use x402_verify::svm::{ExactSvmVerifier, SvmPayment};

use crate::SettleError;
use crate::replay::keys::{SVM_REPLAY_MIN_TTL_SECONDS, svm_replay_key};
use crate::replay::{
    GasInUsdc, ReplayStore, SettlementRecord, SvmFeePaid, release_or_expire, wait_while_reserved,
};

/// Timing of confirmation waits.
#[derive(Debug, Clone)]
pub struct SvmSettleTiming {
    /// Longest wait for `confirmed` in one `/settle` call before answering `settlement_pending`.
    pub confirm_timeout: Duration,
    /// Interval between `getSignatureStatuses` polls.
    pub poll_interval: Duration,
    /// Interval between re-sends of a transaction not yet seen by the cluster.
    pub resend_interval: Duration,
    /// How long a request that finds a payment reserved (not yet signed) by another request
    /// waits for it to be broadcast before answering `duplicate_settlement`.
    pub reserved_wait: Duration,
    /// Lifetime of a payment's record (answers retries with the first receipt); at least 120 s.
    pub record_ttl: Duration,
}

impl Default for SvmSettleTiming {
    fn default() -> Self {
        SvmSettleTiming {
            confirm_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(400),
            resend_interval: Duration::from_secs(2),
            reserved_wait: Duration::from_secs(10),
            record_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Prices a landed settlement's fee and rent in USDC for its record (see [`GasInUsdc`]).
pub type SvmFeePricer = Arc<dyn Fn(&SvmFeePaid) -> Option<GasInUsdc> + Send + Sync>;

/// Called once per landed settlement with what it cost (by the request that saw it land).
pub type SvmFeeObserver = Arc<dyn Fn(&SvmFeePaid) + Send + Sync>;

/// Settles Solana `exact` payments on one cluster.
pub struct SvmSettler {
    verifier: Arc<ExactSvmVerifier>,
    store: Arc<dyn ReplayStore>,
    key_prefix: String,
    timing: SvmSettleTiming,
    fee_pricer: Option<SvmFeePricer>,
    fee_observer: Option<SvmFeeObserver>,
}

/// What the caller asked for, kept for the answer.
#[derive(Clone)]
struct Ctx<'a> {
    network: &'a str,
    version: X402Version,
    key: String,
    fingerprint: String,
    payer: Option<String>,
}

impl Ctx<'_> {
    fn failed(&self, reason: Reason, message: String, transaction: String) -> SettleResponse {
        SettleResponse::failed(
            reason.for_svm_version(self.version),
            Some(message),
            transaction,
            self.network.into(),
            self.payer.clone(),
        )
    }
}

impl SvmSettler {
    /// A settler sending through the verifier's chain, recording in `store` under `key_prefix`.
    pub fn new(
        verifier: Arc<ExactSvmVerifier>,
        store: Arc<dyn ReplayStore>,
        key_prefix: impl Into<String>,
        timing: SvmSettleTiming,
    ) -> Self {
        SvmSettler {
            verifier,
            store,
            key_prefix: key_prefix.into(),
            timing,
            fee_pricer: None,
            fee_observer: None,
        }
    }

    /// Prices every landed settlement's fee and rent in USDC into its record.
    pub fn with_fee_pricer(mut self, pricer: SvmFeePricer) -> Self {
        self.fee_pricer = Some(pricer);
        self
    }

    /// Reports what every landed settlement cost to `observer` (metrics, accounting).
    pub fn with_fee_observer(mut self, observer: SvmFeeObserver) -> Self {
        self.fee_observer = Some(observer);
        self
    }

    fn chain(&self) -> &Arc<dyn SvmChain> {
        self.verifier.chain()
    }

    /// Settles the payment in `req` at Unix time `now` (seconds); idempotent per payment.
    ///
    /// Answers (HTTP 200): success with the signature; a verification reason with
    /// `transaction: ""` (nothing broadcast); `settlement_pending` with the signature (sent, not
    /// yet confirmed, blockhash still valid: retry); `duplicate_settlement` (another request holds
    /// it and has not signed yet); `invalid_exact_svm_transaction_failed` with the signature
    /// (failed on chain, or expired unlanded). Errors: [`SettleError`], nothing broadcast.
    pub async fn settle(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<SettleResponse, SettleError> {
        let network = req.network_wire();
        let Some(id) = self.verifier.payment_id(req)? else {
            // Not decodable or not our fee payer: verification names the reason.
            return self.refused(req, network).await;
        };
        let fingerprint = id.to_string();
        let mut ctx = Ctx {
            network,
            version: req.version,
            key: svm_replay_key(
                &self.key_prefix,
                self.verifier.network().as_str(),
                &fingerprint,
            ),
            fingerprint,
            payer: None,
        };
        if let Some(record) = self.store.get(&ctx.key).await? {
            return self.answer_from_record(&ctx, record).await;
        }
        let payment = match self.verifier.verify(req, true).await? {
            Verdict::Valid(p) => p,
            Verdict::Invalid(inv) => {
                // A concurrent request may have settled it meanwhile (its landing makes this
                // simulation fail): its record, written before the send, holds the answer.
                if let Some(record) = self.store.get(&ctx.key).await? {
                    return self.answer_from_record(&ctx, record).await;
                }
                // Its record may be gone (store flushed) while the transaction landed: the
                // cluster knows the deterministic signature.
                if inv.reason == Reason::SvmSimulationFailed.for_svm_version(req.version)
                    && let Some(answer) = self.landed_without_record(&ctx, req, &id, &inv).await
                {
                    return Ok(answer);
                }
                return Ok(SettleResponse::failed(
                    inv.reason,
                    inv.message,
                    String::new(),
                    network.into(),
                    inv.payer,
                ));
            }
        };
        ctx.payer = Some(payment.payer_string());
        let reservation = SettlementRecord::Reserved {
            fingerprint: ctx.fingerprint.clone(),
            at: now,
        };
        let ttl = self
            .timing
            .record_ttl
            .max(Duration::from_secs(SVM_REPLAY_MIN_TTL_SECONDS));
        if !self.store.reserve(&ctx.key, &reservation, ttl).await? {
            return match self.store.get(&ctx.key).await? {
                Some(record) => self.answer_from_record(&ctx, record).await,
                None => Err(SettleError::StoreUnavailable("reservation vanished".into())),
            };
        }
        self.broadcast(&ctx, req, &payment, now).await
    }

    /// The answer for a payment whose transaction the cluster already has although no record
    /// does: its receipt (recorded again), or its on-chain failure. `None` when the cluster does
    /// not know it, or cannot be asked.
    async fn landed_without_record(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        id: &Signature,
        inv: &x402_verify::Invalid,
    ) -> Option<SettleResponse> {
        let status = self.chain().signature_status(id).await.ok()??;
        let transaction = id.to_string();
        let ctx = Ctx {
            payer: inv.payer.clone(),
            ..ctx.clone()
        };
        let response = match status.err {
            Some(err) => ctx.failed(
                Reason::SvmTransactionFailed,
                format!("the settlement transaction failed on chain: {err}"),
                transaction,
            ),
            None if status.confirmed => SettleResponse::settled(
                transaction,
                ctx.network.to_string(),
                inv.payer.clone().unwrap_or_default(),
                req.amount().to_string(),
            ),
            None => ctx.failed(
                Reason::SettlementPending,
                "landed, not confirmed yet; retry /settle".into(),
                transaction,
            ),
        };
        tracing::warn!(key = %ctx.key, "settled payment without a replay record; answered from the chain");
        if response.success
            || response.error_reason.as_deref() != Some(Reason::SettlementPending.as_str())
        {
            let done = SettlementRecord::Done {
                fingerprint: ctx.fingerprint.clone(),
                response: response.clone(),
                gas: None,
                svm_fee: None,
            };
            let ttl = self
                .timing
                .record_ttl
                .max(Duration::from_secs(SVM_REPLAY_MIN_TTL_SECONDS));
            if let Err(e) = self.store.reserve(&ctx.key, &done, ttl).await {
                tracing::warn!(key = %ctx.key, error = %e, "could not record the recovered answer");
            }
        }
        Some(response)
    }

    /// The answer for a payload that has no identity: the verification failure.
    async fn refused(
        &self,
        req: &PaymentRequest,
        network: &str,
    ) -> Result<SettleResponse, SettleError> {
        let inv = match self.verifier.verify(req, false).await? {
            Verdict::Invalid(inv) => inv,
            Verdict::Valid(_) => {
                return Err(SettleError::ChainUnavailable(
                    "payment verified without a transaction id".into(),
                ));
            }
        };
        Ok(SettleResponse::failed(
            inv.reason,
            inv.message,
            String::new(),
            network.into(),
            inv.payer,
        ))
    }

    /// Records the signed transaction, sends it and waits for it to land.
    async fn broadcast(
        &self,
        ctx: &Ctx<'_>,
        req: &PaymentRequest,
        payment: &SvmPayment,
        now: u64,
    ) -> Result<SettleResponse, SettleError> {
        let transaction = payment.signature.to_string();
        let raw = match bincode::serialize(&payment.transaction) {
            Ok(bytes) => STANDARD.encode(bytes),
            Err(e) => {
                self.release(&ctx.key).await;
                return Err(SettleError::ChainUnavailable(format!(
                    "cannot serialize the transaction: {e}"
                )));
            }
        };
        let record = SettlementRecord::SvmBroadcast {
            fingerprint: ctx.fingerprint.clone(),
            transaction: transaction.clone(),
            raw,
            blockhash: payment.blockhash.to_string(),
            fee_lamports: payment.fee_lamports,
            rent_lamports: self.rent_of_created_destination(payment).await,
            receipt: SettleResponse::settled(
                transaction.clone(),
                ctx.network.to_string(),
                payment.payer_string(),
                req.amount().to_string(),
            ),
            at: now,
        };
        if let Err(e) = self.store.update(&ctx.key, &record).await {
            // Not recorded, so not sent.
            self.release(&ctx.key).await;
            return Err(e.into());
        }
        match self.chain().send(&payment.transaction).await {
            Ok(_) => self.await_confirmation(ctx, &record).await,
            Err(SvmChainError::Unavailable(msg)) => {
                tracing::warn!(%transaction, error = %msg, "broadcast outcome unknown");
                // The retry re-sends the recorded bytes and polls until confirmed or expired.
                Ok(ctx.failed(
                    Reason::SettlementPending,
                    format!("broadcast outcome unknown: {msg}"),
                    transaction,
                ))
            }
            Err(SvmChainError::Rejected(msg)) => {
                tracing::warn!(%transaction, error = %msg, "broadcast refused");
                self.release(&ctx.key).await;
                Ok(ctx.failed(
                    Reason::SvmTransactionFailed,
                    format!("the node refused the settlement transaction: {msg}"),
                    String::new(),
                ))
            }
        }
    }

    /// Rent the fee payer deposits when the transaction creates the destination account and it
    /// does not exist yet, lamports (0 when unknown: accounting only).
    async fn rent_of_created_destination(&self, payment: &SvmPayment) -> u64 {
        if !payment.layout.creates_destination {
            return 0;
        }
        if let Ok(Some(_)) = self.chain().account(&payment.layout.destination).await {
            return 0;
        }
        // The layout check admits only SPL Token and Token-2022 transfers.
        let Some(len) = associated_token_account_len(&payment.layout.token_program) else {
            return 0;
        };
        self.chain()
            .minimum_balance_for_rent_exemption(len)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read rent; recorded as 0");
                0
            })
    }

    /// Answers a request that found the payment's record.
    async fn answer_from_record(
        &self,
        ctx: &Ctx<'_>,
        record: SettlementRecord,
    ) -> Result<SettleResponse, SettleError> {
        let waited = wait_while_reserved(
            self.store.as_ref(),
            &ctx.key,
            record,
            self.timing.reserved_wait,
            self.timing.poll_interval.min(Duration::from_millis(100)),
        )
        .await?;
        // Released: the other request failed before broadcast.
        let Some(record) = waited else {
            return Ok(ctx.failed(
                Reason::DuplicateSettlement,
                "a concurrent settlement of this payment failed before broadcast; retry".into(),
                String::new(),
            ));
        };
        match record {
            SettlementRecord::Reserved { .. } => Ok(ctx.failed(
                Reason::DuplicateSettlement,
                "this payment is being settled by another request".into(),
                String::new(),
            )),
            SettlementRecord::Done { mut response, .. } => {
                // Echo the network as this request names it (v1 name or CAIP-2).
                response.network = ctx.network.to_string();
                Ok(response)
            }
            broadcast @ SettlementRecord::SvmBroadcast { .. } => {
                self.await_confirmation(ctx, &broadcast).await
            }
            SettlementRecord::Broadcast { .. } => Err(SettleError::StoreUnavailable(
                "an EVM record under a Solana replay key".into(),
            )),
        }
    }

    /// Polls the signature until it is confirmed or failed (record `done`), or its blockhash
    /// expired unlanded (record `done`, terminal), re-sending the recorded bytes meanwhile; after
    /// the timeout answers `settlement_pending`.
    async fn await_confirmation(
        &self,
        ctx: &Ctx<'_>,
        record: &SettlementRecord,
    ) -> Result<SettleResponse, SettleError> {
        let SettlementRecord::SvmBroadcast {
            transaction,
            raw,
            blockhash,
            fee_lamports,
            rent_lamports,
            receipt,
            ..
        } = record
        else {
            unreachable!("await_confirmation takes a Solana broadcast record");
        };
        let corrupt = |what: &str| SettleError::StoreUnavailable(format!("corrupt record: {what}"));
        let signature: Signature = transaction.parse().map_err(|_| corrupt("signature"))?;
        let blockhash: Hash = blockhash.parse().map_err(|_| corrupt("blockhash"))?;
        let signed: VersionedTransaction = STANDARD
            .decode(raw)
            .ok()
            .and_then(|b| bincode::deserialize(&b).ok())
            .ok_or_else(|| corrupt("transaction"))?;
        let ctx = Ctx {
            payer: receipt.payer.clone(),
            ..ctx.clone()
        };
        let deadline = tokio::time::Instant::now() + self.timing.confirm_timeout;
        let mut last_send = tokio::time::Instant::now();
        loop {
            match self.chain().signature_status(&signature).await {
                Ok(Some(status)) if status.err.is_some() => {
                    let message = format!(
                        "the settlement transaction failed on chain: {}",
                        status.err.unwrap_or_default()
                    );
                    let response =
                        ctx.failed(Reason::SvmTransactionFailed, message, transaction.clone());
                    let fee = self.fee_paid(transaction, *fee_lamports, 0);
                    return Ok(self.finish(&ctx, response, Some(fee)).await);
                }
                Ok(Some(status)) if status.confirmed => {
                    let fee = self.fee_paid(transaction, *fee_lamports, *rent_lamports);
                    return Ok(self.finish(&ctx, receipt.clone(), Some(fee)).await);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if self.expired(&signature, &blockhash).await {
                        let response = ctx.failed(
                            Reason::SvmTransactionFailed,
                            "the transaction's blockhash expired before it landed; nothing was \
                             transferred; pay again with a new transaction"
                                .into(),
                            transaction.clone(),
                        );
                        return Ok(self.finish(&ctx, response, None).await);
                    }
                    if last_send.elapsed() >= self.timing.resend_interval {
                        last_send = tokio::time::Instant::now();
                        if let Err(e) = self.chain().send(&signed).await {
                            tracing::warn!(%transaction, error = %e, "re-send failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(%transaction, error = %e, "status poll failed"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(ctx.failed(
                    Reason::SettlementPending,
                    "not confirmed yet; retry /settle".into(),
                    transaction.clone(),
                ));
            }
            tokio::time::sleep(self.timing.poll_interval).await;
        }
    }

    /// True when the blockhash is no longer valid and the cluster still has not seen the
    /// transaction (checked in that order, so a landing in between is not missed).
    async fn expired(&self, signature: &Signature, blockhash: &Hash) -> bool {
        match self.chain().is_blockhash_valid(blockhash).await {
            Ok(false) => matches!(self.chain().signature_status(signature).await, Ok(None)),
            _ => false,
        }
    }

    fn fee_paid(&self, transaction: &str, fee_lamports: u64, rent_lamports: u64) -> SvmFeePaid {
        let mut fee = SvmFeePaid {
            transaction: transaction.to_string(),
            fee_lamports,
            rent_lamports,
            usdc: None,
        };
        fee.usdc = self.fee_pricer.as_ref().and_then(|p| p(&fee));
        fee
    }

    /// Records the final answer (once across requests and replicas) and returns it.
    async fn finish(
        &self,
        ctx: &Ctx<'_>,
        response: SettleResponse,
        fee: Option<SvmFeePaid>,
    ) -> SettleResponse {
        let done = SettlementRecord::Done {
            fingerprint: ctx.fingerprint.clone(),
            response: response.clone(),
            gas: None,
            svm_fee: fee.clone(),
        };
        match self.store.finish(&ctx.key, &done).await {
            Ok(true) => {
                if let (Some(observer), Some(fee)) = (&self.fee_observer, &fee) {
                    observer(fee);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                transaction = %response.transaction,
                error = %e,
                "could not record the outcome; a retry re-reads the chain"
            ),
        }
        response
    }

    async fn release(&self, key: &str) {
        release_or_expire(self.store.as_ref(), key).await;
    }
}
