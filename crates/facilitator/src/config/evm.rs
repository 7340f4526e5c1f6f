//! `[[evm]]`: EVM networks (the `exact` scheme with EIP-3009 tokens).
//!
//! ```toml
//! [[evm]]
//! network = "base"                  # chain 8453 and its USDC, see `x402_chain::presets`
//! rpc_url = "https://mainnet.base.org"
//! rpc_timeout_seconds = 5
//! min_signer_balance_wei = 100000000000000
//! ```
//!
//! Environment overrides:
//! - `X402_EVM_SIGNER_KEYS`: comma-separated 0x private keys for every EVM network that has none.
//! - `X402_EVM_<chainId>_SIGNER_KEYS`: comma-separated 0x private keys for one chain.
//! - `X402_EVM_<chainId>_RPC_URL`: comma-separated RPC URLs for one chain.
//! - `X402_EVM_<chainId>_WS_URL`: the WebSocket URL (`newHeads`) for one chain.
//! - `X402_EVM_<chainId>_PRECONFIRMATION_URL`: the flashblocks-aware RPC of one chain.

use std::collections::HashMap;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use x402_chain::presets::{self, EvmPreset};
use x402_proto::Network;

use super::error::{ConfigError, err};
use super::gas::{self, GasConfig};

/// Default of `[[evm]] rpc_timeout_seconds`, seconds.
pub const DEFAULT_RPC_TIMEOUT_SECONDS: u64 = 5;

/// Default of `[[evm]] min_signer_balance_wei`: 0.0001 ETH, wei.
pub const DEFAULT_MIN_SIGNER_BALANCE_WEI: u128 = 100_000_000_000_000;

/// `[[evm]]`: one EVM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmNetworkConfig {
    /// A known network (`base`, `eip155:8453`, `arbitrum`, …; `x402_chain::presets::EVM`):
    /// fills in `chain_id`, the default USDC (address, EIP-712 name/version, decimals) when no
    /// asset is listed or a listed asset leaves them out, and `gas.l1_fee_oracle` on OP-stack
    /// chains. Explicit keys win.
    #[serde(default)]
    pub network: Option<String>,
    /// EIP-155 chain id; the network is `eip155:{chain_id}` (v1 name from the built-in table).
    /// Required unless `network` names a preset.
    #[serde(default)]
    pub chain_id: u64,
    /// JSON-RPC URL (shorthand for a one-element `rpc_urls`).
    #[serde(default)]
    pub rpc_url: Option<String>,
    /// JSON-RPC URLs in order of preference: calls move to the next on a failure or timeout.
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    /// WebSocket JSON-RPC URL (`ws://` / `wss://`) of a node of this chain: the receipt poller
    /// subscribes to `newHeads` there and reads each new block as soon as it is announced
    /// (blocks are still read over `rpc_urls`). Optional; without it the poller paces itself
    /// at a quarter of the learnt block time. Env override: `X402_EVM_<chainId>_WS_URL`.
    #[serde(default)]
    pub ws_url: Option<String>,
    /// Every JSON-RPC call to this network gives up after this long, seconds (at least 1;
    /// default: the deprecated `[settle] rpc_timeout_seconds` when set, else 5).
    #[serde(default)]
    pub rpc_timeout_seconds: Option<u64>,
    /// Answer `/settle` success at a flashblock pre-confirmation (Base; any OP-stack chain with
    /// flashblocks) instead of at the block: a waiting request asks a flashblocks-aware RPC
    /// (`preconfirmation_url`) for its transaction's receipt every `preconfirmation_poll_ms`,
    /// and a successful receipt with the transfer answers success (~200 ms after the send on
    /// Base instead of up to a 2 s block). A pre-confirmation is the sequencer's promise, not a
    /// block: a sequencer failure or unsafe-head reorg can drop it (the facilitator then sends
    /// the same transaction again while its `validBefore` allows). Failures are never taken
    /// from a pre-confirmation. Default false.
    #[serde(default)]
    pub preconfirmations: bool,
    /// HTTP(S) JSON-RPC URL of a flashblocks-aware node of this chain (e.g.
    /// `https://mainnet-preconf.base.org`, or a provider's flashblocks endpoint), asked for
    /// pre-confirmation receipts. Default: this network's RPC (`rpc_url` / `rpc_urls`, with
    /// failover), which must then be flashblocks-aware. Needs `preconfirmations = true`. Env
    /// override: `X402_EVM_<chainId>_PRECONFIRMATION_URL`.
    #[serde(default)]
    pub preconfirmation_url: Option<String>,
    /// How often a waiting request asks for a pre-confirmation, milliseconds (default 200,
    /// Base's flashblock interval; 20 to 5,000). Needs `preconfirmations = true`.
    #[serde(default)]
    pub preconfirmation_poll_ms: Option<u64>,
    /// Facilitator signer keys (0x hex); prefer the environment overrides. `Debug` prints
    /// them redacted.
    #[serde(default)]
    pub signer_private_keys: Vec<SecretString>,
    /// Smallest native balance of a signer, wei, for it to take new settlements and to count
    /// as funded in `/health/ready` (default: the deprecated `[health]
    /// min_evm_signer_balance_wei` when set, else 100,000,000,000,000 = 0.0001 ETH).
    #[serde(default)]
    pub min_signer_balance_wei: Option<u128>,
    /// Tokens settled on this chain; none listed on a preset network → its USDC.
    #[serde(default)]
    pub assets: Vec<EvmAssetConfig>,
    /// Gas pricing in USDC for `/quote` and `/requirements`; absent → those endpoints answer
    /// 503 for this network.
    #[serde(default)]
    pub gas: Option<GasConfig>,
    /// Whether payments signed by a contract wallet (ERC-1271, ERC-6492) are taken (default
    /// true). Their settlement gas depends on the wallet's code, which the payer controls; each
    /// is bounded by its asset's `contract_signature_gas_cap`. `false` refuses them at `/verify`
    /// and `/settle` with `invalid_exact_evm_signature`.
    #[serde(default = "accept_contract_signatures")]
    pub accept_contract_signatures: bool,
    /// How many blocks back from the latest `/settle` searches for a payment whose
    /// authorization is used on chain but whose record is gone (a Redis failover or flush): a
    /// transaction of one of this network's signers that used it is restored as the payment's
    /// settlement and answered `duplicate_settlement` with its hash (default 10,000; 0 turns
    /// the search off). One `eth_getLogs` per 2,000 blocks.
    #[serde(default = "lost_record_lookback_blocks")]
    pub lost_record_lookback_blocks: u64,
    /// Payment schemes offered on this network (default `["exact"]`). Known: `exact`, `upto`
    /// (specs/schemes/upto/scheme_upto_evm.md: Permit2 only, so it needs an asset with
    /// `transfer_methods` including `"permit2"`).
    #[serde(default)]
    pub schemes: Option<Vec<String>>,
    /// Permit2's address (default the canonical `0x000000000022D473030F116dDEE9F6B43aC78BA3`,
    /// the same on every chain).
    #[serde(default)]
    pub permit2_address: Option<String>,
    /// `x402ExactPermit2Proxy`'s address (default the canonical
    /// `0x402085c248EeA27D92E8b30b2C58ed07f9E20001`).
    #[serde(default)]
    pub exact_permit2_proxy: Option<String>,
    /// `x402UptoPermit2Proxy`'s address (default the canonical
    /// `0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002`).
    #[serde(default)]
    pub upto_permit2_proxy: Option<String>,
}

fn accept_contract_signatures() -> bool {
    true
}

fn lost_record_lookback_blocks() -> u64 {
    x402_settle::evm::rebuild::DEFAULT_LOOKBACK_BLOCKS
}

/// The EVM transfer methods a token can be settled with (`[[evm.assets]] transfer_methods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvmTransferMethod {
    /// EIP-3009 `transferWithAuthorization` on the token (`"eip3009"`).
    Eip3009,
    /// Permit2 through `x402ExactPermit2Proxy` (`"permit2"`): any ERC-20.
    Permit2,
}

impl EvmTransferMethod {
    /// Every method with its configuration name.
    pub const ALL: [(&'static str, EvmTransferMethod); 2] = [
        ("eip3009", EvmTransferMethod::Eip3009),
        ("permit2", EvmTransferMethod::Permit2),
    ];
}

/// `[[evm.assets]]`: one EIP-3009 token. At start the facilitator reads the token's
/// `name()`, `version()` and `decimals()` and refuses to start when one differs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmAssetConfig {
    /// Token contract address.
    pub address: String,
    /// EIP-712 domain `name` (Base USDC: "USD Coin"); may be left out for the preset USDC.
    #[serde(default)]
    pub name: Option<String>,
    /// EIP-712 domain `version` (USDC: "2"); may be left out for the preset USDC.
    #[serde(default)]
    pub version: Option<String>,
    /// Token decimals (default: the preset USDC's, else 6).
    #[serde(default)]
    pub decimals: Option<u8>,
    /// Most gas a settlement of a contract-wallet (ERC-1271 / ERC-6492) payment may use, gas
    /// units (default: 3 × the asset's learnt ECDSA settlement limit, 300,000 before one is
    /// learnt). A payment whose simulation needs more is refused before anything is sent.
    #[serde(default)]
    pub contract_signature_gas_cap: Option<u64>,
    /// How payments in this token are settled: `"eip3009"` (the token's
    /// `transferWithAuthorization`) and/or `"permit2"` (Permit2 through the x402 proxy; any
    /// ERC-20 the payer approved to Permit2). Default `["eip3009"]`. `name` and `version` are
    /// required with `eip3009` only.
    #[serde(default)]
    pub transfer_methods: Option<Vec<String>>,
}

/// A token of a validated EVM network: the configured values, the preset's where the
/// configuration left them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmAsset {
    /// Token contract.
    pub address: Address,
    /// EIP-712 domain `name`.
    pub name: String,
    /// EIP-712 domain `version`.
    pub version: String,
    /// Token decimals.
    pub decimals: u8,
    /// Most gas of a contract-signature settlement, gas units (`None`: the default rule).
    pub contract_signature_gas_cap: Option<u64>,
    /// Config key of this asset (`evm[0].assets[1]`; `evm[0].network` for the preset's USDC),
    /// named by start-up errors.
    pub key: String,
    /// How its payments are settled (at least one).
    pub transfer_methods: Vec<EvmTransferMethod>,
}

impl EvmAsset {
    /// Whether payments in this token may use `method`.
    pub fn takes(&self, method: EvmTransferMethod) -> bool {
        self.transfer_methods.contains(&method)
    }
}

/// A validated EVM network ready to connect.
#[derive(Clone)]
pub struct EvmNetwork {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// CAIP-2 network (`eip155:{chain_id}`).
    pub network: Network,
    /// Config key of this network (`evm[0]`).
    pub key: String,
    /// JSON-RPC URLs, in order of preference (at least one).
    pub rpc_urls: Vec<String>,
    /// Time limit of every JSON-RPC call (at least one second).
    pub rpc_timeout: Duration,
    /// WebSocket URL whose `newHeads` wake the receipt poller, if any.
    pub ws_url: Option<String>,
    /// With `preconfirmations = true`: where and how often pre-confirmations are asked for.
    pub preconfirmations: Option<Preconfirmations>,
    /// Signer keys (at least one).
    pub signers: Vec<PrivateKeySigner>,
    /// Smallest native balance of a signer, wei, for it to take new settlements and to count
    /// as funded.
    pub min_signer_balance_wei: u128,
    /// Token contracts with their EIP-712 domain.
    pub assets: Vec<EvmAsset>,
    /// Gas pricing, if configured (`l1_fee_oracle` filled in from the preset).
    pub gas: Option<GasConfig>,
    /// Whether contract-wallet (ERC-1271 / ERC-6492) signatures are taken.
    pub accept_contract_signatures: bool,
    /// Blocks searched back for a payment whose record was lost (0: no search).
    pub lost_record_lookback_blocks: u64,
    /// Permit2's address.
    pub permit2: Address,
    /// `x402ExactPermit2Proxy`'s address.
    pub exact_permit2_proxy: Address,
    /// `x402UptoPermit2Proxy`'s address.
    pub upto_permit2_proxy: Address,
    /// Whether `exact` is offered (`schemes`).
    pub exact: bool,
    /// Whether `upto` is offered (`schemes`).
    pub upto: bool,
}

impl EvmNetwork {
    /// The signer `upto` payments name in `witness.facilitator` (`/supported`
    /// `extra.facilitatorAddress`): the first configured, the same on every replica and
    /// restart.
    pub fn upto_facilitator(&self) -> Option<Address> {
        self.signers.first().map(|s| s.address())
    }
}

/// `[[evm]] preconfirmations = true`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preconfirmations {
    /// The flashblocks-aware RPC; `None`: the network's `rpc_urls`.
    pub url: Option<String>,
    /// How often a waiting request asks (`preconfirmation_poll_ms`).
    pub poll: Duration,
}

/// Default of `[[evm]] preconfirmation_poll_ms`, milliseconds (Base's flashblock interval).
pub const DEFAULT_PRECONFIRMATION_POLL_MS: u64 = 200;

/// Bounds of `[[evm]] preconfirmation_poll_ms`, milliseconds.
const PRECONFIRMATION_POLL_MS: std::ops::RangeInclusive<u64> = 20..=5_000;

/// The values a network that leaves a key out gets: the deprecated global key's when it is
/// set, else the default.
pub(super) struct Fallbacks {
    /// `rpc_timeout_seconds`, seconds.
    pub rpc_timeout_seconds: u64,
    /// `min_signer_balance_wei`, wei.
    pub min_signer_balance_wei: u128,
}

fn default_decimals() -> u8 {
    6
}

/// Sets `chain_id` of each network from its `network` preset. Errors: an unknown network, a
/// `chain_id` that contradicts it, neither set.
pub(super) fn resolve_chain_ids(nets: &mut [EvmNetworkConfig]) -> Result<(), ConfigError> {
    for (i, net) in nets.iter_mut().enumerate() {
        net.resolve_chain_id(i)?;
    }
    Ok(())
}

/// Applies the `X402_EVM_*` overrides from `env` to `nets`.
pub(super) fn apply_env(nets: &mut [EvmNetworkConfig], env: &HashMap<String, String>) {
    let split = |v: &String| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    };
    for net in nets {
        if let Some(urls) = env.get(&format!("X402_EVM_{}_RPC_URL", net.chain_id)) {
            net.rpc_url = None;
            net.rpc_urls = split(urls);
        }
        if let Some(url) = env.get(&format!("X402_EVM_{}_WS_URL", net.chain_id)) {
            net.ws_url = Some(url.trim().to_string()).filter(|u| !u.is_empty());
        }
        if let Some(url) = env.get(&format!("X402_EVM_{}_PRECONFIRMATION_URL", net.chain_id)) {
            net.preconfirmation_url = Some(url.trim().to_string()).filter(|u| !u.is_empty());
        }
        if let Some(keys) = env.get(&format!("X402_EVM_{}_SIGNER_KEYS", net.chain_id)) {
            net.signer_private_keys = split(keys).into_iter().map(SecretString::from).collect();
        } else if net.signer_private_keys.is_empty()
            && let Some(keys) = env.get("X402_EVM_SIGNER_KEYS")
        {
            net.signer_private_keys = split(keys).into_iter().map(SecretString::from).collect();
        }
    }
}

/// Checks every `[[evm]]` entry (parsing its signer keys) and returns the networks ready to
/// connect; a key a network leaves out takes its value from `fallbacks`. Errors name the key.
pub(super) fn validate(
    nets: &[EvmNetworkConfig],
    fallbacks: &Fallbacks,
) -> Result<Vec<EvmNetwork>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    nets.iter()
        .enumerate()
        .map(|(i, net)| {
            if !seen.insert(net.chain_id) {
                return Err(err(
                    format!("evm[{i}].chain_id"),
                    format!("chain {} configured twice", net.chain_id),
                ));
            }
            net.validate(i, fallbacks)
        })
        .collect()
}

impl EvmNetworkConfig {
    /// The preset named by `network`, if any.
    pub fn preset(&self) -> Option<&'static EvmPreset> {
        self.network.as_deref().and_then(presets::evm)
    }

    /// Sets `chain_id` from the `network` preset of the `index`-th `[[evm]]`. Errors: an
    /// unknown network, a `chain_id` that contradicts it, neither set.
    fn resolve_chain_id(&mut self, index: usize) -> Result<(), ConfigError> {
        let at = |k: &str| format!("evm[{index}].{k}");
        match (&self.network, self.preset()) {
            (Some(name), None) => {
                let known: Vec<&str> = presets::EVM.iter().map(|p| p.key).collect();
                Err(err(
                    at("network"),
                    format!(
                        "unknown network {name:?}: use chain_id, or one of {} (or eip155:<chain id> of one)",
                        known.join(", ")
                    ),
                ))
            }
            (Some(name), Some(p)) if self.chain_id != 0 && self.chain_id != p.chain_id => Err(err(
                at("chain_id"),
                format!(
                    "{} but network {name:?} is chain {}",
                    self.chain_id, p.chain_id
                ),
            )),
            (Some(_), Some(p)) => {
                self.chain_id = p.chain_id;
                Ok(())
            }
            (None, _) if self.chain_id == 0 => Err(err(at("chain_id"), "set chain_id or network")),
            (None, _) => Ok(()),
        }
    }

    /// Checks the `index`-th `[[evm]]` and resolves it.
    fn validate(&self, index: usize, fallbacks: &Fallbacks) -> Result<EvmNetwork, ConfigError> {
        let at = |k: &str| format!("evm[{index}].{k}");
        let rpc_urls = match (&self.rpc_url, self.rpc_urls.is_empty()) {
            (Some(_), false) => {
                return Err(err(at("rpc_urls"), "set rpc_url or rpc_urls, not both"));
            }
            (Some(url), true) => vec![url.clone()],
            (None, false) => self.rpc_urls.clone(),
            (None, true) => return Err(err(at("rpc_url"), "set rpc_url (or rpc_urls)")),
        };
        for (u, url) in rpc_urls.iter().enumerate() {
            let key = if self.rpc_url.is_some() {
                at("rpc_url")
            } else {
                at(&format!("rpc_urls[{u}]"))
            };
            url.parse::<alloy::transports::http::reqwest::Url>()
                .map_err(|e| err(key, e.to_string()))?;
        }
        if let Some(ws) = &self.ws_url {
            let url = ws
                .parse::<alloy::transports::http::reqwest::Url>()
                .map_err(|e| err(at("ws_url"), e.to_string()))?;
            if !matches!(url.scheme(), "ws" | "wss") {
                return Err(err(at("ws_url"), "must be a ws:// or wss:// URL"));
            }
        }
        if self.rpc_timeout_seconds == Some(0) {
            return Err(err(at("rpc_timeout_seconds"), "must be at least 1"));
        }
        let preconfirmations = self.preconfirmations(&at)?;
        if self.signer_private_keys.is_empty() {
            return Err(err(
                at("signer_private_keys"),
                format!(
                    "no signer key: set it or X402_EVM_{}_SIGNER_KEYS / X402_EVM_SIGNER_KEYS",
                    self.chain_id
                ),
            ));
        }
        let signers = self
            .signer_private_keys
            .iter()
            .enumerate()
            .map(|(k, key)| {
                key.expose_secret()
                    .parse::<PrivateKeySigner>()
                    .map_err(|_| {
                        err(
                            at(&format!("signer_private_keys[{k}]")),
                            "not a 32-byte hex private key",
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let preset = self.preset();
        let assets = self.resolved_assets(index, preset)?;
        let (mut exact, mut upto) = (self.schemes.is_none(), false);
        if let Some(schemes) = &self.schemes {
            if schemes.is_empty() {
                return Err(err(at("schemes"), "list at least one scheme"));
            }
            for (k, scheme) in schemes.iter().enumerate() {
                let key = at(&format!("schemes[{k}]"));
                let seen = match scheme.as_str() {
                    "exact" => &mut exact,
                    "upto" => &mut upto,
                    _ => {
                        return Err(err(
                            key,
                            format!(
                                "unknown or unsupported scheme {scheme:?}: known: \"exact\", \"upto\""
                            ),
                        ));
                    }
                };
                if *seen {
                    return Err(err(key, format!("{scheme:?} is listed twice")));
                }
                *seen = true;
                if scheme == "upto" && !assets.iter().any(|a| a.takes(EvmTransferMethod::Permit2)) {
                    return Err(err(
                        key,
                        "\"upto\" settles through Permit2 only: list \"permit2\" in an asset's \
                         transfer_methods",
                    ));
                }
            }
        }
        let contract = |key: &str, value: &Option<String>, default: Address| match value {
            None => Ok(default),
            Some(v) => v
                .parse::<Address>()
                .map_err(|_| err(at(key), "not a 0x 20-byte address")),
        };
        let permit2 = contract(
            "permit2_address",
            &self.permit2_address,
            x402_chain::permit2::PERMIT2_ADDRESS,
        )?;
        let exact_permit2_proxy = contract(
            "exact_permit2_proxy",
            &self.exact_permit2_proxy,
            x402_chain::permit2::EXACT_PERMIT2_PROXY_ADDRESS,
        )?;
        let upto_permit2_proxy = contract(
            "upto_permit2_proxy",
            &self.upto_permit2_proxy,
            x402_chain::permit2::UPTO_PERMIT2_PROXY_ADDRESS,
        )?;
        let mut gas = self.gas.clone();
        if let Some(gas) = &mut gas {
            gas::validate(gas, &at("gas"))?;
            if gas.l1_fee_oracle.is_none() {
                gas.l1_fee_oracle = preset
                    .and_then(|p| p.l1_fee_oracle)
                    .map(|a| a.to_checksum(None));
            }
        }
        Ok(EvmNetwork {
            chain_id: self.chain_id,
            network: Network::evm(self.chain_id),
            key: format!("evm[{index}]"),
            rpc_urls,
            ws_url: self.ws_url.clone(),
            preconfirmations,
            rpc_timeout: Duration::from_secs(
                self.rpc_timeout_seconds
                    .unwrap_or(fallbacks.rpc_timeout_seconds),
            ),
            signers,
            min_signer_balance_wei: self
                .min_signer_balance_wei
                .unwrap_or(fallbacks.min_signer_balance_wei),
            accept_contract_signatures: self.accept_contract_signatures,
            lost_record_lookback_blocks: self.lost_record_lookback_blocks,
            assets,
            gas,
            permit2,
            exact_permit2_proxy,
            upto_permit2_proxy,
            exact,
            upto,
        })
    }

    /// `preconfirmations`, `preconfirmation_url` and `preconfirmation_poll_ms`, checked (`at`
    /// names a key of this network).
    fn preconfirmations(
        &self,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Option<Preconfirmations>, ConfigError> {
        if !self.preconfirmations {
            for (key, set) in [
                ("preconfirmation_url", self.preconfirmation_url.is_some()),
                (
                    "preconfirmation_poll_ms",
                    self.preconfirmation_poll_ms.is_some(),
                ),
            ] {
                if set {
                    return Err(err(at(key), "set preconfirmations = true to use it"));
                }
            }
            return Ok(None);
        }
        if let Some(url) = &self.preconfirmation_url {
            let parsed = url
                .parse::<alloy::transports::http::reqwest::Url>()
                .map_err(|e| err(at("preconfirmation_url"), e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(err(
                    at("preconfirmation_url"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        let poll_ms = self
            .preconfirmation_poll_ms
            .unwrap_or(DEFAULT_PRECONFIRMATION_POLL_MS);
        if !PRECONFIRMATION_POLL_MS.contains(&poll_ms) {
            return Err(err(
                at("preconfirmation_poll_ms"),
                format!(
                    "must be between {} and {} (milliseconds)",
                    PRECONFIRMATION_POLL_MS.start(),
                    PRECONFIRMATION_POLL_MS.end()
                ),
            ));
        }
        Ok(Some(Preconfirmations {
            url: self.preconfirmation_url.clone(),
            poll: Duration::from_millis(poll_ms),
        }))
    }

    /// The assets of the `index`-th `[[evm]]`, the `preset`'s USDC filling what is left out.
    fn resolved_assets(
        &self,
        index: usize,
        preset: Option<&'static EvmPreset>,
    ) -> Result<Vec<EvmAsset>, ConfigError> {
        let at = |k: &str| format!("evm[{index}].{k}");
        if self.assets.is_empty() {
            let usdc = preset
                .map(|p| p.usdc)
                .ok_or_else(|| err(at("assets"), "list at least one token"))?;
            return Ok(vec![EvmAsset {
                address: usdc.address,
                name: usdc.name.into(),
                version: usdc.version.into(),
                decimals: usdc.decimals,
                contract_signature_gas_cap: None,
                key: at("network"),
                transfer_methods: vec![EvmTransferMethod::Eip3009],
            }]);
        }
        self.assets
            .iter()
            .enumerate()
            .map(|(a, asset)| {
                let key = at(&format!("assets[{a}]"));
                let address = asset
                    .address
                    .parse::<Address>()
                    .map_err(|_| err(format!("{key}.address"), "not a 0x 20-byte address"))?;
                let known = preset.map(|p| p.usdc).filter(|u| u.address == address);
                let transfer_methods = transfer_methods(&asset.transfer_methods, &key)?;
                // The EIP-712 domain is the token's own only for EIP-3009 (Permit2 signs
                // under Permit2's domain).
                let eip3009 = transfer_methods.contains(&EvmTransferMethod::Eip3009);
                let name = asset
                    .name
                    .clone()
                    .or_else(|| known.map(|u| u.name.to_string()))
                    .or_else(|| (!eip3009).then(String::new))
                    .ok_or_else(|| err(format!("{key}.name"), "missing EIP-712 name"))?;
                if name.is_empty() && eip3009 {
                    return Err(err(format!("{key}.name"), "empty EIP-712 name"));
                }
                let version = asset
                    .version
                    .clone()
                    .or_else(|| known.map(|u| u.version.to_string()))
                    .or_else(|| (!eip3009).then(String::new))
                    .ok_or_else(|| err(format!("{key}.version"), "missing EIP-712 version"))?;
                let decimals = asset
                    .decimals
                    .or_else(|| known.map(|u| u.decimals))
                    .unwrap_or_else(default_decimals);
                Ok(EvmAsset {
                    address,
                    name,
                    version,
                    decimals,
                    contract_signature_gas_cap: asset.contract_signature_gas_cap,
                    key,
                    transfer_methods,
                })
            })
            .collect()
    }
}

/// `transfer_methods` of the asset at `key` (default `["eip3009"]`). Errors: empty, unknown
/// or repeated names, naming the entry.
fn transfer_methods(
    names: &Option<Vec<String>>,
    key: &str,
) -> Result<Vec<EvmTransferMethod>, ConfigError> {
    let Some(names) = names else {
        return Ok(vec![EvmTransferMethod::Eip3009]);
    };
    if names.is_empty() {
        return Err(err(
            format!("{key}.transfer_methods"),
            "list at least one of \"eip3009\", \"permit2\"",
        ));
    }
    let mut methods = Vec::new();
    for (m, name) in names.iter().enumerate() {
        let at = format!("{key}.transfer_methods[{m}]");
        let method = EvmTransferMethod::ALL
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                err(
                    at.clone(),
                    format!("unknown transfer method {name:?}: known: \"eip3009\", \"permit2\""),
                )
            })?;
        if methods.contains(&method) {
            return Err(err(at, format!("{name:?} listed twice")));
        }
        methods.push(method);
    }
    Ok(methods)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Config;

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"
[[evm]]
chain_id = 8453
rpc_url = "http://127.0.0.1:8545"
[[evm.assets]]
address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
name = "USD Coin"
version = "2"
"#;
    const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaf784d7bf4f2ff80";

    #[test]
    fn env_supplies_keys_and_validation_passes() {
        let mut c = Config::from_toml(GOOD).unwrap();
        assert!(
            c.validate()
                .err()
                .unwrap()
                .key
                .contains("signer_private_keys")
        );
        let env = HashMap::from([("X402_EVM_SIGNER_KEYS".to_string(), ANVIL_KEY.to_string())]);
        c.apply_env(&env);
        let valid = c.validate().unwrap();
        assert_eq!(valid.evm()[0].signers.len(), 1);
        assert_eq!(valid.evm()[0].network.as_str(), "eip155:8453");
        assert!(valid.redis().is_none());
    }

    #[test]
    fn env_replaces_one_chains_rpc_urls_and_keys() {
        let mut c = Config::from_toml(GOOD).unwrap();
        let other = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        c.apply_env(&HashMap::from([
            ("X402_EVM_SIGNER_KEYS".to_string(), ANVIL_KEY.to_string()),
            ("X402_EVM_8453_SIGNER_KEYS".to_string(), other.to_string()),
            (
                "X402_EVM_8453_RPC_URL".to_string(),
                "http://127.0.0.1:1, http://127.0.0.1:2".to_string(),
            ),
        ]));
        let valid = c.validate().unwrap();
        let net = &valid.evm()[0];
        assert_eq!(net.rpc_urls, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(net.signers[0], other.parse().unwrap());
    }

    #[test]
    fn gas_section_parses_and_is_checked() {
        let with_gas = format!(
            "{GOOD}\n[evm.gas]\nmarkup_bps = 1500\n[[evm.gas.price_sources]]\nkind = \"chainlink\"\naddress = \"0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70\"\n[[evm.gas.price_sources]]\nkind = \"fixed\"\nusd = \"3000.50\"\n"
        );
        let mut c = Config::from_toml(&with_gas).unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        let valid = c.validate().unwrap();
        let gas = valid.evm()[0].gas.as_ref().unwrap();
        assert_eq!((gas.markup_bps, gas.price_sources.len()), (1500, 2));
        let bad = with_gas.replace("3000.50", "free");
        let mut c = Config::from_toml(&bad).unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        assert_eq!(
            c.validate().err().unwrap().key,
            "evm[0].gas.price_sources[1].usd"
        );
        let e = Config::from_toml(&with_gas.replace("kind = \"fixed\"", "kind = \"magic\""))
            .unwrap_err();
        assert!(e.key.starts_with("evm[0].gas.price_sources[1]"), "{e}");
    }

    /// `GOOD` with `edit` applied and a signer key, validated.
    fn validated(
        edit: impl Fn(&str) -> String,
    ) -> Result<crate::config::ValidConfig, crate::config::ConfigError> {
        let mut c = Config::from_toml(&edit(GOOD)).unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        c.validate()
    }

    #[test]
    fn transfer_methods_default_to_eip3009_and_are_checked_by_name() {
        use super::EvmTransferMethod::{Eip3009, Permit2};
        let v = validated(|t| t.to_string()).unwrap();
        let net = &v.evm()[0];
        assert_eq!(net.assets[0].transfer_methods, vec![Eip3009]);
        assert_eq!(net.permit2, x402_chain::permit2::PERMIT2_ADDRESS);
        assert_eq!(
            net.exact_permit2_proxy,
            x402_chain::permit2::EXACT_PERMIT2_PROXY_ADDRESS
        );
        let v =
            validated(|t| format!("{t}transfer_methods = [\"eip3009\", \"permit2\"]\n")).unwrap();
        assert_eq!(
            v.evm()[0].assets[0].transfer_methods,
            vec![Eip3009, Permit2]
        );
        let e = validated(|t| format!("{t}transfer_methods = [\"eip3009\", \"permit3\"]\n"))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].assets[0].transfer_methods[1]");
        let e = validated(|t| format!("{t}transfer_methods = [\"permit2\", \"permit2\"]\n"))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].assets[0].transfer_methods[1]");
        let e = validated(|t| format!("{t}transfer_methods = []\n"))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].assets[0].transfer_methods");
        // A Permit2-only token needs no EIP-712 domain; an EIP-3009 one does.
        let permit2_only = |t: &str| {
            t.replace("name = \"USD Coin\"\nversion = \"2\"\n", "")
                + "transfer_methods = [\"permit2\"]\n"
        };
        assert!(validated(permit2_only).is_ok());
        let e = validated(|t| t.replace("name = \"USD Coin\"\n", ""))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].assets[0].name");
    }

    #[test]
    fn schemes_and_permit2_addresses_are_checked() {
        let with = |line: &str| {
            let line = line.to_string();
            move |t: &str| t.replace("[[evm.assets]]", &format!("{line}\n[[evm.assets]]"))
        };
        assert!(validated(with("schemes = [\"exact\"]")).is_ok());
        // `upto` is Permit2 only: an asset must take Permit2.
        let e = validated(with("schemes = [\"exact\", \"upto\"]"))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].schemes[1]");
        assert!(e.message.contains("permit2"), "{e}");
        let both = |t: &str| {
            t.replace(
                "[[evm.assets]]",
                "schemes = [\"exact\", \"upto\"]\n[[evm.assets]]",
            ) + "transfer_methods = [\"eip3009\", \"permit2\"]\n"
        };
        let valid = validated(both).unwrap();
        let net = &valid.evm()[0];
        assert!(net.exact && net.upto);
        assert_eq!(
            net.upto_permit2_proxy,
            x402_chain::permit2::UPTO_PERMIT2_PROXY_ADDRESS
        );
        assert_eq!(net.upto_facilitator(), Some(net.signers[0].address()));
        let e = validated(|t| both(t).replace("\"exact\", \"upto\"", "\"upto\", \"upto\""))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].schemes[1]");
        let e = validated(with("schemes = [\"fixed\"]")).err().unwrap();
        assert_eq!(e.key, "evm[0].schemes[0]");
        let e = validated(with("upto_permit2_proxy = \"0x1\""))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].upto_permit2_proxy");
        let e = validated(with("schemes = []")).err().unwrap();
        assert_eq!(e.key, "evm[0].schemes");
        let e = validated(with("permit2_address = \"0x12\"")).err().unwrap();
        assert_eq!(e.key, "evm[0].permit2_address");
        let e = validated(with("exact_permit2_proxy = \"nope\""))
            .err()
            .unwrap();
        assert_eq!(e.key, "evm[0].exact_permit2_proxy");
    }

    #[test]
    fn preconfirmations_are_off_by_default_and_their_keys_are_checked() {
        let with = |line: &str| {
            let line = line.to_string();
            move |t: &str| t.replace("[[evm.assets]]", &format!("{line}\n[[evm.assets]]"))
        };
        assert_eq!(
            validated(|t| t.to_string()).unwrap().evm()[0].preconfirmations,
            None
        );
        let on = validated(with("preconfirmations = true")).unwrap();
        assert_eq!(
            on.evm()[0].preconfirmations,
            Some(super::Preconfirmations {
                url: None,
                poll: std::time::Duration::from_millis(200)
            })
        );
        let own = validated(with(
            "preconfirmations = true\npreconfirmation_url = \"https://mainnet-preconf.base.org\"\npreconfirmation_poll_ms = 100",
        ))
        .unwrap();
        assert_eq!(
            own.evm()[0].preconfirmations,
            Some(super::Preconfirmations {
                url: Some("https://mainnet-preconf.base.org".into()),
                poll: std::time::Duration::from_millis(100)
            })
        );
        for (line, key) in [
            (
                "preconfirmation_url = \"https://mainnet-preconf.base.org\"",
                "evm[0].preconfirmation_url",
            ),
            (
                "preconfirmation_poll_ms = 200",
                "evm[0].preconfirmation_poll_ms",
            ),
            (
                "preconfirmations = true\npreconfirmation_url = \"wss://x.example\"",
                "evm[0].preconfirmation_url",
            ),
            (
                "preconfirmations = true\npreconfirmation_url = \"not a url\"",
                "evm[0].preconfirmation_url",
            ),
            (
                "preconfirmations = true\npreconfirmation_poll_ms = 5",
                "evm[0].preconfirmation_poll_ms",
            ),
            (
                "preconfirmations = true\npreconfirmation_poll_ms = 60000",
                "evm[0].preconfirmation_poll_ms",
            ),
        ] {
            let e = validated(with(line)).err().unwrap();
            assert_eq!(e.key, key, "{line}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            Config::from_toml(&GOOD.replace("chain_id = 8453", "chain_id = \"x\"")).unwrap_err();
        assert_eq!(e.key, "evm[0].chain_id");
        let e = Config::from_toml(&GOOD.replace("listen", "lisen")).unwrap_err();
        assert!(e.message.contains("lisen"), "{e}");
        let mut c =
            Config::from_toml(&GOOD.replace("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "0x12"))
                .unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        assert_eq!(c.validate().err().unwrap().key, "evm[0].assets[0].address");
        c.evm[0].signer_private_keys = vec!["nope".into()];
        assert_eq!(
            c.validate().err().unwrap().key,
            "evm[0].signer_private_keys[0]"
        );
        let mut c = Config::from_toml(&GOOD.replace(
            "rpc_url = \"http://127.0.0.1:8545\"",
            "rpc_url = \"http://127.0.0.1:8545\"\nrpc_timeout_seconds = 0",
        ))
        .unwrap();
        c.evm[0].signer_private_keys = vec![ANVIL_KEY.into()];
        assert_eq!(
            c.validate().err().unwrap().key,
            "evm[0].rpc_timeout_seconds"
        );
        let e = Config::from_toml(&GOOD.replace(
            "rpc_url = \"http://127.0.0.1:8545\"",
            "rpc_url = \"http://127.0.0.1:8545\"\nmin_signer_balance_wei = \"lots\"",
        ))
        .unwrap_err();
        assert_eq!(e.key, "evm[0].min_signer_balance_wei");
    }

    #[test]
    fn network_presets_resolve_and_contradictions_name_the_key() {
        let preset = |body: &str| {
            Config::from_toml(&format!(
                "[[evm]]\nrpc_url = \"http://127.0.0.1:1\"\nsigner_private_keys = [\"{ANVIL_KEY}\"]\n{body}\n"
            ))
        };
        let c = preset("network = \"optimism\"").unwrap();
        assert_eq!(c.evm[0].chain_id, 10);
        let valid = c.validate().unwrap();
        let net = &valid.evm()[0];
        assert_eq!(net.assets[0].name, "USD Coin");
        assert_eq!(net.assets[0].key, "evm[0].network");
        assert!(net.gas.is_none(), "no [evm.gas]: nothing to fill");
        assert_eq!(
            preset("network = \"eip155:8453\"\nchain_id = 8453")
                .unwrap()
                .evm[0]
                .chain_id,
            8453
        );
        let e = preset("network = \"base\"\nchain_id = 1").unwrap_err();
        assert_eq!(e.key, "evm[0].chain_id", "{e}");
        let e = preset("network = \"narnia\"").unwrap_err();
        assert_eq!(e.key, "evm[0].network", "{e}");
        assert!(e.message.contains("base-sepolia"), "{e}");
        assert_eq!(preset("").unwrap_err().key, "evm[0].chain_id");
        // Without a preset, an asset needs its domain; without assets, a chain needs a preset.
        let c = preset("chain_id = 31337\n[[evm.assets]]\naddress = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\"").unwrap();
        assert_eq!(c.validate().err().unwrap().key, "evm[0].assets[0].name");
        let c = preset("chain_id = 31337").unwrap();
        assert_eq!(c.validate().err().unwrap().key, "evm[0].assets");
        let c = preset(&format!("network = \"base\"\n[[evm]]\nnetwork = \"eip155:8453\"\nrpc_url = \"http://127.0.0.1:2\"\nsigner_private_keys = [\"{ANVIL_KEY}\"]")).unwrap();
        assert_eq!(c.validate().err().unwrap().key, "evm[1].chain_id");
    }
}
