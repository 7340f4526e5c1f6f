//! Network identifiers: CAIP-2 (`eip155:8453`, `solana:5eykt4…`) used by x402 v2 and the short
//! names used by x402 v1 (`base`, `base-sepolia`, `solana-devnet`, …).

use std::fmt;

/// CAIP-2 reference of Solana mainnet-beta (genesis hash prefix).
pub const SOLANA_MAINNET: &str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";
/// CAIP-2 reference of Solana devnet.
pub const SOLANA_DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
/// CAIP-2 reference of Solana testnet.
pub const SOLANA_TESTNET: &str = "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z";

/// The v1 network names and their CAIP-2 identifiers (x402 transports v1; `@x402/evm` 2.27
/// `EVM_NETWORK_CHAIN_ID_MAP` and the `@x402/svm` v1 names).
const V1_NAMES: &[(&str, &str)] = &[
    ("base", "eip155:8453"),
    ("base-sepolia", "eip155:84532"),
    ("avalanche", "eip155:43114"),
    ("avalanche-fuji", "eip155:43113"),
    ("polygon", "eip155:137"),
    ("polygon-amoy", "eip155:80002"),
    ("sei", "eip155:1329"),
    ("sei-testnet", "eip155:1328"),
    ("iotex", "eip155:4689"),
    ("ethereum", "eip155:1"),
    ("sepolia", "eip155:11155111"),
    ("abstract", "eip155:2741"),
    ("abstract-testnet", "eip155:11124"),
    ("peaq", "eip155:3338"),
    ("story", "eip155:1514"),
    ("educhain", "eip155:41923"),
    ("skale-base-sepolia", "eip155:324705682"),
    ("megaeth", "eip155:4326"),
    ("monad", "eip155:143"),
    ("stable", "eip155:988"),
    ("stable-testnet", "eip155:2201"),
    ("celo", "eip155:42220"),
    ("flare", "eip155:14"),
    ("solana", SOLANA_MAINNET),
    ("solana-devnet", SOLANA_DEVNET),
    ("solana-testnet", SOLANA_TESTNET),
];

/// A CAIP-2 chain identifier, `namespace:reference` (e.g. `eip155:8453`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network(String);

impl Network {
    /// Parses a CAIP-2 identifier (`namespace:reference`) or, failing that, a v1 network name.
    /// Returns `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(caip2) = caip2_of_v1_name(s) {
            return Some(Network(caip2.to_string()));
        }
        let (ns, reference) = s.split_once(':')?;
        let ok_ns = !ns.is_empty()
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_ref = !reference.is_empty()
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (ok_ns && ok_ref).then(|| Network(s.to_string()))
    }

    /// The EVM network `eip155:{chain_id}`.
    pub fn evm(chain_id: u64) -> Self {
        Network(format!("eip155:{chain_id}"))
    }

    /// The CAIP-2 string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The CAIP-2 namespace (`eip155`, `solana`).
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map(|(ns, _)| ns).unwrap_or("")
    }

    /// The EIP-155 chain id when this is an `eip155:` network with a decimal reference.
    pub fn evm_chain_id(&self) -> Option<u64> {
        self.0.strip_prefix("eip155:")?.parse().ok()
    }

    /// The v1 name of this network, if it has one.
    pub fn v1_name(&self) -> Option<&'static str> {
        V1_NAMES.iter().find(|(_, c)| *c == self.0).map(|(n, _)| *n)
    }

    /// The `namespace:*` wildcard used as a key of `signers` in `/supported`.
    pub fn wildcard(&self) -> String {
        format!("{}:*", self.namespace())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CAIP-2 identifier of a v1 network name (`base` → `eip155:8453`).
pub fn caip2_of_v1_name(name: &str) -> Option<&'static str> {
    V1_NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_map_to_caip2_and_back() {
        let n = Network::parse("base").unwrap();
        assert_eq!(n.as_str(), "eip155:8453");
        assert_eq!(n.evm_chain_id(), Some(8453));
        assert_eq!(n.v1_name(), Some("base"));
        assert_eq!(
            Network::parse("solana-devnet").unwrap().as_str(),
            SOLANA_DEVNET
        );
        assert_eq!(
            Network::parse("eip155:84532").unwrap().v1_name(),
            Some("base-sepolia")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Network::parse("nowhere").is_none());
        assert!(Network::parse(":1").is_none());
        assert!(Network::parse("eip155:").is_none());
        assert_eq!(Network::parse("eip155:abc").unwrap().evm_chain_id(), None);
    }

    #[test]
    fn wildcard_is_namespace_star() {
        assert_eq!(Network::evm(1).wildcard(), "eip155:*");
        assert_eq!(
            Network::parse(SOLANA_MAINNET).unwrap().wildcard(),
            "solana:*"
        );
    }
}
