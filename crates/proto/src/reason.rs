//! Reason strings of `invalidReason` / `errorReason`, character for character as the TypeScript
//! reference emits them (`@x402/core`, `@x402/evm` 2.27 on npm).

/// A reason a payment is invalid or a settlement did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The requested scheme is not handled for this network.
    UnsupportedScheme,
    /// The network is unknown or not configured.
    InvalidNetwork,
    /// The requirements name an asset this facilitator does not settle.
    InvalidPaymentRequirements,
    /// EVM: the asset address holds no contract.
    AssetNotDeployedContract,
    /// EVM: the signature is not hex or has an impossible length.
    EvmFailedToParseSignature,
    /// EVM: scheme of payload or requirements is not `exact`.
    EvmScheme,
    /// EVM: `extra.name` / `extra.version` (EIP-712 domain) missing.
    EvmMissingEip712Domain,
    /// EVM: `accepted.network` differs from the requirements' network.
    EvmNetworkMismatch,
    /// EVM: signature does not recover to `authorization.from`.
    EvmSignature,
    /// EVM: ERC-6492 signature of an undeployed smart wallet.
    EvmUndeployedSmartWallet,
    /// EVM: `authorization.to` differs from `payTo`.
    RecipientMismatch,
    /// EVM: `validBefore` is in the past or too close.
    EvmValidBefore,
    /// EVM: `validAfter` is in the future.
    EvmValidAfter,
    /// EVM v2: `authorization.value` differs from `amount`.
    EvmValueMismatch,
    /// EVM v1: `authorization.value` differs from `maxAmountRequired`.
    EvmAuthorizationValueV1,
    /// EVM: the token has no EIP-3009 (`authorizationState` reverts).
    EvmEip3009NotSupported,
    /// EVM: `authorizationState(from, nonce)` is already true.
    EvmNonceAlreadyUsed,
    /// EVM: the token's `name()` differs from `extra.name`.
    EvmTokenNameMismatch,
    /// EVM: the token's `version()` differs from `extra.version`.
    EvmTokenVersionMismatch,
    /// EVM: `balanceOf(from) < value`.
    EvmInsufficientBalance,
    /// EVM: the `transferWithAuthorization` simulation failed for another reason.
    EvmSimulationFailed,
    /// EVM: the settlement transaction reverted.
    EvmTransactionFailed,
    /// EVM: the mined settlement has no matching `Transfer(from, to, value)` log.
    EvmTransferEventMismatch,
    /// Broadcast, outcome not known yet; retry `/settle` with the same payload.
    SettlementPending,
    /// This payment is already being settled by another request.
    DuplicateSettlement,
    /// The facilitator could not settle for an internal reason (nothing was broadcast).
    UnexpectedSettleError,
    /// The facilitator could not verify for an internal reason.
    UnexpectedVerifyError,
}

impl Reason {
    /// The exact wire string.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            UnsupportedScheme => "unsupported_scheme",
            InvalidNetwork => "invalid_network",
            InvalidPaymentRequirements => "invalid_payment_requirements",
            AssetNotDeployedContract => "asset_not_deployed_contract",
            EvmFailedToParseSignature => "invalid_exact_evm_failed_to_parse_signature",
            EvmScheme => "invalid_exact_evm_scheme",
            EvmMissingEip712Domain => "invalid_exact_evm_missing_eip712_domain",
            EvmNetworkMismatch => "invalid_exact_evm_network_mismatch",
            EvmSignature => "invalid_exact_evm_signature",
            EvmUndeployedSmartWallet => "invalid_exact_evm_payload_undeployed_smart_wallet",
            RecipientMismatch => "invalid_exact_evm_recipient_mismatch",
            EvmValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            EvmValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            EvmValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            EvmAuthorizationValueV1 => "invalid_exact_evm_authorization_value",
            EvmEip3009NotSupported => "invalid_exact_evm_eip3009_not_supported",
            EvmNonceAlreadyUsed => "invalid_exact_evm_nonce_already_used",
            EvmTokenNameMismatch => "invalid_exact_evm_token_name_mismatch",
            EvmTokenVersionMismatch => "invalid_exact_evm_token_version_mismatch",
            EvmInsufficientBalance => "invalid_exact_evm_insufficient_balance",
            EvmSimulationFailed => "invalid_exact_evm_transaction_simulation_failed",
            EvmTransactionFailed => "invalid_exact_evm_transaction_failed",
            EvmTransferEventMismatch => "invalid_exact_evm_transfer_event_mismatch",
            SettlementPending => "settlement_pending",
            DuplicateSettlement => "duplicate_settlement",
            UnexpectedSettleError => "unexpected_settle_error",
            UnexpectedVerifyError => "unexpected_verify_error",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
