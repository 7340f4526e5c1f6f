//! [`RpcSvmChain`]: [`SvmChain`] over the agave nonblocking JSON-RPC client (`solana-rpc-client`).

use std::time::Duration;

use async_trait::async_trait;
use solana_address::Address;
use solana_commitment_config::CommitmentConfig;
use solana_hash::Hash;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_api::config::{
    RpcAccountInfoConfig, RpcSendTransactionConfig, RpcSimulateTransactionConfig, UiAccountEncoding,
};
use solana_rpc_client_api::request::{RpcError, RpcRequest};
use solana_rpc_client_api::response::{Response, UiAccount};
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;

use crate::endpoint::{Endpoint, FailureLog, Unreachable, redacted_detail, scrub};
use crate::svm::{SvmAccount, SvmChain, SvmChainError, SvmSimulation, SvmTxStatus};

/// Solana's JSON-RPC error code of a node behind the cluster (`NodeUnhealthy`).
const NODE_UNHEALTHY: i64 = -32005;

/// A Solana cluster reached over HTTP JSON-RPC, reading at `confirmed` commitment.
pub struct RpcSvmChain {
    client: RpcClient,
    /// How errors name this endpoint.
    endpoint: Endpoint,
    /// The full URL, only to cut it out of logged error details.
    url: String,
    /// Where failed calls are logged.
    failures: FailureLog,
}

impl RpcSvmChain {
    /// A client of the RPC endpoint `url` with a per-request `timeout`; its errors name it
    /// `endpoint 0` ([`RpcSvmChain::at_index`] for another index).
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let url = url.into();
        RpcSvmChain {
            client: RpcClient::new_with_timeout_and_commitment(
                url.clone(),
                timeout,
                CommitmentConfig::confirmed(),
            ),
            endpoint: Endpoint::new(0, &url),
            url,
            failures: FailureLog::default(),
        }
    }

    /// The same client, its errors naming it the `index`-th endpoint of its network.
    pub fn at_index(mut self, index: usize) -> Self {
        self.endpoint.index = index;
        self
    }

    /// `getBalance` at `confirmed`: the account's lamports (0 when it does not exist).
    pub async fn balance(&self, address: &Address) -> Result<u64, SvmChainError> {
        self.client
            .get_balance_with_commitment(address, CommitmentConfig::confirmed())
            .await
            .map(|r| r.value)
            .map_err(self.err("getBalance"))
    }

    /// The one classification of a failed call `method`: a node's JSON-RPC error answer or a
    /// transaction / signing error is [`SvmChainError::Rejected`] (a node that says it is
    /// unhealthy is [`SvmChainError::Unavailable`], so that failover moves on); a transport
    /// failure is named by its kind only, its detail (URL cut out) logged here and nowhere
    /// else.
    fn classify(&self, method: &'static str, e: ClientError) -> SvmChainError {
        let endpoint = self.endpoint.clone();
        let (kind, detail) = match *e.kind {
            ErrorKind::RpcError(RpcError::RpcResponseError { code, .. })
                if code == NODE_UNHEALTHY =>
            {
                (
                    Some(Unreachable::NodeUnhealthy),
                    scrub(&e.kind.to_string(), &self.url),
                )
            }
            ErrorKind::RpcError(RpcError::RpcResponseError { .. })
            | ErrorKind::TransactionError(_)
            | ErrorKind::SigningError(_) => return SvmChainError::Rejected(e.kind.to_string()),
            ErrorKind::Reqwest(reqwest) => {
                let reqwest = reqwest.without_url();
                let kind = if reqwest.is_timeout() {
                    None
                } else if reqwest.is_connect() {
                    Some(Unreachable::Connect)
                } else if let Some(status) = reqwest.status() {
                    Some(if status.as_u16() == 429 {
                        Unreachable::RateLimited
                    } else {
                        Unreachable::HttpStatus(status.as_u16())
                    })
                } else if reqwest.is_decode() || reqwest.is_body() {
                    Some(Unreachable::BadAnswer)
                } else {
                    Some(Unreachable::Transport)
                };
                (kind, redacted_detail(&reqwest, &self.url))
            }
            ErrorKind::SerdeJson(ref json) => (
                Some(Unreachable::BadAnswer),
                redacted_detail(json, &self.url),
            ),
            ErrorKind::RpcError(RpcError::RpcRequestError(_) | RpcError::ParseError(_)) => (
                Some(Unreachable::BadAnswer),
                scrub(&e.kind.to_string(), &self.url),
            ),
            ref other => (
                Some(Unreachable::Transport),
                scrub(&format!("{other:#}"), &self.url),
            ),
        };
        // The detail may be long (an HTTP error page): its start is enough.
        let detail: String = detail.chars().take(500).collect();
        match kind {
            None => {
                self.failures.failed(&endpoint, method, "timeout", &detail);
                SvmChainError::Timeout { endpoint }
            }
            Some(kind) => {
                self.failures
                    .failed(&endpoint, method, &kind.to_string(), &detail);
                SvmChainError::Unavailable { endpoint, kind }
            }
        }
    }

    /// [`RpcSvmChain::classify`] for `method`, as a `map_err` argument.
    fn err(&self, method: &'static str) -> impl Fn(ClientError) -> SvmChainError {
        move |e| self.classify(method, e)
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
            .map_err(self.err("simulateTransaction"))?
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
            .map_err(self.err("sendTransaction"))
    }

    async fn signature_status(
        &self,
        sig: &Signature,
    ) -> Result<Option<SvmTxStatus>, SvmChainError> {
        let statuses = self
            .client
            .get_signature_statuses_with_history(std::slice::from_ref(sig))
            .await
            .map_err(self.err("getSignatureStatuses"))?
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
            .map_err(self.err("isBlockhashValid"))
    }

    // `getAccountInfo` through the client's generic `send`: its `get_account*` helpers fold
    // every failure into one `ForUser` text that quotes the HTTP error (with the URL) and
    // loses whether it was a timeout.
    async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError> {
        let config = RpcAccountInfoConfig {
            encoding: Some(UiAccountEncoding::Base64),
            commitment: Some(CommitmentConfig::confirmed()),
            ..RpcAccountInfoConfig::default()
        };
        let answer: Response<Option<UiAccount>> = self
            .client
            .send(
                RpcRequest::GetAccountInfo,
                serde_json::json!([address.to_string(), config]),
            )
            .await
            .map_err(self.err("getAccountInfo"))?;
        let Some(ui) = answer.value else {
            return Ok(None);
        };
        let Some(account) = ui.to_account() else {
            self.failures.failed(
                &self.endpoint,
                "getAccountInfo",
                "undecodable answer",
                &format!("account {address}: data not in base64"),
            );
            return Err(SvmChainError::Unavailable {
                endpoint: self.endpoint.clone(),
                kind: Unreachable::BadAnswer,
            });
        };
        Ok(Some(SvmAccount {
            owner: account.owner,
            lamports: account.lamports,
            data: account.data,
        }))
    }

    async fn minimum_balance_for_rent_exemption(
        &self,
        data_len: usize,
    ) -> Result<u64, SvmChainError> {
        self.client
            .get_minimum_balance_for_rent_exemption(data_len)
            .await
            .map_err(self.err("getMinimumBalanceForRentExemption"))
    }

    async fn recent_prioritization_fees(
        &self,
        accounts: &[Address],
    ) -> Result<Vec<u64>, SvmChainError> {
        Ok(self
            .client
            .get_recent_prioritization_fees(accounts)
            .await
            .map_err(self.err("getRecentPrioritizationFees"))?
            .into_iter()
            .map(|f| f.prioritization_fee)
            .collect())
    }
}
