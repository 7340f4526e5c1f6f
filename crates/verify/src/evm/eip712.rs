//! EIP-712 typed data of EIP-3009 `TransferWithAuthorization` and its signing digest.

use alloy::primitives::{Address, B256};
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
