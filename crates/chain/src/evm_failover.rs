//! [`FailoverEvmChain`]: one EVM chain over several JSON-RPC endpoints. Reads and broadcasts go
//! to the current endpoint; on a transport failure, timeout or rate limit
//! ([`ChainError::is_unavailable`]) the call moves to the next endpoint and that one becomes
//! current. Broadcasting the same signed transaction to several endpoints is safe (same hash; a
//! node that has it answers [`ChainError::AlreadyKnown`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{
    FeeHistory, Filter, Log, Transaction, TransactionReceipt, TransactionRequest,
};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;

use crate::evm::{BlockHashes, ChainError, EvmChain, SignedTx};
use crate::evm_alloy::AlloyEvmChain;

/// Called on every move to another endpoint with the indexes `(from, to)`.
pub type FailoverObserver = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// Called after every call to one endpoint with the JSON-RPC method ([`rpc_method`]), its
/// duration, and whether an answer came (false: transport failure or timeout).
pub type CallObserver = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// The JSON-RPC method behind an [`EvmChain`] method (`sign` fills in fees and gas, then signs
/// locally: several calls, timed as one).
pub fn rpc_method(chain_method: &str) -> &'static str {
    match chain_method {
        "call" => "eth_call",
        "estimate_gas" => "eth_estimateGas",
        "fee_history" => "eth_feeHistory",
        "code_at" => "eth_getCode",
        "pending_nonce" => "eth_getTransactionCount",
        "balance" => "eth_getBalance",
        "send_raw" => "eth_sendRawTransaction",
        "transaction_known" => "eth_getTransactionByHash",
        "receipt" => "eth_getTransactionReceipt",
        "mined_nonce" => "eth_getTransactionCount",
        "block_number" => "eth_blockNumber",
        "block_receipts" => "eth_getBlockReceipts",
        "block_hashes" => "eth_getBlockByNumber",
        "logs" => "eth_getLogs",
        "transaction" => "eth_getTransactionByHash",
        "sign" => "sign",
        _ => "other",
    }
}

struct Endpoint {
    /// The URL without credentials or path (safe to show in `/health`).
    label: String,
    chain: AlloyEvmChain,
    healthy: AtomicBool,
}

/// The health of one endpoint, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointHealth {
    /// `scheme://host:port` of the endpoint (no path, no credentials).
    pub endpoint: String,
    /// False after its last call failed to get an answer.
    pub healthy: bool,
    /// Whether calls go to it now.
    pub current: bool,
}

/// An [`EvmChain`] over several endpoints of one chain (see the module docs).
pub struct FailoverEvmChain {
    endpoints: Vec<Endpoint>,
    current: AtomicUsize,
    failovers: AtomicU64,
    chain_id: u64,
    signers: Vec<Address>,
    observer: Option<FailoverObserver>,
    call_observer: Option<CallObserver>,
}

impl FailoverEvmChain {
    /// Endpoints `urls` (in order of preference, at least one) for chain `chain_id`, signing
    /// with `keys`; every call to one endpoint gives up after `timeout`.
    ///
    /// Errors: no URL, or a malformed one (named by its index in `urls`, not repeated: it may
    /// hold an API key).
    pub fn new(
        urls: &[String],
        chain_id: u64,
        keys: Vec<PrivateKeySigner>,
        timeout: Duration,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("no RPC URL".into());
        }
        let signers = keys.iter().map(|k| k.address()).collect();
        let endpoints = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let chain = AlloyEvmChain::new(url, chain_id, keys.clone(), timeout)
                    .map_err(|e| format!("rpc_urls[{i}]: {e}"))?
                    .at_index(i);
                Ok(Endpoint {
                    label: chain.endpoint().label.clone(),
                    chain,
                    healthy: AtomicBool::new(true),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(FailoverEvmChain {
            endpoints,
            current: AtomicUsize::new(0),
            failovers: AtomicU64::new(0),
            chain_id,
            signers,
            observer: None,
            call_observer: None,
        })
    }

    /// Reports every move to another endpoint (metrics).
    pub fn with_failover_observer(mut self, observer: FailoverObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Reports every call to an endpoint (latency metrics by method).
    pub fn with_call_observer(mut self, observer: CallObserver) -> Self {
        self.call_observer = Some(observer);
        self
    }

    /// Checks every endpoint's chain id: one that answers with another chain id is an error
    /// (a misconfiguration); one that does not answer is marked unhealthy; none answering is an
    /// error.
    pub async fn check_chain_id(&self) -> Result<(), String> {
        let mut answered = false;
        let mut last = String::new();
        for e in &self.endpoints {
            match e.chain.check_chain_id().await {
                Ok(()) => answered = true,
                Err(msg) if msg.starts_with("RPC reports chain id") => {
                    return Err(format!("{}: {msg}", e.label));
                }
                Err(msg) => {
                    e.healthy.store(false, Ordering::Relaxed);
                    last = format!("{}: {msg}", e.label);
                }
            }
        }
        if answered { Ok(()) } else { Err(last) }
    }

    /// Each endpoint's health.
    pub fn health(&self) -> Vec<EndpointHealth> {
        let current = self.current.load(Ordering::Relaxed);
        self.endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| EndpointHealth {
                endpoint: e.label.clone(),
                healthy: e.healthy.load(Ordering::Relaxed),
                current: i == current,
            })
            .collect()
    }

    /// Moves to another endpoint so far.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Records the outcome of a call to endpoint `i` that started at `start`; true when the
    /// caller should try the next endpoint.
    fn settle_outcome<T>(&self, i: usize, start: usize, r: &Result<T, ChainError>) -> bool {
        let e = &self.endpoints[i];
        if r.as_ref().is_err_and(ChainError::is_unavailable) {
            e.healthy.store(false, Ordering::Relaxed);
            return true;
        }
        e.healthy.store(true, Ordering::Relaxed);
        if i != start
            && self
                .current
                .compare_exchange(start, i, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %self.endpoints[start].label, to = %e.label, "RPC failover");
            if let Some(observer) = &self.observer {
                observer(start, i);
            }
        }
        false
    }
}

/// Runs `$call` (an expression over `$c: &AlloyEvmChain`) on the current endpoint, then on the
/// next ones while they give no answer.
macro_rules! failover {
    ($self:ident, |$c:ident| $recv:ident . $method:ident ( $($arg:expr),* )) => {{
        let n = $self.endpoints.len();
        let start = $self.current.load(Ordering::Relaxed) % n;
        // `new` refuses an empty list: the loop runs at least once and overwrites this.
        let mut result = Err(ChainError::Unsupported("no RPC endpoint"));
        for k in 0..n {
            let i = (start + k) % n;
            let $c = &$self.endpoints[i].chain;
            let started = std::time::Instant::now();
            result = $recv.$method($($arg),*).await;
            if let Some(observer) = &$self.call_observer {
                let answered = !result.as_ref().is_err_and(ChainError::is_unavailable);
                observer(rpc_method(stringify!($method)), started.elapsed(), answered);
            }
            if !$self.settle_outcome(i, start, &result) {
                break;
            }
        }
        result
    }};
}

#[async_trait]
impl EvmChain for FailoverEvmChain {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn signers(&self) -> &[Address] {
        &self.signers
    }

    async fn call(&self, tx: &TransactionRequest) -> Result<Bytes, ChainError> {
        failover!(self, |c| c.call(tx))
    }

    async fn estimate_gas(&self, tx: &TransactionRequest) -> Result<u64, ChainError> {
        failover!(self, |c| c.estimate_gas(tx))
    }

    async fn fee_history(
        &self,
        block_count: u64,
        reward_percentiles: &[f64],
    ) -> Result<FeeHistory, ChainError> {
        failover!(self, |c| c.fee_history(block_count, reward_percentiles))
    }

    async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        failover!(self, |c| c.code_at(address))
    }

    async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        failover!(self, |c| c.pending_nonce(address))
    }

    async fn balance(&self, address: Address) -> Result<U256, ChainError> {
        failover!(self, |c| c.balance(address))
    }

    async fn sign(&self, tx: TransactionRequest) -> Result<SignedTx, ChainError> {
        failover!(self, |c| c.sign(tx.clone()))
    }

    async fn send_raw(&self, raw: &Bytes) -> Result<B256, ChainError> {
        failover!(self, |c| c.send_raw(raw))
    }

    async fn transaction_known(&self, hash: B256) -> Result<bool, ChainError> {
        failover!(self, |c| c.transaction_known(hash))
    }

    async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        failover!(self, |c| c.receipt(hash))
    }

    async fn mined_nonce(&self, address: Address) -> Result<u64, ChainError> {
        failover!(self, |c| c.mined_nonce(address))
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        failover!(self, |c| c.block_number())
    }

    async fn block_hashes(&self, number: u64) -> Result<Option<BlockHashes>, ChainError> {
        failover!(self, |c| c.block_hashes(number))
    }

    async fn block_receipts(
        &self,
        number: u64,
    ) -> Result<Option<Vec<TransactionReceipt>>, ChainError> {
        failover!(self, |c| c.block_receipts(number))
    }

    async fn logs(&self, filter: &Filter) -> Result<Vec<Log>, ChainError> {
        failover!(self, |c| c.logs(filter))
    }

    async fn transaction(&self, hash: B256) -> Result<Option<Transaction>, ChainError> {
        failover!(self, |c| c.transaction(hash))
    }
}
