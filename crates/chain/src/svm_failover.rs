//! [`FailoverSvmChain`]: one Solana cluster over several JSON-RPC endpoints, as
//! [`crate::FailoverEvmChain`] for EVM: calls go to the current endpoint and move to the next on
//! a transport failure, timeout or unhealthy node ([`SvmChainError::is_unavailable`]), which
//! becomes current.
//! Sending the same signed transaction through several endpoints is safe (one signature).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use solana_address::Address;
use solana_hash::Hash;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;

use crate::svm::{SvmAccount, SvmChain, SvmChainError, SvmSimulation, SvmTxStatus};
use crate::svm_rpc::RpcSvmChain;

/// An [`SvmChain`] over several endpoints of one cluster (see the module docs).
pub struct FailoverSvmChain {
    endpoints: Vec<RpcSvmChain>,
    current: AtomicUsize,
    call_observer: Option<crate::evm_failover::CallObserver>,
}

/// The JSON-RPC method behind an [`SvmChain`] method.
pub fn svm_rpc_method(chain_method: &str) -> &'static str {
    match chain_method {
        "simulate" => "simulateTransaction",
        "send" => "sendTransaction",
        "signature_status" => "getSignatureStatuses",
        "is_blockhash_valid" => "isBlockhashValid",
        "account" => "getAccountInfo",
        "minimum_balance_for_rent_exemption" => "getMinimumBalanceForRentExemption",
        "recent_prioritization_fees" => "getRecentPrioritizationFees",
        _ => "other",
    }
}

impl FailoverSvmChain {
    /// Endpoints `urls` (in order of preference; at least one), each call giving up after
    /// `timeout`. Errors: no URL.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("no RPC URL".into());
        }
        Ok(FailoverSvmChain {
            endpoints: urls
                .iter()
                .enumerate()
                .map(|(i, u)| RpcSvmChain::new(u.clone(), timeout).at_index(i))
                .collect(),
            current: AtomicUsize::new(0),
            call_observer: None,
        })
    }

    /// Reports every call to an endpoint: JSON-RPC method, duration, whether an answer came.
    pub fn with_call_observer(mut self, observer: crate::evm_failover::CallObserver) -> Self {
        self.call_observer = Some(observer);
        self
    }

    /// Index of the endpoint calls go to now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }
}

/// Runs `$call` (an expression over `$c: &RpcSvmChain`) on the current endpoint, then on the
/// next ones while they give no answer.
macro_rules! failover {
    ($self:ident, |$c:ident| $recv:ident . $method:ident ( $($arg:expr),* )) => {{
        let n = $self.endpoints.len();
        let start = $self.current.load(Ordering::Relaxed) % n;
        // `new` refuses an empty list: the loop runs at least once and overwrites this.
        let mut result = Err(SvmChainError::Rejected("no RPC endpoint".into()));
        for k in 0..n {
            let i = (start + k) % n;
            let $c = &$self.endpoints[i];
            let started = std::time::Instant::now();
            result = $recv.$method($($arg),*).await;
            if let Some(observer) = &$self.call_observer {
                let answered = !result.as_ref().is_err_and(SvmChainError::is_unavailable);
                observer(svm_rpc_method(stringify!($method)), started.elapsed(), answered);
            }
            if result.as_ref().is_err_and(SvmChainError::is_unavailable) {
                continue;
            }
            if i != start {
                tracing::warn!(from = start, to = i, "Solana RPC failover");
                let _ =
                    $self
                        .current
                        .compare_exchange(start, i, Ordering::Relaxed, Ordering::Relaxed);
            }
            break;
        }
        result
    }};
}

#[async_trait]
impl SvmChain for FailoverSvmChain {
    async fn simulate(&self, tx: &VersionedTransaction) -> Result<SvmSimulation, SvmChainError> {
        failover!(self, |c| c.simulate(tx))
    }

    async fn send(&self, tx: &VersionedTransaction) -> Result<Signature, SvmChainError> {
        failover!(self, |c| c.send(tx))
    }

    async fn signature_status(
        &self,
        sig: &Signature,
    ) -> Result<Option<SvmTxStatus>, SvmChainError> {
        failover!(self, |c| c.signature_status(sig))
    }

    async fn is_blockhash_valid(&self, blockhash: &Hash) -> Result<bool, SvmChainError> {
        failover!(self, |c| c.is_blockhash_valid(blockhash))
    }

    async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError> {
        failover!(self, |c| c.account(address))
    }

    async fn minimum_balance_for_rent_exemption(
        &self,
        data_len: usize,
    ) -> Result<u64, SvmChainError> {
        failover!(self, |c| c.minimum_balance_for_rent_exemption(data_len))
    }

    async fn recent_prioritization_fees(
        &self,
        accounts: &[Address],
    ) -> Result<Vec<u64>, SvmChainError> {
        failover!(self, |c| c.recent_prioritization_fees(accounts))
    }
}
