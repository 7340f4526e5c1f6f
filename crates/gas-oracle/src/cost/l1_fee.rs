//! The L1 data fee of OP-stack chains (Base, Optimism): a rollup transaction also pays for
//! posting its bytes to L1, charged outside `gasUsed × effectiveGasPrice` (receipt `l1Fee`).
//! Source: OP-stack `GasPriceOracle` predeploy, `getL1Fee(bytes unsignedTx) returns (uint256 wei)`.

use alloy::primitives::{Address, Bytes, U256, address};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use x402_chain::EvmChain;

use super::CostError;

/// The OP-stack `GasPriceOracle` predeploy address (same on Base, OP Mainnet and every OP-stack
/// chain).
pub const OP_STACK_GAS_PRICE_ORACLE: Address =
    address!("0x420000000000000000000000000000000000000F");

alloy::sol! {
    /// The part of the OP-stack `GasPriceOracle` used here.
    interface IGasPriceOracle {
        /// L1 data fee in wei of a transaction given as its unsigned EIP-2718 encoding
        /// (the oracle adds the signature's size itself).
        function getL1Fee(bytes _data) external view returns (uint256);
    }
}

/// Reads the L1 data fee from an OP-stack `GasPriceOracle` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpStackL1Fee {
    /// The oracle contract ([`OP_STACK_GAS_PRICE_ORACLE`] on real OP-stack chains).
    pub oracle: Address,
}

impl Default for OpStackL1Fee {
    fn default() -> Self {
        OpStackL1Fee {
            oracle: OP_STACK_GAS_PRICE_ORACLE,
        }
    }
}

impl OpStackL1Fee {
    /// The oracle at `oracle`.
    pub fn new(oracle: Address) -> Self {
        OpStackL1Fee { oracle }
    }

    /// `getL1Fee(unsigned_tx)` in wei, as the chain computes it now.
    pub async fn l1_fee_wei(
        &self,
        chain: &dyn EvmChain,
        unsigned_tx: &Bytes,
    ) -> Result<u128, CostError> {
        let call = IGasPriceOracle::getL1FeeCall {
            _data: unsigned_tx.clone(),
        };
        let tx = TransactionRequest::default()
            .to(self.oracle)
            .input(call.abi_encode().into());
        let out = chain.call(&tx).await.map_err(|source| CostError::Chain {
            what: "GasPriceOracle.getL1Fee",
            source,
        })?;
        let fee: U256 = IGasPriceOracle::getL1FeeCall::abi_decode_returns(&out)
            .map_err(|e| CostError::Unsupported(format!("GasPriceOracle.getL1Fee answer: {e}")))?;
        u128::try_from(fee).map_err(|_| CostError::Overflow(format!("L1 fee {fee} wei")))
    }
}
