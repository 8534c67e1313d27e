//! Money: integer minor units with an ISO 4217 currency. Both types validate on construction, so a
//! value of either type is always valid. The list of currencies and their exponents comes from the
//! `iso_currency` crate, which follows the standard, not from a table of our own.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency with minor units (`GBP`, `EUR`, `JPY`, `KWD`): the special codes that
/// are not money one can invoice in (`XXX`, `XAU`, `XDR`, …) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, String> {
        iso_currency::Currency::from_code(code)
            .filter(|currency| currency.exponent().is_some())
            .map(Self)
            .ok_or_else(|| {
                format!(
                    "`{code}` is not an ISO 4217 currency code (three upper-case letters, e.g. GBP)"
                )
            })
    }

    /// Providers write currencies in lower case (`gbp`); settle stores them upper case.
    pub fn parse_any_case(code: &str) -> Result<Self, String> {
        Self::parse(&code.to_ascii_uppercase())
    }

    pub fn as_str(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point: 2 for GBP, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u32 {
        // `parse` admits only currencies that have one.
        self.0.exponent().map_or(2, u32::from)
    }
}

impl std::str::FromStr for Currency {
    type Err = String;
    fn from_str(code: &str) -> Result<Self, String> {
        Self::parse(code)
    }
}

impl From<Currency> for &'static str {
    fn from(currency: Currency) -> Self {
        currency.as_str()
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(code: String) -> Result<Self, String> {
        Self::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-negative amount in minor units (pence, cents), at most [`MinorUnits::MAX`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize
)]
#[serde(try_from = "i64", into = "i64")]
pub struct MinorUnits(i64);

impl MinorUnits {
    pub const ZERO: Self = Self(0);
    /// 10^15 minor units (ten trillion pounds): more than any invoice, and small enough that the
    /// sum of thousands of them cannot overflow an `i64`.
    pub const MAX: i64 = 1_000_000_000_000_000;

    pub fn new(amount: i64) -> Result<Self, String> {
        if amount < 0 {
            Err(format!("{amount} is negative; amounts are minor units ≥ 0"))
        } else if amount > Self::MAX {
            Err(format!(
                "{amount} is more than the largest amount settle takes ({})",
                Self::MAX
            ))
        } else {
            Ok(Self(amount))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for MinorUnits {
    type Error = String;
    fn try_from(amount: i64) -> Result<Self, String> {
        Self::new(amount)
    }
}

impl From<MinorUnits> for i64 {
    fn from(amount: MinorUnits) -> Self {
        amount.0
    }
}

/// "GBP 12.34" for people (emails, logs), with the currency's own exponent.
pub fn format_amount(amount: MinorUnits, currency: Currency) -> String {
    let exponent = currency.exponent();
    if exponent == 0 {
        return format!("{currency} {}", amount.get());
    }
    let divisor = 10_i64.pow(exponent);
    format!(
        "{currency} {}.{:0width$}",
        amount.get() / divisor,
        amount.get() % divisor,
        width = exponent as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_iso_4217_codes_with_minor_units() {
        assert_eq!(Currency::parse("GBP").unwrap().as_str(), "GBP");
        for bad in ["gbp", "GB", "GBPX", "G1P", "", "ÉUR", "XYZ", "XXX", "XAU"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Currency::parse_any_case("eur").unwrap().as_str(), "EUR");
        let parsed: Result<Currency, _> = serde_json::from_str("\"XYZ\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn amounts_are_bounded_non_negative_minor_units() {
        assert_eq!(MinorUnits::new(0).unwrap(), MinorUnits::ZERO);
        assert!(MinorUnits::new(-1).is_err());
        assert!(MinorUnits::new(MinorUnits::MAX).is_ok());
        assert!(MinorUnits::new(MinorUnits::MAX + 1).is_err());
        assert!(MinorUnits::new(i64::MAX).is_err());
        let parsed: Result<MinorUnits, _> = serde_json::from_str("-5");
        assert!(parsed.is_err());
        // The bound leaves room: nine thousand of the largest amounts still add up.
        assert!(MinorUnits::MAX.checked_mul(9_000).is_some());
    }

    #[test]
    fn amounts_format_with_the_currency_exponent() {
        let cases = [
            ("GBP", 1234, "GBP 12.34"),
            ("GBP", 5, "GBP 0.05"),
            ("JPY", 500, "JPY 500"),
            ("KWD", 1500, "KWD 1.500"),
            // Zero- and three-decimal currencies a hand-written table had missed.
            ("BIF", 2500, "BIF 2500"),
            ("PYG", 120000, "PYG 120000"),
            ("RWF", 700, "RWF 700"),
            ("IQD", 12345, "IQD 12.345"),
            ("LYD", 1001, "LYD 1.001"),
        ];
        for (code, amount, shown) in cases {
            let currency = Currency::parse(code).unwrap();
            assert_eq!(
                format_amount(MinorUnits::new(amount).unwrap(), currency),
                shown,
                "{code}"
            );
        }
    }
}
