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
