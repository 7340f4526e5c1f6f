//! EVM `exact` scheme verification (specs/schemes/exact/scheme_exact_evm.md; EIP-3009, EIP-712).
//!
//! [`ExactEvmVerifier::verify`] runs the checks in the reference order (`@x402/evm` 2.27):
//! 1. scheme is `exact`; 2. EIP-712 domain in `extra`; 3. network match; (asset configured);
//! 4. signature; 5. recipient; 6. `validBefore`; 7. `validAfter`; 8. amount; 9. asset deployed;
//! 10. one `eth_call` simulation of `transferWithAuthorization`, diagnosed on failure.
//!
//! The signature (4) is checked before an answer from 5-9 is given, since an invalid one wins.
//! A valid payment's ECDSA signature is not recovered here when the simulation will check it:
//! the token's `transferWithAuthorization` verifies the signature of `from` over exactly these
//! fields (EIP-3009; FiatTokenV2_2 with ECDSA, or ERC-1271 for a wallet contract), so when the
//! token's `DOMAIN_SEPARATOR()` equals the one built from `extra.name` / `extra.version`, a
//! successful simulation proves what the recovery would; the recovery then runs only when the
//! simulation fails, to choose the reason. That saves the largest CPU cost of a `/verify`
//! (about 0.5 M instructions of libsecp256k1). Without a simulation or with another domain, the
//! signature is checked first, as before. Settlement always verifies without a simulation, so
//! nothing is ever signed and sent on the strength of the token's own check alone.

pub mod permit2;
pub mod signature;
mod simulate;

/// The EIP-712 typed data, moved to [`x402_chain::eip712`]; re-exported at its old path.
pub use x402_chain::eip712;
/// The token ABI, moved to [`x402_chain::eip3009`]; re-exported at its old path (settle's EVM
/// sender imports it from here).
pub use x402_chain::eip3009 as token;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{SolCall, SolValue};
use x402_chain::EvmChain;
use x402_proto::evm::ExactEvmPayload;
use x402_proto::request::Payload;
use x402_proto::{Network, ParseError, PaymentRequest, Reason, X402Version};

use crate::{Invalid, Verdict, VerifyError};
use eip712::TransferWithAuthorization;
use signature::PayerSignature;
use token::IEip3009Token;

/// `validBefore` must be at least this many seconds ahead of now (reference: 6 s, about
/// the time to land the transaction).
pub const VALID_BEFORE_MARGIN_SECONDS: u64 = 6;

/// A verified EVM payment: everything settlement needs to call `transferWithAuthorization`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvmPayment {
    /// `authorization.from`.
    pub payer: Address,
    /// Token contract.
    pub asset: Address,
    /// The signed authorization (value in atomic token units, times in Unix seconds).
    pub authorization: TransferWithAuthorization,
    /// [`PayerSignature::Ecdsa`] (sent as `v,r,s`) or [`PayerSignature::Contract`] (sent as `bytes`).
    pub signature: PayerSignature,
}

impl EvmPayment {
    /// Calldata of `transferWithAuthorization`: the `(…,uint8 v,bytes32 r,bytes32 s)` overload for
    /// ECDSA signatures, the `(…,bytes signature)` overload for contract signatures.
    pub fn settlement_calldata(&self) -> Bytes {
        let a = &self.authorization;
        match &self.signature {
            PayerSignature::Ecdsa(sig) => IEip3009Token::transferWithAuthorization_0Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.validAfter,
                validBefore: a.validBefore,
                nonce: a.nonce,
                v: 27 + sig.v() as u8,
                r: sig.r().into(),
                s: sig.s().into(),
            }
            .abi_encode()
            .into(),
            PayerSignature::Contract(bytes) | PayerSignature::Erc6492(bytes) => {
                IEip3009Token::transferWithAuthorization_1Call {
                    from: a.from,
                    to: a.to,
                    value: a.value,
                    validAfter: a.validAfter,
                    validBefore: a.validBefore,
                    nonce: a.nonce,
                    signature: bytes.clone(),
                }
                .abi_encode()
                .into()
            }
        }
    }

    /// The payer as an EIP-55 checksummed string.
    pub fn payer_string(&self) -> String {
        self.payer.to_checksum(None)
    }
}

/// Verifies EVM `exact` payments on one network.
pub struct ExactEvmVerifier {
    chain: Arc<dyn EvmChain>,
    network: Network,
    assets: Vec<Address>,
    /// Deployed assets, probed once each.
    deployed_assets: Mutex<HashMap<Address, AssetFacts>>,
    /// One `eth_getCode` of an asset at a time: a burst waits for it instead of each asking.
    probing_assets: tokio::sync::Mutex<()>,
    separators: RwLock<Vec<CachedSeparator>>,
    accept_contract_signatures: bool,
}

/// An EIP-712 domain separator already computed for `(asset, name, version)` on this chain.
struct CachedSeparator {
    asset: Address,
    name: Box<str>,
    version: Box<str>,
    separator: B256,
}

/// Most domain separators kept per verifier: the configured assets' `(name, version)` pairs fit
/// many times over; requests with other names are computed each time (3 keccaks) and not kept.
const MAX_CACHED_SEPARATORS: usize = 16;

impl ExactEvmVerifier {
    /// A verifier for `chain` (network `eip155:{chain_id}`) that accepts only the listed token
    /// contracts.
    pub fn new(chain: Arc<dyn EvmChain>, assets: Vec<Address>) -> Self {
        let network = Network::evm(chain.chain_id());
        ExactEvmVerifier {
            chain,
            network,
            assets,
            deployed_assets: Mutex::new(HashMap::new()),
            probing_assets: tokio::sync::Mutex::new(()),
            separators: RwLock::new(Vec::new()),
            accept_contract_signatures: true,
        }
    }

    /// Whether payments signed by a contract wallet (ERC-1271, ERC-6492) are valid (default
    /// true); refused, they get `invalid_exact_evm_signature`. A contract wallet's settlement
    /// gas depends on its code, which the payer controls.
    pub fn with_contract_signatures(mut self, accept: bool) -> Self {
        self.accept_contract_signatures = accept;
        self
    }

    /// The EIP-712 domain separator of `asset` with `extra.name` / `extra.version`, from the
    /// cache when it was computed before.
    fn domain_separator(&self, name: &str, version: &str, asset: Address) -> B256 {
        let find = |cache: &[CachedSeparator]| {
            cache
                .iter()
                .find(|c| c.asset == asset && &*c.name == name && &*c.version == version)
                .map(|c| c.separator)
        };
        if let Some(sep) = find(&self.separators.read().expect("lock poisoned")) {
            return sep;
        }
        let separator = eip712::domain_separator(name, version, self.chain.chain_id(), asset);
        let mut cache = self.separators.write().expect("lock poisoned");
        if cache.len() < MAX_CACHED_SEPARATORS && find(&cache).is_none() {
            cache.push(CachedSeparator {
                asset,
                name: name.into(),
                version: version.into(),
                separator,
            });
        }
        separator
    }

    /// The chain this verifier reads.
    pub fn chain(&self) -> &Arc<dyn EvmChain> {
        &self.chain
    }

    /// Runs every check; `now` is the Unix time in seconds. With `simulate` false the final
    /// `eth_call` is skipped (settlement simulates through `eth_estimateGas` anyway).
    ///
    /// Errors: [`VerifyError::Malformed`] for an unparsable payload field (named),
    /// [`VerifyError::ChainUnavailable`] when the RPC cannot be reached.
    pub async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
        simulate: bool,
    ) -> Result<Verdict<EvmPayment>, VerifyError> {
        let payload: ExactEvmPayload = req.scheme_payload_as()?;
        let auth = &payload.authorization;
        let payer = Some(auth.from.clone());
        let invalid =
            |reason, msg: String| Ok(Verdict::Invalid(Invalid::new(reason, msg, payer.clone())));

        // 1. scheme
        if req.accepted_scheme() != "exact" || req.scheme() != "exact" {
            return invalid(
                Reason::EvmScheme,
                format!("scheme {:?} is not exact", req.accepted_scheme()),
            );
        }
        // 2. EIP-712 domain
        let (Some(name), Some(version)) = (req.extra_str("name"), req.extra_str("version")) else {
            return invalid(
                Reason::EvmMissingEip712Domain,
                "paymentRequirements.extra.name and .version are required".into(),
            );
        };
        // 3. network
        if !networks_match(req) {
            return invalid(
                Reason::EvmNetworkMismatch,
                format!(
                    "payload network {:?} differs from {:?}",
                    req.accepted_network_wire(),
                    req.network_wire()
                ),
            );
        }
        let asset = address(req.asset(), "paymentRequirements.asset")?;
        if !self.assets.contains(&asset) {
            return invalid(
                Reason::InvalidPaymentRequirements,
                format!(
                    "asset {asset} is not settled by this facilitator on {}",
                    self.network
                ),
            );
        }
        let authorization = parse_authorization(auth)?;
        // 4. signature: parsed now, checked below (an invalid one wins over steps 5-9)
        let parsed = match PayerSignature::parse(&payload.signature) {
            Ok(sig) => sig,
            Err(e) => return invalid(Reason::EvmFailedToParseSignature, e.to_string()),
        };
        let separator = self.domain_separator(name, version, asset);
        let digest = eip712::signing_digest(&separator, &authorization);
        let signed = Signed {
            from: authorization.from,
            digest,
        };
        // 5.-8.
        if let Some(failed) = self.requirement_checks(req, &authorization, now)? {
            return Ok(Verdict::Invalid(
                match self.check_signature(parsed, &signed).await? {
                    Ok(_) => failed,
                    Err(bad_sig) => bad_sig,
                }
                .with_payer(payer),
            ));
        }
        // 9. asset deployed (cached; also learns the token's DOMAIN_SEPARATOR())
        let deployed = self.asset_facts(asset).await?;
        // The token checks the signature itself when the simulation calls it: with the same
        // domain separator as ours, a successful simulation proves it, and the local recovery is
        // needed only to word a failure.
        let deferred = simulate
            && self.accept_contract_signatures
            && matches!(parsed, PayerSignature::Ecdsa(_))
            && deployed.is_some_and(|facts| facts.domain_separator == Some(separator));
        let signature = if deferred {
            parsed
        } else {
            match self.check_signature(parsed, &signed).await? {
                Ok(sig) => sig,
                Err(bad_sig) => return Ok(Verdict::Invalid(bad_sig.with_payer(payer))),
            }
        };
        if !self.accept_contract_signatures && !matches!(signature, PayerSignature::Ecdsa(_)) {
            return invalid(
                Reason::EvmSignature,
                "contract-wallet (ERC-1271 / ERC-6492) signatures are not accepted by this \
                 facilitator"
                    .into(),
            );
        }
        if deployed.is_none() {
            return invalid(
                Reason::AssetNotDeployedContract,
                format!("no contract at {asset}"),
            );
        }
        let mut payment = EvmPayment {
            payer: authorization.from,
            asset,
            authorization,
            signature,
        };
        if !simulate {
            return Ok(Verdict::Valid(payment));
        }
        // 10. simulation
        let Some(mut revert) = self.simulate(&payment).await? else {
            return Ok(Verdict::Valid(payment));
        };
        if deferred {
            match self
                .check_signature(payment.signature.clone(), &signed)
                .await?
            {
                Err(bad_sig) => return Ok(Verdict::Invalid(bad_sig.with_payer(payer))),
                // A smart wallet's 65-byte signature: simulated again with the `bytes` overload,
                // as the eager check would have done.
                Ok(sig) if sig != payment.signature => {
                    payment.signature = sig;
                    match self.simulate(&payment).await? {
                        None => return Ok(Verdict::Valid(payment)),
                        Some(again) => revert = again,
                    }
                }
                Ok(_) => {}
            }
        }
        let failure = self.diagnose(&payment, name, version, revert).await?;
        Ok(Verdict::Invalid(failure))
    }

    /// Steps 5-8 (no I/O): recipient, `validBefore`, `validAfter`, amount; the first failure.
    ///
    /// Errors: [`VerifyError::Malformed`] naming an unparsable `payTo` or amount.
    fn requirement_checks(
        &self,
        req: &PaymentRequest,
        authorization: &TransferWithAuthorization,
        now: u64,
    ) -> Result<Option<Invalid>, VerifyError> {
        let failed = |reason, msg: String| Ok(Some(Invalid::new(reason, msg, None)));
        // 5. recipient
        let pay_to = address(req.pay_to(), "paymentRequirements.payTo")?;
        if authorization.to != pay_to {
            return failed(
                Reason::RecipientMismatch,
                format!(
                    "authorization.to {} is not payTo {pay_to}",
                    authorization.to
                ),
            );
        }
        // 6., 7. time window
        if authorization.validBefore < U256::from(now + VALID_BEFORE_MARGIN_SECONDS) {
            return failed(
                Reason::EvmValidBefore,
                format!(
                    "validBefore {} is before now ({now}) + {VALID_BEFORE_MARGIN_SECONDS} s",
                    authorization.validBefore
                ),
            );
        }
        if authorization.validAfter > U256::from(now) {
            return failed(
                Reason::EvmValidAfter,
                format!(
                    "validAfter {} is after now ({now})",
                    authorization.validAfter
                ),
            );
        }
        // 8. amount
        let required = uint(req.amount(), req.amount_field())?;
        if authorization.value != required {
            let reason = match req.version {
                X402Version::V1 => Reason::EvmAuthorizationValueV1,
                X402Version::V2 => Reason::EvmValueMismatch,
            };
            return failed(
                reason,
                format!(
                    "authorization.value {} differs from required {required}",
                    authorization.value
                ),
            );
        }
        Ok(None)
    }

    /// The payer's signature of the EIP-3009 digest ([`signature::verify_payer_signature`],
    /// failures `invalid_exact_evm_signature`).
    async fn check_signature(
        &self,
        sig: PayerSignature,
        signed: &Signed,
    ) -> Result<Result<PayerSignature, Invalid>, VerifyError> {
        signature::verify_payer_signature(
            self.chain.as_ref(),
            signed.from,
            signed.digest,
            sig,
            Reason::EvmSignature,
            "authorization.from",
        )
        .await
    }

    async fn code(&self, address: Address) -> Result<Bytes, VerifyError> {
        self.chain
            .code_at(address)
            .await
            .map_err(|e| VerifyError::ChainUnavailable(e.into()))
    }

    /// What the token contract at `asset` is, probed once (`eth_getCode`, then
    /// `DOMAIN_SEPARATOR()`) and kept; `None` while no contract is deployed there (asked again
    /// next time). A burst waits for one probe instead of each asking.
    async fn asset_facts(&self, asset: Address) -> Result<Option<AssetFacts>, VerifyError> {
        let known = || {
            self.deployed_assets
                .lock()
                .expect("lock poisoned")
                .get(&asset)
                .copied()
        };
        if let Some(facts) = known() {
            return Ok(Some(facts));
        }
        let _probing = self.probing_assets.lock().await;
        if let Some(facts) = known() {
            return Ok(Some(facts));
        }
        if self.code(asset).await?.is_empty() {
            return Ok(None);
        }
        let facts = AssetFacts {
            domain_separator: self
                .read(asset, IEip3009Token::DOMAIN_SEPARATORCall {})
                .await?,
        };
        self.deployed_assets
            .lock()
            .expect("lock poisoned")
            .insert(asset, facts);
        Ok(Some(facts))
    }
}

/// The EIP-712 digest a payer signature must sign, and who must have signed it.
#[derive(Debug, Clone, Copy)]
struct Signed {
    /// `authorization.from`.
    from: Address,
    /// EIP-712 digest of the authorization under the requirements' domain (`extra.name`,
    /// `extra.version`, chain id, asset).
    digest: B256,
}

/// A deployed token contract, as probed once by [`ExactEvmVerifier::asset_facts`].
#[derive(Debug, Clone, Copy)]
struct AssetFacts {
    /// The token's own `DOMAIN_SEPARATOR()` (EIP-712); `None` when it has none.
    domain_separator: Option<B256>,
}

/// Identity of an EVM payment, computed without any check or I/O: the parts of its replay key and
/// a fingerprint of exactly what was signed and required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmPaymentId {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Token contract.
    pub asset: Address,
    /// `authorization.from`.
    pub from: Address,
    /// `authorization.nonce`.
    pub nonce: B256,
    /// `authorization.to`.
    pub to: Address,
    /// `authorization.value`, atomic units of the asset.
    pub value: U256,
    /// `authorization.validAfter` in Unix seconds (saturated to `u64::MAX`).
    pub valid_after: u64,
    /// `authorization.validBefore` in Unix seconds (saturated to `u64::MAX`).
    pub valid_before: u64,
    /// keccak256 of the ABI encoding of chain id, asset, the whole authorization, the signature
    /// bytes and the requirements' `payTo` and amount: two requests with the same fingerprint
    /// are the same payment for the same requirements.
    pub fingerprint: B256,
}

impl ExactEvmVerifier {
    /// The identity of the payment in `req`. Errors name the malformed field.
    pub fn payment_id(&self, req: &PaymentRequest) -> Result<EvmPaymentId, ParseError> {
        let payload: ExactEvmPayload = req.scheme_payload_as()?;
        let a = parse_authorization(&payload.authorization)?;
        let asset = address(req.asset(), "paymentRequirements.asset")?;
        let pay_to = address(req.pay_to(), "paymentRequirements.payTo")?;
        let amount = uint(req.amount(), req.amount_field())?;
        let chain_id = self.chain.chain_id();
        let signature = Bytes::from(payload.signature.to_ascii_lowercase().into_bytes());
        let encoded = (
            U256::from(chain_id),
            asset,
            (a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce),
            signature,
            pay_to,
            amount,
        )
            .abi_encode();
        Ok(EvmPaymentId {
            chain_id,
            asset,
            from: a.from,
            nonce: a.nonce,
            to: a.to,
            value: a.value,
            valid_after: u64::try_from(a.validAfter).unwrap_or(u64::MAX),
            valid_before: u64::try_from(a.validBefore).unwrap_or(u64::MAX),
            fingerprint: alloy::primitives::keccak256(encoded),
        })
    }
}

fn parse_authorization(
    auth: &x402_proto::evm::Eip3009Authorization,
) -> Result<TransferWithAuthorization, ParseError> {
    Ok(TransferWithAuthorization {
        from: address(&auth.from, "paymentPayload.payload.authorization.from")?,
        to: address(&auth.to, "paymentPayload.payload.authorization.to")?,
        value: uint(&auth.value, "paymentPayload.payload.authorization.value")?,
        validAfter: uint(
            &auth.valid_after,
            "paymentPayload.payload.authorization.validAfter",
        )?,
        validBefore: uint(
            &auth.valid_before,
            "paymentPayload.payload.authorization.validBefore",
        )?,
        nonce: B256::from_str(&auth.nonce).map_err(|_| {
            ParseError::new(
                "paymentPayload.payload.authorization.nonce",
                "expected 0x + 32 bytes hex",
            )
        })?,
    })
}

fn networks_match(req: &PaymentRequest) -> bool {
    match &req.payload {
        Payload::V1(p) => p.network == req.network_wire(),
        Payload::V2(p) => p.accepted.network == req.network_wire(),
    }
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
mod tests;
