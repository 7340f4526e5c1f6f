//! Permit2 and the x402 Permit2 proxies: canonical addresses, the ABI settlement and
//! verification call, and the EIP-712 message the payer signs
//! (specs/schemes/exact/scheme_exact_evm.md §2; Uniswap Permit2 `ISignatureTransfer`).
//!
//! The signed message is Permit2's `PermitWitnessTransferFrom` with the x402 witness (`upto`'s,
//! with `facilitator`, in [`upto`]); `exact`'s: type
//! string `PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,
//! uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address
//! to,uint256 validAfter)`, domain `{name: "Permit2", chainId, verifyingContract: Permit2}` (no
//! version).

use alloy::primitives::{Address, B256, address};
use alloy::sol_types::{Eip712Domain, SolStruct};

/// Uniswap Permit2, the same address on every chain (CREATE2).
pub const PERMIT2_ADDRESS: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// `x402ExactPermit2Proxy`, the spender of `exact` Permit2 payments (same address on every
/// chain).
pub const EXACT_PERMIT2_PROXY_ADDRESS: Address =
    address!("0x402085c248EeA27D92E8b30b2C58ed07f9E20001");

/// `x402UptoPermit2Proxy`, the spender of `upto` payments (same address on every chain).
pub const UPTO_PERMIT2_PROXY_ADDRESS: Address =
    address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

alloy::sol! {
    /// Permit2 `TokenPermissions`: token and maximum amount (atomic units).
    #[derive(Debug, PartialEq, Eq)]
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    /// The witness of `x402ExactPermit2Proxy`.
    #[derive(Debug, PartialEq, Eq)]
    struct Witness {
        address to;
        uint256 validAfter;
    }

    /// The EIP-712 message of an `exact` Permit2 payment.
    #[derive(Debug, PartialEq, Eq)]
    struct PermitWitnessTransferFrom {
        TokenPermissions permitted;
        address spender;
        uint256 nonce;
        uint256 deadline;
        Witness witness;
    }

    /// Permit2 `ISignatureTransfer.PermitTransferFrom` (the signed fields but the spender and
    /// witness, as the proxy takes them).
    #[derive(Debug, PartialEq, Eq)]
    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    /// An EIP-2612 permit of the token to Permit2 (`eip2612GasSponsoring`).
    #[derive(Debug, PartialEq, Eq)]
    struct Eip2612Permit {
        uint256 value;
        uint256 deadline;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    /// `x402ExactPermit2Proxy` (the spec's interface and custom errors).
    interface IX402ExactPermit2Proxy {
        function settle(PermitTransferFrom permit, address owner, Witness witness, bytes signature) external;
        function settleWithPermit(Eip2612Permit permit2612, PermitTransferFrom permit, address owner, Witness witness, bytes signature) external;
        function PERMIT2() external view returns (address);
        error InvalidAmount();
        error InvalidDestination();
        error InvalidOwner();
        error PaymentTooEarly();
        error Permit2612AmountMismatch();
    }

    /// The Permit2 functions and errors the facilitator reads.
    interface IPermit2 {
        function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);
        function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external;
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        error InvalidNonce();
        error InvalidSigner();
        error InvalidSignature();
        error InvalidSignatureLength();
        error InvalidContractSignature();
        error SignatureExpired(uint256 signatureDeadline);
        error InvalidAmount(uint256 maxAmount);
    }

    /// The plain ERC-20 functions Permit2 payments need.
    interface IErc20 {
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function approve(address spender, uint256 amount) external returns (bool);
        function transfer(address to, uint256 amount) external returns (bool);
        function decimals() external view returns (uint8);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// `upto` (specs/schemes/upto/scheme_upto_evm.md): the message with the witness
/// `Witness(address to,address facilitator,uint256 validAfter)` and `x402UptoPermit2Proxy`,
/// whose `settle` takes the amount to transfer (at most `permitted.amount`) and reverts
/// `UnauthorizedFacilitator` unless sent by `witness.facilitator`. Its own module: EIP-712
/// names its types by name, and the exact witness is also `Witness`.
pub mod upto {
    use alloy::primitives::{Address, B256};
    use alloy::sol_types::SolStruct;

    alloy::sol! {
        /// Permit2 `TokenPermissions` (the same as [`super::TokenPermissions`]).
        #[derive(Debug, PartialEq, Eq)]
        struct TokenPermissions {
            address token;
            uint256 amount;
        }

        /// The witness of `x402UptoPermit2Proxy`.
        #[derive(Debug, PartialEq, Eq)]
        struct Witness {
            address to;
            address facilitator;
            uint256 validAfter;
        }

        /// The EIP-712 message of an `upto` payment.
        #[derive(Debug, PartialEq, Eq)]
        struct PermitWitnessTransferFrom {
            TokenPermissions permitted;
            address spender;
            uint256 nonce;
            uint256 deadline;
            Witness witness;
        }

        /// Permit2 `PermitTransferFrom` as the proxy takes it.
        #[derive(Debug, PartialEq, Eq)]
        struct PermitTransferFrom {
            TokenPermissions permitted;
            uint256 nonce;
            uint256 deadline;
        }

        /// An EIP-2612 permit of the token to Permit2 (`eip2612GasSponsoring`).
        #[derive(Debug, PartialEq, Eq)]
        struct Eip2612Permit {
            uint256 value;
            uint256 deadline;
            bytes32 r;
            bytes32 s;
            uint8 v;
        }

        /// `x402UptoPermit2Proxy` (the spec's interface and custom errors).
        interface IX402UptoPermit2Proxy {
            function settle(PermitTransferFrom permit, uint256 amount, address owner, Witness witness, bytes signature) external;
            function settleWithPermit(Eip2612Permit permit2612, PermitTransferFrom permit, uint256 amount, address owner, Witness witness, bytes signature) external;
            error AmountExceedsPermitted();
            error UnauthorizedFacilitator();
            error InvalidAmount();
            error InvalidDestination();
            error InvalidOwner();
            error PaymentTooEarly();
            error Permit2612AmountMismatch();
        }
    }

    /// The digest a payer signs for an `upto` `message` under Permit2 at `permit2` on
    /// `chain_id`.
    pub fn signing_digest(
        chain_id: u64,
        permit2: Address,
        message: &PermitWitnessTransferFrom,
    ) -> B256 {
        message.eip712_signing_hash(&super::domain(chain_id, permit2))
    }
}

/// The EIP-712 domain of Permit2 at `permit2` on `chain_id`.
pub fn domain(chain_id: u64, permit2: Address) -> Eip712Domain {
    alloy::sol_types::eip712_domain! {
        name: "Permit2",
        chain_id: chain_id,
        verifying_contract: permit2,
    }
}

/// The digest a payer signs for `message` under Permit2 at `permit2` on `chain_id`.
pub fn signing_digest(
    chain_id: u64,
    permit2: Address,
    message: &PermitWitnessTransferFrom,
) -> B256 {
    message.eip712_signing_hash(&domain(chain_id, permit2))
}

/// Permit2's unordered nonce position: `(wordPos, bit)` with `wordPos = nonce >> 8` and
/// `bit = nonce & 0xff` (`nonceBitmap(owner, wordPos)` has bit `bit` set once used).
pub fn nonce_position(nonce: alloy::primitives::U256) -> (alloy::primitives::U256, usize) {
    let word = nonce >> 8;
    let bit = (nonce & alloy::primitives::U256::from(0xffu8)).to::<usize>();
    (word, bit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{U256, keccak256};

    #[test]
    fn type_string_is_permit2_witness_type() {
        let expected = "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";
        let m = PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: Address::ZERO,
                amount: U256::ZERO,
            },
            spender: Address::ZERO,
            nonce: U256::ZERO,
            deadline: U256::ZERO,
            witness: Witness {
                to: Address::ZERO,
                validAfter: U256::ZERO,
            },
        };
        assert_eq!(m.eip712_type_hash(), keccak256(expected));
    }

    #[test]
    fn upto_type_string_carries_the_facilitator() {
        let expected = "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";
        let m = upto::PermitWitnessTransferFrom {
            permitted: upto::TokenPermissions {
                token: Address::ZERO,
                amount: U256::ZERO,
            },
            spender: Address::ZERO,
            nonce: U256::ZERO,
            deadline: U256::ZERO,
            witness: upto::Witness {
                to: Address::ZERO,
                facilitator: Address::ZERO,
                validAfter: U256::ZERO,
            },
        };
        assert_eq!(m.eip712_type_hash(), keccak256(expected));
    }

    #[test]
    fn nonce_position_splits_word_and_bit() {
        assert_eq!(nonce_position(U256::from(0x1_05u32)), (U256::from(1), 5));
    }
}
