//! ABI of the EIP-3009 token functions used by verification, settlement, gas pricing and the
//! start-up check of configured assets (Circle FiatTokenV2_2, EIP-3009; the `bytes signature`
//! overload is FiatTokenV2_2's ERC-1271-capable variant) and of ERC-1271 `isValidSignature`.

alloy::sol! {
    /// EIP-3009 token (USDC FiatTokenV2_2 and compatible).
    interface IEip3009Token {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function name() external view returns (string);
        function version() external view returns (string);
        function decimals() external view returns (uint8);
        function balanceOf(address account) external view returns (uint256);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }

    /// ERC-1271 smart-contract signature check.
    interface IErc1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
    }
}

/// ERC-1271 magic value returned by `isValidSignature` for a valid signature.
pub const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];
