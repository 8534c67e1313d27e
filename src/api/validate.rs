//! Field validation shared by the API's request types. Each check returns the message a caller
//! reads after the field name. Every string and list the API stores is bounded: a caller's bug
//! must not become a 200,000-character row.

use crate::provider::Provider;

/// Names, address lines, labels.
pub const MAX_TEXT: usize = 512;
/// URLs (payment links, a customer's site).
pub const MAX_URL: usize = 2048;
/// Telephone numbers, tax statuses and other short codes.
pub const MAX_SHORT: usize = 64;
/// An address as RFC 5321 bounds it.
pub const MAX_EMAIL: usize = 254;
/// Entries of a list (billing emails, aliases, external ids).
pub const MAX_LIST: usize = 50;
/// Rows of one page of a listing (`?limit=`), and the page size when the caller names none.
pub const MAX_PAGE: i64 = 200;
pub const DEFAULT_PAGE: i64 = 50;

/// An email address as the sender will parse it (`lettre::Address`), so an address the API takes
/// is one a mail can be sent to.
pub fn email(value: &str) -> Result<(), String> {
    at_most(value, MAX_EMAIL)?;
    value
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|_| format!("`{value}` is not an email address"))
}

/// At most `max` characters, and no control characters (`char::is_control`: NUL, tab, CR, LF,
/// ESC, DEL, …). Every free-text field the API takes passes here (`non_empty` and `email` call
/// it), so this is where control characters are refused: PostgreSQL refuses a NUL in text, which
/// would be a 500, and the others would reach mails, logs, CSV exports and operators' terminals.
/// No field is multi-line (an address has a field per line), so none needs `\n` or `\t`.
pub fn at_most(value: &str, max: usize) -> Result<(), String> {
    let length = value.chars().count();
    if length > max {
        return Err(format!("must be at most {max} characters (got {length})"));
    }
    match value.chars().enumerate().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!(
            "must not contain control characters (U+{:04X} at character {})",
            u32::from(c),
            at + 1
        )),
        None => Ok(()),
    }
}

/// An absolute `https://` URL of at most `MAX_URL` characters. A payment link becomes the `href`
/// of a link in the customer's mail, where HTML escaping does not stop a `javascript:` or
/// `data:` URL, and a plain `http://` link could be rewritten on the way to the customer.
pub fn https_url(value: &str) -> Result<(), String> {
    at_most(value, MAX_URL)?;
    match url::Url::parse(value) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Ok(()),
        _ => Err(format!("`{value}` is not an absolute https:// URL")),
    }
}

/// At most `max` entries.
pub fn list_at_most<T>(values: &[T], max: usize) -> Result<(), String> {
    if values.len() > max {
        Err(format!(
            "must have at most {max} entries (got {})",
            values.len()
        ))
    } else {
        Ok(())
    }
}

/// A listing's page size, `?limit=` (`None`: the default), as a 400 naming `limit` when it is out
/// of bounds.
pub fn page_limit(limit: Option<i64>) -> Result<i64, super::error::ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(super::error::ApiError::validation(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ))
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

/// A provider's payment id as the provider issues it: a Stripe PaymentIntent `pi_…`, a
/// GoCardless payment `PM…`.
pub fn provider_payment_id(provider: Provider, value: &str) -> Result<(), String> {
    let prefix = crate::providers::rules(provider).payment_id_prefix();
    if value.len() > prefix.len() && value.starts_with(prefix) {
        id(value)
    } else {
        Err(format!(
            "a {} payment id starts with `{prefix}`",
            provider.stored_name()
        ))
    }
}

/// An id field, as a 400 naming it.
pub fn check_id(field: &str, value: &str) -> Result<(), super::error::ApiError> {
    id(value).map_err(|message| super::error::ApiError::validation(field, message))
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

/// Not blank, and at most `max` characters.
pub fn non_empty(value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        at_most(value, max)
    }
}

/// Keys a metadata map may have, and the lengths of a key and a value (Stripe's limits).
pub const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;

/// A billing system's metadata: a bounded string map, the field named `metadata.<key>`.
pub fn metadata(
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(), super::error::ApiError> {
    use super::error::ApiError;
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::validation(
            "metadata",
            format!("at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (key, value) in metadata {
        let field = format!(
            "metadata.{}",
            key.chars().take(MAX_METADATA_KEY).collect::<String>()
        );
        non_empty(key, MAX_METADATA_KEY)
            .and_then(|()| at_most(value, MAX_METADATA_VALUE))
            .map_err(|message| ApiError::validation(field, message))?;
    }
    Ok(())
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
            "", "a", "a@", "@b.co", "a b@c.co", "a@b@c.co", "a@.co", "a@b..co",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        // What the API takes, the sender can address.
        assert!("billing+x@example.co.uk".parse::<lettre::Address>().is_ok());
        assert!(email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn bounds_name_their_limit() {
        assert!(
            at_most(&"é".repeat(512), MAX_TEXT).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(
            at_most(&"x".repeat(513), MAX_TEXT).unwrap_err(),
            "must be at most 512 characters (got 513)"
        );
        assert!(list_at_most(&[0; 50], MAX_LIST).is_ok());
        assert!(list_at_most(&[0; 51], MAX_LIST).is_err());
        assert!(non_empty("  ", MAX_TEXT).is_err());
    }

    #[test]
    fn control_characters_are_refused_in_every_free_text_check() {
        for bad in [
            "Acme\0 Ltd",
            "line\nbreak",
            "tab\there",
            "cr\r",
            "\u{1b}[31m",
            "del\u{7f}",
        ] {
            assert!(at_most(bad, MAX_TEXT).is_err(), "{bad:?}");
            assert!(non_empty(bad, MAX_TEXT).is_err(), "{bad:?}");
        }
        assert_eq!(
            at_most("Acme\0", MAX_TEXT).unwrap_err(),
            "must not contain control characters (U+0000 at character 5)"
        );
        assert!(email("a\0@b.co").is_err());
        // Letters, marks and spaces of any script are text, not control characters.
        assert!(at_most("Société Générale — Zürich 東京 ", MAX_TEXT).is_ok());
    }

    #[test]
    fn payment_links_are_absolute_https_urls() {
        for good in [
            "https://pay.example/x",
            "https://pay.example:8443/inv/1?token=a%20b#top",
        ] {
            assert!(https_url(good).is_ok(), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "http://pay.example/x",
            "//pay.example/x",
            "/pay/x",
            "pay.example/x",
            "https://",
            "https://pay.example/\0",
            "",
        ] {
            assert!(https_url(bad).is_err(), "{bad:?}");
        }
        assert!(https_url(&format!("https://pay.example/{}", "x".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(1)).unwrap(), 1);
        assert_eq!(page_limit(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        for bad in [0, -1, MAX_PAGE + 1] {
            assert_eq!(
                page_limit(Some(bad)).unwrap_err().to_string(),
                "limit: must be 1 to 200"
            );
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
