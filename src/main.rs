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
    match cli.execute(settings).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "settle failed");
            eprintln!("settle: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
