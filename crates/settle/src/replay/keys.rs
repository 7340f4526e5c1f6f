//! Redis key layout (one configurable prefix, default `x402`):
//!
//! - `{prefix}:replay:evm:{chainId}:{asset}:{from}:{nonce}`: the EVM payment's
//!   [`super::SettlementRecord`]; addresses and nonce lower-case 0x-hex. Expires no earlier than
//!   the authorization's `validBefore` (plus [`REPLAY_GRACE_SECONDS`]).
//! - `{prefix}:replay:evm:{chainId}:permit2:{owner}:{nonce}`: the Permit2 payment's record
//!   (owner lower-case 0x-hex, nonce 0x-hex), same lifetime rule with its `deadline`.
//! - `{prefix}:nonce:evm:{chainId}:{signer}:next`: the next sender nonce of a facilitator
//!   signer never handed out (integer; see [`crate::nonces`]); `…:free`: sorted set of nonces
//!   handed out and given back unsent (member and score: the nonce); `…:owners`: sorted set of
//!   `{nonce}|{replay key}` scored by the nonce, pruned below the chain's mined count. Replicas
//!   sharing a key never sign two settlements with one nonce.
//! - `{prefix}:replay:svm:{network}:{signature}`: the Solana payment's record, keyed by the
//!   settlement transaction's first signature (base58; the fee payer's deterministic Ed25519
//!   signature of the message, so one payment has one key). Expires after the configured record
//!   lifetime, never less than [`SVM_REPLAY_MIN_TTL_SECONDS`].
//! - `{prefix}:settlements:open`: sorted set of the replay keys of records that are not resolved
//!   yet (`reserved`, `broadcast`), scored by Unix milliseconds of their last change: what the
//!   reconciler walks.
//! - `{prefix}:settlement:tx:{transaction}`: the replay key of the record that signed
//!   `transaction` (EVM hash lower-case 0x-hex, Solana signature base58), for
//!   `GET /settlements/{transaction}`; same lifetime as the record.
//! - `{prefix}:claim:svm:{network}:{payTo}:{memo}`: the replay key of the payment that settles
//!   `extra.memo` for `payTo` (x402-conformance F4), same lifetime as the record.
//! - `{prefix}:answer:{hash}`: the replay key of the payment an answer id was first sent with,
//!   `{hash}` = keccak-256 (0x-hex) of the scoped id `{kind}:{api key name or "-"}:{id}`, `kind`
//!   `pid` (the payload's `payment-identifier` extension) or `idem` (the `Idempotency-Key`
//!   header of `/settle`). Created with the record, in the same atomic step (a claim of the
//!   record, [`super::ReplayStore::create`]), same lifetime; deleted with a record deleted
//!   before anything was signed. A request presenting the id gets the record's answer again,
//!   success included; the same id with another payment is refused (409).
//! - `{prefix}:debits:{network}:{asset}:{payer}`: the payer's in-flight debits of one asset
//!   on one network (see [`crate::debits`]): a hash from the replay key of every unresolved
//!   record (`reserved`, `broadcast`) to `{seq}:{expires_ms}:{amount}` (`seq` from
//!   `{prefix}:debits:seq`, the order of reservation; `expires_ms` the record's expiry, Unix
//!   ms; `amount` atomic units). The field is set by the script that creates the record and
//!   deleted by the one that resolves or deletes it; a field outlived by its record is ignored
//!   and pruned. Network as CAIP-2, EVM addresses lower-case 0x-hex, Solana base58.
//! - `{prefix}:debits:seq`: the counter ordering those reservations (integer).
//! - `{prefix}:reverts:{network}:{payer}`: sorted set of the payer's settlements that reverted
//!   on chain after passing every check (member and score: Unix ms), trimmed to the window;
//!   `{prefix}:blocked:{network}:{payer}`: set (with an expiry) while the payer's settlements
//!   are refused for reverting too often (`[settle] revert_limit`).
//! - `{prefix}:lock:reconciler`: which replica runs the reconciler now (a lease).
//! - `{prefix}:webhooks:outbox`, `{prefix}:webhooks:event:{id}`, `{prefix}:webhooks:dead`: the
//!   settlement webhooks' outbox (see [`crate::outbox`]).

use alloy::primitives::{Address, B256};

/// Extra lifetime of a replay key beyond `validBefore`, in seconds.
pub const REPLAY_GRACE_SECONDS: u64 = 3600;
/// Longest lifetime of a replay key, in seconds (365 days). Beyond it the token's own
/// `authorizationState` still refuses a used nonce.
pub const REPLAY_MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// Shortest lifetime of a Solana replay key, seconds: about twice a blockhash's lifetime, after
/// which the transaction can no longer land (x402-reference §7).
pub const SVM_REPLAY_MIN_TTL_SECONDS: u64 = 120;

/// The sorted set of unresolved records (see the module docs).
pub fn open_index_key(prefix: &str) -> String {
    format!("{prefix}:settlements:open")
}

/// Prefix of the transaction → replay key index (see the module docs); the store appends the
/// transaction.
pub fn transaction_index_prefix(prefix: &str) -> String {
    format!("{prefix}:settlement:tx:")
}

/// Claim key of a Solana `extra.memo` for `pay_to` on `network` (CAIP-2).
pub fn svm_memo_claim_key(prefix: &str, network: &str, pay_to: &str, memo: &str) -> String {
    format!("{prefix}:claim:svm:{network}:{pay_to}:{memo}")
}

/// Hash of the in-flight debits of `payer` in `asset` on `network` (see the module docs).
pub fn debits_key(prefix: &str, network: &str, asset: &str, payer: &str) -> String {
    let norm = |s: &str| {
        if s.starts_with("0x") || s.starts_with("0X") {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    format!("{prefix}:debits:{network}:{}:{}", norm(asset), norm(payer))
}

/// The reverted settlements of `payer` on `network` (see the module docs).
pub fn reverts_key(prefix: &str, network: &str, payer: &str) -> String {
    format!("{prefix}:reverts:{network}:{}", lower_hex(payer))
}

/// Set while `payer`'s settlements on `network` are refused (see the module docs).
pub fn payer_blocked_key(prefix: &str, network: &str, payer: &str) -> String {
    format!("{prefix}:blocked:{network}:{}", lower_hex(payer))
}

fn lower_hex(s: &str) -> String {
    if s.starts_with("0x") || s.starts_with("0X") {
        s.to_ascii_lowercase()
    } else {
        s.to_string()
    }
}

/// The counter ordering in-flight debits (see the module docs).
pub fn debits_seq_key(prefix: &str) -> String {
    format!("{prefix}:debits:seq")
}

/// Sorted set of the webhook events not delivered yet, by the Unix ms they are due.
pub fn outbox_key(prefix: &str) -> String {
    format!("{prefix}:webhooks:outbox")
}

/// Prefix of the webhook event hashes; the store appends the event id.
pub fn outbox_event_prefix(prefix: &str) -> String {
    format!("{prefix}:webhooks:event:")
}

/// Sorted set of the dead-lettered webhook events, by the Unix ms they were given up.
pub fn outbox_dead_key(prefix: &str) -> String {
    format!("{prefix}:webhooks:dead")
}

/// Answer index key of `scoped_id` (see the module docs).
pub fn answer_index_key(prefix: &str, scoped_id: &str) -> String {
    let hash = alloy::primitives::keccak256(scoped_id.as_bytes());
    format!("{prefix}:answer:{hash:#x}")
}

/// Lease key of the reconciler (one replica at a time).
pub fn reconciler_lock_key(prefix: &str) -> String {
    format!("{prefix}:lock:reconciler")
}

/// Replay key of a Solana payment on `network` (CAIP-2), by its transaction signature (base58).
pub fn svm_replay_key(prefix: &str, network: &str, signature: &str) -> String {
    format!("{prefix}:replay:svm:{network}:{signature}")
}

/// The nonce keys of one facilitator signer on an EVM chain (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmNonceKeys {
    /// The counter.
    pub next: String,
    /// The free nonces.
    pub free: String,
    /// The owners.
    pub owners: String,
}

/// The nonce keys of `signer` on `chain_id`.
pub fn evm_nonce_keys(prefix: &str, chain_id: u64, signer: Address) -> EvmNonceKeys {
    let base = format!("{prefix}:nonce:evm:{chain_id}:{signer:#x}");
    EvmNonceKeys {
        next: format!("{base}:next"),
        free: format!("{base}:free"),
        owners: format!("{base}:owners"),
    }
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

/// The start of every EIP-3009 replay key on `chain_id` (the asset address follows, lower-case
/// 0x-hex, so no key of another transfer method starts with it).
pub fn evm_eip3009_key_space(prefix: &str, chain_id: u64) -> String {
    format!("{prefix}:replay:evm:{chain_id}:0x")
}

/// Replay key of an EVM Permit2 payment `(chainId, "permit2", owner, nonce)`: Permit2's
/// unordered nonces are per owner (any token, any spender), so one key per owner and nonce.
/// Owner lower-case 0x-hex, nonce 0x-hex (uint256).
pub fn evm_permit2_replay_key(
    prefix: &str,
    chain_id: u64,
    owner: Address,
    nonce: alloy::primitives::U256,
) -> String {
    format!("{prefix}:replay:evm:{chain_id}:permit2:{owner:#x}:{nonce:#x}")
}

/// The start of every Permit2 replay key on `chain_id`.
pub fn evm_permit2_key_space(prefix: &str, chain_id: u64) -> String {
    format!("{prefix}:replay:evm:{chain_id}:permit2:")
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
    fn each_evm_method_owns_its_own_key_space() {
        let asset: Address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
            .parse()
            .unwrap();
        let owner: Address = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
            .parse()
            .unwrap();
        // The EIP-3009 layout of earlier releases stays in the EIP-3009 key space.
        let eip3009 = evm_replay_key("x402", 8453, asset, owner, B256::ZERO);
        let permit2 = evm_permit2_replay_key("x402", 8453, owner, alloy::primitives::U256::from(7));
        assert!(eip3009.starts_with(&evm_eip3009_key_space("x402", 8453)));
        assert!(!eip3009.starts_with(&evm_permit2_key_space("x402", 8453)));
        assert!(permit2.starts_with(&evm_permit2_key_space("x402", 8453)));
        assert!(!permit2.starts_with(&evm_eip3009_key_space("x402", 8453)));
        assert_eq!(
            permit2,
            "x402:replay:evm:8453:permit2:0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc:0x7"
        );
        // Another chain's keys belong to neither.
        assert!(!eip3009.starts_with(&evm_eip3009_key_space("x402", 84532)));
    }

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
