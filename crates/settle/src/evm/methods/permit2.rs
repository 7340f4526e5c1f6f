//! Payments over Permit2: `exact` (specs/schemes/exact/scheme_exact_evm.md §2) and `upto`
//! (specs/schemes/upto/scheme_upto_evm.md). The x402 Permit2 proxy of the payment's scheme
//! calls Permit2's `permitWitnessTransferFrom` with the payer's signature; any ERC-20 the payer
//! approved to Permit2. One method for both schemes: they share Permit2's nonces, so they share
//! one replay key space and one engine.
//!
//! - Replay key: `(chainId, "permit2", owner, nonce)`
//!   ([`crate::replay::keys::evm_permit2_replay_key`]); Permit2's nonces are per owner, so a
//!   second payment under the same owner and nonce can never land (`permit2_invalid_nonce`).
//! - Binding: keccak256 of chain id, asset, owner, the whole signed message, the signature and
//!   the requirements' `payTo` and amount (for `upto` the charge: another charge of the same
//!   authorization is another payment, refused).
//! - Call: `proxy.settle(permit, owner, witness, signature)` (`upto`: with the charge after
//!   `permit`), or `settleWithPermit` with the payer's EIP-2612 permit
//!   (`eip2612GasSponsoring`). `upto` is sent by `witness.facilitator`; an `upto` charge of 0
//!   sends nothing (answered success with transaction `""`).
//! - Landed: the receipt logs the token's `Transfer(owner, witness.to, amount)` (`upto`: the
//!   charge).
//! - Expired: `deadline` passed and Permit2's nonce bit still unset (`nonceBitmap`).

use std::sync::Arc;

use alloy::primitives::{Address, Bytes, U256};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use x402_chain::ChainError;
use x402_chain::permit2::upto::IX402UptoPermit2Proxy;
use x402_chain::permit2::{IErc20, IPermit2, IX402ExactPermit2Proxy, nonce_position};
use x402_proto::{PaymentRequest, Reason};
use x402_verify::Invalid;
use x402_verify::evm::permit2::{Permit2Payment, Permit2Scheme, Permit2Verifier, Stage};

use super::{Revert, TransferMethod};
use crate::SettleError;
use crate::evm::sender::{corrupt_record, recorded_input};
use crate::family::{Identified, Identity};
use crate::record::{Broadcast, PaymentFacts};
use crate::replay::keys::{evm_permit2_key_space, evm_permit2_replay_key, replay_ttl_seconds};

/// The Permit2 method (`exact` and `upto`) on one chain.
pub struct Permit2Exact {
    verifier: Arc<Permit2Verifier>,
    key_prefix: String,
}

impl Permit2Exact {
    /// The method over `verifier` (its chain, tokens, Permit2 and proxy), its records under
    /// `key_prefix`.
    pub fn new(verifier: Arc<Permit2Verifier>, key_prefix: impl Into<String>) -> Self {
        Permit2Exact {
            verifier,
            key_prefix: key_prefix.into(),
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Arc<Permit2Verifier> {
        &self.verifier
    }
}

#[async_trait]
impl TransferMethod for Permit2Exact {
    type Payment = Permit2Payment;
    const NAME: &'static str = "permit2";

    fn key_space(&self) -> String {
        evm_permit2_key_space(&self.key_prefix, self.verifier.chain().chain_id())
    }

    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError> {
        let id = self.verifier.payment_id(req)?;
        Ok(Identified::Payment(Box::new(Identity {
            key: evm_permit2_replay_key(&self.key_prefix, id.chain_id, id.owner, id.nonce),
            facts: PaymentFacts {
                binding: format!("{:#x}", id.fingerprint),
                network: x402_proto::Network::evm(id.chain_id).to_string(),
                payer: id.owner.to_checksum(None),
                amount: req.amount().to_string(),
                asset: id.asset.to_checksum(None),
                pay_to: req.pay_to().to_string(),
                created_at: now,
                valid_until: id.deadline,
                key: None,
                answer_keys: vec![],
                kind: Some(
                    match Permit2Scheme::of(req) {
                        Permit2Scheme::Exact => "permit2",
                        Permit2Scheme::Upto => "upto",
                    }
                    .to_string(),
                ),
            },
            ttl_seconds: replay_ttl_seconds(id.deadline, now),
            claims: vec![],
        })))
    }

    async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Result<Permit2Payment, Invalid>, SettleError> {
        Ok(self
            .verifier
            .verify(req, now, Stage::Settle)
            .await?
            .into_result())
    }

    fn payer(&self, payment: &Permit2Payment) -> Address {
        payment.payer
    }

    fn asset(&self, payment: &Permit2Payment) -> Address {
        payment.asset
    }

    fn ecdsa(&self, payment: &Permit2Payment) -> bool {
        payment.ecdsa
    }

    fn call(&self, payment: &Permit2Payment) -> (Address, Bytes) {
        (
            self.verifier.proxy_of(payment),
            payment.settlement_calldata(),
        )
    }

    /// `upto`: `witness.facilitator` (the proxy refuses any other sender).
    fn signer(&self, payment: &Permit2Payment) -> Option<Address> {
        payment.facilitator
    }

    /// `upto` charging 0 (specs/schemes/upto/scheme_upto_evm.md "Zero Settlement").
    fn settles_nothing(&self, payment: &Permit2Payment) -> bool {
        payment.facilitator.is_some() && payment.amount.is_zero()
    }

    fn gas_key(&self, payment: &Permit2Payment) -> &'static str {
        match payment.facilitator {
            Some(_) => "permit2-upto",
            None => Self::NAME,
        }
    }

    async fn diagnose(
        &self,
        _req: &PaymentRequest,
        payment: &Permit2Payment,
        revert: Revert,
    ) -> Result<Invalid, SettleError> {
        Ok(self
            .verifier
            .diagnose(payment, revert.message, revert.data, true)
            .await?)
    }

    fn insufficient_funds(&self) -> Reason {
        Reason::Permit2InsufficientBalance
    }

    /// Landed only with the token's `Transfer(owner, payTo, amount)` in the receipt.
    fn landed(
        &self,
        payment: &PaymentFacts,
        mined: &TransactionReceipt,
    ) -> Option<(Reason, String)> {
        let (Ok(payer), Ok(asset), Ok(pay_to), Ok(amount)) = (
            payment.payer.parse::<Address>(),
            payment.asset.parse::<Address>(),
            payment.pay_to.parse::<Address>(),
            U256::from_str_radix(&payment.amount, 10),
        ) else {
            return Some((
                Reason::EvmTransferEventMismatch,
                "the record's payment does not parse".into(),
            ));
        };
        let transferred = mined.logs().iter().any(|log| {
            log.inner.address == asset
                && IErc20::Transfer::decode_log(&log.inner)
                    .map(|ev| ev.from == payer && ev.to == pay_to && ev.value == amount)
                    .unwrap_or(false)
        });
        (!transferred).then(|| {
            (
                Reason::EvmTransferEventMismatch,
                "no matching Transfer event in the receipt".to_string(),
            )
        })
    }

    /// `deadline` passed with no node holding the transaction: Permit2 refuses the signature
    /// now, and only if its nonce bit is unset was nothing transferred.
    async fn expired(&self, broadcast: &Broadcast) -> Result<Option<String>, SettleError> {
        let corrupt = || corrupt_record(broadcast);
        let input = recorded_input(broadcast).ok_or_else(corrupt)?;
        let (owner, nonce) = owner_and_nonce(&input).ok_or_else(corrupt)?;
        let (word, bit) = nonce_position(nonce);
        let read = TransactionRequest::default()
            .to(self.verifier.permit2())
            .input(
                IPermit2::nonceBitmapCall {
                    owner,
                    wordPos: word,
                }
                .abi_encode()
                .into(),
            );
        let ret = self
            .verifier
            .chain()
            .call(&read)
            .await
            .map_err(|e: ChainError| SettleError::ChainUnavailable(e.into()))?;
        let bitmap = IPermit2::nonceBitmapCall::abi_decode_returns(&ret).map_err(|e| {
            SettleError::ChainUnavailable(x402_chain::ChainUnavailable::Other(format!(
                "nonceBitmap answered {ret}: {e}"
            )))
        })?;
        Ok((!bitmap.bit(bit)).then(|| {
            "deadline passed before the settlement transaction landed; nothing was transferred"
                .to_string()
        }))
    }

    /// `invalid_upto_evm_transaction_failed` for an `upto` settlement, else
    /// `invalid_exact_evm_transaction_failed` (the reference's answers).
    fn transaction_failed(&self, broadcast: &Broadcast) -> Reason {
        let upto = recorded_input(broadcast).is_some_and(|input| {
            input.starts_with(&IX402UptoPermit2Proxy::settleCall::SELECTOR)
                || input.starts_with(&IX402UptoPermit2Proxy::settleWithPermitCall::SELECTOR)
        });
        if upto {
            Reason::UptoTransactionFailed
        } else {
            Reason::EvmTransactionFailed
        }
    }

    /// Another payment under the same `(owner, nonce)`: Permit2 lands only one of them.
    fn conflict_reason(&self) -> Reason {
        Reason::Permit2InvalidNonce
    }

    fn blocked_payer(&self) -> Reason {
        Reason::Permit2SimulationFailed
    }
}

/// Permit2's owner and nonce of a recorded settlement call through either proxy.
fn owner_and_nonce(input: &[u8]) -> Option<(Address, U256)> {
    use IX402ExactPermit2Proxy as X;
    use IX402UptoPermit2Proxy as U;
    let selector: [u8; 4] = input.get(..4)?.try_into().ok()?;
    Some(match selector {
        X::settleCall::SELECTOR => {
            let c = X::settleCall::abi_decode(input).ok()?;
            (c.owner, c.permit.nonce)
        }
        X::settleWithPermitCall::SELECTOR => {
            let c = X::settleWithPermitCall::abi_decode(input).ok()?;
            (c.owner, c.permit.nonce)
        }
        U::settleCall::SELECTOR => {
            let c = U::settleCall::abi_decode(input).ok()?;
            (c.owner, c.permit.nonce)
        }
        U::settleWithPermitCall::SELECTOR => {
            let c = U::settleWithPermitCall::abi_decode(input).ok()?;
            (c.owner, c.permit.nonce)
        }
        _ => return None,
    })
}
