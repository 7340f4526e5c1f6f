//! The settlement record: one per payment, stored as JSON under its replay key
//! ([`crate::replay::keys`]), moved from state to state by atomic compare-and-swap
//! ([`crate::replay::ReplayStore::swap`]).
//!
//! ```text
//!            ┌── lease lapsed: taken over (request) ──┐
//!            ▼                                        │
//!  (none) ──> reserved ───────────────────────────────┘
//!     ▲  ▲       │ sign + record (request)
//!     │  │       ▼
//!     │  │    broadcast ◄──┐ re-send same bytes / replace (request, reconciler)
//!     │  │       │ └───────┘
//!     │  │       ├── landed ──> delivered (request)        ┌──────────────┐
//!     │  │       ├── landed ──> confirmed (reconciler) ──> │ delivered    │ (first request)
//!     │  │       ├── reverted / no matching transfer ──> failed
//!     │  │       └── validBefore / blockhash passed, never landed ──> expired
//!     │  └── refused before signing; abandoned (reconciler) : record deleted
//!     └── landed with no record: restored as delivered (recover_lost, request)
//! ```
//!
//! | from | to | who | where |
//! |---|---|---|---|
//! | none | `reserved` | request (verified, signer held) | `engine/request.rs` `start` |
//! | none | `delivered` | request: the payment landed but its record was lost ([`crate::family::ChainFamily::recover_lost`], Solana) | `engine/request.rs` `start` |
//! | `reserved` | `reserved` (new owner) | request, once the owner's lease lapsed (nothing was signed) | `engine/request.rs` `continue_from` |
//! | `reserved` | `reserved` (lease renewed) | its owner, right before signing | `engine/request.rs` `sign_and_record` |
//! | `reserved` | deleted | its owner (refused before signing), or the reconciler (lease lapsed 2 leases ago) | `engine/request.rs` `give_up`, `engine/reconcile.rs` |
//! | `reserved` | `broadcast` | its owner: signed, recorded before sending | `engine/request.rs` `sign_and_record` |
//! | `reserved` | `delivered` (transaction `""`) | its owner: nothing to send (`upto` charging 0) | `engine/request.rs` `sign_and_record` |
//! | `broadcast` | `broadcast` (`last_sent_ms`) | request or reconciler: re-send of the recorded bytes | `engine/advance.rs` `resend` |
//! | `broadcast` | `broadcast` (`sent` replaced) | request or reconciler: replacement, same nonce with higher fees or a new nonce | `engine/advance.rs` `replace` |
//! | `broadcast` | `delivered` | request that sees the landing (answers success) | `engine/advance.rs` `resolve` |
//! | `broadcast` | `confirmed` | reconciler that sees the landing | `engine/advance.rs` `resolve` |
//! | `broadcast` | `failed` / `expired` | request or reconciler | `engine/advance.rs` `resolve` |
//! | `confirmed` | `delivered` | the first request after (answers success) | `engine/request.rs` `deliver` |
//!
//! Which of these [`crate::engine::decide`] picks for a broadcast record is a pure function of
//! the chain's outcome, the record, the time and the timing. Nonce repair
//! ([`crate::evm::gaps`]) re-sends recorded EVM transactions and fills sender nonces but never
//! writes a record.
//!
//! `delivered` is the only state whose payment has been answered `success: true`; the
//! `confirmed → delivered` step is one atomic swap, so one payment gets one success, ever
//! (x402-conformance F3).

use serde::{Deserialize, Serialize};
use x402_proto::{Reason, SettleResponse};

/// What every state knows of the payment (set at reservation, never changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFacts {
    /// Fingerprint of the payload and of the requirements it settles under (scheme, network,
    /// asset, `payTo`, amount), 0x-hex or base58: a request with another fingerprint is another
    /// payment or other requirements and never gets this record's success.
    pub binding: String,
    /// Network, CAIP-2 (`eip155:8453`, `solana:…`).
    pub network: String,
    /// The payer (EVM: checksummed `authorization.from`; Solana: transfer authority, base58).
    pub payer: String,
    /// Amount, atomic token units (decimal string).
    pub amount: String,
    /// Token contract or SPL mint.
    pub asset: String,
    /// Recipient (`payTo`).
    pub pay_to: String,
    /// Unix seconds of the reservation.
    pub created_at: u64,
    /// Unix seconds after which the payment can no longer land (EVM `validBefore`; Solana: the
    /// record's lifetime, the blockhash decides).
    pub valid_until: u64,
    /// Name of the API key (`[[auth.keys]].name`) whose `/settle` reserved the payment; `None`
    /// without API keys (and in records written before keys were recorded). Its webhook, if
    /// any, receives the payment's final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Answer index keys ([`crate::replay::ReplayStore::answer_key`]) of the ids the reserving
    /// request carried (`payment-identifier`, `Idempotency-Key`). Empty: anyone's next
    /// `/settle` may take the one success (the reconciler's `confirmed → delivered`). Not empty:
    /// the success is answered only to requests presenting one of these ids, as often as they
    /// ask; every other request gets `duplicate_settlement`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_keys: Vec<String>,
    /// EVM: the settlement call when it is not EIP-3009's: `"permit2"` (`exact` over Permit2)
    /// or `"upto"` (what the gas oracle samples and quotes per kind); absent for EIP-3009,
    /// Solana and records written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A transaction the facilitator signed for a payment and recorded before sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum SentTx {
    /// EVM `transferWithAuthorization` transaction.
    Evm {
        /// Transaction hash, 0x-hex.
        transaction: String,
        /// EIP-2718 signed transaction, 0x-hex, re-sent when a node lost it.
        raw: String,
        /// Facilitator address that signed it.
        signer: String,
        /// Sender nonce.
        nonce: u64,
        /// `maxFeePerGas`, wei (decimal string), for EIP-1559 replacement.
        #[serde(default)]
        max_fee_per_gas: String,
        /// `maxPriorityFeePerGas`, wei (decimal string).
        #[serde(default)]
        max_priority_fee_per_gas: String,
    },
    /// Solana transaction, co-signed by the fee payer.
    Svm {
        /// Transaction signature, base58.
        transaction: String,
        /// The signed `VersionedTransaction`, base64 (bincode).
        raw: String,
        /// Its recent blockhash, base58: once invalid, the transaction can never land.
        blockhash: String,
        /// Fee the fee payer pays, lamports (signatures + priority fee).
        fee_lamports: u64,
        /// Rent the fee payer deposits for a destination account it creates, lamports.
        rent_lamports: u64,
    },
}

impl SentTx {
    /// Transaction hash (EVM) or signature (Solana).
    pub fn transaction(&self) -> &str {
        match self {
            SentTx::Evm { transaction, .. } | SentTx::Svm { transaction, .. } => transaction,
        }
    }
}

/// What a landed settlement cost the facilitator.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cost {
    /// EVM gas from the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas: Option<GasPaid>,
    /// Solana fee and rent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svm_fee: Option<SvmFeePaid>,
}

/// `reserved`: a request (the owner) holds the payment; nothing is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    /// The payment.
    pub payment: PaymentFacts,
    /// Instance id of the owning process (`host:pid:random`).
    pub owner: String,
    /// Unix milliseconds until which the owner's lease holds; after it the next `/settle` of the
    /// payment or the reconciler may take the reservation over (nothing was signed).
    pub lease_until_ms: u64,
}

/// `broadcast`: signed, recorded, sent (or about to be): it may land.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    /// The payment.
    pub payment: PaymentFacts,
    /// The current transaction.
    pub sent: SentTx,
    /// Earlier transactions of this payment replaced by `sent` (same nonce, higher fees):
    /// any of them may be the one that lands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<SentTx>,
    /// Unix seconds of the first broadcast.
    pub sent_at: u64,
    /// Unix milliseconds of the latest (re-)send.
    pub last_sent_ms: u64,
    /// Unix milliseconds of the first broadcast (0 in records written before it was kept:
    /// then nothing is known to have been sent after a given time).
    #[serde(default)]
    pub first_sent_ms: u64,
    /// Unix milliseconds when the current transaction (`sent`) was first sent: how long it has
    /// stayed unmined decides its replacement (re-sending the same bytes does not move it).
    /// 0 in records written before it was kept: see [`Broadcast::current_since_ms`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sent_since_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Broadcast {
    /// Every transaction sent for the payment: the current one, then those it replaced.
    pub fn transactions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.sent.transaction())
            .chain(self.replaced.iter().map(SentTx::transaction))
    }

    /// Unix milliseconds since when the current transaction has been out: `sent_since_ms`, or
    /// in older records the first broadcast when nothing was replaced, else the latest send.
    pub fn current_since_ms(&self) -> u64 {
        match (
            self.sent_since_ms,
            self.first_sent_ms,
            self.replaced.is_empty(),
        ) {
            (since, _, _) if since > 0 => since,
            (_, first, true) if first > 0 => first,
            _ => self.last_sent_ms,
        }
    }
}

/// `confirmed` / `delivered`: the transfer landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// The payment.
    pub payment: PaymentFacts,
    /// The landed transaction.
    pub transaction: String,
    /// What it cost.
    #[serde(default)]
    pub cost: Cost,
    /// Unix seconds when the landing was recorded.
    pub settled_at: u64,
    /// EVM, `[[evm]] preconfirmations`: the success was answered at a flashblock
    /// pre-confirmation (a sequencer promise, not yet a block), and this is the transaction
    /// then pre-confirmed, its signed bytes kept so that nonce repair can send it again if the
    /// sequencer drops it ([`crate::evm::gaps`]). `None`: answered from a block receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preconfirmed: Option<SentTx>,
}

/// `failed` / `expired`: final, no success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// The payment.
    pub payment: PaymentFacts,
    /// The transaction that failed or never landed.
    pub transaction: String,
    /// The reason (x402 v2 wire string).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// What it cost (a failed Solana transaction still pays its fee).
    #[serde(default)]
    pub cost: Cost,
    /// Unix seconds when it was closed.
    pub closed_at: u64,
}

/// The state of one payment's settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SettlementRecord {
    /// Held by one request, nothing signed.
    Reserved(Reserved),
    /// Signed and sent: may land.
    Broadcast(Broadcast),
    /// Landed, success not yet answered to anyone.
    Confirmed(Settled),
    /// Landed, success answered once.
    Delivered(Settled),
    /// Reverted or failed on chain.
    Failed(Closed),
    /// Never landed and never can.
    Expired(Closed),
}

/// The public state vocabulary of `GET /settlements/…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicState {
    /// Reserved or broadcast: retry later.
    Pending,
    /// Landed (confirmed or delivered).
    Settled,
    /// Failed on chain.
    Failed,
    /// Never landed.
    Expired,
}

impl SettlementRecord {
    /// The payment facts stored in every state.
    pub fn payment(&self) -> &PaymentFacts {
        match self {
            SettlementRecord::Reserved(r) => &r.payment,
            SettlementRecord::Broadcast(b) => &b.payment,
            SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) => &s.payment,
            SettlementRecord::Failed(c) | SettlementRecord::Expired(c) => &c.payment,
        }
    }

    /// The payment facts, to amend before the record is first written.
    pub fn payment_mut(&mut self) -> &mut PaymentFacts {
        match self {
            SettlementRecord::Reserved(r) => &mut r.payment,
            SettlementRecord::Broadcast(b) => &mut b.payment,
            SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) => &mut s.payment,
            SettlementRecord::Failed(c) | SettlementRecord::Expired(c) => &mut c.payment,
        }
    }

    /// The state name as stored (`reserved`, `broadcast`, …), a metric label.
    pub fn state_name(&self) -> &'static str {
        match self {
            SettlementRecord::Reserved(_) => "reserved",
            SettlementRecord::Broadcast(_) => "broadcast",
            SettlementRecord::Confirmed(_) => "confirmed",
            SettlementRecord::Delivered(_) => "delivered",
            SettlementRecord::Failed(_) => "failed",
            SettlementRecord::Expired(_) => "expired",
        }
    }

    /// The public state.
    pub fn public_state(&self) -> PublicState {
        match self {
            SettlementRecord::Reserved(_) | SettlementRecord::Broadcast(_) => PublicState::Pending,
            SettlementRecord::Confirmed(_) | SettlementRecord::Delivered(_) => PublicState::Settled,
            SettlementRecord::Failed(_) => PublicState::Failed,
            SettlementRecord::Expired(_) => PublicState::Expired,
        }
    }

    /// True when the reconciler has nothing left to do (`delivered`, `failed`, `expired`;
    /// `confirmed` too: only the answer is left, and that is a request's job).
    pub fn is_resolved(&self) -> bool {
        !matches!(
            self,
            SettlementRecord::Reserved(_) | SettlementRecord::Broadcast(_)
        )
    }

    /// The transaction hash or signature, when one was signed.
    pub fn transaction(&self) -> Option<&str> {
        match self {
            SettlementRecord::Reserved(_) => None,
            SettlementRecord::Broadcast(b) => Some(b.sent.transaction()),
            SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) => Some(&s.transaction),
            SettlementRecord::Failed(c) | SettlementRecord::Expired(c) => Some(&c.transaction),
        }
    }

    /// Every transaction hash this record answers for (the current one and those it replaced;
    /// none for a settlement with no transaction, `upto` charging 0).
    pub fn all_transactions(&self) -> Vec<&str> {
        match self {
            SettlementRecord::Broadcast(b) => std::iter::once(b.sent.transaction())
                .chain(b.replaced.iter().map(SentTx::transaction))
                .collect(),
            other => other
                .transaction()
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect(),
        }
    }

    /// The closing answer of a `failed` / `expired` record for a request naming `network`
    /// (`reason_for` maps the stored v2 reason to the request's x402 version).
    pub fn closed_response(
        closed: &Closed,
        network: &str,
        reason_for: impl Fn(Reason) -> Reason,
    ) -> SettleResponse {
        let reason = Reason::from_wire(&closed.reason)
            .map(&reason_for)
            .unwrap_or(Reason::UnexpectedSettleError);
        SettleResponse::failed(
            reason,
            Some(closed.message.clone()),
            closed.transaction.clone(),
            network.to_string(),
            Some(closed.payment.payer.clone()),
        )
    }
}

/// What a landed Solana settlement transaction cost the fee payer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvmFeePaid {
    /// Transaction signature, base58.
    pub transaction: String,
    /// Transaction fee, lamports (signatures + priority fee).
    pub fee_lamports: u64,
    /// Rent deposited for a created destination token account, lamports (0 when none).
    pub rent_lamports: u64,
    /// Fee plus rent in atomic USDC at the quote's SOL price, next to the quoted charge (absent
    /// when gas pricing is not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usdc: Option<GasInUsdc>,
}

/// The gas a mined settlement transaction cost the facilitator, from its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GasPaid {
    /// Transaction hash, 0x-hex.
    pub transaction: String,
    /// Receipt `gasUsed`, gas units.
    pub gas_used: u64,
    /// Receipt `effectiveGasPrice`, wei per gas (a decimal string in JSON).
    #[serde(with = "u128_decimal")]
    pub effective_gas_price_wei: u128,
    /// `gas_used × effective_gas_price_wei`, wei (L2 data fees not included; a decimal string in
    /// JSON).
    #[serde(with = "u128_decimal")]
    pub fee_wei: u128,
    /// The same fee in atomic USDC at the native price of the quote current at settlement, next
    /// to what that quote charges for gas (absent when gas pricing is not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usdc: Option<GasInUsdc>,
}

/// Actual versus quoted settlement gas, in atomic USDC (6 decimals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GasInUsdc {
    /// `fee_wei` converted at the quote's native price, without markup, rounded up.
    pub actual: u64,
    /// Gas charge of the quote (with markup and minimum).
    pub quoted: u64,
}

/// `u128` as a decimal string: the records are internally tagged enums, whose buffered
/// deserialization has no 128-bit integers.
mod u128_decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PaymentFacts {
        PaymentFacts {
            binding: "0x01".into(),
            network: "eip155:8453".into(),
            payer: "0xA".into(),
            amount: "1".into(),
            asset: "0xB".into(),
            pay_to: "0xC".into(),
            created_at: 1,
            valid_until: 2,
            key: None,
            answer_keys: vec![],
            kind: None,
        }
    }

    #[test]
    fn records_round_trip_with_their_state_tag_first() {
        let settled = SettlementRecord::Delivered(Settled {
            payment: facts(),
            transaction: "0xab".into(),
            cost: Cost {
                gas: Some(GasPaid {
                    transaction: "0xab".into(),
                    gas_used: 95_617,
                    effective_gas_price_wei: u128::MAX,
                    fee_wei: 1,
                    usdc: Some(GasInUsdc {
                        actual: 3,
                        quoted: 4,
                    }),
                }),
                svm_fee: None,
            },
            settled_at: 3,
            preconfirmed: None,
        });
        let json = serde_json::to_string(&settled).unwrap();
        assert!(json.starts_with(r#"{"state":"delivered","#), "{json}");
        assert_eq!(
            serde_json::from_str::<SettlementRecord>(&json).unwrap(),
            settled
        );
        let broadcast = SettlementRecord::Broadcast(Broadcast {
            payment: facts(),
            sent: SentTx::Svm {
                transaction: "sig".into(),
                raw: "AA==".into(),
                blockhash: "h".into(),
                fee_lamports: 10_000,
                rent_lamports: 0,
            },
            replaced: vec![],
            sent_at: 1,
            last_sent_ms: 1_000,
            first_sent_ms: 1_000,
            sent_since_ms: 1_000,
        });
        let json = serde_json::to_string(&broadcast).unwrap();
        assert_eq!(
            serde_json::from_str::<SettlementRecord>(&json).unwrap(),
            broadcast
        );
        assert_eq!(broadcast.public_state(), PublicState::Pending);
        assert_eq!(broadcast.all_transactions(), vec!["sig"]);
    }
}
