//! [`RpcSvmChain`]: [`SvmChain`] over the agave nonblocking JSON-RPC client (`solana-rpc-client`).

use std::time::Duration;

use async_trait::async_trait;
use solana_address::Address;
use solana_commitment_config::CommitmentConfig;
use solana_hash::Hash;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_api::config::{RpcSendTransactionConfig, RpcSimulateTransactionConfig};
use solana_rpc_client_api::request::RpcError;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;

use crate::svm::{SvmAccount, SvmChain, SvmChainError, SvmSimulation, SvmTxStatus};

/// A Solana cluster reached over HTTP JSON-RPC, reading at `confirmed` commitment.
pub struct RpcSvmChain {
    client: RpcClient,
}

impl RpcSvmChain {
    /// A client of the RPC endpoint `url` with a per-request `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        RpcSvmChain {
            client: RpcClient::new_with_timeout_and_commitment(
                url.into(),
                timeout,
                CommitmentConfig::confirmed(),
            ),
        }
    }
}

/// Node-side JSON-RPC errors are refusals; transport errors leave the outcome unknown.
fn map_err(e: ClientError) -> SvmChainError {
    match e.kind() {
        ErrorKind::RpcError(RpcError::RpcResponseError { .. })
        | ErrorKind::TransactionError(_)
        | ErrorKind::SigningError(_) => SvmChainError::Rejected(e.to_string()),
        _ => SvmChainError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl SvmChain for RpcSvmChain {
    async fn simulate(&self, tx: &VersionedTransaction) -> Result<SvmSimulation, SvmChainError> {
        let config = RpcSimulateTransactionConfig {
            sig_verify: true,
            replace_recent_blockhash: false,
            commitment: Some(CommitmentConfig::confirmed()),
            ..RpcSimulateTransactionConfig::default()
        };
        let result = self
            .client
            .simulate_transaction_with_config(tx, config)
            .await
            .map_err(map_err)?
            .value;
        Ok(SvmSimulation {
            err: result.err.map(|e| format!("{e:?}")),
            logs: result.logs.unwrap_or_default(),
            units_consumed: result.units_consumed,
        })
    }

    async fn send(&self, tx: &VersionedTransaction) -> Result<Signature, SvmChainError> {
        let config = RpcSendTransactionConfig {
            skip_preflight: true,
            preflight_commitment: Some(CommitmentConfig::confirmed().commitment),
            max_retries: None,
            ..RpcSendTransactionConfig::default()
        };
        self.client
            .send_transaction_with_config(tx, config)
            .await
            .map_err(map_err)
    }

    async fn signature_status(
        &self,
        sig: &Signature,
    ) -> Result<Option<SvmTxStatus>, SvmChainError> {
        let statuses = self
            .client
            .get_signature_statuses_with_history(std::slice::from_ref(sig))
            .await
            .map_err(map_err)?
            .value;
        Ok(statuses.into_iter().next().flatten().map(|s| SvmTxStatus {
            slot: s.slot,
            confirmed: s.satisfies_commitment(CommitmentConfig::confirmed()),
            err: s.err.map(|e| format!("{e:?}")),
        }))
    }

    async fn is_blockhash_valid(&self, blockhash: &Hash) -> Result<bool, SvmChainError> {
        self.client
            .is_blockhash_valid(blockhash, CommitmentConfig::confirmed())
            .await
            .map_err(map_err)
    }

    async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError> {
        let account = self
            .client
            .get_account_with_commitment(address, CommitmentConfig::confirmed())
            .await
            .map_err(map_err)?
            .value;
        Ok(account.map(|a| SvmAccount {
            owner: a.owner,
            lamports: a.lamports,
            data: a.data,
        }))
    }

    async fn minimum_balance_for_rent_exemption(
        &self,
        data_len: usize,
    ) -> Result<u64, SvmChainError> {
        self.client
            .get_minimum_balance_for_rent_exemption(data_len)
            .await
            .map_err(map_err)
    }

    async fn recent_prioritization_fees(
        &self,
        accounts: &[Address],
    ) -> Result<Vec<u64>, SvmChainError> {
        Ok(self
            .client
            .get_recent_prioritization_fees(accounts)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(|f| f.prioritization_fee)
            .collect())
    }
}
