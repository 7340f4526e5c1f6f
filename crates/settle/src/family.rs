//! The per-chain-family part of settlement ([`ChainFamily`]): identity and binding, verify,
//! sign, send, look up on chain. The state machine in [`crate::engine`] drives it; the EVM
//! implementation is [`crate::evm::EvmFamily`], the Solana one [`crate::svm::SvmFamily`].

use async_trait::async_trait;
use x402_proto::{PaymentRequest, Reason, SettleResponse, X402Version};
use x402_verify::Invalid;

use crate::SettleError;
use crate::record::{Broadcast, Cost, PaymentFacts, SentTx};

/// The identity of one payment under one set of requirements.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Replay key ([`crate::replay::keys`]).
    pub key: String,
    /// What the record stores of the payment (its `binding` fingerprints payload and
    /// requirements).
    pub facts: PaymentFacts,
    /// Lifetime of the record, seconds.
    pub ttl_seconds: u64,
    /// Claim keys the payment must hold alone (Solana `extra.memo` for a `payTo`).
    pub claims: Vec<String>,
}

/// [`ChainFamily::identify`]'s answer.
pub enum Identified {
    /// The payment has an identity.
    Payment(Box<Identity>),
    /// It has none (undecodable, not our fee payer): the verification failure to answer.
    Refused(Box<SettleResponse>),
}

/// [`ChainFamily::sign`]'s answer.
pub enum Signed {
    /// A signed transaction, not yet sent.
    Tx(SentTx),
    /// Refused before anything was signed (e.g. the gas estimate reverted): the reason.
    Refused(Invalid),
    /// Settled with nothing to send (`upto` charging 0, specs/schemes/upto/scheme_upto_evm.md
    /// §1 "Zero Settlement"): the engine records it `delivered` with transaction `""`.
    Nothing,
}

/// [`ChainFamily::send`]'s answer.
pub enum Sent {
    /// The node accepted it (or already had it).
    Accepted,
    /// Transport failure or timeout: it may or may not have been accepted.
    Unknown(String),
    /// The node refused it definitively: it is in no mempool and cannot land as sent.
    Refused(String),
    /// Refused because its sender nonce is used on chain (EVM "nonce too low"): it can never
    /// land as signed; the engine replaces it at once ([`ChainFamily::replacement`]).
    NonceUsed(String),
}

/// Where a broadcast payment stands on chain ([`ChainFamily::lookup`]).
pub enum Lookup {
    /// Landed and transferred as required.
    Landed {
        /// The landed transaction.
        transaction: String,
        /// What it cost.
        cost: Cost,
    },
    /// Landed and failed (reverted, on-chain error, or no matching transfer).
    Failed {
        /// The failed transaction.
        transaction: String,
        /// Reason (x402 v2).
        reason: Reason,
        /// Detail.
        message: String,
        /// What it cost.
        cost: Cost,
    },
    /// Not in a block yet, but pre-confirmed: a flashblocks-aware RPC answered a receipt of it
    /// from the block being built, with success and the transfer the method requires (EVM
    /// `[[evm]] preconfirmations`). A request answers success at it and records `sent`, the
    /// pre-confirmed transaction, so it can be sent again should the sequencer drop it; the
    /// reconciler waits for the block. A reverted pre-confirmation is never this: it is
    /// [`Lookup::NotYet`] until a block says.
    Preconfirmed {
        /// The pre-confirmed transaction.
        transaction: String,
        /// What its pre-confirmation receipt says it cost.
        cost: Cost,
        /// The recorded transaction pre-confirmed (its signed bytes).
        sent: SentTx,
    },
    /// This transaction failed, but the payment was settled by another transaction of this
    /// facilitator's, sent for it before its record was lost (EVM: [`crate::evm::rebuild`]).
    /// Resolved as `delivered` with that transaction: its success may have been answered.
    SettledBefore {
        /// The transaction that settled the payment.
        transaction: String,
        /// What it cost.
        cost: Cost,
    },
    /// Not landed, and never can (validBefore or blockhash passed).
    Expired {
        /// Detail.
        message: String,
    },
    /// Not landed yet. `known`: a node has it (false: re-send the recorded bytes).
    NotYet {
        /// Whether the node knows the transaction.
        known: bool,
    },
}

/// How far [`ChainFamily::lookup`] must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Only whether the payment landed: `NotYet` may say `known: true` without asking a node.
    LandedOnly,
    /// Also whether a node still holds the transaction, and (past `validBefore`) whether it can
    /// still land: the caller acts on the answer.
    NodeHolds,
}

/// One chain family's settlement operations.
#[async_trait]
pub trait ChainFamily: Send + Sync + 'static {
    /// A verified payment, ready to sign.
    type Payment: Send + Sync;

    /// A held signer (EVM: a slot of one signer address; Solana: nothing, the fee payer
    /// co-signed at verification), taken by [`ChainFamily::acquire_signer`] and given back with
    /// [`ChainFamily::release_signer`].
    type Signer: Send + Sync;

    /// The start of every replay key of this family on this network (the reconciler routes
    /// unresolved records by it).
    fn key_space(&self) -> String;

    /// The identity of the payment in `req` at Unix time `now` (seconds). Errors name a
    /// malformed field.
    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError>;

    /// Every verification check (settlement-time: EVM without `eth_call`, which the gas
    /// estimate repeats; Solana with simulation).
    async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Result<Self::Payment, Invalid>, SettleError>;

    /// A payment refused (by settlement-time verification, or by [`ChainFamily::sign`]'s
    /// simulation) while no record of it exists may have landed already, its record lost with
    /// the store (a failover, a flush): the record to restore from the chain, if any. It must
    /// be a record of this facilitator's own transaction (EVM: [`crate::evm::rebuild`]).
    /// `now`: Unix seconds (the engine's clock).
    async fn recover_lost(
        &self,
        _req: &PaymentRequest,
        _id: &Identity,
        _invalid: &Invalid,
        _now: u64,
    ) -> Option<crate::record::SettlementRecord> {
        None
    }

    /// Whether this verified payment can start settling (EVM: at least one signer above the
    /// balance floor; Solana: the payment's fee payer above it). Checked before anything is
    /// reserved; an error is a 503.
    async fn ready_to_settle(&self, _payment: &Self::Payment) -> Result<(), SettleError> {
        Ok(())
    }

    /// Whether the payer of this verified payment can pay its `amount` (atomic units) on top of
    /// `in_flight`, the amounts of its settlements reserved before this one and not resolved
    /// ([`crate::debits`]): `balance(latest) - in_flight >= amount`, the balance read now
    /// (after the debits were). `Ok(Some(refusal))` refuses the payment before anything is
    /// signed (the family's insufficient-funds reason). Called by the engine with the
    /// reservation held, right before [`ChainFamily::sign`]. `in_flight` 0 may be left to a
    /// simulation only if that simulation runs after this call (EVM's in `sign`), never to one
    /// run during verification: a settlement of the same payer may have confirmed and released
    /// its debit in between. Default: no check.
    async fn check_funds(
        &self,
        _payment: &Self::Payment,
        _amount: u128,
        _in_flight: u128,
    ) -> Result<Option<Invalid>, SettleError> {
        Ok(None)
    }

    /// The payer of a verified payment, as answers name it.
    fn payer_of(&self, payment: &Self::Payment) -> String;

    /// Takes a signer for `payment` (bounded wait): any free one, or the one the payment names
    /// (`upto`'s `witness.facilitator`). Errors: none free in time, nothing reserved elsewhere.
    async fn acquire_signer(&self, payment: &Self::Payment) -> Result<Self::Signer, SettleError>;

    /// Gives the signer back.
    async fn release_signer(&self, signer: Self::Signer);

    /// Signs the payment's settlement transaction (for the record under replay key `key`)
    /// with the held signer; sends nothing.
    async fn sign(
        &self,
        signer: &Self::Signer,
        key: &str,
        req: &PaymentRequest,
        payment: &Self::Payment,
    ) -> Result<Signed, SettleError>;

    /// A signed transaction that will never be recorded nor sent (its reservation was taken
    /// over first): give back what it used (EVM: its sender nonce).
    async fn discard(&self, _sent: &SentTx) {}

    /// Sends (or re-sends) a recorded transaction.
    async fn send(&self, sent: &SentTx) -> Sent;

    /// A replacement of a broadcast transaction that stays unmined: the same sender nonce with
    /// higher fees (EIP-1559 replacement: both fee caps raised by at least 12.5 %), signed,
    /// not sent. `None` when the family has no such thing (Solana: the blockhash decides).
    /// EVM: when the transaction's sender nonce was used by another transaction, a new nonce
    /// (for the record under `key`).
    async fn replacement(
        &self,
        _key: &str,
        _broadcast: &Broadcast,
    ) -> Result<Option<SentTx>, SettleError> {
        Ok(None)
    }

    /// Where a broadcast payment stands at Unix time `now` (seconds, the engine's clock).
    /// `probe` says whether the caller will act on [`Lookup::NotYet`]'s `known` now (re-send,
    /// replace, expire): with [`Probe::LandedOnly`] the family may skip asking the node whether
    /// it still holds the transaction and answer `known: true`.
    async fn lookup(
        &self,
        broadcast: &Broadcast,
        probe: Probe,
        now: u64,
    ) -> Result<Lookup, SettleError>;

    /// A mark of the news seen so far (EVM: blocks read), taken before a look at the chain and
    /// given to [`ChainFamily::wait_for_news`], so that news arriving between the look and the
    /// wait is not missed.
    fn news_mark(&self) -> u64 {
        0
    }

    /// Waits for news of broadcast transactions after `mark` (EVM: the next block read;
    /// at once if one was read since `mark` was taken), at most `max`.
    async fn wait_for_news(&self, _mark: u64, max: std::time::Duration) {
        tokio::time::sleep(max).await
    }

    /// Periodic repair, run by every replica each reconciler pass, with or without the
    /// reconciler lease: only this replica holds its signers' keys (EVM: sender nonce gaps, see
    /// [`crate::evm::gaps`]).
    async fn maintain(&self) {}

    /// The reason as the request's x402 version spells it (Solana v1 keeps five short forms).
    fn reason_for(&self, reason: Reason, _version: X402Version) -> Reason {
        reason
    }

    /// The answer to a payment whose replay key holds a record bound to another payload or
    /// other requirements, when verification finds nothing wrong with it.
    fn conflict_reason(&self) -> Reason {
        Reason::DuplicateSettlement
    }

    /// The reason answered to a payer whose settlements are refused for reverting too often
    /// ([`crate::engine::PayerPolicy`]); nothing is signed.
    fn blocked_payer(&self) -> Reason {
        Reason::UnexpectedSettleError
    }

    /// The reason of `broadcast`'s transaction that failed on chain or could not be sent.
    fn transaction_failed(&self, broadcast: &Broadcast) -> Reason;

    /// Called once per landed settlement with its cost (metrics, accounting); also for one
    /// answered at a pre-confirmation ([`Lookup::Preconfirmed`]).
    fn observe_landed(&self, _payment: &PaymentFacts, _cost: &Cost) {}
}
