//! Conversion of a native-token cost (wei on EVM, lamports on Solana: any `native_decimals`)
//! into atomic USDC (6 decimals) with a safety markup and a minimum, in integer arithmetic,
//! every rounding up (in the facilitator's favour).

use alloy::primitives::U256;

use crate::price::NativePrice;

/// Decimals of USDC: 1 USDC = 10^6 atomic units.
pub const USDC_DECIMALS: u8 = 6;
/// Decimals of ETH (and of the native token of every EVM chain here): 1 ETH = 10^18 wei.
pub const ETH_DECIMALS: u8 = 18;
/// Decimals of SOL: 1 SOL = 10^9 lamports.
pub const SOL_DECIMALS: u8 = 9;
/// Basis points in one: 10 000 bps = 100 %.
pub const BPS: u32 = 10_000;

/// A conversion result that does not fit (absurd inputs only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conversion overflow: {0}")]
pub struct ConvertError(pub String);

/// How a native cost becomes a USDC charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsdcConversion {
    /// Safety markup on the converted cost, basis points (1000 = +10 %).
    pub markup_bps: u32,
    /// Smallest charge, atomic USDC (e.g. 1 = 0.000001 USDC).
    pub minimum_atomic: u128,
}

/// `ceil(a / b)` for `b > 0`.
fn ceil_div(a: U256, b: U256) -> U256 {
    let (q, r) = a.div_rem(b);
    if r.is_zero() { q } else { q + U256::from(1u8) }
}

/// Exact value in atomic USDC of `native_atomic` units of a native token with `native_decimals`
/// decimals (wei: 18) at `price`, rounded up:
/// `ceil(native_atomic × usd_mantissa × 10^6 / 10^(native_decimals + usd_decimals))`.
pub fn native_to_usdc_atomic(
    native_atomic: u128,
    native_decimals: u8,
    price: &NativePrice,
) -> Result<u128, ConvertError> {
    let overflow = || {
        ConvertError(format!(
            "{native_atomic} × {} does not fit",
            price.usd_string()
        ))
    };
    let ten = U256::from(10u8);
    let num = U256::from(native_atomic)
        .checked_mul(U256::from(price.usd_mantissa))
        .and_then(|n| n.checked_mul(ten.pow(U256::from(USDC_DECIMALS))))
        .ok_or_else(overflow)?;
    let den = ten.pow(U256::from(
        u32::from(native_decimals) + u32::from(price.usd_decimals),
    ));
    u128::try_from(ceil_div(num, den)).map_err(|_| overflow())
}

impl UsdcConversion {
    /// A conversion with `markup_bps` basis points of markup and a minimum of `minimum_atomic`
    /// atomic USDC.
    pub fn new(markup_bps: u32, minimum_atomic: u128) -> Self {
        UsdcConversion {
            markup_bps,
            minimum_atomic,
        }
    }

    /// The charge in atomic USDC for a cost of `native_atomic` (wei for `native_decimals` 18,
    /// lamports for 9): `max(minimum, marked_up_atomic(…))`.
    pub fn charge_atomic(
        &self,
        native_atomic: u128,
        native_decimals: u8,
        price: &NativePrice,
    ) -> Result<u128, ConvertError> {
        let marked = self.marked_up_atomic(native_atomic, native_decimals, price)?;
        Ok(marked.max(self.minimum_atomic))
    }

    /// The value with markup but without the minimum, atomic USDC:
    /// `ceil(ceil(native value in atomic USDC) × (10000 + markup_bps) / 10000)`. For a cost added
    /// to a charge that already had its minimum (Solana rent on top of the fee).
    pub fn marked_up_atomic(
        &self,
        native_atomic: u128,
        native_decimals: u8,
        price: &NativePrice,
    ) -> Result<u128, ConvertError> {
        let base = native_to_usdc_atomic(native_atomic, native_decimals, price)?;
        let marked = ceil_div(
            U256::from(base) * U256::from(BPS + self.markup_bps.min(u32::MAX - BPS)),
            U256::from(BPS),
        );
        u128::try_from(marked).map_err(|_| ConvertError(format!("{base} with markup does not fit")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(usd: &str) -> NativePrice {
        NativePrice::from_decimal_str(usd, 0, "test").unwrap()
    }

    const GWEI: u128 = 1_000_000_000;

    #[test]
    fn hand_computed_values() {
        // 100 000 gas × 1.25 gwei = 125 000 gwei = 0.000125 ETH; at $3000 = $0.375 = 375 000 atomic.
        let wei = 100_000 * 1_250_000_000;
        assert_eq!(native_to_usdc_atomic(wei, 18, &price("3000")), Ok(375_000));
        // Chainlink-style 8 decimals: $3000.12345678 × 0.000125 ETH = $0.3750154320975 → 375 016.
        let p = NativePrice {
            usd_mantissa: 300_012_345_678,
            usd_decimals: 8,
            observed_at: 0,
            source: "t".into(),
        };
        assert_eq!(native_to_usdc_atomic(wei, 18, &p), Ok(375_016));
        // +10 % markup: 375 016 × 1.1 = 412 517.6 → 412 518.
        assert_eq!(
            UsdcConversion::new(1000, 1).charge_atomic(wei, 18, &p),
            Ok(412_518)
        );
        // Solana-style 9 decimals: 5000 lamports at $150 = $0.00075 = 750 atomic.
        assert_eq!(native_to_usdc_atomic(5000, 9, &price("150")), Ok(750));
        // Token-account rent 2 039 280 lamports at $150 = $0.305892 = 305 892 atomic; +10 % =
        // 336 481.2 → 336 482; the minimum is not applied by marked_up_atomic.
        let conv = UsdcConversion::new(1000, 1_000_000);
        assert_eq!(
            conv.marked_up_atomic(2_039_280, SOL_DECIMALS, &price("150")),
            Ok(336_482)
        );
        assert_eq!(
            conv.charge_atomic(2_039_280, SOL_DECIMALS, &price("150")),
            Ok(1_000_000)
        );
        assert_eq!(conv.marked_up_atomic(0, SOL_DECIMALS, &price("150")), Ok(0));
    }

    #[test]
    fn rounds_up_and_applies_minimum() {
        // 1 wei at $3000 is 3e-12 USDC: rounds up to one atomic unit.
        assert_eq!(native_to_usdc_atomic(1, 18, &price("3000")), Ok(1));
        assert_eq!(native_to_usdc_atomic(0, 18, &price("3000")), Ok(0));
        // Exactly one atomic unit: 1/3000 ETH × 10^-6 … use $1 and 10^12 wei = $0.000001.
        assert_eq!(native_to_usdc_atomic(GWEI * 1000, 18, &price("1")), Ok(1));
        assert_eq!(
            native_to_usdc_atomic(GWEI * 1000 + 1, 18, &price("1")),
            Ok(2)
        );
        assert_eq!(
            native_to_usdc_atomic(GWEI * 1000 - 1, 18, &price("1")),
            Ok(1)
        );
        // Markup rounding: 3 × 1.0001 = 3.0003 → 4; 10000 × 1.0001 = 10001 exactly.
        let conv = UsdcConversion::new(1, 0);
        assert_eq!(conv.charge_atomic(3 * GWEI * 1000, 18, &price("1")), Ok(4));
        assert_eq!(
            conv.charge_atomic(10_000 * GWEI * 1000, 18, &price("1")),
            Ok(10_001)
        );
        // Zero markup leaves it; minimum lifts small charges.
        assert_eq!(
            UsdcConversion::new(0, 0).charge_atomic(3 * GWEI * 1000, 18, &price("1")),
            Ok(3)
        );
        assert_eq!(
            UsdcConversion::new(0, 100).charge_atomic(3 * GWEI * 1000, 18, &price("1")),
            Ok(100)
        );
        assert_eq!(
            UsdcConversion::new(0, 100).charge_atomic(0, 18, &price("1")),
            Ok(100)
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let p = NativePrice {
            usd_mantissa: u128::MAX,
            usd_decimals: 0,
            observed_at: 0,
            source: "t".into(),
        };
        assert!(native_to_usdc_atomic(u128::MAX, 18, &p).is_err());
        assert!(native_to_usdc_atomic(u128::MAX, 0, &price("1")).is_err());
        assert_eq!(
            native_to_usdc_atomic(u128::MAX, 18, &price("1")),
            Ok(u128::MAX / 10u128.pow(12) + 1)
        );
    }
}
