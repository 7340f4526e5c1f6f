//! Finding where a lost EIP-3009 payment landed, so that its settlement record can be rebuilt
//! from the chain (a Redis failover or flush lost the record after the transaction was sent).
//!
//! The payment's authorization is used on chain when the token logged EIP-3009's
//! `AuthorizationUsed(authorizer, nonce)`. That log names the transaction; the payment was
//! settled by *this* facilitator only when that transaction was sent by one of this network's
//! signers and its calldata is `transferWithAuthorization` of exactly the payment's
//! authorization (`from`, `to`, `value`, `validAfter`, `validBefore`, `nonce`). Anyone else's
//! transaction (the payer's own, another facilitator's) is not ours to answer for, and the
//! payment stays refused as verification says.
//!
//! The search walks back from the latest block in windows of [`LOG_WINDOW_BLOCKS`] (a range most
//! RPC providers accept for `eth_getLogs`) and stops after `lookback_blocks`
//! ([`DEFAULT_LOOKBACK_BLOCKS`] unless configured per network).

use alloy::consensus::Transaction as _;
use alloy::primitives::{Address, B256};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::sol_types::{SolCall, SolEvent};
use x402_chain::eip3009::IEip3009Token;
use x402_chain::{ChainError, EvmChain};
use x402_verify::evm::EvmPaymentId;

/// Blocks searched by one `eth_getLogs` call.
pub const LOG_WINDOW_BLOCKS: u64 = 2_000;

/// Blocks searched back from the latest by default (about 5.5 hours of 2 s blocks, 33 hours of
/// 12 s blocks): a retry of a lost answer comes within the authorization's validity window,
/// which x402 clients keep to minutes.
pub const DEFAULT_LOOKBACK_BLOCKS: u64 = 10_000;

/// Where a lost payment landed: a transaction of one of our signers that used its
/// authorization, with its receipt.
pub struct Landed {
    /// The settlement transaction's hash.
    pub transaction: B256,
    /// Its receipt.
    pub receipt: TransactionReceipt,
}

/// Whether `auth` (the payment's authorization) is used on chain (`authorizationState`).
pub async fn authorization_used(
    chain: &dyn EvmChain,
    auth: &EvmPaymentId,
) -> Result<bool, ChainError> {
    let call = alloy::rpc::types::TransactionRequest::default()
        .to(auth.asset)
        .input(
            IEip3009Token::authorizationStateCall {
                authorizer: auth.from,
                nonce: auth.nonce,
            }
            .abi_encode()
            .into(),
        );
    let used = chain.call(&call).await?;
    Ok(used.iter().any(|b| *b != 0))
}

/// The transaction of one of `signers` that used `auth` within the last `lookback_blocks`
/// blocks, if any. Errors: the RPC failed (the caller answers as verification did).
pub async fn find_landed(
    chain: &dyn EvmChain,
    signers: &[Address],
    auth: &EvmPaymentId,
    lookback_blocks: u64,
) -> Result<Option<Landed>, ChainError> {
    let latest = chain.block_number().await?;
    let oldest = latest.saturating_sub(lookback_blocks);
    let mut to = latest;
    loop {
        let from = to.saturating_sub(LOG_WINDOW_BLOCKS - 1).max(oldest);
        let filter = Filter::new()
            .address(auth.asset)
            .event_signature(IEip3009Token::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(auth.from.into_word())
            .topic2(auth.nonce)
            .from_block(from)
            .to_block(to);
        for log in chain.logs(&filter).await? {
            let Some(hash) = log.transaction_hash else {
                continue;
            };
            if let Some(landed) = ours(chain, signers, auth, hash).await? {
                return Ok(Some(landed));
            }
        }
        if from <= oldest {
            return Ok(None);
        }
        to = from - 1;
    }
}

/// `hash` as ours: sent by one of `signers`, calling `transferWithAuthorization` with exactly
/// `auth`, and mined.
async fn ours(
    chain: &dyn EvmChain,
    signers: &[Address],
    auth: &EvmPaymentId,
    hash: B256,
) -> Result<Option<Landed>, ChainError> {
    let Some(tx) = chain.transaction(hash).await? else {
        return Ok(None);
    };
    if !signers.contains(&tx.inner.signer()) || tx.inner.to() != Some(auth.asset) {
        return Ok(None);
    }
    if !calldata_names(tx.inner.input(), auth) {
        return Ok(None);
    }
    Ok(chain.receipt(hash).await?.map(|receipt| Landed {
        transaction: hash,
        receipt,
    }))
}

/// The authorization a recorded settlement transaction (`raw`: EIP-2718 bytes, hex) carries:
/// the token it calls and its `transferWithAuthorization` fields (`chain_id` and `fingerprint`
/// are left 0). `None` for anything else.
pub fn authorization_in(raw: &str) -> Option<EvmPaymentId> {
    use alloy::consensus::TxEnvelope;
    use alloy::eips::eip2718::Decodable2718;
    let bytes: alloy::primitives::Bytes = raw.parse().ok()?;
    let env = TxEnvelope::decode_2718(&mut bytes.as_ref()).ok()?;
    let asset = env.to()?;
    let input = env.input();
    let (from, to, value, valid_after, valid_before, nonce) =
        if let Ok(c) = IEip3009Token::transferWithAuthorization_0Call::abi_decode(input) {
            (c.from, c.to, c.value, c.validAfter, c.validBefore, c.nonce)
        } else {
            let c = IEip3009Token::transferWithAuthorization_1Call::abi_decode(input).ok()?;
            (c.from, c.to, c.value, c.validAfter, c.validBefore, c.nonce)
        };
    Some(EvmPaymentId {
        chain_id: 0,
        asset,
        from,
        nonce,
        to,
        value,
        valid_after: u64::try_from(valid_after).unwrap_or(u64::MAX),
        valid_before: u64::try_from(valid_before).unwrap_or(u64::MAX),
        fingerprint: B256::ZERO,
    })
}

/// Whether `input` is `transferWithAuthorization` (either overload) of exactly `auth`.
pub fn calldata_names(input: &[u8], auth: &EvmPaymentId) -> bool {
    let fields = if let Ok(c) = IEip3009Token::transferWithAuthorization_0Call::abi_decode(input) {
        (c.from, c.to, c.value, c.validAfter, c.validBefore, c.nonce)
    } else if let Ok(c) = IEip3009Token::transferWithAuthorization_1Call::abi_decode(input) {
        (c.from, c.to, c.value, c.validAfter, c.validBefore, c.nonce)
    } else {
        return false;
    };
    let (from, to, value, valid_after, valid_before, nonce) = fields;
    from == auth.from
        && to == auth.to
        && value == auth.value
        && valid_after == alloy::primitives::U256::from(auth.valid_after)
        && valid_before == alloy::primitives::U256::from(auth.valid_before)
        && nonce == auth.nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{U256, address};

    fn auth() -> EvmPaymentId {
        EvmPaymentId {
            chain_id: 31337,
            asset: address!("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
            from: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            nonce: B256::repeat_byte(7),
            to: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            value: U256::from(10_000u64),
            valid_after: 0,
            valid_before: 2_000_000_000,
            fingerprint: B256::ZERO,
        }
    }

    fn calldata(a: &EvmPaymentId, value: U256) -> Vec<u8> {
        IEip3009Token::transferWithAuthorization_1Call {
            from: a.from,
            to: a.to,
            value,
            validAfter: U256::from(a.valid_after),
            validBefore: U256::from(a.valid_before),
            nonce: a.nonce,
            signature: vec![1u8; 65].into(),
        }
        .abi_encode()
    }

    #[test]
    fn calldata_of_the_same_authorization_names_it() {
        let a = auth();
        assert!(calldata_names(&calldata(&a, a.value), &a));
    }

    #[test]
    fn calldata_of_another_value_or_call_does_not() {
        let a = auth();
        assert!(!calldata_names(&calldata(&a, U256::from(9_999u64)), &a));
        let other = IEip3009Token::authorizationStateCall {
            authorizer: a.from,
            nonce: a.nonce,
        }
        .abi_encode();
        assert!(!calldata_names(&other, &a));
    }
}
