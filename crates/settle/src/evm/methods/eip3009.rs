//! `exact` with EIP-3009 `transferWithAuthorization` (specs/schemes/exact/scheme_exact_evm.md
//! §1): the token moves itself on the payer's signed authorization.
//!
//! - Replay key: `(chainId, asset, from, nonce)`, `{prefix}:replay:evm:{chainId}:{asset}:{from}:{nonce}`
//!   ([`crate::replay::keys::evm_replay_key`]), unchanged since the first release: records
//!   written before the methods were split are this method's (their key space, `…:{chainId}:0x`,
//!   is the asset address, which no other method's key starts with) and are reconciled by it
//!   after an upgrade, with no migration.
//! - Binding: keccak256 of chain id, asset, the whole authorization, the signature and the
//!   requirements' `payTo` and amount.
//! - Call: `asset.transferWithAuthorization` (`v,r,s` overload for ECDSA, `bytes` for contract
//!   signatures).
//! - Landed: the receipt logs `Transfer(from, …, value)` of the amount.
//! - Expired: `validBefore` passed and `authorizationState(from, nonce)` still unused.

use std::sync::Arc;

use alloy::primitives::{Address, Bytes};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use x402_chain::ChainError;
use x402_chain::eip3009::IEip3009Token;
use x402_proto::{PaymentRequest, Reason};
use x402_verify::Invalid;
use x402_verify::evm::signature::PayerSignature;
use x402_verify::evm::{EvmPayment, ExactEvmVerifier};

use super::{Revert, TransferMethod};
use crate::SettleError;
use crate::evm::rebuild;
use crate::evm::sender::{corrupt_record, recorded_input};
use crate::family::{Identified, Identity};
use crate::record::{Broadcast, PaymentFacts};
use crate::replay::keys::{evm_eip3009_key_space, evm_replay_key, replay_ttl_seconds};

/// The EIP-3009 method on one chain.
pub struct Eip3009 {
    verifier: Arc<ExactEvmVerifier>,
    key_prefix: String,
    /// Blocks searched back for a lost payment's landing ([`rebuild`]).
    lost_lookback_blocks: u64,
}

impl Eip3009 {
    /// The method over `verifier` (its chain and assets), its records under `key_prefix`.
    pub fn new(verifier: Arc<ExactEvmVerifier>, key_prefix: impl Into<String>) -> Self {
        Eip3009 {
            verifier,
            key_prefix: key_prefix.into(),
            lost_lookback_blocks: rebuild::DEFAULT_LOOKBACK_BLOCKS,
        }
    }

    /// How many blocks back from the latest a payment whose record was lost is searched for
    /// (default [`rebuild::DEFAULT_LOOKBACK_BLOCKS`]; 0 disables rebuilding records from the
    /// chain).
    pub fn with_lost_record_lookback(mut self, blocks: u64) -> Self {
        self.lost_lookback_blocks = blocks;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Arc<ExactEvmVerifier> {
        &self.verifier
    }
}

#[async_trait]
impl TransferMethod for Eip3009 {
    type Payment = EvmPayment;
    const NAME: &'static str = "eip3009";

    fn key_space(&self) -> String {
        evm_eip3009_key_space(&self.key_prefix, self.verifier.chain().chain_id())
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
                kind: None,
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
        Ok(self.verifier.verify(req, now, false).await?.into_result())
    }

    fn payer(&self, payment: &EvmPayment) -> Address {
        payment.payer
    }

    fn asset(&self, payment: &EvmPayment) -> Address {
        payment.asset
    }

    fn ecdsa(&self, payment: &EvmPayment) -> bool {
        matches!(payment.signature, PayerSignature::Ecdsa(_))
    }

    fn call(&self, payment: &EvmPayment) -> (Address, Bytes) {
        (payment.asset, payment.settlement_calldata())
    }

    async fn diagnose(
        &self,
        req: &PaymentRequest,
        payment: &EvmPayment,
        revert: Revert,
    ) -> Result<Invalid, SettleError> {
        let (name, version) = (
            req.extra_str("name").unwrap_or(""),
            req.extra_str("version").unwrap_or(""),
        );
        Ok(self
            .verifier
            .diagnose(payment, name, version, revert.message)
            .await?)
    }

    fn insufficient_funds(&self) -> Reason {
        Reason::EvmInsufficientBalance
    }

    /// Landed only with the expected `Transfer(from, …, value)` in the receipt.
    fn landed(
        &self,
        payment: &PaymentFacts,
        mined: &TransactionReceipt,
    ) -> Option<(Reason, String)> {
        let payer: Address = payment.payer.parse().unwrap_or_default();
        let transferred = mined.logs().iter().any(|log| {
            IEip3009Token::Transfer::decode_log(&log.inner)
                .map(|ev| ev.from == payer && ev.value.to_string() == payment.amount)
                .unwrap_or(false)
        });
        (!transferred).then(|| {
            (
                Reason::EvmTransferEventMismatch,
                "no matching Transfer event in the receipt".to_string(),
            )
        })
    }

    /// `validBefore` passed with no node holding the transaction: it can only revert now, and
    /// only if the authorization is still unused was nothing transferred.
    async fn expired(&self, broadcast: &Broadcast) -> Result<Option<String>, SettleError> {
        let corrupt = || corrupt_record(broadcast);
        let input = recorded_input(broadcast).ok_or_else(corrupt)?;
        let (from, nonce) = authorization_of(&input).ok_or_else(corrupt)?;
        let asset: Address = broadcast.payment.asset.parse().map_err(|_| corrupt())?;
        let call = TransactionRequest::default().to(asset).input(
            IEip3009Token::authorizationStateCall {
                authorizer: from,
                nonce,
            }
            .abi_encode()
            .into(),
        );
        let used = self
            .verifier
            .chain()
            .call(&call)
            .await
            .map_err(|e: ChainError| SettleError::ChainUnavailable(e.into()))?;
        Ok(used.iter().all(|b| *b == 0).then(|| {
            "validBefore passed before the settlement transaction landed; nothing was transferred"
                .to_string()
        }))
    }

    /// Another payment under the same `(from, nonce)`: its authorization nonce is taken.
    fn conflict_reason(&self) -> Reason {
        Reason::EvmNonceAlreadyUsed
    }

    /// A payment refused because its authorization is used (or its `validBefore` passed) that
    /// one of this network's signers settled ([`rebuild`]). Any RPC error leaves the refusal
    /// as it is.
    async fn recover_lost(
        &self,
        req: &PaymentRequest,
        invalid: &Invalid,
    ) -> Option<rebuild::Landed> {
        if self.lost_lookback_blocks == 0
            || !matches!(
                invalid.reason,
                Reason::EvmNonceAlreadyUsed | Reason::EvmValidBefore
            )
        {
            return None;
        }
        let auth = self.verifier.payment_id(req).ok()?;
        let chain = self.verifier.chain().as_ref();
        let looked = async {
            if !rebuild::authorization_used(chain, &auth).await? {
                return Ok(None);
            }
            rebuild::find_landed(chain, chain.signers(), &auth, self.lost_lookback_blocks).await
        };
        match looked.await {
            Ok(landed) => landed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for a lost payment on chain");
                None
            }
        }
    }

    /// The transaction of ours that used a reverted settlement's authorization first, if any.
    async fn settled_before(&self, broadcast: &Broadcast) -> Option<rebuild::Landed> {
        if self.lost_lookback_blocks == 0 {
            return None;
        }
        let crate::record::SentTx::Evm { raw, .. } = &broadcast.sent else {
            return None;
        };
        let auth = rebuild::authorization_in(raw)?;
        let chain = self.verifier.chain().as_ref();
        match rebuild::find_landed(chain, chain.signers(), &auth, self.lost_lookback_blocks).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for an earlier settlement of a reverted payment");
                None
            }
        }
    }
}

/// `authorization.from` and `nonce` from the calldata of a recorded settlement.
fn authorization_of(input: &[u8]) -> Option<(Address, alloy::primitives::B256)> {
    if let Ok(call) = IEip3009Token::transferWithAuthorization_0Call::abi_decode(input) {
        return Some((call.from, call.nonce));
    }
    IEip3009Token::transferWithAuthorization_1Call::abi_decode(input)
        .ok()
        .map(|call| (call.from, call.nonce))
}
