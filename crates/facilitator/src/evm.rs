//! The `exact` scheme on EVM chains: one [`ExactEvmHandler`] per configured `[[evm]]` network,
//! with the network's one EVM sender ([`x402_settle::evm::sender::EvmSender`]), one
//! verifier and settlement engine per transfer method its assets use (EIP-3009
//! `transferWithAuthorization`; Permit2 through `x402ExactPermit2Proxy`), and, with
//! `[evm.gas]`, settlement gas priced in USDC (`/quote`, `/requirements`). A payment goes to
//! the Permit2 method when its payload carries `permit2Authorization`, else to EIP-3009.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use serde_json::Value;
use x402_chain::clock::unix_now;
use x402_chain::eip3009::IEip3009Token;
use x402_chain::{ChainError, EvmChain, FailoverEvmChain};
use x402_gas_oracle::{Quote, QuoteCache, Quoter};
use x402_proto::{Network, ParseError, PaymentRequest, SettleResponse, VerifyResponse};
use x402_settle::SettleError;
use x402_settle::engine::Caller;
use x402_settle::evm::sender::EvmSender;
use x402_settle::evm::{Eip3009, EvmFamily, EvmSettler, GasObserver, Permit2Exact, Permit2Settler};
use x402_settle::reconciler::Reconcile;
use x402_settle::status::SettlementStatus;
use x402_verify::VerifyError;
use x402_verify::evm::ExactEvmVerifier;
use x402_verify::evm::permit2::{Permit2Verifier, Stage};

use crate::config::ConfigError;
use crate::config::evm::{EvmAsset, EvmNetwork, EvmTransferMethod};
use crate::gas;
use crate::metrics::Metrics;
use crate::requirements::{self, RequirementsRequest, RequirementsResponse};
use crate::scheme::{QuoteLookupError, SchemeHandler, Shared, StartError, verify_response};
use crate::upto::UptoEvmHandler;

/// The scheme name this module serves.
const SCHEME: &str = "exact";

/// `exact` on one EVM network.
pub struct ExactEvmHandler {
    network: Network,
    verifier: Arc<ExactEvmVerifier>,
    settler: Arc<EvmSettler>,
    /// With an asset taking Permit2: its verifier and engine.
    permit2: Option<(Arc<Permit2Verifier>, Arc<Permit2Settler>)>,
    rpc: Arc<FailoverEvmChain>,
    assets: Vec<EvmAsset>,
    signers: Vec<String>,
    quotes: Arc<QuoteCache>,
    /// With `[evm.gas]`: its assets are quoted (else `/quote` and `/requirements` answer 404).
    priced: bool,
    /// With `"upto"` in `schemes`: the signer named in `extra.facilitatorAddress`.
    upto_facilitator: Option<Address>,
    /// Whether `"exact"` is in `schemes` (else only the `upto` handler is registered).
    offers_exact: bool,
}

impl ExactEvmHandler {
    /// Connects `net` (the `index`-th `[[evm]]`): checks the RPC's chain id and each asset's
    /// `name()`, `version()` and `decimals()` against the configuration, builds the verifier and
    /// the settlement engine, and, with `[evm.gas]`, adds the network's quoters to `quoters`.
    /// Errors: an unreachable RPC or one serving another chain, an asset that differs from its
    /// configuration (naming the key), a price source that cannot be built.
    pub async fn connect(
        shared: &Shared<'_>,
        net: &EvmNetwork,
        index: usize,
        quoters: &mut Vec<Arc<dyn Quoter>>,
    ) -> Result<Self, StartError> {
        let config = shared.config;
        let rpc_err = |message: String| StartError::Rpc {
            chain_id: net.chain_id,
            message,
        };
        let network = net.network.clone();
        shared.metrics.engine.touch_network(
            network.as_str(),
            x402_proto::Reason::EvmTransactionFailed.as_str(),
            false,
        );
        let failovers = shared
            .metrics
            .engine
            .rpc_failovers
            .with_label_values(&[network.as_str()]);
        let rpc = FailoverEvmChain::new(
            &net.rpc_urls,
            net.chain_id,
            net.signers.clone(),
            net.rpc_timeout,
        )
        .map_err(rpc_err)?
        .with_failover_observer(Arc::new(move |_, _| failovers.inc()))
        .with_call_observer(shared.metrics.rpc_call_observer(network.as_str()));
        rpc.check_chain_id().await.map_err(rpc_err)?;
        let rpc = Arc::new(rpc);
        let chain: Arc<dyn EvmChain> = rpc.clone();
        for asset in &net.assets {
            if asset.takes(EvmTransferMethod::Eip3009) {
                check_asset(chain.as_ref(), asset).await?;
            } else {
                check_decimals(chain.as_ref(), asset).await?;
            }
        }
        let eip3009_assets: Vec<Address> = net
            .assets
            .iter()
            .filter(|a| a.takes(EvmTransferMethod::Eip3009))
            .map(|a| a.address)
            .collect();
        let permit2_assets: Vec<Address> = net
            .assets
            .iter()
            .filter(|a| a.takes(EvmTransferMethod::Permit2))
            .map(|a| a.address)
            .collect();
        if let Some(asset) = net
            .assets
            .iter()
            .find(|a| a.takes(EvmTransferMethod::Permit2))
        {
            check_permit2_contracts(chain.as_ref(), net, asset).await?;
        }
        if net.upto {
            check_upto_proxy(chain.as_ref(), net).await?;
        }
        let verifier = Arc::new(
            ExactEvmVerifier::new(chain.clone(), eip3009_assets)
                .with_contract_signatures(net.accept_contract_signatures),
        );
        // The network's one sender: every transfer method's settlements share its signers,
        // nonces, fees, receipt poller and nonce repair.
        let mut sender = EvmSender::new(
            chain.clone(),
            shared.store.clone(),
            shared.nonces.clone(),
            shared.prefix.to_string(),
            Duration::from_secs(config.settle().signer_wait_seconds),
            config.settle().max_in_flight_per_signer,
        )
        .with_contract_signature_gas_caps(
            net.assets
                .iter()
                .filter_map(|a| Some((a.address, a.contract_signature_gas_cap?)))
                .collect(),
        )
        .with_receipt_poll(shared.timing.poll_interval)
        .with_gap_fill_after(Duration::from_secs(config.settle().nonce_gap_fill_seconds))
        .with_nonce_lag_observer(nonce_lag_metrics(shared.metrics, &network))
        .with_gas_observer(gas_metrics(shared.metrics, &network))
        .with_signer_floor(
            U256::from(net.min_signer_balance_wei),
            Duration::from_secs(10),
        )
        .with_events(shared.events.clone());
        if let Some(ws_url) = &net.ws_url {
            sender = sender.with_new_heads(ws_url.clone(), net.rpc_timeout);
        }
        if let Some(pre) = &net.preconfirmations {
            sender = sender.with_preconfirmations(
                preconfirmation_chain(shared, net, pre, &chain).map_err(rpc_err)?,
                pre.poll,
            );
            shared
                .metrics
                .engine
                .preconfirmed
                .with_label_values(&[network.as_str()]);
            tracing::warn!(network = %network, poll_ms = pre.poll.as_millis() as u64, "answering settlements at flashblock pre-confirmations: a pre-confirmation is the sequencer's promise, not a block");
        }
        // Landed settlements' gas, which the quoters price gas units from.
        let samples = Arc::new(x402_gas_oracle::GasSamples::default());
        let sampled = samples.clone();
        sender = sender.with_gas_sampler(Arc::new(move |asset, kind, gas_used| {
            sampled.record(
                asset,
                x402_gas_oracle::SettlementKind::from_name(kind),
                gas_used,
            )
        }));
        let net_quoters = gas::quoters(
            chain.clone(),
            net,
            index,
            Duration::from_secs(config.quotes().refresh_seconds),
            samples,
        )
        .map_err(rpc_err)?;
        let priced = !net_quoters.is_empty();
        if priced {
            let assets = net
                .assets
                .iter()
                .map(|a| a.address.to_checksum(None))
                .collect();
            sender = sender.with_gas_pricer(gas::pricer(
                shared.quotes.clone(),
                network.to_string(),
                assets,
            ));
        }
        quoters.extend(net_quoters);
        let sender = Arc::new(sender);
        let settler = Arc::new(
            x402_settle::evm::settler(
                EvmFamily::new(
                    sender.clone(),
                    Eip3009::new(verifier.clone(), shared.prefix.to_string())
                        .with_lost_record_lookback(net.lost_record_lookback_blocks),
                ),
                shared.store.clone(),
                shared.timing.clone(),
                shared.events.clone(),
            )
            .with_notify(shared.notify.clone())
            .with_payer_policy(shared.config.settle().payer_policy()),
        );
        let permit2 = if permit2_assets.is_empty() {
            None
        } else {
            let mut verifier = Permit2Verifier::new(
                chain.clone(),
                permit2_assets,
                net.permit2,
                net.exact_permit2_proxy,
            );
            if net.upto {
                verifier = verifier.with_upto(net.upto_permit2_proxy);
            }
            let verifier = Arc::new(verifier);
            let settler = Arc::new(
                x402_settle::evm::settler(
                    EvmFamily::new(
                        sender.clone(),
                        Permit2Exact::new(verifier.clone(), shared.prefix.to_string()),
                    ),
                    shared.store.clone(),
                    shared.timing.clone(),
                    shared.events.clone(),
                )
                .with_notify(shared.notify.clone())
                .with_payer_policy(shared.config.settle().payer_policy()),
            );
            Some((verifier, settler))
        };
        let mut signers = Vec::new();
        for s in &net.signers {
            let a = s.address().to_checksum(None);
            if !signers.contains(&a) {
                signers.push(a);
            }
        }
        Ok(ExactEvmHandler {
            network,
            verifier,
            settler,
            permit2,
            rpc,
            assets: net.assets.clone(),
            signers,
            quotes: shared.quotes.clone(),
            priced,
            upto_facilitator: net.upto.then(|| net.upto_facilitator()).flatten(),
            offers_exact: net.exact,
        })
    }

    /// Whether `"exact"` is offered on this network (its `schemes`).
    pub fn offers_exact(&self) -> bool {
        self.offers_exact
    }

    /// The `upto` handler of this network when `"upto"` is in its `schemes`: it shares this
    /// handler's Permit2 verifier and engine and its signers. With `exact` not offered (this
    /// handler not registered), it reconciles the network's engines.
    pub fn upto_handler(&self) -> Option<UptoEvmHandler> {
        let facilitator = self.upto_facilitator?;
        let (verifier, settler) = self.permit2.clone()?;
        Some(UptoEvmHandler {
            network: self.network.clone(),
            verifier,
            settler,
            facilitator,
            signers: self.signers.clone(),
            assets: self
                .assets
                .iter()
                .filter(|a| a.takes(EvmTransferMethod::Permit2))
                .cloned()
                .collect(),
            quotes: self.quotes.clone(),
            priced: self.priced,
            reconcile: if self.offers_exact {
                Vec::new()
            } else {
                self.reconcilers()
            },
        })
    }

    /// The network's chain access (for the readiness checks).
    pub fn chain(&self) -> &Arc<FailoverEvmChain> {
        &self.rpc
    }

    /// The configured asset `asset` (0x address; default the first configured).
    fn asset(&self, asset: Option<&str>) -> Result<&EvmAsset, ParseError> {
        let found = match asset {
            None => self.assets.first(),
            Some(a) => {
                let wanted: Address = a
                    .parse()
                    .map_err(|_| ParseError::new("asset", "not a 0x 20-byte address"))?;
                self.assets.iter().find(|asset| asset.address == wanted)
            }
        };
        found.ok_or_else(|| ParseError::new("asset", format!("not settled on {}", self.network)))
    }
}

#[async_trait]
impl SchemeHandler for ExactEvmHandler {
    fn scheme(&self) -> &str {
        SCHEME
    }

    fn network(&self) -> &Network {
        &self.network
    }

    fn signers(&self) -> Vec<String> {
        self.signers.clone()
    }

    /// With a Permit2 asset: `eip2612GasSponsoring` (a payer who has not approved Permit2
    /// sends an EIP-2612 permit, settled with `settleWithPermit`).
    fn extensions(&self) -> Vec<String> {
        match self.permit2 {
            Some(_) => vec![x402_proto::evm::EIP2612_GAS_SPONSORING.to_string()],
            None => Vec::new(),
        }
    }

    async fn verify(&self, req: &PaymentRequest) -> Result<VerifyResponse, VerifyError> {
        if is_permit2(req) {
            let Some((verifier, _)) = &self.permit2 else {
                return Ok(no_permit2(req, &self.network));
            };
            return Ok(verify_response(
                verifier
                    .verify(req, unix_now(), Stage::Verify)
                    .await?
                    .map(|p| p.payer_string()),
            ));
        }
        Ok(verify_response(
            self.verifier
                .verify(req, unix_now(), true)
                .await?
                .map(|p| p.payer_string()),
        ))
    }

    async fn settle(
        &self,
        req: &PaymentRequest,
        caller: &Caller<'_>,
    ) -> Result<SettleResponse, SettleError> {
        if is_permit2(req) {
            return match &self.permit2 {
                Some((_, settler)) => settler.settle_for(req, unix_now(), caller).await,
                None => {
                    let refused = no_permit2(req, &self.network);
                    Ok(SettleResponse::failed(
                        x402_proto::Reason::InvalidPaymentRequirements,
                        refused.invalid_message,
                        String::new(),
                        req.network_wire().to_string(),
                        refused.payer,
                    ))
                }
            };
        }
        self.settler.settle_for(req, unix_now(), caller).await
    }

    async fn settlement_status(
        &self,
        req: &PaymentRequest,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        if is_permit2(req) {
            return match &self.permit2 {
                Some((_, settler)) => settler.status(req, unix_now()).await,
                None => Ok(None),
            };
        }
        self.settler.status(req, unix_now()).await
    }

    /// The asset's quote of its `exact` settlement call ([`gas::exact_kind`]: EIP-3009 when it
    /// takes it, else Permit2).
    fn quote(&self, asset: Option<&str>) -> Result<Quote, QuoteLookupError> {
        let asset = self.asset(asset)?;
        if !self.priced {
            return Err(self.no_pricing());
        }
        Ok(self.quotes.get_kind(
            self.network.as_str(),
            &asset.address.to_checksum(None),
            gas::exact_kind(asset).as_str(),
        )?)
    }

    /// The service price plus the cached gas quote, converted to the asset's units; `extra`
    /// carries the token's EIP-712 domain (`name`, `version`).
    async fn requirements(
        &self,
        req: &RequirementsRequest,
    ) -> Result<RequirementsResponse, QuoteLookupError> {
        let asset = self.asset(req.asset.as_deref())?;
        if !self.priced {
            return Err(self.no_pricing());
        }
        let mut scheme_extra = serde_json::Map::new();
        if asset.takes(EvmTransferMethod::Eip3009) {
            scheme_extra.insert("name".into(), Value::from(asset.name.clone()));
            scheme_extra.insert("version".into(), Value::from(asset.version.clone()));
        } else {
            // A Permit2-only token: the payer signs Permit2's message (spec §2).
            scheme_extra.insert("assetTransferMethod".into(), Value::from("permit2"));
        }
        priced_requirements(
            req,
            &self.quotes,
            (&self.network, SCHEME),
            asset,
            gas::exact_kind(asset),
            scheme_extra,
        )
    }

    fn reconcilers(&self) -> Vec<Arc<dyn Reconcile>> {
        let mut engines: Vec<Arc<dyn Reconcile>> = vec![self.settler.clone()];
        if let Some((_, settler)) = &self.permit2 {
            engines.push(settler.clone());
        }
        engines
    }
}

/// Requirements of `scheme` on `network` for `req`: its service price plus the cached quote of
/// settlement call `kind` in `asset`, converted to the asset's units, with `scheme_extra`.
/// Errors: a malformed `payTo` or `price`, no fresh quote.
pub(crate) fn priced_requirements(
    req: &RequirementsRequest,
    quotes: &QuoteCache,
    (network, scheme): (&Network, &str),
    asset: &EvmAsset,
    kind: x402_gas_oracle::SettlementKind,
    scheme_extra: serde_json::Map<String, Value>,
) -> Result<RequirementsResponse, QuoteLookupError> {
    req.pay_to
        .parse::<Address>()
        .map_err(|_| ParseError::new("payTo", "not a 0x 20-byte address"))?;
    let service: u128 = req.price.parse().map_err(|_| {
        ParseError::new("price", "expected atomic units as a decimal integer string")
    })?;
    let address = asset.address.to_checksum(None);
    let quote = quotes.get_kind(network.as_str(), &address, kind.as_str())?;
    let gas = requirements::usdc_to_asset_units(quote.gas_usdc_atomic, asset.decimals);
    let amounts = requirements::Amounts { service, gas };
    let total = amounts
        .total()
        .ok_or_else(|| ParseError::new("price", "too large"))?;
    let asset = requirements::Asset {
        address: &address,
        decimals: asset.decimals,
        scheme_extra,
    };
    Ok(requirements::build(
        req, scheme, network, asset, amounts, total,
    ))
}

/// Whether `req`'s payload is a Permit2 one (it carries `permit2Authorization`).
fn is_permit2(req: &PaymentRequest) -> bool {
    req.scheme_payload().get("permit2Authorization").is_some()
}

/// The answer to a Permit2 payment on a network where no asset takes Permit2.
fn no_permit2(req: &PaymentRequest, network: &Network) -> VerifyResponse {
    let payer = req
        .scheme_payload()
        .pointer("/permit2Authorization/from")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    VerifyResponse::invalid(
        x402_proto::Reason::InvalidPaymentRequirements,
        Some(format!("no asset is settled through Permit2 on {network}")),
        payer,
    )
}

/// At start, for a network with an asset taking Permit2 (`asset`, named in the error): Permit2
/// and `x402ExactPermit2Proxy` must have code. Errors: [`StartError::Config`] naming
/// `…transfer_methods`, or the RPC failing.
async fn check_permit2_contracts(
    chain: &dyn EvmChain,
    net: &EvmNetwork,
    asset: &EvmAsset,
) -> Result<(), StartError> {
    for (what, at) in [
        ("Permit2", net.permit2),
        ("x402ExactPermit2Proxy", net.exact_permit2_proxy),
    ] {
        let code = chain.code_at(at).await.map_err(|e| StartError::Rpc {
            chain_id: net.chain_id,
            message: format!("reading the code of {what} at {at}: {e}"),
        })?;
        if code.is_empty() {
            return Err(StartError::Config(ConfigError {
                key: field_key(asset, "transfer_methods"),
                message: format!(
                    "\"permit2\" needs {what} at {at}, but there is no contract there on chain {}",
                    net.chain_id
                ),
            }));
        }
    }
    Ok(())
}

/// At start, for a network offering `upto`: `x402UptoPermit2Proxy` must have code. Errors:
/// [`StartError::Config`] naming `evm[i].schemes`, or the RPC failing.
async fn check_upto_proxy(chain: &dyn EvmChain, net: &EvmNetwork) -> Result<(), StartError> {
    let at = net.upto_permit2_proxy;
    let code = chain.code_at(at).await.map_err(|e| StartError::Rpc {
        chain_id: net.chain_id,
        message: format!("reading the code of x402UptoPermit2Proxy at {at}: {e}"),
    })?;
    if code.is_empty() {
        return Err(StartError::Config(ConfigError {
            key: format!("{}.schemes", net.key),
            message: format!(
                "\"upto\" needs x402UptoPermit2Proxy at {at}, but there is no contract there on \
                 chain {}",
                net.chain_id
            ),
        }));
    }
    Ok(())
}

/// A Permit2-only token: `decimals()` must match the configuration (it has no EIP-3009 domain
/// to check). Errors as [`check_asset`]'s.
async fn check_decimals(chain: &dyn EvmChain, asset: &EvmAsset) -> Result<(), StartError> {
    let at = asset.address;
    let rpc_err = |e: ChainError| StartError::Rpc {
        chain_id: chain.chain_id(),
        message: format!("{}: reading the token at {at}: {e}", asset.key),
    };
    if chain.code_at(at).await.map_err(rpc_err)?.is_empty() {
        tracing::warn!(key = %asset.key, asset = %at, "no contract at the asset address: not checked");
        return Ok(());
    }
    let tx = TransactionRequest::default()
        .to(at)
        .input(alloy::primitives::Bytes::from(IEip3009Token::decimalsCall {}.abi_encode()).into());
    let not_a_token = || {
        StartError::Config(ConfigError {
            key: address_key(asset),
            message: format!("the contract at {at} does not answer decimals() as an ERC-20"),
        })
    };
    let ret = match chain.call(&tx).await {
        Ok(ret) => ret,
        Err(e) if e.node_message().is_some() => return Err(not_a_token()),
        Err(e) => return Err(rpc_err(e)),
    };
    let decimals =
        IEip3009Token::decimalsCall::abi_decode_returns(&ret).map_err(|_| not_a_token())?;
    if decimals != asset.decimals {
        return Err(StartError::Config(ConfigError {
            key: field_key(asset, "decimals"),
            message: format!(
                "decimals is {} in the configuration but the token at {at} says {decimals}",
                asset.decimals
            ),
        }));
    }
    Ok(())
}

/// Reads `name()`, `version()` and `decimals()` of `asset` and compares them with its
/// configuration. Errors: a difference, or a contract that does not answer them
/// ([`StartError::Config`] naming the key, e.g. `evm[0].assets[0].name`); the RPC failing
/// ([`StartError::Rpc`]). An address without code yet is let through with a warning: its
/// payments fail verification (`asset_not_deployed_contract`) until the token exists.
async fn check_asset(chain: &dyn EvmChain, asset: &EvmAsset) -> Result<(), StartError> {
    let at = asset.address;
    let rpc_err = |e: ChainError| StartError::Rpc {
        chain_id: chain.chain_id(),
        message: format!("{}: reading the token at {at}: {e}", asset.key),
    };
    let not_a_token = |what: &str| {
        StartError::Config(ConfigError {
            key: address_key(asset),
            message: format!("the contract at {at} does not answer {what}() as an EIP-3009 token"),
        })
    };
    if chain.code_at(at).await.map_err(rpc_err)?.is_empty() {
        tracing::warn!(
            key = %asset.key,
            asset = %at,
            "no contract at the asset address: not checked; its payments fail verification until it exists"
        );
        return Ok(());
    }
    let read = |what: &'static str, data: Vec<u8>| async move {
        let tx = TransactionRequest::default()
            .to(at)
            .input(alloy::primitives::Bytes::from(data).into());
        match chain.call(&tx).await {
            Ok(ret) => Ok(ret),
            Err(e) if e.node_message().is_some() => Err(not_a_token(what)),
            Err(e) => Err(rpc_err(e)),
        }
    };
    let name = IEip3009Token::nameCall::abi_decode_returns(
        &read("name", IEip3009Token::nameCall {}.abi_encode()).await?,
    )
    .map_err(|_| not_a_token("name"))?;
    let version = IEip3009Token::versionCall::abi_decode_returns(
        &read("version", IEip3009Token::versionCall {}.abi_encode()).await?,
    )
    .map_err(|_| not_a_token("version"))?;
    let decimals = IEip3009Token::decimalsCall::abi_decode_returns(
        &read("decimals", IEip3009Token::decimalsCall {}.abi_encode()).await?,
    )
    .map_err(|_| not_a_token("decimals"))?;
    let mismatch = |field: &str, configured: String, on_chain: String| {
        StartError::Config(ConfigError {
            key: field_key(asset, field),
            message: format!(
                "{field} is {configured:?} in the configuration but the token at {at} says {on_chain:?}"
            ),
        })
    };
    if name != asset.name {
        return Err(mismatch("name", asset.name.clone(), name));
    }
    if version != asset.version {
        return Err(mismatch("version", asset.version.clone(), version));
    }
    if decimals != asset.decimals {
        return Err(mismatch(
            "decimals",
            asset.decimals.to_string(),
            decimals.to_string(),
        ));
    }
    Ok(())
}

/// The config key of `field` of `asset`: `evm[0].assets[1].name`, or `evm[0].network` for the
/// preset's USDC (no asset table to name).
fn field_key(asset: &EvmAsset, field: &str) -> String {
    if asset.key.ends_with(".network") {
        asset.key.clone()
    } else {
        format!("{}.{field}", asset.key)
    }
}

fn address_key(asset: &EvmAsset) -> String {
    field_key(asset, "address")
}

/// Counts the gas of mined settlements on `network`.
/// Sets `x402_signer_nonce_lag{network,signer}` after each nonce repair look.
fn nonce_lag_metrics(metrics: &Metrics, network: &Network) -> x402_settle::evm::NonceLagObserver {
    let lag = metrics.engine.nonce_lag.clone();
    let network = network.to_string();
    Arc::new(move |signer, n| {
        lag.with_label_values(&[network.as_str(), signer.to_checksum(None).as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    })
}

fn gas_metrics(metrics: &Metrics, network: &Network) -> GasObserver {
    let label = [network.as_str()];
    let used = metrics.gas_used_total.with_label_values(&label);
    let fee = metrics.gas_fee_wei_total.with_label_values(&label);
    let usdc = metrics.gas_usdc_total.with_label_values(&label);
    let quoted = metrics.gas_quoted_usdc_total.with_label_values(&label);
    let accounting = metrics.gas_accounting(network.as_str());
    Arc::new(move |gas| {
        accounting(gas.usdc);
        used.inc_by(gas.gas_used);
        fee.inc_by(gas.fee_wei as f64);
        if let Some(in_usdc) = gas.usdc {
            usdc.inc_by(in_usdc.actual);
            quoted.inc_by(in_usdc.quoted);
        }
    })
}

/// The flashblocks-aware RPC that `pre` names (`[[evm]] preconfirmation_url`, same chain id,
/// signers and time limit as the network's RPC), or the network's own `chain` without one.
fn preconfirmation_chain(
    shared: &Shared<'_>,
    net: &EvmNetwork,
    pre: &crate::config::evm::Preconfirmations,
    chain: &Arc<dyn EvmChain>,
) -> Result<Arc<dyn EvmChain>, String> {
    let Some(url) = &pre.url else {
        return Ok(chain.clone());
    };
    let rpc = FailoverEvmChain::new(
        std::slice::from_ref(url),
        net.chain_id,
        net.signers.clone(),
        net.rpc_timeout,
    )?
    .with_call_observer(shared.metrics.rpc_call_observer(net.network.as_str()));
    Ok(Arc::new(rpc))
}
