//! Known-answer vector of specs/schemes/exact/scheme_exact_evm.md (see x402-reference.md §5).

use std::str::FromStr;

use alloy::primitives::{Address, B256, U256, address};

use super::eip712::{self, TransferWithAuthorization};
use super::signature::{PayerSignature, recover_ecdsa};

const SIG: &str = "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c";
const FROM: Address = address!("857b06519E91e3A54538791bDbb0E22373e36b66");
const BASE_SEPOLIA_USDC: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");

fn authorization() -> TransferWithAuthorization {
    TransferWithAuthorization {
        from: FROM,
        to: address!("209693Bc6afc0C5328bA36FaF03C514EF312287C"),
        value: U256::from(10000u64),
        validAfter: U256::from(1740672089u64),
        validBefore: U256::from(1740672154u64),
        nonce: B256::from_str("0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480")
            .unwrap(),
    }
}

fn recovered(
    name: &str,
    version: &str,
    chain_id: u64,
    auth: &TransferWithAuthorization,
) -> Option<Address> {
    let digest = eip712::digest(
        &eip712::domain(name, version, chain_id, BASE_SEPOLIA_USDC),
        auth,
    );
    let PayerSignature::Ecdsa(sig) = PayerSignature::parse(SIG).unwrap() else {
        panic!("not ECDSA")
    };
    recover_ecdsa(&sig, &digest)
}

#[test]
fn spec_vector_recovers_to_from() {
    assert_eq!(recovered("USDC", "2", 84532, &authorization()), Some(FROM));
}

#[test]
fn wrong_domain_or_field_does_not_recover_to_from() {
    assert_ne!(
        recovered("USD Coin", "2", 84532, &authorization()),
        Some(FROM)
    );
    assert_ne!(recovered("USDC", "1", 84532, &authorization()), Some(FROM));
    assert_ne!(recovered("USDC", "2", 8453, &authorization()), Some(FROM));
    let mut a = authorization();
    a.value = U256::from(10001u64);
    assert_ne!(recovered("USDC", "2", 84532, &a), Some(FROM));
}

#[test]
fn eip2098_compact_form_recovers_and_high_s_is_refused() {
    let digest = eip712::digest(
        &eip712::domain("USDC", "2", 84532, BASE_SEPOLIA_USDC),
        &authorization(),
    );
    let PayerSignature::Ecdsa(sig) = PayerSignature::parse(SIG).unwrap() else {
        panic!()
    };
    let compact = alloy::primitives::hex::encode_prefixed(sig.as_erc2098());
    let PayerSignature::Ecdsa(sig2) = PayerSignature::parse(&compact).unwrap() else {
        panic!()
    };
    assert_eq!(recover_ecdsa(&sig2, &digest), Some(FROM));
    // The malleable twin (s' = n - s, parity flipped) recovers the same key but is refused (EIP-2).
    let n = U256::from_str("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
        .unwrap();
    let twin = alloy::primitives::Signature::new(sig.r(), n - sig.s(), !sig.v());
    assert_eq!(twin.recover_address_from_prehash(&digest).ok(), Some(FROM));
    assert_eq!(recover_ecdsa(&twin, &digest), None);
}

#[test]
fn v_zero_one_is_accepted_like_27_28() {
    let mut bytes = alloy::primitives::hex::decode(SIG).unwrap();
    bytes[64] -= 27;
    let digest = eip712::digest(
        &eip712::domain("USDC", "2", 84532, BASE_SEPOLIA_USDC),
        &authorization(),
    );
    let PayerSignature::Ecdsa(sig) =
        PayerSignature::parse(&alloy::primitives::hex::encode_prefixed(&bytes)).unwrap()
    else {
        panic!()
    };
    assert_eq!(recover_ecdsa(&sig, &digest), Some(FROM));
}
