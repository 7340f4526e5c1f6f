//! `POST /requirements`: ready-to-serve `PaymentRequirements` whose amount is the service price
//! plus the quoted settlement gas, in the seed services' shape (`extra.breakdown`).
//!
//! Assets are USD stablecoins (USDC): gas quoted in atomic USDC (6 decimals) is rescaled to the
//! asset's decimals, rounded up.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use x402_proto::{Network, v1, v2};

/// Body of `POST /requirements`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsRequest {
    /// CAIP-2 network or v1 name.
    pub network: String,
    /// Token contract; default: the network's first configured asset.
    #[serde(default)]
    pub asset: Option<String>,
    /// Payment scheme (e.g. `exact`); default: the first scheme served on the network.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Recipient of the payment.
    pub pay_to: String,
    /// Service price in atomic units of the asset, decimal string (e.g. `"10000"` = 0.01 USDC).
    pub price: String,
    /// Longest settlement wait, seconds (default 60).
    #[serde(default = "default_timeout")]
    pub max_timeout_seconds: u64,
    /// Resource URL (v1 `resource`).
    #[serde(default)]
    pub resource: Option<String>,
    /// Human description (v1 `description`).
    #[serde(default)]
    pub description: Option<String>,
    /// MIME type of the resource (v1 `mimeType`).
    #[serde(default)]
    pub mime_type: Option<String>,
}

fn default_timeout() -> u64 {
    60
}

/// Service, gas and total in atomic units of the asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amounts {
    /// Service price.
    pub service: u128,
    /// Settlement gas converted to the asset.
    pub gas: u128,
}

impl Amounts {
    /// `service + gas`; `None` on overflow.
    pub fn total(&self) -> Option<u128> {
        self.service.checked_add(self.gas)
    }
}

/// Answer of `POST /requirements`.
#[derive(Debug, Clone, Serialize)]
pub struct RequirementsResponse {
    /// x402 v2 requirements (CAIP-2 network, `amount`).
    pub v2: v2::PaymentRequirements,
    /// x402 v1 requirements, when the network has a v1 name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v1: Option<v1::PaymentRequirements>,
}

/// Rescales atomic USDC (6 decimals) to `decimals`, rounding up.
pub fn usdc_to_asset_units(usdc_atomic: u128, decimals: u8) -> u128 {
    match decimals.cmp(&6) {
        std::cmp::Ordering::Equal => usdc_atomic,
        std::cmp::Ordering::Greater => {
            usdc_atomic.saturating_mul(10u128.saturating_pow(u32::from(decimals) - 6))
        }
        std::cmp::Ordering::Less => usdc_atomic.div_ceil(10u128.pow(6 - u32::from(decimals))),
    }
}

/// `atomic` as a decimal string with `decimals` places (`13938`, 6 → `"0.013938"`).
pub fn format_units(atomic: u128, decimals: u8) -> String {
    let scale = 10u128.pow(u32::from(decimals));
    if decimals == 0 {
        return atomic.to_string();
    }
    format!(
        "{}.{:0width$}",
        atomic / scale,
        atomic % scale,
        width = usize::from(decimals)
    )
}

/// The asset a requirement is paid in.
pub struct Asset<'a> {
    /// Token contract (EVM, checksummed) or mint (Solana, base58).
    pub address: &'a str,
    /// Token decimals.
    pub decimals: u8,
    /// The scheme's own `extra` entries: EVM `name`/`version` (EIP-712 domain), Solana `feePayer`.
    pub scheme_extra: Map<String, Value>,
}

/// Builds the v2 and v1 requirements of `scheme` for `amounts` of `asset` on `network`.
pub fn build(
    req: &RequirementsRequest,
    scheme: &str,
    network: &Network,
    asset: Asset<'_>,
    amounts: Amounts,
    total: u128,
) -> RequirementsResponse {
    let mut extra = asset.scheme_extra;
    extra.insert("asset_decimals".into(), json!(asset.decimals));
    extra.insert(
        "breakdown".into(),
        json!({
            "service_usdc": format_units(amounts.service, asset.decimals),
            "gas_usdc": format_units(amounts.gas, asset.decimals),
            "total_usdc": format_units(total, asset.decimals),
        }),
    );
    let v2 = v2::PaymentRequirements {
        scheme: scheme.into(),
        network: network.to_string(),
        amount: total.to_string(),
        asset: asset.address.to_string(),
        pay_to: req.pay_to.clone(),
        max_timeout_seconds: req.max_timeout_seconds,
        extra: Some(extra.clone()),
    };
    let v1 = network.v1_name().map(|name| v1::PaymentRequirements {
        scheme: scheme.into(),
        network: name.into(),
        max_amount_required: total.to_string(),
        asset: asset.address.to_string(),
        pay_to: req.pay_to.clone(),
        resource: req.resource.clone().unwrap_or_default(),
        description: req.description.clone().unwrap_or_default(),
        mime_type: req
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/json".into()),
        output_schema: None::<Value>,
        max_timeout_seconds: req.max_timeout_seconds,
        extra: Some(extra),
    });
    RequirementsResponse { v2, v1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_format_and_rescale() {
        assert_eq!(format_units(13_938, 6), "0.013938");
        assert_eq!(format_units(1_000_000, 6), "1.000000");
        assert_eq!(format_units(5, 0), "5");
        assert_eq!(usdc_to_asset_units(3_938, 6), 3_938);
        assert_eq!(usdc_to_asset_units(3_938, 18), 3_938_000_000_000_000);
        assert_eq!(usdc_to_asset_units(3_938, 2), 1); // 0.003938 → 0.01, rounded up
    }

    #[test]
    fn builds_the_seed_services_shape() {
        let req: RequirementsRequest = serde_json::from_value(json!({
            "network": "eip155:8453", "payTo": "0xabc", "price": "10000", "maxTimeoutSeconds": 120
        }))
        .unwrap();
        let mut scheme_extra = Map::new();
        scheme_extra.insert("name".into(), json!("USD Coin"));
        scheme_extra.insert("version".into(), json!("2"));
        let asset = Asset {
            address: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            decimals: 6,
            scheme_extra,
        };
        let amounts = Amounts {
            service: 10_000,
            gas: 3_938,
        };
        let out = build(
            &req,
            "exact",
            &Network::evm(8453),
            asset,
            amounts,
            amounts.total().unwrap(),
        );
        let v2 = serde_json::to_value(&out.v2).unwrap();
        assert_eq!(v2["amount"], "13938");
        assert_eq!(
            v2["extra"]["breakdown"],
            json!({"service_usdc": "0.010000", "gas_usdc": "0.003938", "total_usdc": "0.013938"})
        );
        assert_eq!(v2["extra"]["name"], "USD Coin");
        let v1 = out.v1.unwrap();
        assert_eq!(
            (v1.network.as_str(), v1.max_amount_required.as_str()),
            ("base", "13938")
        );
    }
}
