//! Money: integer minor units with an ISO 4217 currency. Both types validate on construction, so a
//! value of either type is always valid.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code: three upper-case ASCII letters (`GBP`, `EUR`, `USD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, String> {
        let bytes = code.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(format!(
                "`{code}` is not an ISO 4217 currency code (three upper-case letters, e.g. GBP)"
            ))
        }
    }

    /// Providers write currencies in lower case (`gbp`); settle stores them upper case.
    pub fn parse_any_case(code: &str) -> Result<Self, String> {
        Self::parse(&code.to_ascii_uppercase())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("built from ASCII letters")
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

/// A non-negative amount in minor units (pence, cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct MinorUnits(i64);

impl MinorUnits {
    pub const ZERO: Self = Self(0);

    pub fn new(amount: i64) -> Result<Self, String> {
        if amount < 0 {
            Err(format!("{amount} is negative; amounts are minor units ≥ 0"))
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

/// "GBP 12.34" for people (emails, logs); exponent from ISO 4217 for the common zero- and
/// three-decimal currencies, two otherwise.
pub fn format_amount(amount: MinorUnits, currency: Currency) -> String {
    let exponent = match currency.as_str() {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "XAF" | "XOF" | "UGX" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    };
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
    fn currencies_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("GBP").unwrap().as_str(), "GBP");
        for bad in ["gbp", "GB", "GBPX", "G1P", "", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Currency::parse_any_case("eur").unwrap().as_str(), "EUR");
    }

    #[test]
    fn amounts_are_non_negative_minor_units() {
        assert_eq!(MinorUnits::new(0).unwrap(), MinorUnits::ZERO);
        assert!(MinorUnits::new(-1).is_err());
        let parsed: Result<MinorUnits, _> = serde_json::from_str("-5");
        assert!(parsed.is_err());
    }

    #[test]
    fn amounts_format_with_the_currency_exponent() {
        let gbp = Currency::parse("GBP").unwrap();
        assert_eq!(
            format_amount(MinorUnits::new(1234).unwrap(), gbp),
            "GBP 12.34"
        );
        assert_eq!(format_amount(MinorUnits::new(5).unwrap(), gbp), "GBP 0.05");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(format_amount(MinorUnits::new(500).unwrap(), jpy), "JPY 500");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(
            format_amount(MinorUnits::new(1500).unwrap(), kwd),
            "KWD 1.500"
        );
    }
}
