//! Solana `exact` settlement (x402-reference §6 "Settle", §7): the [`ChainFamily`] of
//! fee-payer co-signed SPL `TransferChecked` payments, driven by the [`Engine`].
//!
//! - Identity: the fee payer's signature of the message (deterministic Ed25519: one payment,
//!   one key); binding: keccak256 of that signature and the requirements (scheme, network,
//!   asset, `payTo`, amount).
//! - `extra.memo` is claimed per `payTo` and network with the reservation: a second transaction
//!   carrying a settled memo is refused (x402-conformance F4).
//! - Lookup: `getSignatureStatuses`; unseen after its blockhash expired → expired (nothing
//!   moved: pay again with a new transaction).

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::keccak256;
use alloy::sol_types::SolValue;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use solana_hash::Hash;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::spl::{associated_token_account_len, token_account_amount};
use x402_chain::{SvmChain, SvmChainError};
use x402_proto::{PaymentRequest, Reason, SettleResponse, X402Version};
use x402_verify::svm::{ExactSvmVerifier, SvmPayment};
use x402_verify::{Invalid, Verdict};

use crate::engine::{Engine, SettleTiming};
use crate::family::{ChainFamily, Identified, Identity, Lookup, Probe, Sent, Signed};
use crate::record::{
    Broadcast, Cost, GasInUsdc, PaymentFacts, SentTx, Settled, SettlementRecord, SvmFeePaid,
};
use crate::replay::ReplayStore;
use crate::replay::keys::{SVM_REPLAY_MIN_TTL_SECONDS, svm_memo_claim_key, svm_replay_key};
use crate::{SettleError, SettleEvents};

/// Prices a landed settlement's fee and rent in USDC for its record (see [`GasInUsdc`]).
pub type SvmFeePricer = Arc<dyn Fn(&SvmFeePaid) -> Option<GasInUsdc> + Send + Sync>;

/// Called once per landed settlement with what it cost.
pub type SvmFeeObserver = Arc<dyn Fn(&SvmFeePaid) + Send + Sync>;

/// Settles Solana `exact` payments on one cluster.
pub type SvmSettler = Engine<SvmFamily>;

/// The Solana `exact` chain family on one cluster.
pub struct SvmFamily {
    verifier: Arc<ExactSvmVerifier>,
    key_prefix: String,
    record_ttl: Duration,
    /// Fee payers below this balance (lamports) take no settlements; 0 disables.
    min_fee_payer_lamports: u64,
    fee_pricer: Option<SvmFeePricer>,
    fee_observer: Option<SvmFeeObserver>,
}

impl SvmFamily {
    /// The family for the verifier's cluster; records live `record_ttl` (at least 120 s,
    /// about twice a blockhash's lifetime).
    pub fn new(
        verifier: Arc<ExactSvmVerifier>,
        key_prefix: impl Into<String>,
        record_ttl: Duration,
    ) -> Self {
        SvmFamily {
            verifier,
            key_prefix: key_prefix.into(),
            record_ttl: record_ttl.max(Duration::from_secs(SVM_REPLAY_MIN_TTL_SECONDS)),
            min_fee_payer_lamports: 0,
            fee_pricer: None,
            fee_observer: None,
        }
    }

    /// A payment whose fee payer holds less than `lamports` is refused with 503 before
    /// anything is reserved (it could not pay the fee and rent).
    pub fn with_fee_payer_floor(mut self, lamports: u64) -> Self {
        self.min_fee_payer_lamports = lamports;
        self
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

    fn fee_paid(&self, transaction: &str, fee_lamports: u64, rent_lamports: u64) -> Cost {
        let mut fee = SvmFeePaid {
            transaction: transaction.to_string(),
            fee_lamports,
            rent_lamports,
            usdc: None,
        };
        fee.usdc = self.fee_pricer.as_ref().and_then(|p| p(&fee));
        Cost {
            gas: None,
            svm_fee: Some(fee),
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

    /// The verification failure of a payload that has no identity.
    async fn refused(&self, req: &PaymentRequest) -> Result<SettleResponse, SettleError> {
        let inv = match self.verifier.verify(req, false).await? {
            Verdict::Invalid(inv) => inv,
            Verdict::Valid(_) => {
                return Err(SettleError::Internal(
                    "payment verified without a transaction id".into(),
                ));
            }
        };
        Ok(SettleResponse::failed(
            inv.reason,
            inv.message,
            String::new(),
            req.network_wire().into(),
            inv.payer,
        ))
    }
}

/// Binding of a Solana payment: its transaction id and the requirements it settles under.
fn binding(signature: &Signature, req: &PaymentRequest, network: &str) -> String {
    let encoded = (
        signature.to_string(),
        req.scheme().to_string(),
        network.to_string(),
        req.asset().to_string(),
        req.pay_to().to_string(),
        req.amount().to_string(),
    )
        .abi_encode();
    format!("{:#x}", keccak256(encoded))
}

#[async_trait]
impl ChainFamily for SvmFamily {
    type Payment = SvmPayment;
    type Signer = ();

    fn key_space(&self) -> String {
        format!(
            "{}:replay:svm:{}:",
            self.key_prefix,
            self.verifier.network().as_str()
        )
    }

    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError> {
        let Some(signature) = self.verifier.payment_id(req)? else {
            // Not decodable or not our fee payer: verification names the reason.
            return Ok(Identified::Refused(Box::new(self.refused(req).await?)));
        };
        let network = self.verifier.network().as_str().to_string();
        let claims = req
            .extra_str("memo")
            .filter(|m| !m.is_empty())
            .map(|memo| svm_memo_claim_key(&self.key_prefix, &network, req.pay_to(), memo))
            .into_iter()
            .collect();
        Ok(Identified::Payment(Box::new(Identity {
            key: svm_replay_key(&self.key_prefix, &network, &signature.to_string()),
            facts: PaymentFacts {
                binding: binding(&signature, req, &network),
                network,
                payer: String::new(),
                amount: req.amount().to_string(),
                asset: req.asset().to_string(),
                pay_to: req.pay_to().to_string(),
                created_at: now,
                valid_until: now + self.record_ttl.as_secs(),
                key: None,
                answer_keys: vec![],
                kind: None,
            },
            ttl_seconds: self.record_ttl.as_secs(),
            claims,
        })))
    }

    async fn verify(
        &self,
        req: &PaymentRequest,
        _now: u64,
    ) -> Result<Result<SvmPayment, Invalid>, SettleError> {
        Ok(self.verifier.verify(req, true).await?.into_result())
    }

    async fn recover_lost(
        &self,
        req: &PaymentRequest,
        id: &Identity,
        invalid: &Invalid,
        now: u64,
    ) -> Option<SettlementRecord> {
        if invalid.reason != Reason::SvmSimulationFailed.for_svm_version(req.version) {
            return None;
        }
        let signature: Signature = self.verifier.payment_id(req).ok()??;
        let status = self.chain().signature_status(&signature).await.ok()??;
        if status.err.is_some() || !status.confirmed {
            return None;
        }
        let mut facts = id.facts.clone();
        facts.payer = invalid.payer.clone().unwrap_or_default();
        // Its success may have been answered already: restored as delivered, never a second
        // success (and never a plain failure).
        Some(SettlementRecord::Delivered(Settled {
            payment: facts,
            transaction: signature.to_string(),
            cost: Cost::default(),
            settled_at: now,
            preconfirmed: None,
        }))
    }

    async fn ready_to_settle(&self, payment: &SvmPayment) -> Result<(), SettleError> {
        if self.min_fee_payer_lamports == 0 {
            return Ok(());
        }
        let lamports = match self.chain().account(&payment.fee_payer).await {
            Ok(account) => account.map_or(0, |a| a.lamports),
            // Unreadable: sending fails on its own if the RPC is down.
            Err(_) => return Ok(()),
        };
        if lamports < self.min_fee_payer_lamports {
            tracing::warn!(fee_payer = %payment.fee_payer, lamports, floor = self.min_fee_payer_lamports, "fee payer below the balance floor");
            return Err(SettleError::NoFundedSigner(format!(
                "fee payer {} holds {lamports} lamports, below the floor of {}",
                payment.fee_payer, self.min_fee_payer_lamports
            )));
        }
        Ok(())
    }

    fn payer_of(&self, payment: &SvmPayment) -> String {
        payment.payer_string()
    }

    /// The payer's source token account at `confirmed` against the amount plus the in-flight
    /// debits, read even with none in flight: the simulation of [`ChainFamily::verify`] ran
    /// before this payment's debit was taken, so a settlement of the same payer confirmed (and
    /// its debit released) since then is only seen here. The reference has no Solana reason for
    /// insufficient funds (its simulation fails): the refusal is the simulation failure, saying
    /// why.
    async fn check_funds(
        &self,
        payment: &SvmPayment,
        amount: u128,
        in_flight: u128,
    ) -> Result<Option<Invalid>, SettleError> {
        let source = &payment.layout.source;
        let account = self
            .chain()
            .account(source)
            .await
            .map_err(|e| SettleError::ChainUnavailable(e.into()))?;
        let balance = account
            .and_then(|a| token_account_amount(&a.data))
            .unwrap_or(0);
        Ok(
            (u128::from(balance) < amount.saturating_add(in_flight)).then(|| {
                Invalid::new(
                    Reason::SvmSimulationFailed,
                    format!(
                        "insufficient funds: token account {source} holds {balance}, which does \
                     not cover {amount} on top of {in_flight} in settlements in flight"
                    ),
                    Some(payment.payer_string()),
                )
            }),
        )
    }

    async fn acquire_signer(&self, _payment: &SvmPayment) -> Result<(), SettleError> {
        // The fee payer co-signed during verification; Solana has no sender nonce to order.
        Ok(())
    }

    async fn release_signer(&self, _signer: ()) {}

    async fn sign(
        &self,
        _signer: &(),
        _key: &str,
        _req: &PaymentRequest,
        payment: &SvmPayment,
    ) -> Result<Signed, SettleError> {
        let raw = bincode::serialize(&payment.transaction)
            .map(|bytes| STANDARD.encode(bytes))
            .map_err(|e| {
                SettleError::ChainUnavailable(x402_chain::ChainUnavailable::Other(format!(
                    "cannot serialize the transaction: {e}"
                )))
            })?;
        Ok(Signed::Tx(SentTx::Svm {
            transaction: payment.signature.to_string(),
            raw,
            blockhash: payment.blockhash.to_string(),
            fee_lamports: payment.fee_lamports,
            rent_lamports: self.rent_of_created_destination(payment).await,
        }))
    }

    async fn send(&self, sent: &SentTx) -> Sent {
        let SentTx::Svm { raw, .. } = sent else {
            return Sent::Refused("an EVM transaction on a Solana network".into());
        };
        let Some(tx) = STANDARD
            .decode(raw)
            .ok()
            .and_then(|b| bincode::deserialize::<VersionedTransaction>(&b).ok())
        else {
            return Sent::Refused("corrupt recorded transaction".into());
        };
        match self.chain().send(&tx).await {
            Ok(_) => Sent::Accepted,
            Err(SvmChainError::Rejected(m)) => Sent::Refused(m),
            Err(e) => Sent::Unknown(e.to_string()),
        }
    }

    async fn lookup(
        &self,
        broadcast: &Broadcast,
        _probe: Probe,
        _now: u64,
    ) -> Result<Lookup, SettleError> {
        let SentTx::Svm {
            transaction,
            blockhash,
            fee_lamports,
            rent_lamports,
            ..
        } = &broadcast.sent
        else {
            tracing::error!(transaction = %broadcast.sent.transaction(), "an EVM record under a Solana replay key");
            return Err(SettleError::Internal(
                "an EVM record under a Solana replay key".into(),
            ));
        };
        let corrupt = |what: &str| {
            tracing::error!(%transaction, what, "corrupt Solana broadcast record");
            SettleError::Internal(format!("corrupt record: {what}"))
        };
        let signature: Signature = transaction.parse().map_err(|_| corrupt("signature"))?;
        let blockhash: Hash = blockhash.parse().map_err(|_| corrupt("blockhash"))?;
        let unavailable = |e: SvmChainError| SettleError::ChainUnavailable(e.into());
        match self
            .chain()
            .signature_status(&signature)
            .await
            .map_err(unavailable)?
        {
            Some(status) if status.err.is_some() => Ok(Lookup::Failed {
                transaction: transaction.clone(),
                reason: Reason::SvmTransactionFailed,
                message: format!(
                    "the settlement transaction failed on chain: {}",
                    status.err.unwrap_or_default()
                ),
                cost: self.fee_paid(transaction, *fee_lamports, 0),
            }),
            Some(status) if status.confirmed => Ok(Lookup::Landed {
                transaction: transaction.clone(),
                cost: self.fee_paid(transaction, *fee_lamports, *rent_lamports),
            }),
            Some(_) => Ok(Lookup::NotYet { known: true }),
            None => {
                // Blockhash first, then the status again, so a landing in between is not missed.
                let valid = self
                    .chain()
                    .is_blockhash_valid(&blockhash)
                    .await
                    .map_err(unavailable)?;
                if !valid
                    && self
                        .chain()
                        .signature_status(&signature)
                        .await
                        .map_err(unavailable)?
                        .is_none()
                {
                    return Ok(Lookup::Expired {
                        message: "the transaction's blockhash expired before it landed; nothing \
                                  was transferred; pay again with a new transaction"
                            .into(),
                    });
                }
                Ok(Lookup::NotYet { known: false })
            }
        }
    }

    fn reason_for(&self, reason: Reason, version: X402Version) -> Reason {
        reason.for_svm_version(version)
    }

    fn transaction_failed(&self, _broadcast: &Broadcast) -> Reason {
        Reason::SvmTransactionFailed
    }

    fn blocked_payer(&self) -> Reason {
        Reason::SvmSimulationFailed
    }

    fn observe_landed(&self, _payment: &PaymentFacts, cost: &Cost) {
        if let (Some(observer), Some(fee)) = (&self.fee_observer, &cost.svm_fee) {
            observer(fee);
        }
    }
}

/// A Solana settler: the [`SvmFamily`] under the state machine.
pub fn settler(
    family: SvmFamily,
    store: Arc<dyn ReplayStore>,
    timing: SettleTiming,
    events: SettleEvents,
) -> SvmSettler {
    Engine::new(family, store, timing, crate::instance_id(), events)
}

/// A Solana settler over `verifier` recording in `store` under `key_prefix` (records live
/// `record_ttl`, at least 120 s), without pricing or observers.
pub fn new_settler(
    verifier: Arc<ExactSvmVerifier>,
    store: Arc<dyn ReplayStore>,
    key_prefix: &str,
    timing: SettleTiming,
    record_ttl: Duration,
) -> SvmSettler {
    settler(
        SvmFamily::new(verifier, key_prefix, record_ttl),
        store,
        timing,
        SettleEvents::default(),
    )
}
