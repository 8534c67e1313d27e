//! Graceful shutdown: SIGTERM or SIGINT cancels one token; every part of the process watches it,
//! stops taking new work, finishes the unit it holds and returns.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
#[expect(
    clippy::expect_used,
    reason = "at start: a process that cannot hear SIGTERM must not run"
)]
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler")
                .recv()
                .await;
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
            _ = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
        token.cancel();
    });
}
