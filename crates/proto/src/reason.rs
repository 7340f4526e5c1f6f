//! Reason strings of `invalidReason` / `errorReason`, character for character as the TypeScript
//! reference emits them (`@x402/core`, `@x402/evm`, `@x402/svm` 2.27 on npm).

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
    /// Permit2 `exact`: the payload or the requirements are not of scheme `exact`.
    UnsupportedPayloadType,
    /// Permit2: `permit2Authorization.spender` is not the x402 Permit2 proxy.
    Permit2InvalidSpender,
    /// Permit2: `witness.to` is not `payTo`.
    Permit2RecipientMismatch,
    /// Permit2: `deadline` is less than 6 s ahead.
    Permit2DeadlineExpired,
    /// Permit2: `witness.validAfter` is in the future.
    Permit2NotYetValid,
    /// Permit2 `exact`: `permitted.amount` differs from the required amount.
    Permit2AmountMismatch,
    /// Permit2: `permitted.token` is not the required asset.
    Permit2TokenMismatch,
    /// Permit2: the signature is not the payer's over the Permit2 message.
    Permit2InvalidSignature,
    /// Permit2: the payer's ERC-20 allowance to Permit2 is below the amount.
    Permit2AllowanceRequired,
    /// Permit2: the proxy's `settle` fails simulation for no reason found.
    Permit2SimulationFailed,
    /// Permit2: the payer's token balance is below the amount.
    Permit2InsufficientBalance,
    /// Permit2: no contract at the x402 Permit2 proxy address.
    Permit2ProxyNotDeployed,
    /// Permit2: the proxy refused the amount (`InvalidAmount`).
    Permit2InvalidAmount,
    /// Permit2: the proxy refused the destination (`InvalidDestination`).
    Permit2InvalidDestination,
    /// Permit2: the proxy refused the owner (`InvalidOwner`).
    Permit2InvalidOwner,
    /// Permit2: the proxy refused a payment before `validAfter` (`PaymentTooEarly`).
    Permit2PaymentTooEarly,
    /// Permit2: the nonce is used (Permit2 `InvalidNonce`), or taken by another payment.
    Permit2InvalidNonce,
    /// Permit2: the EIP-2612 permit's value differs from `permitted.amount` (proxy `Permit2612AmountMismatch`).
    Permit2612AmountMismatch,
    /// `upto`: the payload or the requirements are not of scheme `upto`.
    UptoInvalidScheme,
    /// `upto`: `accepted.network` differs from the requirements' network.
    UptoNetworkMismatch,
    /// `upto`: `witness.facilitator` is not one of this facilitator's signers.
    UptoFacilitatorMismatch,
    /// `upto` settle: the amount to settle is above `permitted.amount`.
    UptoSettlementExceedsAmount,
    /// `upto`: the settlement transaction reverted.
    UptoTransactionFailed,
    /// `upto`: the proxy refused an amount above `permitted.amount` (`AmountExceedsPermitted`).
    UptoAmountExceedsPermitted,
    /// `upto`: the proxy refused a sender other than `witness.facilitator`
    /// (`UnauthorizedFacilitator`).
    UptoUnauthorizedFacilitator,
    /// `eip2612GasSponsoring`: a field of the extension has a wrong format.
    Eip2612ExtensionFormat,
    /// `eip2612GasSponsoring`: `from` is not the payer.
    Eip2612FromMismatch,
    /// `eip2612GasSponsoring`: `asset` is not the required asset.
    Eip2612AssetMismatch,
    /// `eip2612GasSponsoring`: `spender` is not Permit2.
    Eip2612SpenderNotPermit2,
    /// `eip2612GasSponsoring`: `deadline` is less than 6 s ahead.
    Eip2612DeadlineExpired,
    /// SVM: scheme of payload or requirements is not `exact`.
    SvmUnsupportedScheme,
    /// SVM: `accepted.network` differs from the requirements' network.
    SvmNetworkMismatch,
    /// SVM: `extra.feePayer` is missing.
    SvmMissingFeePayer,
    /// SVM: `extra.feePayer` is not one of this facilitator's keys.
    SvmFeePayerNotManaged,
    /// SVM: account key 0 of the transaction is not `extra.feePayer`.
    SvmFeePayerMismatch,
    /// SVM: the transaction is not base64 of a `VersionedTransaction`, or uses unresolved address lookup tables.
    SvmCouldNotBeDecoded,
    /// SVM: a required signature other than the fee payer's is missing or invalid.
    SvmSignatureInvalid,
    /// SVM: more required signers than allowed.
    SvmExcessiveSigners,
    /// SVM: fewer than 3 or more than 6 instructions.
    SvmInstructionsLength,
    /// SVM: instruction 0 is not ComputeBudget `SetComputeUnitLimit`.
    SvmComputeLimitInstruction,
    /// SVM: the compute unit limit is above the configured cap.
    SvmComputeLimitTooHigh,
    /// SVM: instruction 1 is not ComputeBudget `SetComputeUnitPrice`.
    SvmComputePriceInstruction,
    /// SVM: the compute unit price is above the configured cap (micro-lamports per CU).
    SvmComputePriceTooHigh,
    /// SVM: instruction 2 is not a `TransferChecked` of SPL Token or Token-2022.
    SvmNoTransferInstruction,
    /// SVM: the fee payer appears in an instruction's accounts (e.g. as source or authority).
    SvmFeePayerTransferringFunds,
    /// SVM: the transfer's mint is not the required asset.
    SvmMintMismatch,
    /// SVM: the destination is not the associated token account of `payTo`.
    SvmRecipientMismatch,
    /// SVM: the transfer amount differs from the required amount.
    SvmAmountMismatch,
    /// SVM: instruction 3 is neither Memo nor Lighthouse (nor an allowed CreateIdempotent).
    SvmUnknownFourthInstruction,
    /// SVM: instruction 4 is neither Memo nor Lighthouse.
    SvmUnknownFifthInstruction,
    /// SVM: instruction 5 is neither Memo nor Lighthouse.
    SvmUnknownSixthInstruction,
    /// SVM: `extra.memo` is set but the transaction has not exactly one Memo instruction.
    SvmMemoCount,
    /// SVM: the Memo differs from `extra.memo`.
    SvmMemoMismatch,
    /// SVM: the co-signed transaction fails simulation.
    SvmSimulationFailed,
    /// SVM: the settlement transaction failed on chain, or its blockhash expired before it landed (terminal: nothing moved).
    SvmTransactionFailed,
    /// SVM: `payTo` has no token account for the mint and creating it is not allowed (this facilitator's own reason).
    SvmDestinationAtaMissing,
    /// SVM v1 (`ExactSvmSchemeV1`): the payment's network differs from the requirements'.
    NetworkMismatch,
    /// SVM v1: `extra.feePayer` is not one of this facilitator's keys.
    FeePayerNotManagedByFacilitator,
    /// SVM v1: the co-signed transaction fails simulation.
    TransactionSimulationFailed,
    /// SVM v1: the settlement transaction failed or expired unlanded.
    TransactionFailed,
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
            UnsupportedPayloadType => "unsupported_payload_type",
            Permit2InvalidSpender => "invalid_permit2_spender",
            Permit2RecipientMismatch => "invalid_permit2_recipient_mismatch",
            Permit2DeadlineExpired => "permit2_deadline_expired",
            Permit2NotYetValid => "permit2_not_yet_valid",
            Permit2AmountMismatch => "permit2_amount_mismatch",
            Permit2TokenMismatch => "permit2_token_mismatch",
            Permit2InvalidSignature => "invalid_permit2_signature",
            Permit2AllowanceRequired => "permit2_allowance_required",
            Permit2SimulationFailed => "permit2_simulation_failed",
            Permit2InsufficientBalance => "permit2_insufficient_balance",
            Permit2ProxyNotDeployed => "permit2_proxy_not_deployed",
            Permit2InvalidAmount => "permit2_invalid_amount",
            Permit2InvalidDestination => "permit2_invalid_destination",
            Permit2InvalidOwner => "permit2_invalid_owner",
            Permit2PaymentTooEarly => "permit2_payment_too_early",
            Permit2InvalidNonce => "permit2_invalid_nonce",
            Permit2612AmountMismatch => "permit2_2612_amount_mismatch",
            UptoInvalidScheme => "invalid_upto_evm_scheme",
            UptoNetworkMismatch => "invalid_upto_evm_network_mismatch",
            UptoFacilitatorMismatch => "upto_facilitator_mismatch",
            UptoSettlementExceedsAmount => "invalid_upto_evm_payload_settlement_exceeds_amount",
            UptoTransactionFailed => "invalid_upto_evm_transaction_failed",
            UptoAmountExceedsPermitted => "upto_amount_exceeds_permitted",
            UptoUnauthorizedFacilitator => "upto_unauthorized_facilitator",
            Eip2612ExtensionFormat => "invalid_eip2612_extension_format",
            Eip2612FromMismatch => "eip2612_from_mismatch",
            Eip2612AssetMismatch => "eip2612_asset_mismatch",
            Eip2612SpenderNotPermit2 => "eip2612_spender_not_permit2",
            Eip2612DeadlineExpired => "eip2612_deadline_expired",
            SvmUnsupportedScheme => "invalid_exact_svm_unsupported_scheme",
            SvmNetworkMismatch => "invalid_exact_svm_network_mismatch",
            SvmMissingFeePayer => "invalid_exact_svm_payload_missing_fee_payer",
            SvmFeePayerNotManaged => "invalid_exact_svm_fee_payer_not_managed_by_facilitator",
            SvmFeePayerMismatch => "invalid_exact_svm_fee_payer_mismatch",
            SvmCouldNotBeDecoded => "invalid_exact_svm_payload_transaction_could_not_be_decoded",
            SvmSignatureInvalid => "invalid_exact_svm_payload_signature_invalid",
            SvmExcessiveSigners => "invalid_exact_svm_payload_excessive_signers",
            SvmInstructionsLength => "invalid_exact_svm_payload_transaction_instructions_length",
            SvmComputeLimitInstruction => {
                "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction"
            }
            SvmComputeLimitTooHigh => {
                "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high"
            }
            SvmComputePriceInstruction => {
                "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction"
            }
            SvmComputePriceTooHigh => {
                "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high"
            }
            SvmNoTransferInstruction => "invalid_exact_svm_payload_no_transfer_instruction",
            SvmFeePayerTransferringFunds => {
                "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds"
            }
            SvmMintMismatch => "invalid_exact_svm_payload_mint_mismatch",
            SvmRecipientMismatch => "invalid_exact_svm_payload_recipient_mismatch",
            SvmAmountMismatch => "invalid_exact_svm_payload_amount_mismatch",
            SvmUnknownFourthInstruction => "invalid_exact_svm_payload_unknown_fourth_instruction",
            SvmUnknownFifthInstruction => "invalid_exact_svm_payload_unknown_fifth_instruction",
            SvmUnknownSixthInstruction => "invalid_exact_svm_payload_unknown_sixth_instruction",
            SvmMemoCount => "invalid_exact_svm_payload_memo_count",
            SvmMemoMismatch => "invalid_exact_svm_payload_memo_mismatch",
            SvmSimulationFailed => "invalid_exact_svm_transaction_simulation_failed",
            SvmTransactionFailed => "invalid_exact_svm_transaction_failed",
            SvmDestinationAtaMissing => "invalid_exact_svm_destination_ata_missing",
            NetworkMismatch => "network_mismatch",
            FeePayerNotManagedByFacilitator => "fee_payer_not_managed_by_facilitator",
            TransactionSimulationFailed => "transaction_simulation_failed",
            TransactionFailed => "transaction_failed",
            SettlementPending => "settlement_pending",
            DuplicateSettlement => "duplicate_settlement",
            UnexpectedSettleError => "unexpected_settle_error",
            UnexpectedVerifyError => "unexpected_verify_error",
        }
    }
}

impl Reason {
    /// The string `@x402/svm` 2.27 uses for this reason in x402 v1 (`ExactSvmSchemeV1` keeps the
    /// short forms of five reasons); every other reason, and every v2 reason, is unchanged.
    pub fn for_svm_version(self, version: crate::X402Version) -> Reason {
        use Reason::*;
        match (version, self) {
            (crate::X402Version::V1, SvmUnsupportedScheme) => UnsupportedScheme,
            (crate::X402Version::V1, SvmNetworkMismatch) => NetworkMismatch,
            (crate::X402Version::V1, SvmFeePayerNotManaged) => FeePayerNotManagedByFacilitator,
            (crate::X402Version::V1, SvmSimulationFailed) => TransactionSimulationFailed,
            (crate::X402Version::V1, SvmTransactionFailed) => TransactionFailed,
            (_, reason) => reason,
        }
    }
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: &'static [Reason] = &[
        Reason::UnsupportedScheme,
        Reason::InvalidNetwork,
        Reason::InvalidPaymentRequirements,
        Reason::AssetNotDeployedContract,
        Reason::EvmFailedToParseSignature,
        Reason::EvmScheme,
        Reason::EvmMissingEip712Domain,
        Reason::EvmNetworkMismatch,
        Reason::EvmSignature,
        Reason::EvmUndeployedSmartWallet,
        Reason::RecipientMismatch,
        Reason::EvmValidBefore,
        Reason::EvmValidAfter,
        Reason::EvmValueMismatch,
        Reason::EvmAuthorizationValueV1,
        Reason::EvmEip3009NotSupported,
        Reason::EvmNonceAlreadyUsed,
        Reason::EvmTokenNameMismatch,
        Reason::EvmTokenVersionMismatch,
        Reason::EvmInsufficientBalance,
        Reason::EvmSimulationFailed,
        Reason::EvmTransactionFailed,
        Reason::EvmTransferEventMismatch,
        Reason::UnsupportedPayloadType,
        Reason::Permit2InvalidSpender,
        Reason::Permit2RecipientMismatch,
        Reason::Permit2DeadlineExpired,
        Reason::Permit2NotYetValid,
        Reason::Permit2AmountMismatch,
        Reason::Permit2TokenMismatch,
        Reason::Permit2InvalidSignature,
        Reason::Permit2AllowanceRequired,
        Reason::Permit2SimulationFailed,
        Reason::Permit2InsufficientBalance,
        Reason::Permit2ProxyNotDeployed,
        Reason::Permit2InvalidAmount,
        Reason::Permit2InvalidDestination,
        Reason::Permit2InvalidOwner,
        Reason::Permit2PaymentTooEarly,
        Reason::Permit2InvalidNonce,
        Reason::Permit2612AmountMismatch,
        Reason::UptoInvalidScheme,
        Reason::UptoNetworkMismatch,
        Reason::UptoFacilitatorMismatch,
        Reason::UptoSettlementExceedsAmount,
        Reason::UptoTransactionFailed,
        Reason::UptoAmountExceedsPermitted,
        Reason::UptoUnauthorizedFacilitator,
        Reason::Eip2612ExtensionFormat,
        Reason::Eip2612FromMismatch,
        Reason::Eip2612AssetMismatch,
        Reason::Eip2612SpenderNotPermit2,
        Reason::Eip2612DeadlineExpired,
        Reason::SvmUnsupportedScheme,
        Reason::SvmNetworkMismatch,
        Reason::SvmMissingFeePayer,
        Reason::SvmFeePayerNotManaged,
        Reason::SvmFeePayerMismatch,
        Reason::SvmCouldNotBeDecoded,
        Reason::SvmSignatureInvalid,
        Reason::SvmExcessiveSigners,
        Reason::SvmInstructionsLength,
        Reason::SvmComputeLimitInstruction,
        Reason::SvmComputeLimitTooHigh,
        Reason::SvmComputePriceInstruction,
        Reason::SvmComputePriceTooHigh,
        Reason::SvmNoTransferInstruction,
        Reason::SvmFeePayerTransferringFunds,
        Reason::SvmMintMismatch,
        Reason::SvmRecipientMismatch,
        Reason::SvmAmountMismatch,
        Reason::SvmUnknownFourthInstruction,
        Reason::SvmUnknownFifthInstruction,
        Reason::SvmUnknownSixthInstruction,
        Reason::SvmMemoCount,
        Reason::SvmMemoMismatch,
        Reason::SvmSimulationFailed,
        Reason::SvmTransactionFailed,
        Reason::SvmDestinationAtaMissing,
        Reason::NetworkMismatch,
        Reason::FeePayerNotManagedByFacilitator,
        Reason::TransactionSimulationFailed,
        Reason::TransactionFailed,
        Reason::SettlementPending,
        Reason::DuplicateSettlement,
        Reason::UnexpectedSettleError,
        Reason::UnexpectedVerifyError,
    ];

    /// The reason whose wire string is `s` (the inverse of [`Reason::as_str`]).
    pub fn from_wire(s: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod wire_round_trip {
    use super::Reason;

    #[test]
    fn every_reason_round_trips_through_its_wire_string() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_wire(r.as_str()), Some(*r), "{r:?}");
        }
        assert_eq!(Reason::from_wire("no_such_reason"), None);
    }
}
