// SPDX-License-Identifier: Apache-2.0
// Test-only contract wallets that attack the facilitator's gas (issue 21 point 1). Compiled at
// test time with npm `solc` (tests/src/solc.rs). Each answers ERC-1271 `isValidSignature` for
// any hash and signature, so that a payment "signed" by it passes every check a node can
// simulate; what they do beyond that is the attack.
pragma solidity ^0.8.20;

/// Valid only when the transaction pays no gas price: true in an `eth_call` or `eth_estimateGas`
/// without fee fields, false in the real transaction, which then reverts at the sender's cost.
contract GasPriceGatedWallet {
    function isValidSignature(bytes32, bytes memory) external view returns (bytes4) {
        return tx.gasprice == 0 ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}

/// Valid, after burning `rounds` keccak rounds: a settlement whose gas the payer chooses.
contract GasBurningWallet {
    uint256 public immutable rounds;

    constructor(uint256 rounds_) {
        rounds = rounds_;
    }

    function isValidSignature(bytes32 hash, bytes memory) external view returns (bytes4) {
        bytes32 x = hash;
        for (uint256 i = 0; i < rounds; i++) {
            x = keccak256(abi.encode(x, i));
        }
        // Always true (x is never the zero hash in practice); keeps the loop from being dropped.
        return x != bytes32(uint256(1)) ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}

/// Valid until anyone flips it: a payment from it passes every simulation, and reverts when a
/// flip lands before the settlement in the same block.
contract SwitchableWallet {
    bool public valid = true;

    function flip() external {
        valid = !valid;
    }

    function isValidSignature(bytes32, bytes memory) external view returns (bytes4) {
        return valid ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}
