//! The handler registry: built once from config, it maps `(scheme, network)` to the scheme's
//! verifier and settler and answers `/supported`. Routes do no dispatching of their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use x402_chain::AlloyEvmChain;
use x402_proto::{
    Network, PaymentRequest, Reason, SettleResponse, SupportedKind, SupportedResponse,
    VerifyResponse,
};
use x402_settle::SettleError;
use x402_settle::evm::{EvmSettleTiming, EvmSettler};
use x402_settle::replay::{MemoryStore, RedisStore, ReplayStore};
use x402_verify::evm::ExactEvmVerifier;
use x402_verify::{Verdict, VerifyError};

use crate::config::Config;
use crate::metrics::Metrics;

/// One configured EVM network.
struct EvmHandler {
    verifier: Arc<ExactEvmVerifier>,
    settler: EvmSettler,
}

/// Everything the routes need.
pub struct Facilitator {
    evm: HashMap<Network, EvmHandler>,
    store: Arc<dyn ReplayStore>,
    supported: SupportedResponse,
}

/// Why the facilitator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration (names the key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Redis configured but not reachable.
    #[error("redis.url: cannot reach Redis: {0}")]
    Redis(String),
    /// An RPC endpoint is unreachable or serves another chain.
    #[error("evm chain {chain_id}: {message}")]
    Rpc {
        /// Chain id of the network.
        chain_id: u64,
        /// What failed.
        message: String,
    },
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Facilitator {
    /// Connects the replay store and every network, checking each RPC's chain id.
    /// Mined settlements report their gas to `metrics`.
    pub async fn from_config(config: &Config, metrics: &Metrics) -> Result<Self, StartError> {
        let networks = config.validate()?;
        let (store, prefix): (Arc<dyn ReplayStore>, String) = match &config.redis {
            Some(r) => (
                Arc::new(
                    RedisStore::connect(&r.url)
                        .await
                        .map_err(|e| StartError::Redis(e.to_string()))?,
                ),
                r.key_prefix.clone(),
            ),
            None => {
                tracing::warn!(
                    "no Redis URL configured: in-memory replay store, safe for ONE process only"
                );
                (Arc::new(MemoryStore::new()), "x402".to_string())
            }
        };
        let timing = EvmSettleTiming {
            receipt_timeout: Duration::from_secs(config.settle.receipt_timeout_seconds),
            poll_interval: Duration::from_millis(config.settle.poll_interval_ms),
            ..EvmSettleTiming::default()
        };
        let mut evm = HashMap::new();
        let mut kinds = Vec::new();
        let mut signers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for net in networks {
            let rpc_err = |message: String| StartError::Rpc {
                chain_id: net.chain_id,
                message,
            };
            let chain = AlloyEvmChain::new(&net.rpc_url, net.chain_id, net.signers.clone())
                .map_err(rpc_err)?;
            chain.check_chain_id().await.map_err(rpc_err)?;
            let network = Network::evm(net.chain_id);
            let verifier = Arc::new(ExactEvmVerifier::new(
                Arc::new(chain),
                net.assets.iter().map(|(a, _)| *a).collect(),
            ));
            let settler = EvmSettler::new(
                verifier.clone(),
                store.clone(),
                prefix.clone(),
                timing.clone(),
            )
            .with_gas_observer(gas_metrics(metrics, &network));
            if let Some(v1) = network.v1_name() {
                kinds.push(SupportedKind {
                    x402_version: 1,
                    scheme: "exact".into(),
                    network: v1.into(),
                    extra: None,
                });
            }
            kinds.push(SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: network.to_string(),
                extra: None,
            });
            let list = signers.entry(network.wildcard()).or_default();
            for s in &net.signers {
                let a = s.address().to_checksum(None);
                if !list.contains(&a) {
                    list.push(a);
                }
            }
            evm.insert(network, EvmHandler { verifier, settler });
        }
        Ok(Facilitator {
            evm,
            store,
            supported: SupportedResponse {
                kinds,
                extensions: vec![],
                signers,
            },
        })
    }

    /// `GET /supported`.
    pub fn supported(&self) -> &SupportedResponse {
        &self.supported
    }

    /// The replay store (for `/health`).
    pub fn store(&self) -> &Arc<dyn ReplayStore> {
        &self.store
    }

    fn handler(&self, req: &PaymentRequest) -> Result<&EvmHandler, Reason> {
        let network = req.network().ok_or(Reason::InvalidNetwork)?;
        let handler = self.evm.get(&network).ok_or(Reason::InvalidNetwork)?;
        if req.scheme() != "exact" {
            return Err(Reason::UnsupportedScheme);
        }
        Ok(handler)
    }

    /// `POST /verify`.
    pub async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        let handler = match self.handler(req) {
            Ok(h) => h,
            Err(reason) => return Ok(unsupported_verify(req, reason)),
        };
        Ok(
            match handler.verifier.verify(req, unix_now(), true).await? {
                Verdict::Valid(p) => VerifyResponse::valid(p.payer_string()),
                Verdict::Invalid(inv) => {
                    VerifyResponse::invalid(inv.reason, inv.message, inv.payer)
                }
            },
        )
    }

    /// `POST /settle`.
    pub async fn settle(&self, req: &PaymentRequest) -> Result<SettleResponse, SettleError> {
        match self.handler(req) {
            Ok(h) => h.settler.settle(req, unix_now()).await,
            Err(reason) => Ok(SettleResponse::failed(
                reason,
                Some(unsupported_message(req, reason)),
                String::new(),
                req.network_wire().to_string(),
                None,
            )),
        }
    }
}

/// Counts the gas of mined settlements on `network`.
fn gas_metrics(metrics: &Metrics, network: &Network) -> x402_settle::evm::GasObserver {
    let used = metrics
        .gas_used_total
        .with_label_values(&[network.as_str()]);
    let fee = metrics
        .gas_fee_wei_total
        .with_label_values(&[network.as_str()]);
    Arc::new(move |gas| {
        used.inc_by(gas.gas_used);
        fee.inc_by(gas.fee_wei as f64);
    })
}

fn unsupported_message(req: &PaymentRequest, reason: Reason) -> String {
    match reason {
        Reason::UnsupportedScheme => format!(
            "scheme {:?} is not supported on {}",
            req.scheme(),
            req.network_wire()
        ),
        _ => format!("network {:?} is not configured", req.network_wire()),
    }
}

fn unsupported_verify(req: &PaymentRequest, reason: Reason) -> VerifyResponse {
    VerifyResponse::invalid(reason, Some(unsupported_message(req, reason)), None)
}
