//! Redis key layout (one configurable prefix, default `x402`):
//!
//! - `{prefix}:replay:evm:{chainId}:{asset}:{from}:{nonce}`: the EVM payment's
//!   [`super::SettlementRecord`]; addresses and nonce lower-case 0x-hex. Expires no earlier than
//!   the authorization's `validBefore` (plus [`REPLAY_GRACE_SECONDS`]).
//! - `{prefix}:lease:evm:{chainId}:{signer}`: who may take the next nonce of a facilitator signer
//!   (value: the holder's payment fingerprint; expires after [`SIGNER_LEASE_SECONDS`]), so that
//!   replicas sharing a key never sign two transactions with one nonce.
//! - `{prefix}:replay:svm:{network}:{signature}`: the Solana payment's record, keyed by the
//!   settlement transaction's first signature (base58; the fee payer's deterministic Ed25519
//!   signature of the message, so one payment has one key). Expires after the configured record
//!   lifetime, never less than [`SVM_REPLAY_MIN_TTL_SECONDS`].

use alloy::primitives::{Address, B256};

/// Extra lifetime of a replay key beyond `validBefore`, in seconds.
pub const REPLAY_GRACE_SECONDS: u64 = 3600;
/// Longest lifetime of a replay key, in seconds (365 days). Beyond it the token's own
/// `authorizationState` still refuses a used nonce.
pub const REPLAY_MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// Longest hold of a signer lease, in seconds (it covers nonce read, signing and broadcast).
pub const SIGNER_LEASE_SECONDS: u64 = 30;

/// Shortest lifetime of a Solana replay key, seconds: about twice a blockhash's lifetime, after
/// which the transaction can no longer land (x402-reference §7).
pub const SVM_REPLAY_MIN_TTL_SECONDS: u64 = 120;

/// Replay key of a Solana payment on `network` (CAIP-2), by its transaction signature (base58).
pub fn svm_replay_key(prefix: &str, network: &str, signature: &str) -> String {
    format!("{prefix}:replay:svm:{network}:{signature}")
}

/// Lease key of a facilitator signer on an EVM chain.
pub fn evm_signer_lease_key(prefix: &str, chain_id: u64, signer: Address) -> String {
    format!("{prefix}:lease:evm:{chain_id}:{signer:#x}")
}

/// Replay key of an EVM EIP-3009 payment `(chainId, asset, from, nonce)`.
pub fn evm_replay_key(
    prefix: &str,
    chain_id: u64,
    asset: Address,
    from: Address,
    nonce: B256,
) -> String {
    format!("{prefix}:replay:evm:{chain_id}:{asset:#x}:{from:#x}:{nonce:#x}")
}

/// Lifetime in seconds of a replay key for an authorization valid until `valid_before`
/// (Unix seconds), at time `now`.
pub fn replay_ttl_seconds(valid_before: u64, now: u64) -> u64 {
    (valid_before
        .saturating_sub(now)
        .saturating_add(REPLAY_GRACE_SECONDS))
    .min(REPLAY_MAX_TTL_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_is_lowercase_and_prefixed() {
        let asset: Address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
            .parse()
            .unwrap();
        let k = evm_replay_key("x402", 8453, asset, Address::ZERO, B256::ZERO);
        assert_eq!(
            k,
            format!(
                "x402:replay:evm:8453:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913:0x{}:0x{}",
                "0".repeat(40),
                "0".repeat(64)
            )
        );
    }

    #[test]
    fn ttl_covers_valid_before() {
        assert_eq!(
            replay_ttl_seconds(1_000 + 60, 1_000),
            60 + REPLAY_GRACE_SECONDS
        );
        assert_eq!(replay_ttl_seconds(10, 1_000), REPLAY_GRACE_SECONDS);
        assert_eq!(replay_ttl_seconds(u64::MAX, 0), REPLAY_MAX_TTL_SECONDS);
    }
}
