//! `[[svm]]`: Solana networks (x402-reference §6).
//!
//! ```toml
//! [[svm]]
//! network = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"   # or a v1 name: "solana-devnet"
//! rpc_url = "https://api.devnet.solana.com"
//! fee_payer_key_files = ["/run/secrets/fee-payer.json"] # solana-keygen JSON byte arrays
//! [[svm.assets]]
//! mint = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
//! ```
//!
//! Environment overrides, with `<NAME>` the v1 name upper-cased and `-` → `_`
//! (`SOLANA`, `SOLANA_DEVNET`, `SOLANA_TESTNET`):
//! - `X402_SVM_<NAME>_RPC_URL`: RPC URL of one network.
//! - `X402_SVM_<NAME>_FEE_PAYER_KEYS`: comma-separated base58 64-byte keypairs for one network.
//! - `X402_SVM_FEE_PAYER_KEYS`: the same for every Solana network that has none.
//!
//! Fee-payer key files are read once, by [`Config::validate`](super::Config::validate);
//! everything after it uses the keypairs of the [`SvmNetwork`]s of its
//! [`ValidConfig`](super::ValidConfig).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use solana_address::Address;
use solana_keypair::Keypair;
use x402_proto::Network;
use x402_verify::svm::SvmPolicy;

use super::error::{ConfigError, err};
use super::gas::{self, GasConfig, PriceSourceConfig};

/// Default of `[[svm]] rpc_timeout_seconds`, seconds.
pub const DEFAULT_RPC_TIMEOUT_SECONDS: u64 = 10;

/// Default of `[[svm]] min_fee_payer_balance_lamports`: 0.001 SOL, lamports.
pub const DEFAULT_MIN_FEE_PAYER_BALANCE_LAMPORTS: u64 = 1_000_000;

/// `[[svm]]`: one Solana cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvmNetworkConfig {
    /// CAIP-2 (`solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp` mainnet, `solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1`
    /// devnet, `solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z` testnet) or v1 name (`solana`,
    /// `solana-devnet`, `solana-testnet`).
    pub network: String,
    /// JSON-RPC URL (shorthand for a one-element `rpc_urls`).
    #[serde(default)]
    pub rpc_url: Option<String>,
    /// JSON-RPC URLs in order of preference: calls move to the next on a failure or timeout.
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    /// Every JSON-RPC call to this cluster gives up after this long, seconds (default 10; 0
    /// counts as 1).
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_seconds: u64,
    /// Fee-payer keypairs, base58 of the 64 secret+public bytes (prefer the environment).
    /// `Debug` prints them redacted.
    #[serde(default)]
    pub fee_payer_keys: Vec<SecretString>,
    /// Fee-payer keypair files: JSON arrays of 64 bytes, as `solana-keygen` writes them.
    #[serde(default)]
    pub fee_payer_key_files: Vec<String>,
    /// Smallest balance of a fee payer, lamports, for a payment it would pay for to be
    /// accepted (else 503 before anything is reserved) and to count as funded in
    /// `/health/ready` (default: the deprecated `[health] min_svm_fee_payer_lamports` when set,
    /// else 1,000,000 = 0.001 SOL).
    #[serde(default)]
    pub min_fee_payer_balance_lamports: Option<u64>,
    /// Cap on `SetComputeUnitPrice`, micro-lamports per compute unit (default 5,000,000, the
    /// reference's).
    #[serde(default = "default_max_price")]
    pub max_compute_unit_price_micro_lamports: u64,
    /// Cap on `SetComputeUnitLimit`, compute units (default 40,000, about what the allowed
    /// instructions need; 120,000 when `create_destination_ata_for` lists owners, since creating
    /// a token account costs more). Priority fee at most `max_compute_unit_limit ×` the price cap.
    #[serde(default)]
    pub max_compute_unit_limit: Option<u32>,
    /// Most required signatures per payment transaction (default 2: fee payer and payer).
    #[serde(default = "default_max_signers")]
    pub max_signers: u8,
    /// `payTo` owners (base58) that are the operator's own: a payment to one of them may create
    /// its missing associated token account (`CreateIdempotent`, rent paid by the fee payer).
    /// Empty (default): creation refused.
    #[serde(default)]
    pub create_destination_ata_for: Vec<String>,
    /// SPL mints settled on this cluster; none listed on a preset cluster (`solana`,
    /// `solana-devnet`, see `x402_chain::presets`) → its USDC.
    #[serde(default)]
    pub assets: Vec<SvmAssetConfig>,
    /// Fee and rent pricing in USDC for `/quote` and `/requirements`; the price sources quote
    /// SOL in USD (`fixed`, `coinbase` with `SOL-USD`, `http`; `chainlink` is EVM-only).
    #[serde(default)]
    pub gas: Option<GasConfig>,
}

/// `[[svm.assets]]`: one SPL token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvmAssetConfig {
    /// Mint address (base58). Mainnet USDC: `EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v`;
    /// devnet USDC: `4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU`.
    pub mint: String,
    /// Token decimals (USDC: 6).
    #[serde(default = "default_decimals")]
    pub decimals: u8,
}

/// A validated Solana network ready to connect.
#[derive(Clone)]
pub struct SvmNetwork {
    /// CAIP-2 network.
    pub network: Network,
    /// The first JSON-RPC URL (what health probes read).
    pub rpc_url: String,
    /// Every JSON-RPC URL, in order of preference (failover).
    pub rpc_urls: Vec<String>,
    /// Time limit of every JSON-RPC call (at least one second).
    pub rpc_timeout: std::time::Duration,
    /// Fee payers (at least one), read once at validation.
    pub fee_payers: Vec<Arc<Keypair>>,
    /// Smallest fee-payer balance, lamports, for a payment to be accepted and for the fee
    /// payer to count as funded.
    pub min_fee_payer_balance_lamports: u64,
    /// Mints with their decimals.
    pub assets: Vec<(Address, u8)>,
    /// Caps and ATA-creation allow-list.
    pub policy: SvmPolicy,
    /// Fee pricing, if configured.
    pub gas: Option<GasConfig>,
}

fn default_rpc_timeout() -> u64 {
    DEFAULT_RPC_TIMEOUT_SECONDS
}
fn default_max_price() -> u64 {
    SvmPolicy::default().max_compute_unit_price
}
fn default_max_signers() -> u8 {
    SvmPolicy::default().max_signers
}
fn default_decimals() -> u8 {
    6
}

/// The environment-variable stem of a Solana network: its v1 name upper-cased, `-` → `_`.
pub fn env_stem(network: &Network) -> String {
    network
        .v1_name()
        .unwrap_or(network.as_str())
        .to_ascii_uppercase()
        .replace(['-', ':'], "_")
}

/// Applies `X402_SVM_*` overrides from `env` to `nets`.
pub fn apply_env(nets: &mut [SvmNetworkConfig], env: &HashMap<String, String>) {
    let split = |v: &String| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    };
    for net in nets {
        let Some(network) = Network::parse(&net.network) else {
            continue;
        };
        let stem = env_stem(&network);
        if let Some(urls) = env.get(&format!("X402_SVM_{stem}_RPC_URL")) {
            net.rpc_url = None;
            net.rpc_urls = split(urls);
        }
        if let Some(keys) = env.get(&format!("X402_SVM_{stem}_FEE_PAYER_KEYS")) {
            net.fee_payer_keys = split(keys).into_iter().map(SecretString::from).collect();
        } else if net.fee_payer_keys.is_empty()
            && net.fee_payer_key_files.is_empty()
            && let Some(keys) = env.get("X402_SVM_FEE_PAYER_KEYS")
        {
            net.fee_payer_keys = split(keys).into_iter().map(SecretString::from).collect();
        }
    }
}

/// A keypair from base58 of its 64 bytes. Never panics on bad input.
pub fn keypair_from_base58(s: &str) -> Result<Keypair, String> {
    let bytes = bs58::decode(s.trim())
        .into_vec()
        .map_err(|_| "not base58".to_string())?;
    keypair_from_bytes(&bytes)
}

fn keypair_from_bytes(bytes: &[u8]) -> Result<Keypair, String> {
    if bytes.len() != 64 {
        return Err(format!("{} bytes; a keypair has 64", bytes.len()));
    }
    Keypair::try_from(bytes).map_err(|e| format!("not an Ed25519 keypair: {e}"))
}

fn keypair_from_file(path: &str) -> Result<Keypair, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The parser's message may quote a byte of the key: only its position is shown.
    let bytes: Vec<u8> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{path} is not a JSON array of bytes (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    keypair_from_bytes(&bytes)
}

/// Checks every `[[svm]]` entry (reading its fee-payer key files) and returns the networks
/// ready to connect; a network without `min_fee_payer_balance_lamports` gets
/// `default_min_fee_payer_lamports`. Errors name the key (`svm[0].assets[1].mint`).
pub(super) fn validate(
    nets: &[SvmNetworkConfig],
    default_min_fee_payer_lamports: u64,
) -> Result<Vec<SvmNetwork>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    nets.iter()
        .enumerate()
        .map(|(i, net)| {
            let at = |k: &str| format!("svm[{i}].{k}");
            let network = Network::parse(&net.network)
                .filter(|n| n.namespace() == "solana")
                .ok_or_else(|| {
                    err(
                        at("network"),
                        format!("{:?} is not a solana:… CAIP-2 id or v1 name", net.network),
                    )
                })?;
            if !seen.insert(network.clone()) {
                return Err(err(at("network"), format!("{network} configured twice")));
            }
            let rpc_urls = match (&net.rpc_url, net.rpc_urls.is_empty()) {
                (Some(_), false) => {
                    return Err(err(at("rpc_urls"), "set rpc_url or rpc_urls, not both"));
                }
                (Some(url), true) => vec![url.clone()],
                (None, false) => net.rpc_urls.clone(),
                (None, true) => return Err(err(at("rpc_url"), "set rpc_url (or rpc_urls)")),
            };
            for (u, url) in rpc_urls.iter().enumerate() {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    let key = if net.rpc_url.is_some() {
                        at("rpc_url")
                    } else {
                        at(&format!("rpc_urls[{u}]"))
                    };
                    return Err(err(key, "must be an http:// or https:// URL"));
                }
            }
            let mut fee_payers = Vec::new();
            for (k, key) in net.fee_payer_keys.iter().enumerate() {
                let kp = keypair_from_base58(key.expose_secret())
                    .map_err(|m| err(at(&format!("fee_payer_keys[{k}]")), m))?;
                fee_payers.push(Arc::new(kp));
            }
            for (k, path) in net.fee_payer_key_files.iter().enumerate() {
                let kp = keypair_from_file(path)
                    .map_err(|m| err(at(&format!("fee_payer_key_files[{k}]")), m))?;
                fee_payers.push(Arc::new(kp));
            }
            if fee_payers.is_empty() {
                return Err(err(
                    at("fee_payer_keys"),
                    format!(
                        "no fee payer: set fee_payer_keys, fee_payer_key_files, \
                         X402_SVM_{}_FEE_PAYER_KEYS or X402_SVM_FEE_PAYER_KEYS",
                        env_stem(&network)
                    ),
                ));
            }
            let assets = if net.assets.is_empty() {
                let preset = x402_chain::presets::svm(network.as_str()).ok_or_else(|| {
                    err(
                        at("assets"),
                        "list at least one mint (no preset for this network)",
                    )
                })?;
                vec![(preset.usdc_mint, preset.usdc_decimals)]
            } else {
                net.assets
                    .iter()
                    .enumerate()
                    .map(|(a, asset)| {
                        Address::from_str(&asset.mint)
                            .map(|m| (m, asset.decimals))
                            .map_err(|_| {
                                err(at(&format!("assets[{a}].mint")), "not a base58 address")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            let create_destination_for = net
                .create_destination_ata_for
                .iter()
                .enumerate()
                .map(|(o, owner)| {
                    Address::from_str(owner).map_err(|_| {
                        err(
                            at(&format!("create_destination_ata_for[{o}]")),
                            "not a base58 address",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if net.max_signers == 0 {
                return Err(err(at("max_signers"), "must be at least 1"));
            }
            if let Some(gas) = &net.gas {
                gas::validate(gas, &at("gas"))?;
                if gas.l1_fee_oracle.is_some() {
                    return Err(err(at("gas.l1_fee_oracle"), "EVM only; remove it"));
                }
                if let Some(i) = gas
                    .price_sources
                    .iter()
                    .position(|p| matches!(p, PriceSourceConfig::Chainlink { .. }))
                {
                    return Err(err(
                        at(&format!("gas.price_sources[{i}]")),
                        "chainlink feeds are EVM only; use coinbase (SOL-USD), http or fixed",
                    ));
                }
            }
            Ok(SvmNetwork {
                network,
                rpc_url: rpc_urls[0].clone(),
                rpc_urls,
                rpc_timeout: std::time::Duration::from_secs(net.rpc_timeout_seconds.max(1)),
                fee_payers,
                min_fee_payer_balance_lamports: net
                    .min_fee_payer_balance_lamports
                    .unwrap_or(default_min_fee_payer_lamports),
                assets,
                policy: SvmPolicy {
                    max_compute_unit_price: net.max_compute_unit_price_micro_lamports,
                    max_compute_unit_limit: net.max_compute_unit_limit.unwrap_or(
                        if create_destination_for.is_empty() {
                            x402_verify::svm::DEFAULT_MAX_COMPUTE_UNIT_LIMIT
                        } else {
                            x402_verify::svm::DEFAULT_MAX_COMPUTE_UNIT_LIMIT_WITH_CREATE
                        },
                    ),
                    max_signers: net.max_signers,
                    create_destination_for,
                },
                gas: net.gas.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use solana_signer::Signer;

    use super::*;
    use crate::config::Config;

    /// The Solana networks of `c` after the one validation.
    fn validate_svm(c: &Config) -> Result<Vec<SvmNetwork>, ConfigError> {
        c.validate().map(|v| v.svm().to_vec())
    }

    const SVM_ONLY: &str = r#"
[[svm]]
network = "solana-devnet"
rpc_url = "http://127.0.0.1:8899"
max_compute_unit_limit = 40000
[[svm.assets]]
mint = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
"#;

    #[test]
    fn env_supplies_fee_payer_and_network_resolves() {
        let mut c = Config::from_toml(SVM_ONLY).unwrap();
        assert_eq!(validate_svm(&c).err().unwrap().key, "svm[0].fee_payer_keys");
        let kp = Keypair::new();
        let env = HashMap::from([
            ("X402_SVM_FEE_PAYER_KEYS".to_string(), kp.to_base58_string()),
            (
                "X402_SVM_SOLANA_DEVNET_RPC_URL".to_string(),
                "http://127.0.0.1:9999".to_string(),
            ),
        ]);
        c.apply_env(&env);
        let nets = validate_svm(&c).unwrap();
        assert_eq!(nets[0].network.as_str(), x402_proto::network::SOLANA_DEVNET);
        assert_eq!(nets[0].rpc_url, "http://127.0.0.1:9999");
        assert_eq!(nets[0].fee_payers[0].pubkey(), kp.pubkey());
        assert_eq!(nets[0].policy.max_compute_unit_limit, 40_000);
        assert_eq!(nets[0].policy.max_compute_unit_price, 5_000_000);
    }

    #[test]
    fn a_preset_cluster_without_assets_settles_its_usdc() {
        let text = SVM_ONLY.replace(
            "[[svm.assets]]\nmint = \"4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU\"\n",
            "",
        );
        assert!(!text.contains("svm.assets"));
        let mut c = Config::from_toml(&text).unwrap();
        c.svm[0].fee_payer_keys = vec![Keypair::new().to_base58_string().into()];
        let nets = validate_svm(&c).unwrap();
        let devnet = x402_chain::presets::svm("solana-devnet").unwrap();
        assert_eq!(nets[0].assets, [(devnet.usdc_mint, 6)]);
        // A cluster without a preset still needs its mints listed.
        c.svm[0].network = "solana-testnet".into();
        assert_eq!(validate_svm(&c).err().unwrap().key, "svm[0].assets");
    }

    /// Issue 21 point 5: the compute unit limit cap defaults to about what the allowed
    /// instructions need (more when the operator lets payments create a token account), and a
    /// written value wins.
    #[test]
    fn compute_unit_limit_cap_defaults_to_what_the_instructions_need() {
        let text = SVM_ONLY.replace("max_compute_unit_limit = 40000\n", "");
        let mut c = Config::from_toml(&text).unwrap();
        c.svm[0].fee_payer_keys = vec![Keypair::new().to_base58_string().into()];
        let nets = validate_svm(&c).unwrap();
        assert_eq!(
            nets[0].policy.max_compute_unit_limit,
            x402_verify::svm::DEFAULT_MAX_COMPUTE_UNIT_LIMIT
        );
        c.svm[0].create_destination_ata_for = vec![Keypair::new().pubkey().to_string()];
        let nets = validate_svm(&c).unwrap();
        assert_eq!(
            nets[0].policy.max_compute_unit_limit,
            x402_verify::svm::DEFAULT_MAX_COMPUTE_UNIT_LIMIT_WITH_CREATE
        );
        c.svm[0].max_compute_unit_limit = Some(30_000);
        assert_eq!(
            validate_svm(&c).unwrap()[0].policy.max_compute_unit_limit,
            30_000
        );
    }

    #[test]
    fn svm_record_ttl_has_a_floor() {
        let mut c = Config::from_toml(SVM_ONLY).unwrap();
        c.svm[0].fee_payer_keys = vec![Keypair::new().to_base58_string().into()];
        assert_eq!(c.settle.svm_record_ttl_seconds, 86_400);
        c.settle.svm_record_ttl_seconds = 119;
        assert_eq!(
            c.validate().err().unwrap().key,
            "settle.svm_record_ttl_seconds"
        );
        c.settle.svm_record_ttl_seconds = 120;
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = Config::from_toml(SVM_ONLY).unwrap();
        c.svm[0].fee_payer_keys = vec!["not-a-key".into()];
        assert_eq!(
            validate_svm(&c).err().unwrap().key,
            "svm[0].fee_payer_keys[0]"
        );
        c.svm[0].fee_payer_keys = vec![Keypair::new().to_base58_string().into()];
        c.svm[0].assets[0].mint = "0x12".into();
        assert_eq!(validate_svm(&c).err().unwrap().key, "svm[0].assets[0].mint");
        c.svm[0].assets[0].mint = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU".into();
        c.svm[0].network = "eip155:8453".into();
        assert_eq!(validate_svm(&c).err().unwrap().key, "svm[0].network");
        c.svm[0].network = "solana".into();
        c.svm[0].fee_payer_key_files = vec!["/nonexistent/key.json".into()];
        let e = validate_svm(&c).err().unwrap();
        assert_eq!(e.key, "svm[0].fee_payer_key_files[0]");
    }

    /// The commented `[[svm]]` template of deploy/config.example.toml, uncommented, is valid.
    #[test]
    fn example_config_solana_section_is_valid() {
        let text = include_str!("../../../../deploy/config.example.toml");
        let (evm, solana) = text.split_once("\n# Solana (the `exact` scheme").unwrap();
        let uncommented: String = solana
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || (l.starts_with(|c: char| c.is_ascii_lowercase()) && l.contains(" = "))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let mut c = Config::from_toml(&format!("{evm}\n{uncommented}")).unwrap();
        let env = HashMap::from([
            (
                "X402_SVM_SOLANA_FEE_PAYER_KEYS".to_string(),
                Keypair::new().to_base58_string(),
            ),
            (
                "X402_EVM_SIGNER_KEYS".to_string(),
                "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaf784d7bf4f2ff80".to_string(),
            ),
            ("X402_API_KEY_SHA256_CLIENT".to_string(), "ab".repeat(32)),
            ("X402_API_KEY_SHA256_OPS".to_string(), "cd".repeat(32)),
        ]);
        c.apply_env(&env);
        let nets = validate_svm(&c).unwrap();
        assert_eq!(nets.len(), 1);
        assert_eq!(
            nets[0].network.as_str(),
            x402_proto::network::SOLANA_MAINNET
        );
        assert_eq!(nets[0].assets[0].1, 6);
    }

    #[test]
    fn key_file_is_a_json_byte_array() {
        let kp = Keypair::new();
        let path = std::env::temp_dir().join(format!("x402-kp-{}.json", kp.pubkey()));
        std::fs::write(
            &path,
            serde_json::to_string(&kp.to_bytes().to_vec()).unwrap(),
        )
        .unwrap();
        let loaded = keypair_from_file(path.to_str().unwrap()).unwrap();
        assert_eq!(loaded.pubkey(), kp.pubkey());
        std::fs::remove_file(path).unwrap();
    }
}
