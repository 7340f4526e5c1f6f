//! [`EvmChain`] over an alloy HTTP provider with local private-key signers.

use alloy::eips::eip2718::Encodable2718;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{
    FeeHistory, Filter, Log, Transaction, TransactionReceipt, TransactionRequest,
};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use async_trait::async_trait;

use crate::endpoint::{Endpoint, FailureLog, Unreachable, redacted_detail, scrub};
use crate::evm::{BlockHashes, ChainError, EvmChain, SignedTx};

/// Production [`EvmChain`]: JSON-RPC over HTTP(S) with alloy; signs locally.
pub struct AlloyEvmChain {
    chain_id: u64,
    provider: DynProvider,
    wallet: EthereumWallet,
    signers: Vec<Address>,
    /// How errors name this endpoint.
    endpoint: Endpoint,
    /// The full URL, only to cut it out of logged error details.
    url: String,
    /// Where failed calls are logged.
    failures: FailureLog,
}

/// Gas limit headroom over `eth_estimateGas`, in percent (unused gas is not charged).
pub const GAS_LIMIT_HEADROOM_PERCENT: u64 = 20;

impl AlloyEvmChain {
    /// Connects to `rpc_url` for chain `chain_id` with the given signing keys; every JSON-RPC
    /// call gives up after `timeout` ([`ChainError::Unavailable`]), so a node that accepts the
    /// connection and never answers cannot hang a request.
    ///
    /// Its errors name it `endpoint 0` ([`AlloyEvmChain::at_index`] for another index).
    ///
    /// Errors: a malformed URL (the message does not repeat it: it may hold an API key). The
    /// chain id is not checked here; see [`AlloyEvmChain::check_chain_id`].
    pub fn new(
        rpc_url: &str,
        chain_id: u64,
        keys: Vec<PrivateKeySigner>,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        let url = rpc_url
            .parse()
            .map_err(|e| format!("invalid RPC URL: {e}"))?;
        let http = alloy::transports::http::reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let client = alloy::rpc::client::RpcClient::new_http_with_client(http, url);
        let signers = keys.iter().map(|k| k.address()).collect();
        let mut wallet = EthereumWallet::default();
        for key in keys {
            wallet.register_signer(key);
        }
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_client(client)
            .erased();
        Ok(AlloyEvmChain {
            chain_id,
            provider,
            wallet,
            signers,
            endpoint: Endpoint::new(0, rpc_url),
            url: rpc_url.to_string(),
            failures: FailureLog::default(),
        })
    }

    /// The same chain, its errors naming it the `index`-th endpoint of its network.
    pub fn at_index(mut self, index: usize) -> Self {
        self.endpoint.index = index;
        self
    }

    /// How this chain's errors name its endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Asks the node for its chain id and compares it with the configured one. Errors: another
    /// chain id (starts with `RPC reports chain id`), or the call's [`ChainError`] text.
    pub async fn check_chain_id(&self) -> Result<(), String> {
        let got = self
            .provider
            .get_chain_id()
            .await
            .map_err(|e| self.classify("eth_chainId", e).to_string())?;
        if got != self.chain_id {
            return Err(format!(
                "RPC reports chain id {got}, configured {}",
                self.chain_id
            ));
        }
        Ok(())
    }
}

impl AlloyEvmChain {
    /// The one classification of a failed call `method` to this endpoint: a JSON-RPC error
    /// answer by [`ChainError::from_rpc_error`]; a transport failure by its kind only, its
    /// detail (URL cut out) logged here and nowhere else.
    fn classify(&self, method: &'static str, e: RpcError<TransportErrorKind>) -> ChainError {
        let endpoint = self.endpoint.clone();
        let (kind, detail) = match e {
            RpcError::ErrorResp(payload) => {
                let data = payload.as_revert_data();
                let classified =
                    ChainError::from_rpc_error(payload.code, &payload.message, data, &endpoint);
                if classified.is_unavailable() {
                    let detail = format!("{}: {}", payload.code, payload.message);
                    self.failures.failed(
                        &endpoint,
                        method,
                        "rate limited",
                        &scrub(&detail, &self.url),
                    );
                }
                return classified;
            }
            RpcError::Transport(TransportErrorKind::Custom(boxed)) => {
                match boxed.downcast::<alloy::transports::http::reqwest::Error>() {
                    Ok(reqwest) => {
                        let reqwest = reqwest.without_url();
                        let kind = if reqwest.is_timeout() {
                            None
                        } else if reqwest.is_connect() {
                            Some(Unreachable::Connect)
                        } else if let Some(status) = reqwest.status() {
                            Some(Unreachable::HttpStatus(status.as_u16()))
                        } else if reqwest.is_decode() || reqwest.is_body() {
                            Some(Unreachable::BadAnswer)
                        } else {
                            Some(Unreachable::Transport)
                        };
                        (kind, redacted_detail(&reqwest, &self.url))
                    }
                    Err(other) => (
                        Some(Unreachable::Transport),
                        redacted_detail(other.as_ref(), &self.url),
                    ),
                }
            }
            RpcError::Transport(kind) => {
                let unreachable = match kind.as_http_error() {
                    Some(http) if http.status == 429 => Unreachable::RateLimited,
                    Some(http) => Unreachable::HttpStatus(http.status),
                    None => Unreachable::Transport,
                };
                (Some(unreachable), redacted_detail(&kind, &self.url))
            }
            RpcError::NullResp | RpcError::DeserError { .. } => (
                Some(Unreachable::BadAnswer),
                scrub(&e.to_string(), &self.url),
            ),
            other => (
                Some(Unreachable::Transport),
                scrub(&other.to_string(), &self.url),
            ),
        };
        // The detail may be long (an HTTP error page): its start is enough.
        let detail: String = detail.chars().take(500).collect();
        match kind {
            None => {
                self.failures.failed(&endpoint, method, "timeout", &detail);
                ChainError::Timeout { endpoint }
            }
            Some(kind) => {
                self.failures
                    .failed(&endpoint, method, &kind.to_string(), &detail);
                ChainError::Unavailable { endpoint, kind }
            }
        }
    }

    /// [`AlloyEvmChain::classify`] for `method`, as a `map_err` argument.
    fn err(&self, method: &'static str) -> impl Fn(RpcError<TransportErrorKind>) -> ChainError {
        move |e| self.classify(method, e)
    }
}

#[async_trait]
impl EvmChain for AlloyEvmChain {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn signers(&self) -> &[Address] {
        &self.signers
    }

    // Both at `latest`, named explicitly: alloy's default block for `eth_call` and
    // `eth_estimateGas` is `pending`, which a node may answer by executing its whole pool first
    // (anvil does, per call: under a burst of settlements that was most of its CPU). The
    // reference SDK (viem) simulates at `latest` too.
    async fn call(&self, tx: &TransactionRequest) -> Result<Bytes, ChainError> {
        self.provider
            .call(tx.clone())
            .block(BlockId::latest())
            .await
            .map_err(self.err("eth_call"))
    }

    async fn estimate_gas(&self, tx: &TransactionRequest) -> Result<u64, ChainError> {
        self.provider
            .estimate_gas(tx.clone())
            .block(BlockId::latest())
            .await
            .map_err(self.err("eth_estimateGas"))
    }

    async fn fee_history(
        &self,
        block_count: u64,
        reward_percentiles: &[f64],
    ) -> Result<FeeHistory, ChainError> {
        self.provider
            .get_fee_history(block_count, BlockNumberOrTag::Latest, reward_percentiles)
            .await
            .map_err(self.err("eth_feeHistory"))
    }

    async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        self.provider
            .get_code_at(address)
            .await
            .map_err(self.err("eth_getCode"))
    }

    async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        self.provider
            .get_transaction_count(address)
            .pending()
            .await
            .map_err(self.err("eth_getTransactionCount"))
    }

    async fn balance(&self, address: Address) -> Result<alloy::primitives::U256, ChainError> {
        self.provider
            .get_balance(address)
            .await
            .map_err(self.err("eth_getBalance"))
    }

    async fn sign(&self, tx: TransactionRequest) -> Result<SignedTx, ChainError> {
        let from = tx.from.ok_or(ChainError::UnknownSigner(Address::ZERO))?;
        if !self.signers.contains(&from) {
            return Err(ChainError::UnknownSigner(from));
        }
        let nonce = tx
            .nonce
            .ok_or_else(|| ChainError::Rejected("nonce not set".into()))?;
        let mut tx = tx.with_chain_id(self.chain_id);
        if tx.gas.is_none() {
            let gas = self
                .provider
                .estimate_gas(tx.clone())
                .await
                .map_err(self.err("eth_estimateGas"))?;
            tx = tx.with_gas_limit(gas + gas * GAS_LIMIT_HEADROOM_PERCENT / 100);
        }
        if tx.max_fee_per_gas.is_none() || tx.max_priority_fee_per_gas.is_none() {
            let fees = self
                .provider
                .estimate_eip1559_fees()
                .await
                .map_err(self.err("eth_feeHistory"))?;
            tx = tx
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        }
        let env = tx
            .build(&self.wallet)
            .await
            .map_err(|e| ChainError::Rejected(format!("signing failed: {e}")))?;
        Ok(SignedTx {
            hash: *env.tx_hash(),
            raw: env.encoded_2718().into(),
            nonce,
        })
    }

    async fn send_raw(&self, raw: &Bytes) -> Result<B256, ChainError> {
        self.provider
            .send_raw_transaction(raw)
            .await
            .map(|pending| *pending.tx_hash())
            .map_err(self.err("eth_sendRawTransaction"))
    }

    async fn transaction_known(&self, hash: B256) -> Result<bool, ChainError> {
        self.provider
            .get_transaction_by_hash(hash)
            .await
            .map(|tx| tx.is_some())
            .map_err(self.err("eth_getTransactionByHash"))
    }

    async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        self.provider
            .get_transaction_receipt(hash)
            .await
            .map_err(self.err("eth_getTransactionReceipt"))
    }

    async fn mined_nonce(&self, address: Address) -> Result<u64, ChainError> {
        self.provider
            .get_transaction_count(address)
            .latest()
            .await
            .map_err(self.err("eth_getTransactionCount"))
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        self.provider
            .get_block_number()
            .await
            .map_err(self.err("eth_blockNumber"))
    }

    async fn block_hashes(&self, number: u64) -> Result<Option<BlockHashes>, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(self.err("eth_getBlockByNumber"))?;
        Ok(block.map(|b| BlockHashes {
            hash: b.header.hash,
            parent: b.header.parent_hash,
        }))
    }

    async fn block_receipts(
        &self,
        number: u64,
    ) -> Result<Option<Vec<TransactionReceipt>>, ChainError> {
        self.provider
            .get_block_receipts(BlockNumberOrTag::Number(number).into())
            .await
            .map_err(self.err("eth_getBlockReceipts"))
    }

    async fn logs(&self, filter: &Filter) -> Result<Vec<Log>, ChainError> {
        self.provider
            .get_logs(filter)
            .await
            .map_err(self.err("eth_getLogs"))
    }

    async fn transaction(&self, hash: B256) -> Result<Option<Transaction>, ChainError> {
        self.provider
            .get_transaction_by_hash(hash)
            .await
            .map_err(self.err("eth_getTransactionByHash"))
    }
}
