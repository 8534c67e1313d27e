//! What every operator command shares: the output format and exit codes, the parsers of its
//! arguments, the broker connection.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::broker::{Broker, Connections, Topology};
use crate::config::Settings;

/// How a command prints what it found: `--output table|json`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_NOTHING_MATCHED: u8 = 3;
pub const EXIT_PARTLY_FAILED: u8 = 4;
/// `settle books drift`: a provider's balance differs from the books, or a sweep found events no
/// webhook delivered.
pub const EXIT_DRIFT: u8 = 5;

/// A listing's exit code: 0, or 3 when it found nothing.
pub fn listed<T>(rows: &[T]) -> u8 {
    if rows.is_empty() {
        EXIT_NOTHING_MATCHED
    } else {
        EXIT_OK
    }
}

/// A column of an operator's table: its header, and whether its values (numbers) align right.
pub struct Column {
    header: &'static str,
    right: bool,
}

pub const fn left(header: &'static str) -> Column {
    Column {
        header,
        right: false,
    }
}

pub const fn right(header: &'static str) -> Column {
    Column {
        header,
        right: true,
    }
}

/// `rows` under `columns`, each column as wide as its widest value and two spaces from the
/// next: the one table layout of every operator command (`--output table`).
pub fn table(columns: &[Column], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    use comfy_table::{CellAlignment, Table, presets};
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(columns.iter().map(|column| column.header))
        .add_rows(rows);
    let last = columns.len().saturating_sub(1);
    for (index, column) in columns.iter().enumerate() {
        if let Some(shown) = table.column_mut(index) {
            shown.set_padding((0, if index == last { 0 } else { 2 }));
            if column.right {
                shown.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect()
}

/// A new secret: 32 bytes from the operating system's generator, URL-safe base64 (no `:`, so
/// it fits Basic auth's `id:secret`, a cookie and a form field as it is).
pub fn random_token() -> anyhow::Result<String> {
    use base64::Engine;
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0_u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .context("the operating system's random generator")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A value, or `-` for none.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Prints `table(columns, rows)`.
pub fn print_table(columns: &[Column], rows: impl IntoIterator<Item = Vec<String>>) {
    print!("{}", table(columns, rows));
}

/// The exit code of a command over several sources (backfill, payouts fetch): 0 when none
/// failed, 1 when all did, 4 when some did.
pub fn sources_exit(failed: usize, sources: usize) -> u8 {
    match failed {
        0 => EXIT_OK,
        n if n == sources => 1,
        _ => EXIT_PARTLY_FAILED,
    }
}

/// How long an operator command waits for the broker before giving up.
const BROKER_WAIT: Duration = Duration::from_secs(15);

/// A connected broker for a one-off command (no HTTP, no consumers).
pub async fn connect_broker(settings: &Settings) -> anyhow::Result<Broker> {
    let broker = Broker::start(
        settings.amqp.clone(),
        Topology::from_settings(settings),
        Connections::PublishOnly,
    );
    tokio::time::timeout(BROKER_WAIT, broker.connected())
        .await
        .ok()
        .flatten()
        .context("cannot reach the broker (AMQP_URL)")?;
    Ok(broker)
}

/// A provider as operators type it: `stripe`, `gocardless`, in any case.
pub fn parse_provider(text: &str) -> Result<crate::provider::Provider, String> {
    crate::provider::Provider::from_wire_name(&text.to_lowercase())
        .ok_or_else(|| format!("`{text}` is not a provider: stripe or gocardless"))
}

/// `30m`, `24h`, `7d` or `90s`.
pub fn parse_duration(text: &str) -> anyhow::Result<chrono::Duration> {
    let not_one = || format!("`{text}` is not a duration like 90s, 30m, 24h or 7d");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    // Digits only: no sign (a negative age would reach into the future), no `+`.
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        bail!(not_one());
    }
    let number: i64 = number.parse().with_context(not_one)?;
    let duration = match unit {
        "s" => chrono::Duration::try_seconds(number),
        "m" => chrono::Duration::try_minutes(number),
        "h" => chrono::Duration::try_hours(number),
        "d" => chrono::Duration::try_days(number),
        _ => bail!(not_one()),
    };
    // Bounded to a thousand years, so that `now - duration` is always a time.
    duration
        .filter(|duration| *duration <= chrono::Duration::days(365_000))
        .with_context(|| format!("`{text}` is longer than any age settle keeps"))
}

/// An instant, as RFC 3339 or as Unix seconds (Stripe's `created`), or a duration back from now:
/// `2026-11-01T00:00:00Z`, `1793491200` or `24h`.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .ok_or_else(|| format!("`{text}` is beyond any time as Unix seconds"));
    }
    parse_duration(text)
        .map(|ago| Utc::now() - ago)
        .map_err(|_| {
            format!("`{text}` is neither an RFC 3339 time, Unix seconds, nor a duration like 24h")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_fit_basic_auth() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes, unpadded base64");
        assert!(!a.contains(':'));
    }

    #[test]
    fn durations_and_instants() {
        assert_eq!(
            parse_duration("90s").unwrap(),
            chrono::Duration::seconds(90)
        );
        assert_eq!(parse_duration("7d").unwrap(), chrono::Duration::days(7));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("").is_err());
        // Hostile ages (the console takes them from a form): refused, never a panic.
        for hostile in [
            "-5d",
            "+5d",
            "9999999999999999d",
            "99999999999999999999s",
            "d",
        ] {
            assert!(parse_duration(hostile).is_err(), "{hostile}");
        }
        assert!(parse_since("2026-11-01T00:00:00Z").is_ok());
        assert!(parse_since("24h").unwrap() < Utc::now());
        assert!(parse_since("yesterday").is_err());
        // Unix seconds, as Stripe writes times.
        assert_eq!(
            parse_since("1793491200").unwrap(),
            DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap()
        );
        assert!(parse_since("99999999999999999999").is_err());
    }

    #[test]
    fn a_table_is_as_wide_as_its_values_two_spaces_apart_numbers_right() {
        let shown = table(
            &[left("id"), right("attempts"), left("reason")],
            [
                vec!["evt_1".into(), "1".into(), "unknown_account".into()],
                vec!["evt_longer_id".into(), "12".into(), "-".into()],
            ],
        );
        assert_eq!(
            shown,
            "id             attempts  reason\n\
             evt_1                 1  unknown_account\n\
             evt_longer_id        12  -\n"
        );
    }
}
