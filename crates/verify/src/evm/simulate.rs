//! Step 10 of EVM verification: `eth_call` of `transferWithAuthorization` from a facilitator
//! signer, and on failure one diagnosis in the reference order (`@x402/evm` 2.27):
//! `authorizationState` reverts → not EIP-3009; true → nonce used; `name()` / `version()` differ;
//! `balanceOf(from) < value`; else simulation failed.

use alloy::primitives::{Address, Bytes, U256};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use x402_proto::Reason;

use super::token::IEip3009Token;
use super::{EvmPayment, ExactEvmVerifier};
use crate::{Invalid, VerifyError};

impl ExactEvmVerifier {
    /// Simulates the settlement call; `Some(revert message)` when it would fail (worded by
    /// [`ExactEvmVerifier::diagnose`]).
    pub(crate) async fn simulate(
        &self,
        payment: &EvmPayment,
    ) -> Result<Option<String>, VerifyError> {
        let from = self
            .chain
            .signers()
            .first()
            .copied()
            .unwrap_or(Address::ZERO);
        let tx = TransactionRequest::default()
            .from(from)
            .to(payment.asset)
            .input(payment.settlement_calldata().into());
        match self.chain.call(&tx).await {
            Ok(_) => Ok(None),
            Err(e) => match e.node_message() {
                Some(message) => Ok(Some(message.to_string())),
                None => Err(VerifyError::ChainUnavailable(e.into())),
            },
        }
    }

    /// Explains a failed simulation or gas estimate of `payment`.
    pub async fn diagnose(
        &self,
        payment: &EvmPayment,
        name: &str,
        version: &str,
        revert_message: String,
    ) -> Result<Invalid, VerifyError> {
        let payer = Some(payment.payer_string());
        let a = &payment.authorization;
        let out = |reason, msg: String| Ok(Invalid::new(reason, msg, payer.clone()));
        let used = self
            .read(
                payment.asset,
                IEip3009Token::authorizationStateCall {
                    authorizer: a.from,
                    nonce: a.nonce,
                },
            )
            .await?;
        match used {
            None => {
                return out(
                    Reason::EvmEip3009NotSupported,
                    "authorizationState reverted".into(),
                );
            }
            Some(true) => {
                return out(
                    Reason::EvmNonceAlreadyUsed,
                    format!("nonce {} already used", a.nonce),
                );
            }
            Some(false) => {}
        }
        if let Some(token_name) = self.read(payment.asset, IEip3009Token::nameCall {}).await?
            && token_name != name
        {
            return out(
                Reason::EvmTokenNameMismatch,
                format!("token name is {token_name:?}, extra.name {name:?}"),
            );
        }
        if let Some(token_version) = self
            .read(payment.asset, IEip3009Token::versionCall {})
            .await?
            && token_version != version
        {
            return out(
                Reason::EvmTokenVersionMismatch,
                format!("token version is {token_version:?}, extra.version {version:?}"),
            );
        }
        let balance: Option<U256> = self
            .read(
                payment.asset,
                IEip3009Token::balanceOfCall { account: a.from },
            )
            .await?;
        if let Some(balance) = balance
            && balance < a.value
        {
            return out(
                Reason::EvmInsufficientBalance,
                format!("balance {balance} < value {}", a.value),
            );
        }
        out(Reason::EvmSimulationFailed, revert_message)
    }

    /// A view call; `None` when it reverts.
    pub(crate) async fn read<C: SolCall>(
        &self,
        to: Address,
        call: C,
    ) -> Result<Option<C::Return>, VerifyError> {
        let tx = TransactionRequest::default()
            .to(to)
            .input(Bytes::from(call.abi_encode()).into());
        match self.chain.call(&tx).await {
            Ok(ret) => Ok(C::abi_decode_returns(&ret).ok()),
            Err(e) if e.node_message().is_some() => Ok(None),
            Err(e) => Err(VerifyError::ChainUnavailable(e.into())),
        }
    }
}
