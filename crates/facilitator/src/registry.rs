//! The handler registry: built once from config, it maps `(scheme, network)` to the scheme's
//! verifier and settler and answers `/supported`. Routes do no dispatching of their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use x402_chain::FailoverEvmChain;
use x402_proto::{
    Network, PaymentRequest, Reason, SettleResponse, SupportedKind, SupportedResponse,
    VerifyResponse,
};
use x402_settle::SettleError;
use x402_settle::evm::{EvmFamily, EvmSettler};
use x402_settle::nonces::{MemoryNonceStore, NonceStore, RedisNonceStore};
use x402_settle::outbox::Notify;
use x402_settle::reconciler::{Reconcile, Reconciler};
use x402_settle::replay::{MemoryStore, RedisStore, ReplayStore};
use x402_settle::status::SettlementStatus;
use x402_verify::evm::ExactEvmVerifier;
use x402_verify::{Verdict, VerifyError};

use alloy::primitives::Address;
use x402_chain::EvmChain;
use x402_gas_oracle::{Quote, QuoteCache, QuoteRefresher, QuoteUnavailable};
use x402_proto::ParseError;

use crate::config::{Config, EvmAssetConfig};
use crate::gas;
use crate::metrics::Metrics;
use crate::requirements::{self, RequirementsRequest, RequirementsResponse};
use crate::svm::{self as svm_part, SvmHandler};

/// One configured EVM network.
struct EvmHandler {
    verifier: Arc<ExactEvmVerifier>,
    settler: Arc<EvmSettler>,
    rpc: Arc<FailoverEvmChain>,
    assets: Vec<(Address, EvmAssetConfig)>,
}

/// The handler of a payment's network.
enum Handler<'a> {
    Evm(&'a EvmHandler),
    Svm(&'a SvmHandler),
}

/// Everything the routes need.
pub struct Facilitator {
    evm: HashMap<Network, EvmHandler>,
    svm: HashMap<Network, SvmHandler>,
    store: Arc<dyn ReplayStore>,
    supported: SupportedResponse,
    quotes: Arc<QuoteCache>,
    _refresher: Option<QuoteRefresher>,
    _reconciler: Reconciler,
}

/// Why `/quote` or `/requirements` has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QuoteLookupError {
    /// A request field is wrong (HTTP 400 naming it).
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// No fresh quote (HTTP 503): not configured, not computed yet, or expired.
    #[error(transparent)]
    Unavailable(#[from] QuoteUnavailable),
    /// A chain read the answer needs failed, or pricing is not configured (HTTP 503).
    #[error("{0}")]
    Chain(String),
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
    /// A Solana RPC read needed at start failed, or a mint is not an SPL mint.
    #[error("svm network {network}: {message}")]
    SvmRpc {
        /// CAIP-2 network.
        network: String,
        /// What failed.
        message: String,
    },
    /// An RPC endpoint is unreachable or serves another chain.
    #[error("evm chain {chain_id}: {message}")]
    Rpc {
        /// Chain id of the network.
        chain_id: u64,
        /// What failed.
        message: String,
    },
}

/// Current Unix time in seconds (the settlement records' clock).
pub use x402_settle::clock::unix_now;

impl Facilitator {
    /// Connects the replay store and every network, checking each RPC's chain id.
    /// Mined settlements report their gas to `metrics`.
    pub async fn from_config(config: &Config, metrics: &Metrics) -> Result<Self, StartError> {
        Self::from_config_notifying(config, metrics, Notify::default()).await
    }

    /// [`Facilitator::from_config`] whose settlement engines write a webhook event into the
    /// outbox with each final state of a payment settled by one of `notify`'s API keys.
    /// The replay store reports its Redis calls to `x402_redis_call_duration_seconds`.
    pub async fn from_config_notifying(
        config: &Config,
        metrics: &Metrics,
        notify: Notify,
    ) -> Result<Self, StartError> {
        let networks = config.validate()?;
        let svm_networks = config.validate_svm()?;
        let redis_timeout = Duration::from_millis(config.settle.redis_timeout_ms);
        let redis_err = |e: x402_settle::replay::StoreError| StartError::Redis(e.to_string());
        #[allow(clippy::type_complexity)]
        let (store, nonces, prefix): (Arc<dyn ReplayStore>, Arc<dyn NonceStore>, String) =
            match &config.redis {
                Some(r) => (
                    Arc::new(
                        RedisStore::connect(&r.url, &r.key_prefix, redis_timeout)
                            .await
                            .map_err(redis_err)?
                            .with_call_observer(redis_call_metrics(metrics)),
                    ),
                    Arc::new(
                        RedisNonceStore::connect(&r.url, &r.key_prefix, redis_timeout)
                            .await
                            .map_err(redis_err)?,
                    ),
                    r.key_prefix.clone(),
                ),
                None => {
                    tracing::warn!(
                        "no Redis URL configured: in-memory replay store, safe for ONE process only"
                    );
                    (
                        Arc::new(MemoryStore::new()),
                        Arc::new(MemoryNonceStore::new()),
                        "x402".to_string(),
                    )
                }
            };
        let timing = config.settle.timing();
        let events = metrics.engine.events();
        let mut engines: Vec<Arc<dyn Reconcile>> = Vec::new();
        let quotes = Arc::new(QuoteCache::new(Duration::from_secs(
            config.quotes.max_age_seconds,
        )));
        let mut quoters = Vec::new();
        let mut evm = HashMap::new();
        let mut kinds = Vec::new();
        let mut signers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (index, net) in networks.into_iter().enumerate() {
            let rpc_err = |message: String| StartError::Rpc {
                chain_id: net.chain_id,
                message,
            };
            let network = Network::evm(net.chain_id);
            let failovers = metrics
                .engine
                .rpc_failovers
                .with_label_values(&[network.as_str()]);
            let rpc = FailoverEvmChain::new(
                &net.rpc_urls,
                net.chain_id,
                net.signers.clone(),
                Duration::from_secs(config.settle.rpc_timeout_seconds),
            )
            .map_err(rpc_err)?
            .with_failover_observer(Arc::new(move |_, _| failovers.inc()))
            .with_call_observer(rpc_call_metrics(metrics, network.as_str()));
            rpc.check_chain_id().await.map_err(rpc_err)?;
            let rpc = Arc::new(rpc);
            let chain: Arc<dyn EvmChain> = rpc.clone();
            let verifier = Arc::new(ExactEvmVerifier::new(
                chain.clone(),
                net.assets.iter().map(|(a, _)| *a).collect(),
            ));
            let mut family = EvmFamily::new(
                verifier.clone(),
                store.clone(),
                nonces.clone(),
                prefix.clone(),
                Duration::from_secs(config.settle.signer_wait_seconds),
                config.settle.max_in_flight_per_signer,
            )
            .with_receipt_poll(timing.poll_interval)
            .with_gap_fill_after(Duration::from_secs(config.settle.nonce_gap_fill_seconds))
            .with_nonce_lag_observer(nonce_lag_metrics(metrics, &network))
            .with_gas_observer(gas_metrics(metrics, &network))
            .with_signer_floor(
                alloy::primitives::U256::from(config.health.min_evm_signer_balance_wei),
                Duration::from_secs(10),
            );
            let net_quoters = gas::quoters(chain, &net, index).map_err(rpc_err)?;
            if !net_quoters.is_empty() {
                let assets = net
                    .assets
                    .iter()
                    .map(|(a, _)| a.to_checksum(None))
                    .collect();
                family = family.with_gas_pricer(gas::pricer(
                    quotes.clone(),
                    network.to_string(),
                    assets,
                ));
            }
            quoters.extend(net_quoters);
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
            let settler = Arc::new(
                x402_settle::evm::settler(family, store.clone(), timing.clone(), events.clone())
                    .with_notify(notify.clone()),
            );
            engines.push(settler.clone());
            let list = signers.entry(network.wildcard()).or_default();
            for s in &net.signers {
                let a = s.address().to_checksum(None);
                if !list.contains(&a) {
                    list.push(a);
                }
            }
            evm.insert(
                network,
                EvmHandler {
                    verifier,
                    settler,
                    rpc,
                    assets: net.assets,
                },
            );
        }
        let svm_settle = svm_part::SvmSettleParts {
            store: &store,
            prefix: &prefix,
            timing: &timing,
            record_ttl: Duration::from_secs(config.settle.svm_record_ttl_seconds),
            events: &events,
            notify: &notify,
            min_fee_payer_lamports: config.health.min_svm_fee_payer_lamports,
        };
        let svm =
            svm_part::build(svm_networks, &svm_settle, metrics, &quotes, &mut quoters).await?;
        kinds.extend(svm.kinds);
        for handler in svm.handlers.values() {
            engines.push(handler.settler.clone());
        }
        let reconciler = Reconciler::spawn(
            store.clone(),
            &prefix,
            engines,
            Duration::from_secs(config.settle.reconcile_interval_seconds),
            Duration::from_secs(config.settle.rpc_timeout_seconds * 4),
            events,
        );
        if !svm.signers.is_empty() {
            signers.insert("solana:*".into(), svm.signers);
        }
        let refresher = (!quoters.is_empty()).then(|| {
            QuoteRefresher::spawn(
                quotes.clone(),
                quoters,
                Duration::from_secs(config.quotes.refresh_seconds),
            )
        });
        Ok(Facilitator {
            evm,
            svm: svm.handlers,
            store,
            quotes,
            _refresher: refresher,
            _reconciler: reconciler,
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

    /// The cached gas quote of `asset` (default: the first configured) on `network` (CAIP-2 or
    /// v1 name). Memory only: never waits on a chain or price API.
    pub fn quote(&self, network: &str, asset: Option<&str>) -> Result<Quote, QuoteLookupError> {
        if let Some((net, handler)) = self.svm_handler(network) {
            return handler.quote(&self.quotes, &net, asset);
        }
        let (network, _, asset) = self.asset_of(network, asset)?;
        Ok(self
            .quotes
            .get(network.as_str(), &asset.0.to_checksum(None))?)
    }

    /// `POST /requirements`: requirements whose amount is the service price plus the cached gas
    /// quote, converted to the asset's units.
    pub async fn requirements(
        &self,
        req: &RequirementsRequest,
    ) -> Result<RequirementsResponse, QuoteLookupError> {
        if let Some((net, handler)) = self.svm_handler(&req.network) {
            return handler.requirements(&self.quotes, &net, req).await;
        }
        let (network, _, (address, asset)) = self.asset_of(&req.network, req.asset.as_deref())?;
        req.pay_to
            .parse::<Address>()
            .map_err(|_| ParseError::new("payTo", "not a 0x 20-byte address"))?;
        let service: u128 = req.price.parse().map_err(|_| {
            ParseError::new("price", "expected atomic units as a decimal integer string")
        })?;
        let quote = self
            .quotes
            .get(network.as_str(), &address.to_checksum(None))?;
        let gas = requirements::usdc_to_asset_units(quote.gas_usdc_atomic, asset.decimals);
        let amounts = requirements::Amounts { service, gas };
        let total = amounts
            .total()
            .ok_or_else(|| ParseError::new("price", "too large"))?;
        let address = address.to_checksum(None);
        let mut scheme_extra = serde_json::Map::new();
        scheme_extra.insert("name".into(), asset.name.clone().into());
        scheme_extra.insert("version".into(), asset.version.clone().into());
        let asset = requirements::Asset {
            address: &address,
            decimals: asset.decimals,
            scheme_extra,
        };
        Ok(requirements::build(req, &network, asset, amounts, total))
    }

    fn svm_handler(&self, network: &str) -> Option<(Network, &SvmHandler)> {
        let net = Network::parse(network)?;
        let handler = self.svm.get(&net)?;
        Some((net, handler))
    }

    fn asset_of(
        &self,
        network: &str,
        asset: Option<&str>,
    ) -> Result<(Network, &EvmHandler, &(Address, EvmAssetConfig)), ParseError> {
        let net = Network::parse(network)
            .ok_or_else(|| ParseError::new("network", format!("unknown network {network:?}")))?;
        let handler = self
            .evm
            .get(&net)
            .ok_or_else(|| ParseError::new("network", format!("{net} is not configured")))?;
        let found = match asset {
            None => handler.assets.first(),
            Some(a) => {
                let wanted: Address = a
                    .parse()
                    .map_err(|_| ParseError::new("asset", "not a 0x 20-byte address"))?;
                handler.assets.iter().find(|(addr, _)| *addr == wanted)
            }
        };
        let found =
            found.ok_or_else(|| ParseError::new("asset", format!("not settled on {net}")))?;
        Ok((net, handler, found))
    }

    fn handler(&self, req: &PaymentRequest) -> Result<Handler<'_>, Reason> {
        let network = req.network().ok_or(Reason::InvalidNetwork)?;
        let handler = match (self.evm.get(&network), self.svm.get(&network)) {
            (Some(h), _) => Handler::Evm(h),
            (None, Some(h)) => Handler::Svm(h),
            (None, None) => return Err(Reason::InvalidNetwork),
        };
        if req.scheme() != "exact" {
            return Err(Reason::UnsupportedScheme);
        }
        Ok(handler)
    }

    /// `POST /verify`.
    pub async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        let verdict = match self.handler(req) {
            Ok(Handler::Evm(h)) => h
                .verifier
                .verify(req, unix_now(), true)
                .await?
                .map(|p| p.payer_string()),
            Ok(Handler::Svm(h)) => h
                .verifier
                .verify(req, true)
                .await?
                .map(|p| p.payer_string()),
            Err(reason) => return Ok(unsupported_verify(req, reason)),
        };
        Ok(match verdict {
            Verdict::Valid(payer) => VerifyResponse::valid(payer),
            Verdict::Invalid(inv) => VerifyResponse::invalid(inv.reason, inv.message, inv.payer),
        })
    }

    /// Each EVM network's chain access (CAIP-2 network, its failover chain).
    pub fn evm_chains(&self) -> Vec<(String, Arc<FailoverEvmChain>)> {
        self.evm
            .iter()
            .map(|(net, h)| (net.to_string(), h.rpc.clone()))
            .collect()
    }

    /// `GET /settlements/{transaction}`: the settlement that signed `transaction`.
    pub async fn settlement_by_transaction(
        &self,
        transaction: &str,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        x402_settle::status::by_transaction(self.store.as_ref(), transaction).await
    }

    /// `POST /settlements/lookup`: the settlement of the payment in `req` under its
    /// requirements, acting on nothing.
    pub async fn settlement_of(
        &self,
        req: &PaymentRequest,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        match self.handler(req) {
            Ok(Handler::Evm(h)) => h.settler.status(req, unix_now()).await,
            Ok(Handler::Svm(h)) => h.settler.status(req, unix_now()).await,
            Err(_) => Ok(None),
        }
    }

    /// `POST /settle`.
    pub async fn settle(&self, req: &PaymentRequest) -> Result<SettleResponse, SettleError> {
        self.settle_as(req, None).await
    }

    /// `POST /settle` by the API key named `key` (recorded in the settlement record; its
    /// webhook, if any, gets the payment's final state).
    pub async fn settle_as(
        &self,
        req: &PaymentRequest,
        key: Option<&str>,
    ) -> Result<SettleResponse, SettleError> {
        match self.handler(req) {
            Ok(Handler::Evm(h)) => h.settler.settle_as(req, unix_now(), key).await,
            Ok(Handler::Svm(h)) => h.settler.settle_as(req, unix_now(), key).await,
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

/// Times the chain JSON-RPC calls of `network` by method.
pub(crate) fn rpc_call_metrics(metrics: &Metrics, network: &str) -> x402_chain::CallObserver {
    let duration = metrics.ops.rpc_call_duration.clone();
    let errors = metrics.ops.rpc_call_errors.clone();
    let network = network.to_string();
    Arc::new(move |method, elapsed, answered| {
        duration
            .with_label_values(&[network.as_str(), method])
            .observe(elapsed.as_secs_f64());
        if !answered {
            errors.with_label_values(&[network.as_str(), method]).inc();
        }
    })
}

/// Times the replay store's Redis calls by operation.
fn redis_call_metrics(metrics: &Metrics) -> x402_settle::replay::CallObserver {
    let duration = metrics.ops.redis_call_duration.clone();
    let errors = metrics.ops.redis_call_errors.clone();
    Arc::new(move |op, elapsed, ok| {
        duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        if !ok {
            errors.with_label_values(&[op]).inc();
        }
    })
}

/// Counts the gas of mined settlements on `network`.
fn nonce_lag_metrics(metrics: &Metrics, network: &Network) -> x402_settle::evm::NonceLagObserver {
    let lag = metrics.engine.nonce_lag.clone();
    let network = network.to_string();
    Arc::new(move |signer, n| {
        lag.with_label_values(&[network.as_str(), signer.to_checksum(None).as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    })
}

fn gas_metrics(metrics: &Metrics, network: &Network) -> x402_settle::evm::GasObserver {
    let label = [network.as_str()];
    let used = metrics.gas_used_total.with_label_values(&label);
    let fee = metrics.gas_fee_wei_total.with_label_values(&label);
    let usdc = metrics.gas_usdc_total.with_label_values(&label);
    let quoted = metrics.gas_quoted_usdc_total.with_label_values(&label);
    Arc::new(move |gas| {
        used.inc_by(gas.gas_used);
        fee.inc_by(gas.fee_wei as f64);
        if let Some(in_usdc) = gas.usdc {
            usdc.inc_by(in_usdc.actual);
            quoted.inc_by(in_usdc.quoted);
        }
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
