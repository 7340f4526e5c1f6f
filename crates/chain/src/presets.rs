//! Network presets: what an operator would otherwise type for each network the official SDKs
//! know (`@x402/evm` / `@x402/svm` 2.27): chain id, the default USDC with its EIP-712 domain
//! and decimals, the block time and, on OP-stack chains, the L1 data fee oracle.
//!
//! Sources: the USDC addresses, EIP-712 `name`/`version` and decimals are `@x402/evm`'s
//! `DEFAULT_ASSETS` where it lists the network (Base, Base Sepolia, Ethereum, Polygon, Arbitrum
//! One, Arbitrum Sepolia, Avalanche) and Circle's published USDC deployments otherwise (Sepolia,
//! Polygon Amoy, Optimism, OP Sepolia, Avalanche Fuji; the addresses are viem's `usdc` token
//! table). The Solana mints are `@x402/svm`'s `USDC_MAINNET_ADDRESS` / `USDC_DEVNET_ADDRESS`.
//! The facilitator reads `name()`, `version()` and `decimals()` of every configured EVM asset at
//! start and refuses to start on a difference, so a wrong entry here cannot pass silently.

use alloy::primitives::{Address, address};

/// OP-stack `GasPriceOracle` predeploy (same address on every OP-stack chain): the L1 data fee.
pub const OP_STACK_GAS_PRICE_ORACLE: Address = address!("420000000000000000000000000000000000000F");

/// An EIP-3009 token with its EIP-712 domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPreset {
    /// Token contract.
    pub address: Address,
    /// EIP-712 domain `name` (the token's `name()`).
    pub name: &'static str,
    /// EIP-712 domain `version` (the token's `version()`).
    pub version: &'static str,
    /// `decimals()`.
    pub decimals: u8,
}

/// A known EVM network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvmPreset {
    /// The name used in configuration (`network = "base"`): the x402 v1 name where there is
    /// one, else the SDKs' usual name (`arbitrum`, `optimism`, …).
    pub key: &'static str,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// EIP-155 chain id (CAIP-2 `eip155:{chain_id}`).
    pub chain_id: u64,
    /// The default USDC.
    pub usdc: TokenPreset,
    /// Typical time between blocks, milliseconds.
    pub block_time_ms: u64,
    /// OP-stack L1 data fee oracle, on OP-stack chains.
    pub l1_fee_oracle: Option<Address>,
}

/// A known Solana cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvmPreset {
    /// The name used in configuration (the x402 v1 name).
    pub key: &'static str,
    /// CAIP-2 network (`solana:` + genesis hash prefix).
    pub network: &'static str,
    /// The default USDC mint (SPL Token).
    pub usdc_mint: solana_address::Address,
    /// Its decimals.
    pub usdc_decimals: u8,
    /// Slot time, milliseconds.
    pub block_time_ms: u64,
}

const fn usdc(address: Address, name: &'static str) -> TokenPreset {
    TokenPreset {
        address,
        name,
        version: "2",
        decimals: 6,
    }
}

/// Every known EVM network.
pub const EVM: &[EvmPreset] = &[
    EvmPreset {
        key: "base",
        aliases: &[],
        chain_id: 8453,
        usdc: usdc(
            address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            "USD Coin",
        ),
        block_time_ms: 2_000,
        l1_fee_oracle: Some(OP_STACK_GAS_PRICE_ORACLE),
    },
    EvmPreset {
        key: "base-sepolia",
        aliases: &[],
        chain_id: 84532,
        usdc: usdc(address!("036CbD53842c5426634e7929541eC2318f3dCF7e"), "USDC"),
        block_time_ms: 2_000,
        l1_fee_oracle: Some(OP_STACK_GAS_PRICE_ORACLE),
    },
    EvmPreset {
        key: "ethereum",
        aliases: &["mainnet"],
        chain_id: 1,
        usdc: usdc(
            address!("A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"),
            "USD Coin",
        ),
        block_time_ms: 12_000,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "sepolia",
        aliases: &[],
        chain_id: 11155111,
        usdc: usdc(address!("1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"), "USDC"),
        block_time_ms: 12_000,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "polygon",
        aliases: &[],
        chain_id: 137,
        usdc: usdc(
            address!("3c499c542cEF5E3811e1192ce70d8cC03d5c3359"),
            "USD Coin",
        ),
        block_time_ms: 2_000,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "polygon-amoy",
        aliases: &[],
        chain_id: 80002,
        usdc: usdc(address!("41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582"), "USDC"),
        block_time_ms: 2_000,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "arbitrum",
        aliases: &["arbitrum-one"],
        chain_id: 42161,
        usdc: usdc(
            address!("af88d065e77c8cC2239327C5EDb3A432268e5831"),
            "USD Coin",
        ),
        block_time_ms: 250,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "arbitrum-sepolia",
        aliases: &[],
        chain_id: 421614,
        usdc: usdc(
            address!("75faf114eafb1BDbe2F0316DF893fd58CE46AA4d"),
            "USD Coin",
        ),
        block_time_ms: 250,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "optimism",
        aliases: &["op-mainnet"],
        chain_id: 10,
        usdc: usdc(
            address!("0b2C639c533813f4Aa9D7837CAf62653d097Ff85"),
            "USD Coin",
        ),
        block_time_ms: 2_000,
        l1_fee_oracle: Some(OP_STACK_GAS_PRICE_ORACLE),
    },
    EvmPreset {
        key: "optimism-sepolia",
        aliases: &["op-sepolia"],
        chain_id: 11155420,
        usdc: usdc(address!("5fd84259d66Cd46123540766Be93DFE6D43130D7"), "USDC"),
        block_time_ms: 2_000,
        l1_fee_oracle: Some(OP_STACK_GAS_PRICE_ORACLE),
    },
    EvmPreset {
        key: "avalanche",
        aliases: &[],
        chain_id: 43114,
        usdc: usdc(
            address!("B97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E"),
            "USD Coin",
        ),
        block_time_ms: 2_000,
        l1_fee_oracle: None,
    },
    EvmPreset {
        key: "avalanche-fuji",
        aliases: &[],
        chain_id: 43113,
        usdc: usdc(
            address!("5425890298aed601595a70AB815c96711a31Bc65"),
            "USD Coin",
        ),
        block_time_ms: 2_000,
        l1_fee_oracle: None,
    },
];

/// Every known Solana cluster.
pub const SVM: &[SvmPreset] = &[
    SvmPreset {
        key: "solana",
        network: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
        usdc_mint: solana_address::Address::from_str_const(
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        ),
        usdc_decimals: 6,
        block_time_ms: 400,
    },
    SvmPreset {
        key: "solana-devnet",
        network: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        usdc_mint: solana_address::Address::from_str_const(
            "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        ),
        usdc_decimals: 6,
        block_time_ms: 400,
    },
];

/// The EVM preset named `name`: its key, an alias or `eip155:{chain_id}` (ASCII
/// case-insensitive).
pub fn evm(name: &str) -> Option<&'static EvmPreset> {
    let chain_id = name
        .strip_prefix("eip155:")
        .and_then(|id| id.parse::<u64>().ok());
    EVM.iter().find(|p| {
        Some(p.chain_id) == chain_id
            || p.key.eq_ignore_ascii_case(name)
            || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// The EVM preset of chain `chain_id`.
pub fn evm_by_chain_id(chain_id: u64) -> Option<&'static EvmPreset> {
    EVM.iter().find(|p| p.chain_id == chain_id)
}

/// The Solana preset named `name`: its key or its CAIP-2 network.
pub fn svm(name: &str) -> Option<&'static SvmPreset> {
    SVM.iter()
        .find(|p| p.key.eq_ignore_ascii_case(name) || p.network == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_caip2_find_the_same_preset() {
        assert_eq!(evm("base").unwrap().chain_id, 8453);
        assert_eq!(evm("eip155:8453").unwrap().key, "base");
        assert_eq!(evm("OP-Sepolia").unwrap().chain_id, 11155420);
        assert_eq!(evm_by_chain_id(42161).unwrap().key, "arbitrum");
        assert!(evm("eip155:999999").is_none() && evm("nowhere").is_none());
        assert_eq!(
            svm("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1").unwrap().key,
            "solana-devnet"
        );
        assert_eq!(
            svm("solana").unwrap().usdc_mint.to_string(),
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
        );
    }

    #[test]
    fn keys_and_chain_ids_are_unique() {
        for (i, a) in EVM.iter().enumerate() {
            for b in &EVM[i + 1..] {
                assert_ne!(a.chain_id, b.chain_id);
                assert_ne!(a.key, b.key);
            }
        }
    }
}
