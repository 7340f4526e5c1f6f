//! [`Facilitator`]: the start-up wiring (replay store, one handler per configured scheme and
//! network in the [`Registry`], quote refresher, reconciler) and the calls the routes make.

use std::sync::Arc;
use std::time::Duration;

use x402_chain::FailoverEvmChain;
use x402_gas_oracle::{Quote, QuoteCache, QuoteRefresher};
use x402_proto::{PaymentRequest, Reason, SettleResponse, SupportedResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_settle::engine::Caller;
use x402_settle::nonces::{MemoryNonceStore, NonceStore, RedisNonceStore};
use x402_settle::outbox::Notify;
use x402_settle::reconciler::Reconciler;
use x402_settle::redis_conn::RedisConn;
use x402_settle::replay::{MemoryStore, RedisStore, ReplayStore, StoreOptions};
use x402_settle::status::SettlementStatus;
use x402_verify::VerifyError;

use crate::config::ValidConfig;
use crate::evm::ExactEvmHandler;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::requirements::{RequirementsRequest, RequirementsResponse};
use crate::scheme::{QuoteLookupError, SchemeHandler, Shared, StartError};
use crate::svm::ExactSvmHandler;

/// Everything the routes need.
pub struct Facilitator {
    registry: Registry,
    store: Arc<dyn ReplayStore>,
    evm_chains: Vec<(String, Arc<FailoverEvmChain>)>,
    _refresher: Option<QuoteRefresher>,
    _reconciler: Reconciler,
}

impl Facilitator {
    /// Connects the replay store and every network of the validated `config`, checking each
    /// RPC's chain id. Mined settlements report their gas to `metrics`.
    pub async fn from_config(config: &ValidConfig, metrics: &Metrics) -> Result<Self, StartError> {
        Self::from_config_with(config, metrics, Vec::new(), Notify::default()).await
    }

    /// [`Facilitator::from_config`] with `extra` handlers registered after the configured ones
    /// (schemes built outside this crate), whose settlement engines write a webhook event into
    /// the outbox with each final state of a payment settled by one of `notify`'s API keys.
    /// The replay store reports its Redis calls to `x402_redis_call_duration_seconds`.
    pub async fn from_config_with(
        config: &ValidConfig,
        metrics: &Metrics,
        extra: Vec<Arc<dyn SchemeHandler>>,
        notify: Notify,
    ) -> Result<Self, StartError> {
        let redis_timeout = Duration::from_millis(config.settle().redis_timeout_ms);
        let redis_err = |e: x402_settle::replay::StoreError| StartError::Redis(e.to_string());
        #[allow(clippy::type_complexity)]
        let (store, nonces, prefix): (Arc<dyn ReplayStore>, Arc<dyn NonceStore>, String) =
            match config.redis() {
                Some(r) => {
                    let conn = RedisConn::connect(&r.target(redis_timeout))
                        .await
                        .map_err(redis_err)?;
                    let options = StoreOptions {
                        prefix: r.key_prefix.clone(),
                        shards: r.index_shards,
                        min_replicas_acked: r.min_replicas_acked(),
                    };
                    tracing::info!(
                        mode = r.mode().as_str(),
                        nodes = r.all_urls().len(),
                        index_shards = r.index_shards,
                        min_replicas_acked = r.min_replicas_acked(),
                        "redis replay store"
                    );
                    (
                        Arc::new(
                            RedisStore::open(conn.clone(), options)
                                .await
                                .map_err(redis_err)?
                                .with_call_observer(metrics.redis_call_observer()),
                        ),
                        Arc::new(RedisNonceStore::open(conn, &r.key_prefix)),
                        r.key_prefix.clone(),
                    )
                }
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
        let timing = config.settle().timing();
        let events = metrics.engine.events();
        let quotes = Arc::new(QuoteCache::new(Duration::from_secs(
            config.quotes().max_age_seconds,
        )));
        let shared = Shared {
            config,
            store: &store,
            nonces: &nonces,
            notify: &notify,
            prefix: &prefix,
            timing: &timing,
            events: &events,
            metrics,
            quotes: &quotes,
        };
        let mut quoters = Vec::new();
        let mut registry = Registry::new();
        let mut evm_chains = Vec::new();
        for (index, net) in config.evm().iter().enumerate() {
            let handler = ExactEvmHandler::connect(&shared, net, index, &mut quoters).await?;
            evm_chains.push((handler.network().to_string(), handler.chain().clone()));
            // `exact` first: the default scheme of `/quote` and `/requirements`.
            let upto = handler.upto_handler();
            if handler.offers_exact() {
                registry.register(Arc::new(handler))?;
            }
            if let Some(upto) = upto {
                registry.register(Arc::new(upto))?;
            }
        }
        for (index, net) in config.svm().iter().enumerate() {
            let handler = ExactSvmHandler::connect(&shared, net, index, &mut quoters).await?;
            registry.register(Arc::new(handler))?;
        }
        for handler in extra {
            registry.register(handler)?;
        }
        let engines = registry
            .handlers()
            .iter()
            .flat_map(|h| h.reconcilers())
            .collect();
        let reconciler = Reconciler::spawn(
            store.clone(),
            &prefix,
            engines,
            Duration::from_secs(config.settle().reconcile_interval_seconds),
            config.reconcile_step_timeout(),
            events,
        );
        let refresher = (!quoters.is_empty()).then(|| {
            QuoteRefresher::spawn(
                quotes.clone(),
                quoters,
                Duration::from_secs(config.quotes().refresh_seconds),
            )
        });
        Ok(Facilitator {
            registry,
            store,
            evm_chains,
            _refresher: refresher,
            _reconciler: reconciler,
        })
    }

    /// `GET /supported`.
    pub fn supported(&self) -> &SupportedResponse {
        self.registry.supported()
    }

    /// The replay store (for `/health`).
    pub fn store(&self) -> &Arc<dyn ReplayStore> {
        &self.store
    }

    /// Each EVM network's chain access (CAIP-2 network, its failover chain).
    pub fn evm_chains(&self) -> Vec<(String, Arc<FailoverEvmChain>)> {
        self.evm_chains.clone()
    }

    /// The cached gas quote of `asset` (default: the first configured) on `network` (CAIP-2 or
    /// v1 name) for `scheme` (default: the network's first, `exact`): the settlement call that
    /// scheme sends. Memory only: never waits on a chain or price API.
    pub fn quote(
        &self,
        network: &str,
        asset: Option<&str>,
        scheme: Option<&str>,
    ) -> Result<Quote, QuoteLookupError> {
        let (_, handler) = self.registry.pricing_handler(network, scheme)?;
        handler.quote(asset)
    }

    /// `POST /requirements`: requirements whose amount is the service price plus the cached gas
    /// quote, converted to the asset's units.
    pub async fn requirements(
        &self,
        req: &RequirementsRequest,
    ) -> Result<RequirementsResponse, QuoteLookupError> {
        let (_, handler) = self
            .registry
            .pricing_handler(&req.network, req.scheme.as_deref())?;
        handler.requirements(req).await
    }

    /// `POST /verify`.
    pub async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        match self.registry.handler(req) {
            Ok(h) => h.verify(req).await,
            Err(reason) => Ok(VerifyResponse::invalid(
                reason,
                Some(unsupported_message(req, reason)),
                None,
            )),
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
        let caller = Caller {
            key,
            answer_ids: vec![],
        };
        self.settle_for(req, &caller).await
    }

    /// `POST /settle` by `caller` (API key and answer ids, see [`SchemeHandler::settle`]).
    pub async fn settle_for(
        &self,
        req: &PaymentRequest,
        caller: &Caller<'_>,
    ) -> Result<SettleResponse, SettleError> {
        match self.registry.handler(req) {
            Ok(h) => h.settle(req, caller).await,
            Err(reason) => Ok(SettleResponse::failed(
                reason,
                Some(unsupported_message(req, reason)),
                String::new(),
                req.network_wire().to_string(),
                None,
            )),
        }
    }

    /// `GET /settlements/{transaction}`: the settlement that signed `transaction`.
    pub async fn settlement_by_transaction(
        &self,
        transaction: &str,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        x402_settle::engine::status::by_transaction(self.store.as_ref(), transaction).await
    }

    /// `POST /settlements/lookup`: the settlement of the payment in `req` under its
    /// requirements, acting on nothing.
    pub async fn settlement_of(
        &self,
        req: &PaymentRequest,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        match self.registry.handler(req) {
            Ok(h) => h.settlement_status(req).await,
            Err(_) => Ok(None),
        }
    }
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
