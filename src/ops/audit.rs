//! `settle audit --since T`: settle checks itself. The invoices whose money moved since `T` are
//! rebuilt from nothing but their registrations and the inbox's raw events, through the worker's
//! own path (`worker::apply`), in a scratch schema; what that rebuilds is compared, line by line,
//! with the live tables. A difference means the live state is not what the events say: a bug, a
//! hand edit, a lost or doubled effect. Exit 0 when there is none, 5 when there is.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::shared::{EXIT_DRIFT, EXIT_OK, Output, parse_since};
use crate::config::Settings;
use crate::envelope::QueuedEvent;
use crate::repository::audit::{self as store, Archived};
use crate::worker::apply::{Policy, apply};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audit the invoices whose money moved since: an RFC 3339 time or a duration back from now
    /// (24h, 7d). Each is rebuilt from all its events the inbox keeps.
    #[arg(long, value_parser = parse_since)]
    pub since: DateTime<Utc>,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// What an audit found.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub invoices: usize,
    pub events: usize,
    /// Events the replay could not apply (as the live worker could not): not differences in
    /// themselves, but what may explain one.
    pub not_applied: Vec<String>,
    pub differences: Vec<String>,
}

/// Runs `settle audit`.
pub async fn run(args: Args, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    let report = audit(db, settings, args.since).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            println!(
                "rebuilt {} invoices from {} events",
                report.invoices, report.events
            );
            for event in &report.not_applied {
                println!("not applied: {event}");
            }
            for difference in &report.differences {
                println!("{difference}");
            }
            if report.differences.is_empty() {
                println!("no differences");
            }
        }
    }
    Ok(if report.differences.is_empty() {
        EXIT_OK
    } else {
        EXIT_DRIFT
    })
}

/// Rebuilds the invoices whose money moved since `since` in a scratch schema and compares them
/// with the live tables; the scratch schema is dropped whatever happens.
pub async fn audit(
    db: &PgPool,
    settings: &Settings,
    since: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let started_at = Utc::now();
    let schema = store::scratch_name();
    let rebuilt = rebuild(db, settings, &schema, since).await;
    store::drop_scratch(db, &schema).await?;
    let report = rebuilt?;
    store::record_run(
        db,
        since,
        started_at,
        report.invoices,
        report.events,
        &report.differences,
    )
    .await?;
    Ok(report)
}

async fn rebuild(
    db: &PgPool,
    settings: &Settings,
    schema: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<Report> {
    // One snapshot for what is audited, the registrations copied, the events replayed and the
    // live figures: the worker may go on committing meanwhile, and an event it commits after
    // the snapshot is in neither side.
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    let audited = store::audited(&mut tx, since).await?;
    store::create_scratch(&mut tx, schema, &audited).await?;
    let events = store::events(&mut tx, &audited).await?;
    let mut live = store::figures(&mut *tx, "public", &audited).await?;
    tx.commit().await?;
    // The worker's path, on connections that find the scratch schema's tables first: it writes
    // nothing live.
    let options = db
        .connect_options()
        .as_ref()
        .clone()
        .options([("search_path", format!("{schema},public"))]);
    let scratch = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let policy = Policy::from_settings(settings);
    let mut not_applied = Vec::new();
    for archived in &events {
        if let Err(reason) = replay(&scratch, &policy, archived).await {
            not_applied.push(format!(
                "{} {} ({}): {reason}",
                archived.provider, archived.event_id, archived.event_type
            ));
        }
    }
    scratch.close().await;
    // Sorted here, not by the database's collation: `differences` walks both in Rust's order.
    let mut rebuilt = store::figures(db, schema, &audited).await?;
    live.sort_unstable();
    rebuilt.sort_unstable();
    Ok(Report {
        invoices: audited.len(),
        events: events.len(),
        not_applied,
        differences: differences(&live, &rebuilt),
    })
}

async fn replay(scratch: &PgPool, policy: &Policy, archived: &Archived) -> Result<(), String> {
    let event = QueuedEvent::new(
        archived.provider,
        archived.event_id.clone(),
        archived.event_type.clone(),
        archived.received_at,
        archived.payload.clone().into_bytes(),
    )
    .map_err(|error| error.to_string())?
    .via_connection(archived.connection_id.as_deref());
    apply(scratch, policy, &event)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// Each line only one side has: `live:` what the tables hold that the events do not give,
/// `rebuilt:` what the events give that the tables do not hold. Both sides are sorted.
pub fn differences(live: &[String], rebuilt: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let (mut l, mut r) = (0, 0);
    while l < live.len() || r < rebuilt.len() {
        match (live.get(l), rebuilt.get(r)) {
            (Some(a), Some(b)) if a == b => {
                l += 1;
                r += 1;
            }
            (Some(a), Some(b)) if a < b => {
                found.push(format!("live:    {a}"));
                l += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                found.push(format!("rebuilt: {b}"));
                r += 1;
            }
            (Some(a), None) => {
                found.push(format!("live:    {a}"));
                l += 1;
            }
            (None, None) => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::differences;

    #[test]
    fn differences_name_each_line_only_one_side_has() {
        let live = ["a".to_owned(), "b 1".to_owned(), "c".to_owned()];
        let rebuilt = [
            "a".to_owned(),
            "b 2".to_owned(),
            "c".to_owned(),
            "d".to_owned(),
        ];
        assert_eq!(
            differences(&live, &rebuilt),
            ["live:    b 1", "rebuilt: b 2", "rebuilt: d"]
        );
        assert!(differences(&live, &live).is_empty());
    }
}
