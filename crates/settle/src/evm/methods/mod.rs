//! Transfer methods: one module per way an EVM payment moves tokens, each a
//! [`TransferMethod`] put on the chain's one [`super::sender::EvmSender`] by
//! [`super::EvmFamily`].
//!
//! - [`eip3009`]: `exact` with EIP-3009 `transferWithAuthorization` on the token (USDC).
//! - [`permit2`]: `exact` with Permit2 `permitWitnessTransferFrom` through
//!   `x402ExactPermit2Proxy` (any ERC-20 approved to Permit2).
//!
//! A method gives the replay key (its key space is its own, so the reconciler routes a record
//! by its key), the checks, the call (`to`, calldata), the landing check, the expiry check and
//! the conflict reason. Adding a kind is one file here plus its registration in the facilitator.

pub mod eip3009;
pub mod permit2;

use alloy::primitives::{Address, Bytes};
use alloy::rpc::types::TransactionReceipt;
use async_trait::async_trait;
use x402_proto::{PaymentRequest, Reason};
use x402_verify::Invalid;

use crate::SettleError;
use crate::family::Identified;
use crate::record::{Broadcast, PaymentFacts};

/// A revert of the settlement-time simulation: the node's message and the ABI-encoded revert
/// data when the node gave it.
#[derive(Debug, Clone)]
pub struct Revert {
    /// The node's message.
    pub message: String,
    /// Revert data (custom error selector and arguments, or `Error(string)`).
    pub data: Option<Bytes>,
}

/// One EVM transfer method (see the module docs). All calls are about one chain, the
/// sender's.
#[async_trait]
pub trait TransferMethod: Send + Sync + 'static {
    /// A verified payment, ready to sign.
    type Payment: Send + Sync;

    /// The method's name: in logs and learnt gas limits (`"eip3009"`, `"permit2"`).
    const NAME: &'static str;

    /// The start of every replay key of this method on this chain (under the store's
    /// prefix). No key of another method starts with it: the reconciler routes by it.
    fn key_space(&self) -> String;

    /// The identity of the payment in `req` at Unix time `now` (seconds): replay key, facts,
    /// lifetime. Errors name a malformed field.
    async fn identify(&self, req: &PaymentRequest, now: u64) -> Result<Identified, SettleError>;

    /// Every check (settlement-time: no `eth_call` simulation, the sender's simulation follows).
    async fn verify(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Result<Self::Payment, Invalid>, SettleError>;

    /// The payer.
    fn payer(&self, payment: &Self::Payment) -> Address;

    /// The token moved.
    fn asset(&self, payment: &Self::Payment) -> Address;

    /// Whether the payer's signature is a plain ECDSA one (a contract wallet's costs gas its
    /// code decides, bounded by the sender's cap).
    fn ecdsa(&self, payment: &Self::Payment) -> bool;

    /// The settlement call: the contract called and its calldata.
    fn call(&self, payment: &Self::Payment) -> (Address, Bytes);

    /// The signer that must send `payment`'s settlement (`upto`: `witness.facilitator`), or
    /// `None` for any. Default `None`.
    fn signer(&self, _payment: &Self::Payment) -> Option<Address> {
        None
    }

    /// Whether `payment` settles with no transaction (`upto` charging 0): answered success
    /// with transaction `""`. Default `false`.
    fn settles_nothing(&self, _payment: &Self::Payment) -> bool {
        false
    }

    /// The key of `payment`'s learnt gas limit (with its asset): calls of different gas
    /// (`exact` and `upto` through their proxies) need their own. Default [`Self::NAME`].
    fn gas_key(&self, _payment: &Self::Payment) -> &'static str {
        Self::NAME
    }

    /// The reason for a settlement-time simulation that reverted (checks the chain again to
    /// word it). Errors: the chain unreachable.
    async fn diagnose(
        &self,
        req: &PaymentRequest,
        payment: &Self::Payment,
        revert: Revert,
    ) -> Result<Invalid, SettleError>;

    /// The reason answered when the payer's balance does not cover the amount plus its
    /// settlements in flight.
    fn insufficient_funds(&self) -> Reason;

    /// Whether a mined, successful settlement transferred what `payment` requires: `None` when
    /// it did, else the failure's reason and message.
    fn landed(
        &self,
        payment: &PaymentFacts,
        mined: &TransactionReceipt,
    ) -> Option<(Reason, String)>;

    /// Called when no node holds a broadcast past `payment.valid_until`: `Some(message)` when
    /// the payment can no longer land (its authorization unused and expired), `None` when it
    /// may still (or did). Errors: the chain unreachable, a corrupt record.
    async fn expired(&self, broadcast: &Broadcast) -> Result<Option<String>, SettleError>;

    /// The answer to a payment whose replay key holds a record bound to another payload.
    fn conflict_reason(&self) -> Reason;

    /// The reason of `broadcast`'s settlement that failed on chain.
    fn transaction_failed(&self, _broadcast: &Broadcast) -> Reason {
        Reason::EvmTransactionFailed
    }

    /// The reason answered to a payer blocked for reverting too often.
    fn blocked_payer(&self) -> Reason {
        Reason::EvmSimulationFailed
    }

    /// A payment refused while no record of it exists may have landed already, its record lost
    /// with the store: this network's own transaction that settled it, if any (the family
    /// restores the record as `delivered`). Default none.
    async fn recover_lost(
        &self,
        _req: &PaymentRequest,
        _invalid: &Invalid,
    ) -> Option<crate::evm::rebuild::Landed> {
        None
    }

    /// A settlement that reverted on chain may have lost to an earlier transaction of ours for
    /// the same payment (sent before its record was lost): that transaction, if it landed.
    /// Default none.
    async fn settled_before(&self, _broadcast: &Broadcast) -> Option<crate::evm::rebuild::Landed> {
        None
    }
}
