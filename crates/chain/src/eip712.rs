//! EIP-712 typed data of EIP-3009 `TransferWithAuthorization` and its signing digest.
//!
//! [`digest`] goes through alloy's generic EIP-712 machinery (it builds the type string and
//! hashes it on every call); [`signing_digest`] computes the same 32 bytes with the two type
//! hashes as constants and no allocation, for the `/verify` hot path.

use alloy::primitives::{Address, B256, U256, b256, keccak256};
use alloy::sol_types::{Eip712Domain, SolStruct};

alloy::sol! {
    /// EIP-3009 `TransferWithAuthorization` (the struct the payer signs).
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// `keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")`.
pub const DOMAIN_TYPEHASH: B256 =
    b256!("8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f");

/// `keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")`
/// (FiatToken's `TRANSFER_WITH_AUTHORIZATION_TYPEHASH`).
pub const TRANSFER_WITH_AUTHORIZATION_TYPEHASH: B256 =
    b256!("7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267");

/// The token's EIP-712 domain: `name`/`version` from `extra`, chain id from the CAIP-2 network,
/// the token contract as `verifyingContract`.
pub fn domain(
    name: &str,
    version: &str,
    chain_id: u64,
    verifying_contract: Address,
) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.to_string().into()),
        Some(version.to_string().into()),
        Some(alloy::primitives::U256::from(chain_id)),
        Some(verifying_contract),
        None,
    )
}

/// `keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(authorization))` (EIP-712).
pub fn digest(domain: &Eip712Domain, authorization: &TransferWithAuthorization) -> B256 {
    authorization.eip712_signing_hash(domain)
}

/// The domain separator of [`domain`]`(name, version, chain_id, verifying_contract)`, without
/// allocating: `keccak256(DOMAIN_TYPEHASH ‖ keccak256(name) ‖ keccak256(version) ‖ chainId ‖
/// verifyingContract)`.
pub fn domain_separator(
    name: &str,
    version: &str,
    chain_id: u64,
    verifying_contract: Address,
) -> B256 {
    let mut buf = [0u8; 5 * 32];
    buf[..32].copy_from_slice(DOMAIN_TYPEHASH.as_slice());
    buf[32..64].copy_from_slice(keccak256(name.as_bytes()).as_slice());
    buf[64..96].copy_from_slice(keccak256(version.as_bytes()).as_slice());
    buf[96..128].copy_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    buf[140..160].copy_from_slice(verifying_contract.as_slice());
    keccak256(buf)
}

/// The same digest as [`digest`], from a [`domain_separator`]: three fixed-size keccaks in all.
pub fn signing_digest(domain_separator: &B256, a: &TransferWithAuthorization) -> B256 {
    let mut st = [0u8; 7 * 32];
    st[..32].copy_from_slice(TRANSFER_WITH_AUTHORIZATION_TYPEHASH.as_slice());
    st[44..64].copy_from_slice(a.from.as_slice());
    st[76..96].copy_from_slice(a.to.as_slice());
    st[96..128].copy_from_slice(&a.value.to_be_bytes::<32>());
    st[128..160].copy_from_slice(&a.validAfter.to_be_bytes::<32>());
    st[160..192].copy_from_slice(&a.validBefore.to_be_bytes::<32>());
    st[192..224].copy_from_slice(a.nonce.as_slice());
    let mut msg = [0u8; 66];
    msg[0] = 0x19;
    msg[1] = 0x01;
    msg[2..34].copy_from_slice(domain_separator.as_slice());
    msg[34..66].copy_from_slice(keccak256(st).as_slice());
    keccak256(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn constants_are_the_type_hashes() {
        assert_eq!(
            DOMAIN_TYPEHASH,
            keccak256(
                "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
            )
        );
        let auth = TransferWithAuthorization {
            from: Address::ZERO,
            to: Address::ZERO,
            value: U256::ZERO,
            validAfter: U256::ZERO,
            validBefore: U256::ZERO,
            nonce: B256::ZERO,
        };
        assert_eq!(
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH,
            auth.eip712_type_hash()
        );
    }

    #[test]
    fn fast_digest_equals_alloys() {
        let contract = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        for (name, version, chain_id) in [
            ("USD Coin", "2", 8453u64),
            ("USDC", "2", 84532),
            ("", "", 0),
            ("ü name with unicode", "10", u64::MAX),
        ] {
            let auth = TransferWithAuthorization {
                from: address!("857b06519E91e3A54538791bDbb0E22373e36b66"),
                to: address!("209693Bc6afc0C5328bA36FaF03C514EF312287C"),
                value: U256::from(10_000u64) + U256::from(chain_id),
                validAfter: U256::from(1740672089u64),
                validBefore: U256::MAX,
                nonce: B256::repeat_byte(0xab),
            };
            let d = domain(name, version, chain_id, contract);
            assert_eq!(
                domain_separator(name, version, chain_id, contract),
                d.separator()
            );
            assert_eq!(
                signing_digest(&domain_separator(name, version, chain_id, contract), &auth),
                digest(&d, &auth)
            );
        }
    }
}
