//! Network presets (`network = "base"`, …): every preset's USDC, EIP-712 domain and decimals
//! against the official SDKs' own tables, read at test time from the installed npm packages in
//! `tests/peers` (never copied into this repository); and the start-up check of configured assets
//! on anvil with the real `x402-facilitator` binary.

use alloy::primitives::Address;
use serde_json::Value;
use x402_chain::presets;
use x402_facilitator::config::Config;
use x402_proto::Network;
use x402_tests::peers::{self, Peer};
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, BASE_USDC, DEV_PRIVATE_KEYS, Usdc};

/// Prints `@x402/evm` `DEFAULT_ASSETS`, `@x402/svm` `DEFAULT_ASSETS` and viem's `usdc` token
/// table (Circle's USDC addresses, for the networks `@x402/evm` does not list) as one JSON.
const SDK_TABLES: &str = r#"
const evm = await import("@x402/evm");
const svm = await import("@x402/svm");
const { usdc } = await import("viem/tokens");
console.log(JSON.stringify({
  evm: evm.DEFAULT_ASSETS,
  svm: svm.DEFAULT_ASSETS,
  viemUsdc: { addresses: usdc.addresses, decimals: usdc.decimals },
}));
"#;

async fn sdk_tables() -> Value {
    peers::ensure_installed().expect("peers installed");
    let out = Peer::new("node")
        .arg("--input-type=module")
        .arg("-e")
        .arg(SDK_TABLES)
        .run()
        .await
        .expect("node runs");
    assert!(out.success(), "{out}");
    out.json().expect("one JSON document")
}

fn address(v: &Value) -> Address {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

#[tokio::test]
async fn every_preset_equals_the_official_sdk_tables() {
    let tables = sdk_tables().await;
    let keys: Vec<&str> = presets::EVM.iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "base",
            "base-sepolia",
            "ethereum",
            "sepolia",
            "polygon",
            "polygon-amoy",
            "arbitrum",
            "arbitrum-sepolia",
            "optimism",
            "optimism-sepolia",
            "avalanche",
            "avalanche-fuji"
        ]
    );
    let mut listed_by_x402 = Vec::new();
    for p in presets::EVM {
        let caip2 = format!("eip155:{}", p.chain_id);
        // A preset's key is the network's x402 v1 name wherever it has one.
        if let Some(v1) = Network::evm(p.chain_id).v1_name() {
            assert_eq!(v1, p.key, "{caip2}");
        }
        match tables["evm"][&caip2].get(0) {
            // `@x402/evm` lists the network: its default asset is the preset's, domain and all.
            Some(sdk) => {
                listed_by_x402.push(p.key);
                assert_eq!(address(&sdk["asset"]), p.usdc.address, "{}", p.key);
                assert_eq!(sdk["name"], p.usdc.name, "{}", p.key);
                assert_eq!(sdk["version"], p.usdc.version, "{}", p.key);
                assert_eq!(sdk["decimals"], p.usdc.decimals, "{}", p.key);
                assert_eq!(sdk["symbol"], "USDC", "{}", p.key);
                assert!(sdk.get("assetTransferMethod").is_none(), "{}", p.key);
            }
            // Not listed by `@x402/evm`: Circle's USDC as viem lists it. (Its EIP-712 domain
            // has no SDK table to compare with; the start-up check reads it from the token.)
            None => {
                let viem = &tables["viemUsdc"];
                assert_eq!(
                    address(&viem["addresses"][p.chain_id.to_string()]),
                    p.usdc.address,
                    "{}",
                    p.key
                );
                assert_eq!(viem["decimals"], p.usdc.decimals, "{}", p.key);
            }
        }
    }
    assert_eq!(
        listed_by_x402,
        [
            "base",
            "base-sepolia",
            "ethereum",
            "polygon",
            "arbitrum",
            "arbitrum-sepolia",
            "avalanche"
        ]
    );
    let svm_keys: Vec<&str> = presets::SVM.iter().map(|p| p.key).collect();
    assert_eq!(svm_keys, ["solana", "solana-devnet"]);
    for p in presets::SVM {
        assert_eq!(Network::parse(p.key).unwrap().as_str(), p.network);
        let sdk = &tables["svm"][p.network][0];
        assert_eq!(sdk["asset"], p.usdc_mint.to_string(), "{}", p.key);
        assert_eq!(sdk["decimals"], p.usdc_decimals, "{}", p.key);
        assert_eq!(sdk["symbol"], "USDC", "{}", p.key);
    }
}

#[tokio::test]
async fn a_preset_network_fills_what_the_config_leaves_out() {
    let tables = sdk_tables().await;
    let key = DEV_PRIVATE_KEYS[1];
    let config = |net: &str, assets: &str| {
        let mut c = Config::from_toml(&format!(
            "[[evm]]\nnetwork = \"{net}\"\nrpc_url = \"http://127.0.0.1:1\"\nsigner_private_keys = [\"{key}\"]\n{assets}\n[evm.gas]\n[[evm.gas.price_sources]]\nkind = \"fixed\"\nusd = \"3000\"\n"
        ))
        .unwrap();
        c.evm[0].signer_private_keys = vec![key.into()];
        c.validate().unwrap().evm()[0].clone()
    };
    for (name, caip2) in [("base", "eip155:8453"), ("eip155:84532", "eip155:84532")] {
        let net = config(name, "");
        let sdk = &tables["evm"][caip2][0];
        assert_eq!(Network::evm(net.chain_id).as_str(), caip2);
        let usdc = &net.assets[0];
        assert_eq!(usdc.address, address(&sdk["asset"]));
        assert_eq!(
            (usdc.name.as_str(), usdc.version.as_str()),
            (
                sdk["name"].as_str().unwrap(),
                sdk["version"].as_str().unwrap()
            )
        );
        assert_eq!(usdc.decimals, sdk["decimals"]);
        assert_eq!(
            net.gas.unwrap().l1_fee_oracle.as_deref(),
            Some("0x420000000000000000000000000000000000000F")
        );
    }
    // Arbitrum is not OP-stack: no L1 fee oracle.
    assert!(config("arbitrum", "").gas.unwrap().l1_fee_oracle.is_none());
    // Explicit keys win over the preset.
    let net = config(
        "base",
        &format!("[[evm.assets]]\naddress = \"{BASE_USDC}\"\nname = \"Renamed\"\n"),
    );
    assert_eq!(
        (net.assets[0].name.as_str(), net.assets[0].version.as_str()),
        ("Renamed", "2")
    );
}

/// The binary's configuration for `anvil` (chain 8453, Base USDC deployed) as `network =
/// "base"` with `assets` appended.
fn binary_toml(anvil: &Anvil, assets: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n[[evm]]\nnetwork = \"base\"\nrpc_url = \"{}\"\nsigner_private_keys = [\"{}\"]\n{assets}",
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
    )
}

#[tokio::test]
async fn a_wrong_eip712_domain_refuses_to_start_naming_the_key() {
    let anvil = Anvil::spawn().await.unwrap();
    Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();

    // The preset alone matches Circle's token on anvil ("USD Coin", "2", 6): it starts.
    let ok = FacilitatorProcess::start("preset-ok", &binary_toml(&anvil, ""))
        .await
        .unwrap();
    let supported: Value = reqwest::get(format!("{}/supported", ok.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        supported["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["network"] == "base"),
        "{supported}"
    );
    drop(ok);

    for (asset, key, wrong) in [
        ("name = \"USDC\"", "evm[0].assets[0].name", "\"USDC\""),
        ("version = \"1\"", "evm[0].assets[0].version", "\"1\""),
        ("decimals = 18", "evm[0].assets[0].decimals", "\"18\""),
    ] {
        let toml = binary_toml(
            &anvil,
            &format!("[[evm.assets]]\naddress = \"{BASE_USDC}\"\n{asset}\n"),
        );
        let err = FacilitatorProcess::start("preset-wrong", &toml)
            .await
            .err()
            .unwrap_or_else(|| panic!("{asset}: started anyway"))
            .to_string();
        assert!(err.contains(&format!("config: {key}: ")), "{asset}: {err}");
        assert!(err.contains(wrong), "{asset}: {err}");
    }
}
