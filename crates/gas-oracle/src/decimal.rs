//! Exact decimal numbers as `(mantissa, decimals)`: the value is `mantissa / 10^decimals`.
//! Parsed from and printed to plain decimal text without ever going through a float.

/// Most fractional digits accepted when parsing (keeps `10^decimals` far inside `U256`).
pub const MAX_DECIMALS: u8 = 36;

/// Parses plain decimal text (`"3000"`, `"3000.12"`, `"0.000001"`) into `(mantissa, decimals)`.
///
/// Rejected: empty text, signs, exponents, spaces inside, more than [`MAX_DECIMALS`] fractional
/// digits, and a mantissa that does not fit in `u128`. Surrounding whitespace is ignored.
pub fn parse_decimal(text: &str) -> Result<(u128, u8), String> {
    let t = text.trim();
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return Err(format!("not a plain decimal number: {text:?}"));
    }
    if frac.len() > usize::from(MAX_DECIMALS) {
        return Err(format!(
            "more than {MAX_DECIMALS} fractional digits: {text:?}"
        ));
    }
    let mut mantissa: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or_else(|| format!("number too large: {text:?}"))?;
    }
    Ok((mantissa, frac.len() as u8))
}

/// Prints `mantissa / 10^decimals` as plain decimal text with exactly `decimals` fractional
/// digits (`(300012, 2)` → `"3000.12"`, `(5, 3)` → `"0.005"`, `(7, 0)` → `"7"`).
pub fn format_decimal(mantissa: u128, decimals: u8) -> String {
    let digits = mantissa.to_string();
    let d = usize::from(decimals);
    if d == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = d + 1);
    let (int, frac) = padded.split_at(padded.len() - d);
    format!("{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals() {
        assert_eq!(parse_decimal("3000.12"), Ok((300012, 2)));
        assert_eq!(parse_decimal("3000"), Ok((3000, 0)));
        assert_eq!(parse_decimal(" 0.000001 "), Ok((1, 6)));
        assert_eq!(parse_decimal(".5"), Ok((5, 1)));
        assert_eq!(parse_decimal("5."), Ok((5, 0)));
        assert_eq!(parse_decimal("0"), Ok((0, 0)));
    }

    #[test]
    fn rejects_what_is_not_plain_decimal() {
        for bad in [
            "", ".", "-1", "+1", "1e3", "1.2.3", "3 000", "abc", "1,5", "NaN",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_decimal(&format!("0.{}", "1".repeat(37))).is_err());
        assert!(parse_decimal(&"9".repeat(40)).is_err());
        assert!(parse_decimal(&u128::MAX.to_string()).is_ok());
    }

    #[test]
    fn formats_with_exact_fraction_digits() {
        assert_eq!(format_decimal(300012, 2), "3000.12");
        assert_eq!(format_decimal(5, 3), "0.005");
        assert_eq!(format_decimal(7, 0), "7");
        assert_eq!(format_decimal(0, 2), "0.00");
        assert_eq!(format_decimal(300012345678, 8), "3000.12345678");
        let (m, d) = parse_decimal("0.0100").unwrap();
        assert_eq!(format_decimal(m, d), "0.0100");
    }
}
