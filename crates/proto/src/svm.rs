//! The `exact` scheme's Solana payload (specs/schemes/exact/scheme_exact_svm.md).

use serde::{Deserialize, Serialize};

/// `paymentPayload.payload` of a Solana `exact` payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactSvmPayload {
    /// Base64 (standard alphabet) of a serialized `VersionedTransaction` (legacy or v0 message),
    /// signed by the transfer authority; the fee-payer signature slot (index 0) is left for the
    /// facilitator.
    pub transaction: String,
}

/// Lamports charged per required signature of a Solana transaction (the cluster's fixed
/// `lamports_per_signature`).
pub const LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// The base fee plus the prioritization fee of a transaction, lamports: `signatures ×`
/// [`LAMPORTS_PER_SIGNATURE`] `+ ceil(compute_unit_price × compute_unit_limit / 10^6)`, with the
/// price in micro-lamports per compute unit (Solana fee structure). Saturates instead of
/// overflowing.
pub fn transaction_fee_lamports(
    signatures: u64,
    compute_unit_limit: u32,
    compute_unit_price_micro_lamports: u64,
) -> u64 {
    let priority = (u128::from(compute_unit_price_micro_lamports) * u128::from(compute_unit_limit))
        .div_ceil(1_000_000);
    signatures
        .saturating_mul(LAMPORTS_PER_SIGNATURE)
        .saturating_add(u64::try_from(priority).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_is_signatures_plus_rounded_up_priority() {
        assert_eq!(transaction_fee_lamports(2, 20_000, 1), 10_001);
        assert_eq!(
            transaction_fee_lamports(1, 200_000, 5_000_000),
            5_000 + 1_000_000
        );
        assert_eq!(transaction_fee_lamports(2, 0, u64::MAX), 10_000);
        assert_eq!(
            transaction_fee_lamports(u64::MAX, u32::MAX, u64::MAX),
            u64::MAX
        );
    }
}
