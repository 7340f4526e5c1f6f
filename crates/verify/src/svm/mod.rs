//! Solana `exact` scheme verification (specs/schemes/exact/scheme_exact_svm.md; x402-reference §6).
//!
//! [`ExactSvmVerifier::verify`] runs the checks in the reference order (`@x402/svm` 2.27):
//! 1. scheme is `exact`; 2. network match; (asset configured); 3. `extra.feePayer` present and
//!    one of ours; 4. decode the base64 `VersionedTransaction` (legacy or v0; address lookup tables
//!    rejected); 5. signer count cap; 6. account 0 is the fee payer and every other required
//!    signature is present and valid ([`signatures`]); 7. the instruction layout ([`layout`]);
//!    8. the destination token account exists, unless the transaction may create it;
//!    9. co-sign as fee payer and simulate through RPC.

pub mod layout;
pub mod signatures;

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use solana_address::Address;
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_message::VersionedMessage;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::spl::transaction_fee_lamports;
use x402_chain::{SvmChain, SvmChainError};
use x402_proto::svm::ExactSvmPayload;
use x402_proto::{Network, ParseError, PaymentRequest, Reason};

use crate::{Invalid, Verdict, VerifyError};
use layout::{Expected, Layout};

/// Default cap on `SetComputeUnitLimit` when payments may not create the destination's token
/// account, compute units: the two compute-budget instructions, `TransferChecked` (SPL Token or
/// Token-2022) and a memo need about a tenth of it; `@x402/svm` clients set 20,000.
pub const DEFAULT_MAX_COMPUTE_UNIT_LIMIT: u32 = 40_000;

/// Default cap on `SetComputeUnitLimit` when payments may create the destination's associated
/// token account (`CreateIdempotent` costs the Associated Token Account program several tens of
/// thousands of compute units more), compute units.
pub const DEFAULT_MAX_COMPUTE_UNIT_LIMIT_WITH_CREATE: u32 = 120_000;

/// The current highest `SetComputeUnitPrice` a payment may offer, micro-lamports per compute
/// unit, from the network's fee quote (`None`: no fresh quote, the static cap alone applies).
pub type PriceCeiling = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// The operator's limits on what a payment transaction may cost the fee payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmPolicy {
    /// Cap on `SetComputeUnitPrice`, micro-lamports per compute unit (reference: 5,000,000).
    /// With pricing configured, the quote's current price is the tighter cap
    /// ([`ExactSvmVerifier::with_price_ceiling`]).
    pub max_compute_unit_price: u64,
    /// Cap on `SetComputeUnitLimit`, compute units ([`DEFAULT_MAX_COMPUTE_UNIT_LIMIT`], or
    /// [`DEFAULT_MAX_COMPUTE_UNIT_LIMIT_WITH_CREATE`] when destinations may be created).
    pub max_compute_unit_limit: u32,
    /// Most required signatures (each costs the fee payer 5,000 lamports).
    pub max_signers: u8,
    /// `payTo` owners whose missing associated token account a payment may create
    /// (`CreateIdempotent` funded by the fee payer); empty: creation refused.
    pub create_destination_for: Vec<Address>,
}

impl Default for SvmPolicy {
    fn default() -> Self {
        SvmPolicy {
            max_compute_unit_price: 5_000_000,
            max_compute_unit_limit: DEFAULT_MAX_COMPUTE_UNIT_LIMIT,
            max_signers: 2,
            create_destination_for: Vec::new(),
        }
    }
}

/// A verified Solana payment, co-signed by the fee payer and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SvmPayment {
    /// The fully signed transaction.
    pub transaction: VersionedTransaction,
    /// Its first signature (the fee payer's): the transaction id.
    pub signature: Signature,
    /// The fee payer (one of ours).
    pub fee_payer: Address,
    /// Its recent blockhash: after its last valid block height the transaction can never land.
    pub blockhash: Hash,
    /// The checked transfer.
    pub layout: Layout,
    /// What the fee payer pays for the transaction itself, lamports (signatures plus priority
    /// fee; rent of a created account not included).
    pub fee_lamports: u64,
}

impl SvmPayment {
    /// The payer (transfer authority), base58.
    pub fn payer_string(&self) -> String {
        self.layout.authority.to_string()
    }
}

/// Verifies Solana `exact` payments on one cluster.
pub struct ExactSvmVerifier {
    chain: Arc<dyn SvmChain>,
    network: Network,
    fee_payers: Vec<Arc<Keypair>>,
    assets: Vec<Address>,
    policy: SvmPolicy,
    price_ceiling: Option<PriceCeiling>,
}

/// A decoded payment transaction whose fee payer is one of ours.
struct Decoded<'a> {
    tx: VersionedTransaction,
    fee_payer: &'a Keypair,
}

impl ExactSvmVerifier {
    /// A verifier for `network` (CAIP-2 `solana:…`) reading `chain`, co-signing with
    /// `fee_payers`, accepting only the listed mints.
    pub fn new(
        chain: Arc<dyn SvmChain>,
        network: Network,
        fee_payers: Vec<Arc<Keypair>>,
        assets: Vec<Address>,
        policy: SvmPolicy,
    ) -> Self {
        ExactSvmVerifier {
            chain,
            network,
            fee_payers,
            assets,
            policy,
            price_ceiling: None,
        }
    }

    /// Caps `SetComputeUnitPrice` at what `ceiling` says the current fee quote assumes (below
    /// the policy's static cap): a payer offering more per compute unit than the quote charged
    /// for would make the fee payer pay more than it is paid, and is refused with
    /// `invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high`.
    pub fn with_price_ceiling(mut self, ceiling: PriceCeiling) -> Self {
        self.price_ceiling = Some(ceiling);
        self
    }

    /// The highest `SetComputeUnitPrice` accepted now, micro-lamports per compute unit.
    pub fn max_compute_unit_price(&self) -> u64 {
        let quoted = self.price_ceiling.as_ref().and_then(|ceiling| ceiling());
        quoted.map_or(self.policy.max_compute_unit_price, |q| {
            q.min(self.policy.max_compute_unit_price)
        })
    }

    /// The chain this verifier reads.
    pub fn chain(&self) -> &Arc<dyn SvmChain> {
        &self.chain
    }

    /// The network (CAIP-2).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The fee payers' public keys (what `/supported` lists under `solana:*`).
    pub fn fee_payer_addresses(&self) -> Vec<Address> {
        self.fee_payers.iter().map(|k| k.pubkey()).collect()
    }

    /// The operator's limits.
    pub fn policy(&self) -> &SvmPolicy {
        &self.policy
    }

    /// The settlement transaction id of the payment in `req`: the signature our fee payer puts in
    /// slot 0 (Ed25519 is deterministic, so every request for one payment gets the same id).
    /// `Ok(None)` when the payload does not decode or its fee payer is not ours (verification
    /// then names the reason). Errors: a missing `payload.transaction` field.
    pub fn payment_id(&self, req: &PaymentRequest) -> Result<Option<Signature>, ParseError> {
        let payload: ExactSvmPayload = req.scheme_payload_as()?;
        Ok(self
            .decode(&payload.transaction)
            .ok()
            .map(|d| d.fee_payer.sign_message(&d.tx.message.serialize())))
    }

    fn decode(&self, transaction: &str) -> Result<Decoded<'_>, (Reason, String)> {
        let undecodable = |m: String| (Reason::SvmCouldNotBeDecoded, m);
        let bytes = STANDARD
            .decode(transaction.trim())
            .map_err(|e| undecodable(format!("transaction is not base64: {e}")))?;
        let tx: VersionedTransaction = bincode::deserialize(&bytes)
            .map_err(|e| undecodable(format!("not a serialized VersionedTransaction: {e}")))?;
        if matches!(tx.message, VersionedMessage::V1(_)) {
            return Err(undecodable(
                "only legacy and v0 messages are accepted".into(),
            ));
        }
        tx.sanitize()
            .map_err(|e| undecodable(format!("malformed transaction: {e}")))?;
        if tx
            .message
            .address_table_lookups()
            .is_some_and(|l| !l.is_empty())
        {
            return Err(undecodable(
                "address lookup tables are not accepted; list every account statically".into(),
            ));
        }
        let key0 = tx.message.static_account_keys()[0];
        let fee_payer = self
            .fee_payers
            .iter()
            .find(|k| k.pubkey() == key0)
            .ok_or_else(|| {
                (
                    Reason::SvmFeePayerMismatch,
                    format!("account 0 ({key0}) is not extra.feePayer"),
                )
            })?;
        Ok(Decoded { tx, fee_payer })
    }

    /// Runs every check. With `simulate` false the final `simulateTransaction` is skipped.
    ///
    /// Errors: [`VerifyError::Malformed`] for an unparsable field (named: `payTo`, `asset`,
    /// `amount`, `payload.transaction`), [`VerifyError::ChainUnavailable`] when the RPC cannot be
    /// reached.
    /// Reason strings follow the request's x402 version ([`Reason::for_svm_version`]).
    pub async fn verify(
        &self,
        req: &PaymentRequest,
        simulate: bool,
    ) -> Result<Verdict<SvmPayment>, VerifyError> {
        Ok(match self.verify_v2_reasons(req, simulate).await? {
            Verdict::Invalid(mut inv) => {
                inv.reason = inv.reason.for_svm_version(req.version);
                Verdict::Invalid(inv)
            }
            valid => valid,
        })
    }

    async fn verify_v2_reasons(
        &self,
        req: &PaymentRequest,
        simulate: bool,
    ) -> Result<Verdict<SvmPayment>, VerifyError> {
        let payload: ExactSvmPayload = req.scheme_payload_as()?;
        let invalid = |reason, msg: String, payer: Option<Address>| {
            Ok(Verdict::Invalid(Invalid::new(
                reason,
                msg,
                payer.map(|p| p.to_string()),
            )))
        };
        // 1. scheme, 2. network
        if req.accepted_scheme() != "exact" || req.scheme() != "exact" {
            let msg = format!("scheme {:?} is not exact", req.accepted_scheme());
            return invalid(Reason::SvmUnsupportedScheme, msg, None);
        }
        if Network::parse(req.accepted_network_wire()) != req.network() {
            let msg = format!(
                "paid on {:?}, required {:?}",
                req.accepted_network_wire(),
                req.network_wire()
            );
            return invalid(Reason::SvmNetworkMismatch, msg, None);
        }
        let mint = address(req.asset(), "paymentRequirements.asset")?;
        if !self.assets.contains(&mint) {
            let msg = format!("asset {mint} is not settled by this facilitator");
            return invalid(Reason::InvalidPaymentRequirements, msg, None);
        }
        let pay_to = address(req.pay_to(), "paymentRequirements.payTo")?;
        let amount = req.amount().parse::<u64>().map_err(|_| {
            ParseError::new(
                req.amount_field(),
                format!("{:?} is not a u64 decimal", req.amount()),
            )
        })?;
        // 3. fee payer
        let Some(fee_payer) = req.extra_str("feePayer") else {
            let msg = "paymentRequirements.extra.feePayer is missing".to_string();
            return invalid(Reason::SvmMissingFeePayer, msg, None);
        };
        if !self
            .fee_payers
            .iter()
            .any(|k| k.pubkey().to_string() == fee_payer)
        {
            let msg = format!("fee payer {fee_payer} is not managed by this facilitator");
            return invalid(Reason::SvmFeePayerNotManaged, msg, None);
        }
        // 4. decode (+ account 0 is one of ours)
        let decoded = match self.decode(&payload.transaction) {
            Ok(d) => d,
            Err((reason, msg)) => return invalid(reason, msg, None),
        };
        let message = &decoded.tx.message;
        // 5. signer count, 6. signatures
        let signers = message.header().num_required_signatures;
        if signers > self.policy.max_signers {
            let msg = format!(
                "{signers} required signatures; at most {} are accepted",
                self.policy.max_signers
            );
            return invalid(Reason::SvmExcessiveSigners, msg, None);
        }
        if decoded.fee_payer.pubkey().to_string() != fee_payer {
            let msg = format!(
                "account 0 ({}) is not extra.feePayer ({fee_payer})",
                decoded.fee_payer.pubkey()
            );
            return invalid(Reason::SvmFeePayerMismatch, msg, None);
        }
        if let Err(msg) = signatures::check_payer_signatures(&decoded.tx) {
            return invalid(Reason::SvmSignatureInvalid, msg, None);
        }
        // 7. layout
        let expected = Expected {
            mint,
            pay_to,
            amount,
            memo: req.extra_str("memo"),
            max_compute_unit_price: self.max_compute_unit_price(),
            max_compute_unit_limit: self.policy.max_compute_unit_limit,
            may_create_destination: self.policy.create_destination_for.contains(&pay_to),
        };
        let layout = match layout::check(message, &expected) {
            Ok(l) => l,
            Err(b) => return invalid(b.reason, b.message, b.payer),
        };
        let payer = Some(layout.authority);
        // 8. destination exists
        if !layout.creates_destination
            && self
                .chain
                .account(&layout.destination)
                .await
                .map_err(unavailable)?
                .is_none()
        {
            let msg = format!(
                "payTo has no token account {} for mint {mint}; it must exist before payment",
                layout.destination
            );
            return invalid(Reason::SvmDestinationAtaMissing, msg, payer);
        }
        // 9. co-sign, simulate
        let mut transaction = decoded.tx.clone();
        let signature = decoded.fee_payer.sign_message(&message.serialize());
        transaction.signatures[0] = signature;
        if simulate {
            let sim = self
                .chain
                .simulate(&transaction)
                .await
                .map_err(unavailable)?;
            if let Some(err) = sim.err {
                let tail: Vec<&str> = sim.logs.iter().rev().take(3).map(String::as_str).collect();
                let msg = format!("simulation failed: {err}; logs: {tail:?}");
                return invalid(Reason::SvmSimulationFailed, msg, payer);
            }
        }
        let fee_lamports = transaction_fee_lamports(
            u64::from(signers),
            layout.compute_unit_limit,
            layout.compute_unit_price,
        );
        Ok(Verdict::Valid(SvmPayment {
            blockhash: *message.recent_blockhash(),
            fee_payer: decoded.fee_payer.pubkey(),
            transaction,
            signature,
            layout,
            fee_lamports,
        }))
    }
}

fn unavailable(e: SvmChainError) -> VerifyError {
    VerifyError::ChainUnavailable(e.into())
}

fn address(s: &str, field: &str) -> Result<Address, ParseError> {
    Address::from_str(s)
        .map_err(|_| ParseError::new(field, format!("{s:?} is not a base58 Solana address")))
}
