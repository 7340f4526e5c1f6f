//! The read-only view of a settlement record served by `GET /settlements/{transaction}` and
//! `POST /settlements/lookup` (states `pending`, `settled`, `failed`, `expired`, with
//! `retryAfterMs` while pending, as Circle's facilitator status endpoint and the open x402
//! status vocabulary proposal). A pure view of a record; the queries that read records for it
//! are in [`crate::engine::status`].

use serde::Serialize;

use crate::record::{Cost, PublicState, SettlementRecord};

/// One payment's settlement as `/settlements` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementStatus {
    /// `pending`, `settled`, `failed` or `expired`.
    pub state: PublicState,
    /// The stored state (`reserved`, `broadcast`, `confirmed`, `delivered`, `failed`,
    /// `expired`).
    pub record_state: &'static str,
    /// Transaction hash or signature; empty while nothing is signed.
    pub transaction: String,
    /// Network, CAIP-2.
    pub network: String,
    /// The payer.
    pub payer: String,
    /// Amount, atomic token units.
    pub amount: String,
    /// Token contract or mint.
    pub asset: String,
    /// Recipient.
    pub pay_to: String,
    /// Unix seconds of the reservation.
    pub created_at: u64,
    /// Unix seconds of the landing or closing, when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
    /// While pending: when to ask again, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Failed or expired: the reason (x402 v2 wire string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Failed or expired: detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Landed or failed on chain: what the settlement cost, and what the quote current at
    /// settlement charged for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostView>,
    /// Settled, EVM with `[[evm]] preconfirmations`: `true` when the success was answered at a
    /// flashblock pre-confirmation (a sequencer promise) rather than at a block receipt; left
    /// out otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub preconfirmed: bool,
}

/// A settlement's cost as `/settlements` shows it (amounts as decimal strings where they may
/// exceed 2^53).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostView {
    /// EVM: receipt `gasUsed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gas_used: Option<u64>,
    /// EVM: `gasUsed × effectiveGasPrice`, wei.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_wei: Option<String>,
    /// Solana: fee paid by the fee payer, lamports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_lamports: Option<u64>,
    /// Solana: rent of a created destination account, lamports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rent_lamports: Option<u64>,
    /// The cost in atomic USDC at the quote's native price, without markup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_usdc: Option<u64>,
    /// What the quote current at settlement charges for it, atomic USDC (markup included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quoted_usdc: Option<u64>,
}

impl CostView {
    fn of(cost: &Cost) -> Option<Self> {
        if let Some(g) = &cost.gas {
            return Some(CostView {
                gas_used: Some(g.gas_used),
                fee_wei: Some(g.fee_wei.to_string()),
                fee_lamports: None,
                rent_lamports: None,
                actual_usdc: g.usdc.map(|u| u.actual),
                quoted_usdc: g.usdc.map(|u| u.quoted),
            });
        }
        cost.svm_fee.as_ref().map(|f| CostView {
            gas_used: None,
            fee_wei: None,
            fee_lamports: Some(f.fee_lamports),
            rent_lamports: Some(f.rent_lamports),
            actual_usdc: f.usdc.map(|u| u.actual),
            quoted_usdc: f.usdc.map(|u| u.quoted),
        })
    }
}

/// Suggested poll interval while a settlement is pending, milliseconds.
pub const RETRY_AFTER_MS: u64 = 2_000;

impl SettlementStatus {
    /// The view of `record`.
    pub fn of(record: &SettlementRecord) -> Self {
        let p = record.payment();
        let (resolved_at, error_reason, error_message) = match record {
            SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) => {
                (Some(s.settled_at), None, None)
            }
            SettlementRecord::Failed(c) | SettlementRecord::Expired(c) => (
                Some(c.closed_at),
                Some(c.reason.clone()),
                Some(c.message.clone()),
            ),
            _ => (None, None, None),
        };
        let cost = match record {
            SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) => {
                CostView::of(&s.cost)
            }
            SettlementRecord::Failed(c) => CostView::of(&c.cost),
            _ => None,
        };
        let state = record.public_state();
        SettlementStatus {
            state,
            record_state: record.state_name(),
            transaction: record.transaction().unwrap_or_default().to_string(),
            network: p.network.clone(),
            payer: p.payer.clone(),
            amount: p.amount.clone(),
            asset: p.asset.clone(),
            pay_to: p.pay_to.clone(),
            created_at: p.created_at,
            resolved_at,
            retry_after_ms: (state == PublicState::Pending).then_some(RETRY_AFTER_MS),
            error_reason,
            error_message,
            cost,
            preconfirmed: matches!(record, SettlementRecord::Confirmed(s) | SettlementRecord::Delivered(s) if s.preconfirmed.is_some()),
        }
    }
}
