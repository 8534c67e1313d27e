//! Field validation shared by the API's request types. Each check returns the message a caller
//! reads after the field name.

/// A pragmatic email check: one `@`, a non-empty local part, a dotted domain, no spaces. Real
/// deliverability is the mail server's call; this catches typos and wrong fields.
pub fn email(value: &str) -> Result<(), String> {
    let valid = value.len() <= 254
        && !value.chars().any(char::is_whitespace)
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    if valid {
        Ok(())
    } else {
        Err(format!("`{value}` is not an email address"))
    }
}

/// ISO 3166-1 alpha-2 country codes (officially assigned).
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ \
BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ \
DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT \
GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY \
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX \
MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS \
RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN \
TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

pub fn country(value: &str) -> Result<(), String> {
    if value.len() == 2 && COUNTRIES.split_ascii_whitespace().any(|code| code == value) {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not an ISO 3166-1 alpha-2 country code (two upper-case letters, e.g. GB)"
        ))
    }
}

/// Ids are the caller's strings: non-empty, at most 255 characters, no control characters or
/// slashes (they appear in URL paths).
pub fn id(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 255 {
        Err("must be 1 to 255 characters".to_owned())
    } else if value.chars().any(|c| c.is_control() || c == '/') {
        Err("must not contain control characters or `/`".to_owned())
    } else {
        Ok(())
    }
}

pub fn non_empty(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["a@b.co", "billing+x@example.co.uk"] {
            assert!(email(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a b@c.co", "a@b@c.co", "a@.co", "a@b..co",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn countries() {
        assert_eq!(COUNTRIES.split_ascii_whitespace().count(), 249);
        assert!(country("GB").is_ok());
        for bad in ["UK", "gb", "GBR", "", "XX"] {
            assert!(country(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(id("inv_2026_0042").is_ok());
        assert!(id("").is_err());
        assert!(id("a/b").is_err());
        assert!(id(&"x".repeat(256)).is_err());
    }
}
