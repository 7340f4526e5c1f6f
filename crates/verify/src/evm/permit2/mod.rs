//! EVM payments over Permit2: `exact` (specs/schemes/exact/scheme_exact_evm.md §2) and `upto`
//! (specs/schemes/upto/scheme_upto_evm.md), told apart by the requirements' `scheme`. Checks in
//! the reference order (`@x402/evm` 2.27 `verifyPermit2`, `verifyUptoPermit2`), each with its
//! reference reason:
//!
//! 1. scheme `exact` (`unsupported_payload_type`) / `upto` (`invalid_upto_evm_scheme`), in
//!    both the payload's `accepted` and the requirements;
//! 2. network (`invalid_exact_evm_network_mismatch` / `invalid_upto_evm_network_mismatch`);
//!    then the asset is one this facilitator settles with Permit2
//!    (`invalid_payment_requirements`);
//! 3. `spender` is the scheme's proxy (`invalid_permit2_spender`);
//! 4. `witness.to == payTo` (`invalid_permit2_recipient_mismatch`); `upto`:
//!    `witness.facilitator` is one of this network's signers (`upto_facilitator_mismatch`);
//! 5. `deadline >= now + 6 s` (`permit2_deadline_expired`);
//! 6. `witness.validAfter <= now` (`permit2_not_yet_valid`);
//! 7. `permitted.amount == amount` (`permit2_amount_mismatch`); at `upto` settlement the
//!    requirements' amount is the charge: checked last, `amount <= permitted.amount`
//!    (`invalid_upto_evm_payload_settlement_exceeds_amount`);
//! 8. `permitted.token == asset` (`permit2_token_mismatch`);
//! 9. the asset has code (`asset_not_deployed_contract`, which wins over a bad signature);
//! 10. signature of `from` over the Permit2 message: ECDSA, or ERC-1271 for a wallet with code
//!     (`invalid_permit2_signature`; an ERC-6492 signature of an undeployed wallet:
//!     `invalid_exact_evm_payload_undeployed_smart_wallet`);
//! 11. the proxy has code (`permit2_proxy_not_deployed`: a call to an empty address succeeds,
//!     so no simulation would tell); an `eip2612GasSponsoring` permit is checked
//!     ([`Permit2Verifier`]'s `eip2612_permit`);
//! 12. one `eth_call` of the proxy's `settle` (`settleWithPermit` with a permit); a revert is
//!     diagnosed ([`Permit2Verifier::diagnose`]): no proxy code (`permit2_proxy_not_deployed`),
//!     balance below the amount (`permit2_insufficient_balance`), allowance to Permit2 below it
//!     (`permit2_allowance_required`), else `permit2_simulation_failed`.
//!
//! At settlement (no `eth_call`; the sender's gas estimate simulates), a known revert of the
//! proxy or Permit2 is named as the reference's settle answers it (`permit2_invalid_amount`,
//! `permit2_invalid_destination`, `permit2_invalid_owner`, `permit2_payment_too_early`,
//! `permit2_invalid_nonce`, `permit2_2612_amount_mismatch`, `invalid_permit2_signature`,
//! `upto_amount_exceeds_permitted`, `upto_unauthorized_facilitator`), else diagnosed as above.

mod payment;

pub use payment::{Permit2Payment, upto_message};

use std::str::FromStr;
use std::sync::Arc;

use alloy::primitives::{Address, Bytes, U256};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolError, SolValue};
use x402_chain::EvmChain;
use x402_chain::permit2::upto::IX402UptoPermit2Proxy;
use x402_chain::permit2::{
    Eip2612Permit, IErc20, IPermit2, IX402ExactPermit2Proxy, PermitWitnessTransferFrom,
    TokenPermissions, Witness, signing_digest,
};
use x402_proto::evm::{Eip2612GasSponsoringInfo, ExactPermit2Payload};
use x402_proto::{Network, ParseError, PaymentRequest, Reason};

use super::VALID_BEFORE_MARGIN_SECONDS;
use super::signature::{PayerSignature, verify_payer_signature};
use crate::{Invalid, Verdict, VerifyError};

/// Which x402 scheme a Permit2 payment is paid under (the requirements' `scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit2Scheme {
    /// `exact`: `x402ExactPermit2Proxy` transfers `permitted.amount`.
    Exact,
    /// `upto`: `x402UptoPermit2Proxy` transfers the charge, at most `permitted.amount`, sent by
    /// `witness.facilitator`.
    Upto,
}

impl Permit2Scheme {
    /// The scheme of `req` (its requirements' `scheme`).
    pub fn of(req: &PaymentRequest) -> Self {
        if req.scheme() == "upto" {
            Permit2Scheme::Upto
        } else {
            Permit2Scheme::Exact
        }
    }
}

/// Where a Permit2 check runs: `/verify` (the requirements' `amount` is `permitted.amount`;
/// the proxy call is simulated) or `/settle` (for `upto` the `amount` is the charge; the
/// sender's estimate simulates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `POST /verify`.
    Verify,
    /// `POST /settle`.
    Settle,
}

/// Identity of a Permit2 payment, without any check or I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit2PaymentId {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The token.
    pub asset: Address,
    /// Permit2's owner (the payer).
    pub owner: Address,
    /// Permit2 unordered nonce.
    pub nonce: U256,
    /// `deadline`, Unix seconds (saturated).
    pub deadline: u64,
    /// keccak256 of chain id, asset, the whole signed message (with `upto`'s
    /// `witness.facilitator`), the signature and the requirements' `payTo` and amount.
    pub fingerprint: alloy::primitives::B256,
}

/// Verifies `exact` (and, with [`Permit2Verifier::with_upto`], `upto`) Permit2 payments on one
/// network.
pub struct Permit2Verifier {
    chain: Arc<dyn EvmChain>,
    network: Network,
    assets: Vec<Address>,
    permit2: Address,
    proxy: Address,
    /// `x402UptoPermit2Proxy`, when `upto` is taken.
    upto_proxy: Option<Address>,
    /// Set once each proxy (`exact`, `upto`) was seen with code (a call to an address without
    /// code succeeds, so no simulation would notice it missing).
    proxy_deployed: [std::sync::atomic::AtomicBool; 2],
    /// Assets seen with code (a deployed token stays deployed): one `eth_getCode` per asset,
    /// not per payment.
    assets_deployed: std::sync::RwLock<std::collections::HashSet<Address>>,
}

impl Permit2Verifier {
    /// A verifier for `chain` accepting the listed tokens through Permit2 at `permit2` and the
    /// proxy at `proxy` (the canonical addresses in [`x402_chain::permit2`]).
    pub fn new(
        chain: Arc<dyn EvmChain>,
        assets: Vec<Address>,
        permit2: Address,
        proxy: Address,
    ) -> Self {
        let network = Network::evm(chain.chain_id());
        Permit2Verifier {
            chain,
            network,
            assets,
            permit2,
            proxy,
            upto_proxy: None,
            proxy_deployed: Default::default(),
            assets_deployed: Default::default(),
        }
    }

    /// Takes `upto` payments too, through `x402UptoPermit2Proxy` at `upto_proxy` (the
    /// canonical [`x402_chain::permit2::UPTO_PERMIT2_PROXY_ADDRESS`]); their
    /// `witness.facilitator` must be one of the chain's signers.
    pub fn with_upto(mut self, upto_proxy: Address) -> Self {
        self.upto_proxy = Some(upto_proxy);
        self
    }

    /// The `upto` proxy, when `upto` is taken.
    pub fn upto_proxy(&self) -> Option<Address> {
        self.upto_proxy
    }

    /// The proxy `payment` is settled through (its scheme's).
    pub fn proxy_of(&self, payment: &Permit2Payment) -> Address {
        match payment.facilitator {
            Some(_) => self.upto_proxy.unwrap_or(self.proxy),
            None => self.proxy,
        }
    }

    /// The chain this verifier reads.
    pub fn chain(&self) -> &Arc<dyn EvmChain> {
        &self.chain
    }

    /// The proxy every payment's spender must be.
    pub fn proxy(&self) -> Address {
        self.proxy
    }

    /// Permit2's address.
    pub fn permit2(&self) -> Address {
        self.permit2
    }

    /// The identity of the payment in `req`. Errors name the malformed field.
    pub fn payment_id(&self, req: &PaymentRequest) -> Result<Permit2PaymentId, ParseError> {
        let payload: ExactPermit2Payload = req.scheme_payload_as()?;
        let (owner, m, facilitator) = parse_message(&payload)?;
        let asset = address(req.asset(), "paymentRequirements.asset")?;
        let pay_to = address(req.pay_to(), "paymentRequirements.payTo")?;
        let amount = uint(req.amount(), req.amount_field())?;
        let chain_id = self.chain.chain_id();
        let signature = Bytes::from(payload.signature.to_ascii_lowercase().into_bytes());
        let mut encoded = (
            U256::from(chain_id),
            asset,
            owner,
            (
                m.permitted.token,
                m.permitted.amount,
                m.spender,
                m.nonce,
                m.deadline,
                m.witness.to,
                m.witness.validAfter,
            ),
            signature,
            pay_to,
            amount,
        )
            .abi_encode();
        // `exact`'s fingerprint is the one of the releases before `upto` (records stay bound).
        if let Some(facilitator) = facilitator {
            encoded.extend_from_slice(facilitator.as_slice());
        }
        Ok(Permit2PaymentId {
            chain_id,
            asset,
            owner,
            nonce: m.nonce,
            deadline: u64::try_from(m.deadline).unwrap_or(u64::MAX),
            fingerprint: alloy::primitives::keccak256(encoded),
        })
    }

    /// Runs every check (module docs) for the scheme of `req`'s requirements
    /// ([`Permit2Scheme::of`]) at `stage`; `now` is Unix seconds. At [`Stage::Settle`] the
    /// final `eth_call` is skipped (settlement simulates with `eth_estimateGas`).
    ///
    /// Errors: [`VerifyError::Malformed`] naming an unparsable field,
    /// [`VerifyError::ChainUnavailable`] when the RPC cannot be reached.
    pub async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
        stage: Stage,
    ) -> Result<Verdict<Permit2Payment>, VerifyError> {
        let scheme = Permit2Scheme::of(req);
        let payload: ExactPermit2Payload = req.scheme_payload_as()?;
        let payer = Some(payload.permit2_authorization.from.clone());
        let invalid =
            |reason, msg: String| Ok(Verdict::Invalid(Invalid::new(reason, msg, payer.clone())));
        let (name, wrong_scheme, wrong_network, proxy) = match scheme {
            Permit2Scheme::Exact => (
                "exact",
                Reason::UnsupportedPayloadType,
                Reason::EvmNetworkMismatch,
                Some(self.proxy),
            ),
            Permit2Scheme::Upto => (
                "upto",
                Reason::UptoInvalidScheme,
                Reason::UptoNetworkMismatch,
                self.upto_proxy,
            ),
        };
        if req.accepted_scheme() != name || req.scheme() != name {
            return invalid(
                wrong_scheme,
                format!(
                    "scheme {:?} / {:?} is not {name}",
                    req.accepted_scheme(),
                    req.scheme()
                ),
            );
        }
        if req.accepted_network_wire() != req.network_wire() {
            return invalid(
                wrong_network,
                format!(
                    "payload network {:?} differs from {:?}",
                    req.accepted_network_wire(),
                    req.network_wire()
                ),
            );
        }
        let asset = address(req.asset(), "paymentRequirements.asset")?;
        let Some(proxy) = proxy.filter(|_| self.assets.contains(&asset)) else {
            return invalid(
                Reason::InvalidPaymentRequirements,
                format!(
                    "asset {asset} is not settled through Permit2 under {name} by this \
                     facilitator on {}",
                    self.network
                ),
            );
        };
        let (owner, message, facilitator) = parse_message(&payload)?;
        if message.spender != proxy {
            return invalid(
                Reason::Permit2InvalidSpender,
                format!(
                    "spender {} is not the x402 {name} Permit2 proxy {proxy}",
                    message.spender
                ),
            );
        }
        let pay_to = address(req.pay_to(), "paymentRequirements.payTo")?;
        if message.witness.to != pay_to {
            return invalid(
                Reason::Permit2RecipientMismatch,
                format!("witness.to {} is not payTo {pay_to}", message.witness.to),
            );
        }
        let facilitator = match (scheme, facilitator) {
            (Permit2Scheme::Exact, _) => None,
            (Permit2Scheme::Upto, Some(f)) if self.chain.signers().contains(&f) => Some(f),
            (Permit2Scheme::Upto, f) => {
                return invalid(
                    Reason::UptoFacilitatorMismatch,
                    format!(
                        "witness.facilitator {} is not a signer of this facilitator on {}",
                        f.map_or("(missing)".to_string(), |f| f.to_string()),
                        self.network
                    ),
                );
            }
        };
        if message.deadline < U256::from(now + VALID_BEFORE_MARGIN_SECONDS) {
            return invalid(
                Reason::Permit2DeadlineExpired,
                format!(
                    "deadline {} is before now ({now}) + {VALID_BEFORE_MARGIN_SECONDS} s",
                    message.deadline
                ),
            );
        }
        if message.witness.validAfter > U256::from(now) {
            return invalid(
                Reason::Permit2NotYetValid,
                format!(
                    "witness.validAfter {} is after now ({now})",
                    message.witness.validAfter
                ),
            );
        }
        let required = uint(req.amount(), req.amount_field())?;
        // At `upto` settlement the requirements' amount is the charge, checked last.
        let charge = scheme == Permit2Scheme::Upto && stage == Stage::Settle;
        if !charge && message.permitted.amount != required {
            return invalid(
                Reason::Permit2AmountMismatch,
                format!(
                    "permitted.amount {} differs from required {required}",
                    message.permitted.amount
                ),
            );
        }
        if message.permitted.token != asset {
            return invalid(
                Reason::Permit2TokenMismatch,
                format!(
                    "permitted.token {} is not asset {asset}",
                    message.permitted.token
                ),
            );
        }
        // At /verify Permit2 checks the signature itself when the simulation calls it (ecrecover
        // of the same EIP-712 digest, or the wallet's ERC-1271 for a 65-byte signature of a
        // contract): a successful simulation proves it, and the local recovery is needed only to
        // word a later failure (a bad signature wins over everything after it, as in the
        // reference order). Settlement always recovers it.
        let deferred = match (stage, PayerSignature::parse(&payload.signature)) {
            (Stage::Verify, Ok(PayerSignature::Ecdsa(sig))) => Some(sig),
            _ => None,
        };
        let signature = match deferred {
            Some(sig) => Ok(PayerSignature::Ecdsa(sig)),
            None => {
                self.check_signature(owner, &message, facilitator, &payload.signature)
                    .await?
            }
        };
        let deferred = deferred.is_some();
        if !self.asset_deployed(asset).await? {
            return invalid(
                Reason::AssetNotDeployedContract,
                format!("no contract at {asset}"),
            );
        }
        let signature = match signature {
            Ok(sig) => sig,
            Err(bad) => return Ok(Verdict::Invalid(bad.with_payer(payer.clone()))),
        };
        if charge && required > message.permitted.amount {
            return invalid(
                Reason::UptoSettlementExceedsAmount,
                format!(
                    "amount {required} to settle is above permitted.amount {}",
                    message.permitted.amount
                ),
            );
        }
        // The EIP-2612 permit, checked as the reference does before its simulation.
        let permit2612 = match Eip2612GasSponsoringInfo::of(req) {
            None => None,
            Some(info) => match self.eip2612_permit(&info, owner, asset, now) {
                Ok(permit) => Some(permit),
                Err((reason, msg)) => {
                    if let Some(bad) = self
                        .deferred_failure(
                            deferred,
                            owner,
                            facilitator,
                            &message,
                            &payload.signature,
                        )
                        .await?
                    {
                        return Ok(Verdict::Invalid(bad.with_payer(payer.clone())));
                    }
                    return invalid(reason, msg);
                }
            },
        };
        let payment = Permit2Payment {
            permit2612,
            payer: owner,
            asset,
            ecdsa: matches!(signature, PayerSignature::Ecdsa(_)),
            signature: match signature {
                PayerSignature::Ecdsa(sig) => Bytes::from(sig.as_bytes().to_vec()),
                PayerSignature::Contract(bytes) | PayerSignature::Erc6492(bytes) => bytes,
            },
            message,
            facilitator,
            amount: required,
        };
        // A call to an address without code succeeds: the simulation cannot tell.
        let deployed = &self.proxy_deployed[usize::from(facilitator.is_some())];
        if !deployed.load(std::sync::atomic::Ordering::Relaxed) {
            if self.code(proxy).await?.is_empty() {
                if let Some(bad) = self
                    .deferred_failure(
                        deferred,
                        owner,
                        facilitator,
                        &payment.message,
                        &payload.signature,
                    )
                    .await?
                {
                    return Ok(Verdict::Invalid(bad.with_payer(payer.clone())));
                }
                return invalid(
                    Reason::Permit2ProxyNotDeployed,
                    format!("no contract at the x402 {name} Permit2 proxy {proxy}"),
                );
            }
            deployed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if stage == Stage::Settle {
            return Ok(Verdict::Valid(payment));
        }
        // `upto` is simulated sent by its facilitator (the proxy checks the sender).
        let from = facilitator
            .or_else(|| self.chain.signers().first().copied())
            .unwrap_or(Address::ZERO);
        let tx = TransactionRequest::default()
            .from(from)
            .to(proxy)
            .input(payment.settlement_calldata().into());
        match self.chain.call(&tx).await {
            Ok(_) => Ok(Verdict::Valid(payment)),
            Err(e) => match e.node_message() {
                Some(message) => {
                    if let Some(bad) = self
                        .deferred_failure(
                            deferred,
                            owner,
                            facilitator,
                            &payment.message,
                            &payload.signature,
                        )
                        .await?
                    {
                        return Ok(Verdict::Invalid(bad.with_payer(payer.clone())));
                    }
                    let data = match &e {
                        x402_chain::ChainError::Reverted { data, .. } => data.clone(),
                        _ => None,
                    };
                    Ok(Verdict::Invalid(
                        self.diagnose(&payment, message.to_string(), data, false)
                            .await?,
                    ))
                }
                None => Err(VerifyError::ChainUnavailable(e.into())),
            },
        }
    }

    /// Explains a reverted simulation or gas estimate of `payment`'s `settle` (module docs,
    /// step 11). `data`: the revert data, when the node gave it; with `name_reverts` (at
    /// settlement, as the reference's settle answers) a known revert of the proxy or Permit2
    /// is named first ([`revert_reason`]).
    pub async fn diagnose(
        &self,
        payment: &Permit2Payment,
        message: String,
        data: Option<Bytes>,
        name_reverts: bool,
    ) -> Result<Invalid, VerifyError> {
        let payer = Some(payment.payer_string());
        let out = |reason, msg: String| Ok(Invalid::new(reason, msg, payer.clone()));
        // At settlement the revert itself is named first, as the reference's settle does.
        if let Some(reason) = data
            .as_deref()
            .filter(|_| name_reverts)
            .and_then(|d| revert_reason(d))
        {
            return out(reason, message);
        }
        let proxy = self.proxy_of(payment);
        if self.code(proxy).await?.is_empty() {
            return out(
                Reason::Permit2ProxyNotDeployed,
                format!("no contract at the x402 Permit2 proxy {proxy}"),
            );
        }
        let amount = payment.amount;
        if let Some(balance) = self
            .read(
                payment.asset,
                IErc20::balanceOfCall {
                    account: payment.payer,
                },
            )
            .await?
            && balance < amount
        {
            return out(
                Reason::Permit2InsufficientBalance,
                format!("balance {balance} < amount {amount}"),
            );
        }
        if let Some(allowance) = self
            .read(
                payment.asset,
                IErc20::allowanceCall {
                    owner: payment.payer,
                    spender: self.permit2,
                },
            )
            .await?
            && allowance < amount
        {
            return out(
                Reason::Permit2AllowanceRequired,
                format!("allowance to Permit2 {allowance} < amount {amount}"),
            );
        }
        out(Reason::Permit2SimulationFailed, message)
    }

    /// The EIP-2612 permit of an `eip2612GasSponsoring` extension, in the reference's order:
    /// format (`invalid_eip2612_extension_format`), `from` is the payer
    /// (`eip2612_from_mismatch`), `asset` the token (`eip2612_asset_mismatch`), `spender` Permit2
    /// (`eip2612_spender_not_permit2`), `deadline >= now + 6 s` (`eip2612_deadline_expired`).
    /// Its value against `permitted.amount` is the proxy's check (`permit2_2612_amount_mismatch`).
    fn eip2612_permit(
        &self,
        info: &Eip2612GasSponsoringInfo,
        owner: Address,
        asset: Address,
        now: u64,
    ) -> Result<Eip2612Permit, (Reason, String)> {
        let format = |what: &str| {
            (
                Reason::Eip2612ExtensionFormat,
                format!("extensions.eip2612GasSponsoring.info.{what} is malformed"),
            )
        };
        if !info.well_formed() {
            return Err(format("*"));
        }
        let parse_address = |s: &str, what: &str| s.parse::<Address>().map_err(|_| format(what));
        let parse_uint =
            |s: &str, what: &str| U256::from_str_radix(s, 10).map_err(|_| format(what));
        if parse_address(&info.from, "from")? != owner {
            return Err((
                Reason::Eip2612FromMismatch,
                format!("permit from {} is not the payer {owner}", info.from),
            ));
        }
        if parse_address(&info.asset, "asset")? != asset {
            return Err((
                Reason::Eip2612AssetMismatch,
                format!("permit asset {} is not {asset}", info.asset),
            ));
        }
        if parse_address(&info.spender, "spender")? != self.permit2 {
            return Err((
                Reason::Eip2612SpenderNotPermit2,
                format!(
                    "permit spender {} is not Permit2 {}",
                    info.spender, self.permit2
                ),
            ));
        }
        let deadline = parse_uint(&info.deadline, "deadline")?;
        if deadline < U256::from(now + VALID_BEFORE_MARGIN_SECONDS) {
            return Err((
                Reason::Eip2612DeadlineExpired,
                format!("permit deadline {deadline} is before now ({now}) + 6 s"),
            ));
        }
        let value = parse_uint(&info.amount, "amount")?;
        let sig =
            alloy::primitives::hex::decode(&info.signature).map_err(|_| format("signature"))?;
        if sig.len() != 65 {
            return Err(format("signature"));
        }
        Ok(Eip2612Permit {
            value,
            deadline,
            r: alloy::primitives::B256::from_slice(&sig[..32]),
            s: alloy::primitives::B256::from_slice(&sig[32..64]),
            v: sig[64],
        })
    }

    /// The signature failure a deferred check finds (`deferred`: the recovery was left to the
    /// simulation, see [`Permit2Verifier::verify`]), before a later failure is answered; `None`
    /// when not deferred or the signature is good.
    async fn deferred_failure(
        &self,
        deferred: bool,
        owner: Address,
        facilitator: Option<Address>,
        message: &PermitWitnessTransferFrom,
        signature: &str,
    ) -> Result<Option<Invalid>, VerifyError> {
        if !deferred {
            return Ok(None);
        }
        Ok(self
            .check_signature(owner, message, facilitator, signature)
            .await?
            .err())
    }

    /// `owner`'s signature of the Permit2 message ([`verify_payer_signature`], failures
    /// `invalid_permit2_signature`).
    async fn check_signature(
        &self,
        owner: Address,
        message: &PermitWitnessTransferFrom,
        facilitator: Option<Address>,
        signature: &str,
    ) -> Result<Result<PayerSignature, Invalid>, VerifyError> {
        let bad = |msg: &str| {
            Ok(Err(Invalid::new(
                Reason::Permit2InvalidSignature,
                msg,
                None,
            )))
        };
        let parsed = match PayerSignature::parse(signature) {
            Ok(sig) => sig,
            Err(e) => return bad(&e.to_string()),
        };
        let chain_id = self.chain.chain_id();
        let digest = match facilitator {
            None => signing_digest(chain_id, self.permit2, message),
            Some(f) => x402_chain::permit2::upto::signing_digest(
                chain_id,
                self.permit2,
                &upto_message(message, f),
            ),
        };
        verify_payer_signature(
            self.chain.as_ref(),
            owner,
            digest,
            parsed,
            Reason::Permit2InvalidSignature,
            "permit2Authorization.from",
        )
        .await
    }

    /// Whether `asset` has code (remembered once seen).
    async fn asset_deployed(&self, asset: Address) -> Result<bool, VerifyError> {
        let known = self
            .assets_deployed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&asset);
        if known {
            return Ok(true);
        }
        if self.code(asset).await?.is_empty() {
            return Ok(false);
        }
        self.assets_deployed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(asset);
        Ok(true)
    }

    async fn code(&self, at: Address) -> Result<Bytes, VerifyError> {
        self.chain
            .code_at(at)
            .await
            .map_err(|e| VerifyError::ChainUnavailable(e.into()))
    }

    /// A view call; `None` when it reverts or answers something else.
    async fn read<C: SolCall>(
        &self,
        to: Address,
        call: C,
    ) -> Result<Option<C::Return>, VerifyError> {
        let tx = TransactionRequest::default()
            .to(to)
            .input(Bytes::from(call.abi_encode()).into());
        match self.chain.call(&tx).await {
            Ok(ret) => Ok(C::abi_decode_returns(&ret).ok()),
            Err(e) if e.node_message().is_some() => Ok(None),
            Err(e) => Err(VerifyError::ChainUnavailable(e.into())),
        }
    }
}

/// The reason of a known revert of the proxy or of Permit2, by its custom-error selector (the
/// mapping of the reference facilitator's settle errors).
pub fn revert_reason(data: &[u8]) -> Option<Reason> {
    let selector: [u8; 4] = data.get(..4)?.try_into().ok()?;
    use IPermit2 as P;
    use IX402ExactPermit2Proxy as X;
    use IX402UptoPermit2Proxy as U;
    Some(match selector {
        s if s == X::InvalidAmount::SELECTOR || s == P::InvalidAmount::SELECTOR => {
            Reason::Permit2InvalidAmount
        }
        s if s == X::InvalidDestination::SELECTOR => Reason::Permit2InvalidDestination,
        s if s == X::InvalidOwner::SELECTOR => Reason::Permit2InvalidOwner,
        s if s == X::PaymentTooEarly::SELECTOR => Reason::Permit2PaymentTooEarly,
        s if s == U::AmountExceedsPermitted::SELECTOR => Reason::UptoAmountExceedsPermitted,
        s if s == U::UnauthorizedFacilitator::SELECTOR => Reason::UptoUnauthorizedFacilitator,
        s if s == X::Permit2612AmountMismatch::SELECTOR => Reason::Permit2612AmountMismatch,
        s if s == P::InvalidNonce::SELECTOR => Reason::Permit2InvalidNonce,
        s if s == P::InvalidSigner::SELECTOR
            || s == P::InvalidSignature::SELECTOR
            || s == P::InvalidSignatureLength::SELECTOR
            || s == P::InvalidContractSignature::SELECTOR
            || s == P::SignatureExpired::SELECTOR =>
        {
            Reason::Permit2InvalidSignature
        }
        _ => return None,
    })
}

/// The owner and the signed message of a payload. Errors name the malformed field.
/// `upto`'s `witness.facilitator` comes third when present.
fn parse_message(
    payload: &ExactPermit2Payload,
) -> Result<(Address, PermitWitnessTransferFrom, Option<Address>), ParseError> {
    let a = &payload.permit2_authorization;
    let f = |name: &str| format!("paymentPayload.payload.permit2Authorization.{name}");
    let facilitator = match &a.witness.facilitator {
        None => None,
        Some(s) => Some(address(s, &f("witness.facilitator"))?),
    };
    Ok((
        address(&a.from, &f("from"))?,
        PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: address(&a.permitted.token, &f("permitted.token"))?,
                amount: uint(&a.permitted.amount, &f("permitted.amount"))?,
            },
            spender: address(&a.spender, &f("spender"))?,
            nonce: uint(&a.nonce, &f("nonce"))?,
            deadline: uint(&a.deadline, &f("deadline"))?,
            witness: Witness {
                to: address(&a.witness.to, &f("witness.to"))?,
                validAfter: uint(&a.witness.valid_after, &f("witness.validAfter"))?,
            },
        },
        facilitator,
    ))
}

fn address(s: &str, field: &str) -> Result<Address, ParseError> {
    Address::from_str(s)
        .map_err(|_| ParseError::new(field, format!("{s:?} is not a 0x-hex 20-byte address")))
}

fn uint(s: &str, field: &str) -> Result<U256, ParseError> {
    U256::from_str_radix(s, 10)
        .map_err(|_| ParseError::new(field, format!("{s:?} is not a uint256 decimal")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_reverts_map_to_the_reference_reasons() {
        let cases = [
            (
                IX402ExactPermit2Proxy::InvalidAmount::SELECTOR,
                Reason::Permit2InvalidAmount,
            ),
            (
                IX402ExactPermit2Proxy::InvalidDestination::SELECTOR,
                Reason::Permit2InvalidDestination,
            ),
            (
                IX402ExactPermit2Proxy::InvalidOwner::SELECTOR,
                Reason::Permit2InvalidOwner,
            ),
            (
                IX402ExactPermit2Proxy::PaymentTooEarly::SELECTOR,
                Reason::Permit2PaymentTooEarly,
            ),
            (
                IPermit2::InvalidNonce::SELECTOR,
                Reason::Permit2InvalidNonce,
            ),
            (
                IPermit2::InvalidSigner::SELECTOR,
                Reason::Permit2InvalidSignature,
            ),
            (
                IX402UptoPermit2Proxy::AmountExceedsPermitted::SELECTOR,
                Reason::UptoAmountExceedsPermitted,
            ),
            (
                IX402UptoPermit2Proxy::UnauthorizedFacilitator::SELECTOR,
                Reason::UptoUnauthorizedFacilitator,
            ),
        ];
        for (selector, reason) in cases {
            assert_eq!(revert_reason(&selector), Some(reason), "{reason:?}");
        }
        assert_eq!(revert_reason(&[0xde, 0xad, 0xbe, 0xef]), None);
        assert_eq!(revert_reason(&[0x01]), None);
    }
}
