//! The `settle` binary: parse the command line, load the configuration, start logging, run the
//! command. Exit codes: 0 done, 1 failed (the cause is printed and logged), 2 a usage or
//! configuration error, and for the operator tools 3 nothing matched, 4 partly failed.

use clap::Parser;

use settle::cli::Cli;
use settle::config::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_process_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("settle: configuration error: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    settle::telemetry::init_logging(&settings.telemetry);
    let code = match cli.execute(settings).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "settle failed");
            eprintln!("settle: {error:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // The spans still buffered go out before the process ends (an HTTP call: off the runtime).
    let _ = tokio::task::spawn_blocking(settle::telemetry::flush_spans).await;
    code
}
