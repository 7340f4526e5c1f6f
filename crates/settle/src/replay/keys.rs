//! Redis key layout (one configurable prefix, default `x402`), the same on a single node, a
//! Sentinel group and Redis Cluster. Every Lua script touches the keys of one hash slot only:
//! the keys written together share a hash tag (`{…}`, the part Redis Cluster hashes).
//!
//! **Shards.** A payment's replay key `K` (below; the store never looks inside it, so any
//! family's key works) belongs to shard `s = keccak256(K)[0..4] (big-endian) mod N`, `N` =
//! `[redis] index_shards` (default [`DEFAULT_SHARDS`]; never change it on live data: see
//! README "Scaling past one Redis"). The shard's tag is `{prefix:s}`, and everything written in
//! one step with the record carries it ([`Layout`]):
//! - `K:{prefix:s}`: the [`super::SettlementRecord`] of `K` (JSON). EVM payments expire no
//!   earlier than the authorization's `validBefore` (plus [`REPLAY_GRACE_SECONDS`]); Solana
//!   ones after the configured record lifetime, never less than [`SVM_REPLAY_MIN_TTL_SECONDS`].
//! - `{prefix}:settlements:open:{prefix:s}`: sorted set of the replay keys of the shard's
//!   records not resolved yet (`reserved`, `broadcast`), scored by Unix ms of their last
//!   change: what the reconciler walks, shard by shard.
//! - `{prefix}:settlement:tx:{transaction}:{prefix:s}`: the replay key of the record that signed
//!   `transaction` (EVM hash lower-case 0x-hex, Solana signature base58), same lifetime as the
//!   record. `GET /settlements/{transaction}` reads it in every shard (N `GET`s at once; the
//!   transaction does not name its payment).
//! - `{prefix}:webhooks:outbox:{prefix:s}`, `{prefix}:webhooks:event:{id}:{prefix:s}`,
//!   `{prefix}:webhooks:dead:{prefix:s}`: the shard's webhook outbox (see [`crate::outbox`]),
//!   written with the final state; the webhook worker walks the shards.
//!
//! Replay keys (`K`, lower-case 0x-hex addresses and nonces, Solana base58):
//! - `{prefix}:replay:evm:{chainId}:{asset}:{from}:{nonce}`: an EIP-3009 payment.
//! - `{prefix}:replay:evm:{chainId}:permit2:{owner}:{nonce}`: a Permit2 payment (owner
//!   lower-case 0x-hex, nonce 0x-hex); its record lives until its `deadline` plus
//!   [`REPLAY_GRACE_SECONDS`]. The EIP-3009 (`…:{chainId}:0x`) and Permit2 key spaces never
//!   overlap: the reconciler routes a record by the key space it starts with.
//! - `{prefix}:replay:svm:{network}:{signature}`: a Solana payment, keyed by the settlement
//!   transaction's first signature (the fee payer's deterministic Ed25519 signature of the
//!   message, so one payment has one key).
//!
//! **Claims** (one key each, written before the record in their own slot, see
//! [`super::ReplayStore::create`]; same lifetime as the record; deleted with a record deleted
//! before anything was signed):
//! - `{prefix}:claim:svm:{network}:{payTo}:{memo}`: the replay key of the payment that settles
//!   `extra.memo` for `payTo` (x402-conformance F4).
//! - `{prefix}:answer:{hash}`: the replay key of the payment an answer id was first sent with,
//!   `{hash}` = keccak-256 (0x-hex) of the scoped id `{kind}:{api key name or "-"}:{id}`, `kind`
//!   `pid` (the payload's `payment-identifier` extension) or `idem` (the `Idempotency-Key`
//!   header of `/settle`). A request presenting the id gets the record's answer again,
//!   success included; the same id with another payment is refused (409).
//!
//! **Per payer** (tag: the payer):
//! - `{prefix}:debits:{{network}:{asset}:{payer}}`: the payer's in-flight debits of one asset on
//!   one network (see [`crate::debits`]): a hash from the replay key of every unresolved record
//!   to `{seq}:{expires_ms}:{amount}` (`seq` from `…:seq` with the same tag, the order of
//!   reservation; `expires_ms` the record's expiry, Unix ms; `amount` atomic units). Written
//!   just before the record is created and deleted just after it is resolved or deleted (its
//!   own slot: not in the record's script); a field whose record is resolved is ignored and
//!   pruned, one outlived by its record too. Network as CAIP-2, EVM addresses lower-case
//!   0x-hex, Solana base58.
//! - `{prefix}:reverts:{{network}:{payer}}`: sorted set of the payer's settlements that
//!   reverted on chain after passing every check (member and score: Unix ms), trimmed to the
//!   window; `{prefix}:blocked:{{network}:{payer}}`: set (with an expiry) while the payer's
//!   settlements are refused for reverting too often (`[settle] revert_limit`).
//!
//! **Per signer** (tag: the signer): `{prefix}:nonce:evm:{{chainId}:{signer}}:next`: the next
//! sender nonce of a facilitator signer never handed out (integer; see [`crate::nonces`]);
//! `…:free`: sorted set of nonces handed out and given back unsent (member and score: the
//! nonce); `…:owners`: sorted set of `{nonce}|{replay key}` scored by the nonce, pruned below
//! the chain's mined count. Replicas sharing a key never sign two settlements with one nonce.
//!
//! **Singletons:** `{prefix}:lock:reconciler`: which replica runs the reconciler now (a lease).

use alloy::primitives::{Address, B256};

/// Extra lifetime of a replay key beyond `validBefore`, in seconds.
pub const REPLAY_GRACE_SECONDS: u64 = 3600;
/// Longest lifetime of a replay key, in seconds (365 days). Beyond it the token's own
/// `authorizationState` still refuses a used nonce.
pub const REPLAY_MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// Shortest lifetime of a Solana replay key, seconds: about twice a blockhash's lifetime, after
/// which the transaction can no longer land (x402-reference §7).
pub const SVM_REPLAY_MIN_TTL_SECONDS: u64 = 120;

/// Default number of index shards (`[redis] index_shards`).
pub const DEFAULT_SHARDS: u16 = 16;

/// The shard layout of the records and the indexes written with them (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
    shards: u16,
}

impl Layout {
    /// The layout of `shards` shards (at least 1) under `prefix`.
    pub fn new(prefix: &str, shards: u16) -> Self {
        Layout {
            prefix: prefix.to_string(),
            shards: shards.max(1),
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shard of replay key `key`: `keccak256(key)[0..4]` big-endian, modulo the shard count.
    pub fn shard_of(&self, key: &str) -> u16 {
        let h = alloy::primitives::keccak256(key.as_bytes());
        (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % u32::from(self.shards)) as u16
    }

    /// The hash tag of shard `shard`: `{prefix:shard}`.
    pub fn tag(&self, shard: u16) -> String {
        format!("{{{}:{shard}}}", self.prefix)
    }

    /// Where the record of replay key `key` is stored: `key:{prefix:shard}`.
    pub fn record_key(&self, key: &str) -> String {
        format!("{key}:{}", self.tag(self.shard_of(key)))
    }

    /// The unresolved records of `shard`.
    pub fn open_index(&self, shard: u16) -> String {
        format!("{}:settlements:open:{}", self.prefix, self.tag(shard))
    }

    /// Start of the transaction index keys of `shard` (the transaction and `:` + tag follow,
    /// [`Layout::tx_index`]).
    pub fn tx_index_prefix(&self) -> String {
        format!("{}:settlement:tx:", self.prefix)
    }

    /// The transaction index entry of `transaction` in `shard`.
    pub fn tx_index(&self, shard: u16, transaction: &str) -> String {
        format!(
            "{}{transaction}:{}",
            self.tx_index_prefix(),
            self.tag(shard)
        )
    }

    /// The webhook outbox of `shard`: event ids by the Unix ms they are due.
    pub fn outbox(&self, shard: u16) -> String {
        format!("{}:webhooks:outbox:{}", self.prefix, self.tag(shard))
    }

    /// The hash of webhook event `id` in `shard`.
    pub fn outbox_event(&self, shard: u16, id: &str) -> String {
        format!("{}:webhooks:event:{id}:{}", self.prefix, self.tag(shard))
    }

    /// The dead-lettered webhook events of `shard`, by the Unix ms they were given up.
    pub fn outbox_dead(&self, shard: u16) -> String {
        format!("{}:webhooks:dead:{}", self.prefix, self.tag(shard))
    }
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
    format!(
        "{prefix}:debits:{{{network}:{}:{}}}",
        norm(asset),
        norm(payer)
    )
}

/// The reverted settlements of `payer` on `network` (see the module docs).
pub fn reverts_key(prefix: &str, network: &str, payer: &str) -> String {
    format!("{prefix}:reverts:{{{network}:{}}}", lower_hex(payer))
}

/// Set while `payer`'s settlements on `network` are refused (see the module docs).
pub fn payer_blocked_key(prefix: &str, network: &str, payer: &str) -> String {
    format!("{prefix}:blocked:{{{network}:{}}}", lower_hex(payer))
}

fn lower_hex(s: &str) -> String {
    if s.starts_with("0x") || s.starts_with("0X") {
        s.to_ascii_lowercase()
    } else {
        s.to_string()
    }
}

/// The counter ordering the in-flight debits of `debits` (a [`debits_key`]; same hash tag).
pub fn debits_seq_key(debits: &str) -> String {
    format!("{debits}:seq")
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
    let base = format!("{prefix}:nonce:evm:{{{chain_id}:{signer:#x}}}");
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
    fn keys_written_together_share_one_hash_tag() {
        let layout = Layout::new("x402", 16);
        let key = "x402:replay:evm:8453:0xa:0xb:0xc";
        let shard = layout.shard_of(key);
        assert!(shard < 16);
        // Stable across versions and replicas: never change the function.
        assert_eq!(shard, layout.shard_of(key));
        let tag = format!("{{x402:{shard}}}");
        for k in [
            layout.record_key(key),
            layout.open_index(shard),
            layout.tx_index(shard, "0xabc"),
            layout.outbox(shard),
            layout.outbox_event(shard, "evt_1"),
            layout.outbox_dead(shard),
        ] {
            // The first `{…}` is the tag Redis Cluster hashes.
            let first = &k[k.find('{').unwrap()..=k.find('}').unwrap()];
            assert_eq!(first, tag, "{k}");
        }
        assert_eq!(layout.record_key(key), format!("{key}:{tag}"));
        // Shards spread: 1000 keys over 16 shards leave none empty.
        let mut seen = [false; 16];
        for i in 0..1000 {
            seen[usize::from(layout.shard_of(&format!("x402:replay:svm:n:{i}")))] = true;
        }
        assert!(seen.iter().all(|s| *s));
        // A payer's keys and a signer's keys each share a tag.
        let debits = debits_key("x402", "eip155:8453", "0xA", "0xB");
        assert_eq!(debits, "x402:debits:{eip155:8453:0xa:0xb}");
        assert_eq!(debits_seq_key(&debits), format!("{debits}:seq"));
        let n = evm_nonce_keys("x402", 8453, Address::ZERO);
        assert!(n.next.starts_with("x402:nonce:evm:{8453:0x") && n.next.ends_with("}:next"));
        assert_eq!(n.free.replace(":free", ":next"), n.next);
        assert_eq!(
            reverts_key("x402", "eip155:1", "0xAb"),
            "x402:reverts:{eip155:1:0xab}"
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
