//! `make chaos`: the fault suite. Each scenario runs real processes (`settle serve`, one or two
//! `settle worker`, PostgreSQL, the chaos RabbitMQ node or the three-node cluster, an SMTP sink) under a load that behaves
//! like the providers (it retries every non-2xx with backoff, duplicates and reorders), makes its
//! faults, waits for settle to drain, and checks the database, the subscribers' queue and the
//! mail. One line per scenario:
//!
//! `scenario  sent  acked(2xx)  applied  lost  double-applied  crossed  unexpected  mails(expected/got)  drained-in`
//!
//! and the exit code is 1 if any `lost`, `double-applied`, `crossed` or `unexpected` is not 0.
//!
//! ```sh
//! cargo run --release --example chaos -- [--quick] [SCENARIO…]   # numbers, 1 to 27; none: all
//! ```
//! `--quick` shortens every outage and load (the CI-sized variants `make test` runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check;
mod deployment;
mod hostile;
mod load;
mod scenarios;

#[path = "../../tests/fixtures/events.rs"]
mod fixtures;

use std::path::PathBuf;

use scenarios::{NAMES, Run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut quick = false;
    let mut chosen = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            number => chosen.push(
                number
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=NAMES.len()).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!("no scenario `{number}`: 1 to {}", NAMES.len())
                    })?,
            ),
        }
    }
    if chosen.is_empty() {
        chosen = (1..=NAMES.len()).collect();
    }
    let bin = std::env::var_os("SETTLE_BIN").map_or_else(
        || {
            let profile = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            deployment::root()
                .join("target")
                .join(profile)
                .join("settle")
        },
        PathBuf::from,
    );
    anyhow::ensure!(bin.exists(), "{} is not built (cargo build)", bin.display());
    let run = Run { bin: &bin, quick };
    let started = std::time::Instant::now();
    println!("{}", check::Row::header());
    let mut rows = Vec::new();
    let mut failed = false;
    for number in chosen {
        match run.scenario(number).await {
            Ok(row) => {
                println!("{}", row.line());
                for timing in &row.timings {
                    println!("    {timing}");
                }
                if !row.passed() {
                    failed = true;
                    for note in &row.notes {
                        println!("    {note}");
                    }
                }
                rows.push(row);
            }
            Err(error) => {
                failed = true;
                println!("{:<34} could not run: {error:#}", NAMES[number - 1]);
            }
        }
    }
    println!(
        "\n{} scenarios in {:.1} min: {}",
        rows.len(),
        started.elapsed().as_secs_f64() / 60.0,
        if failed {
            "FAILED"
        } else {
            "nothing lost, nothing applied twice"
        }
    );
    std::process::exit(i32::from(failed));
}
