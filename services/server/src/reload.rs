//! What is read again while the server runs (the JWKS from its file or URI, the TLS certificate, key and client
//! CA): every interval and on SIGHUP, until shutdown. A file that cannot be read or parsed leaves what is in use (a warning).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Calls `reload` every `interval`, on SIGHUP and when `wanted` is signalled, until `shutdown`; `reload` says
/// whether what it read changed. `what` names the files in the log.
pub async fn periodically<F, Fut>(
    what: &'static str,
    interval: Duration,
    wanted: Option<std::sync::Arc<tokio::sync::Notify>>,
    shutdown: CancellationToken,
    reload: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let why = tokio::select! {
            () = tokio::time::sleep(interval) => "periodic",
            Some(()) = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            () = async {
                match wanted.as_ref() {
                    Some(wanted) => wanted.notified().await,
                    None => std::future::pending().await,
                }
            } => "asked",
            () = shutdown.cancelled() => return,
        };
        let reloaded = tokio::select! {
            reloaded = reload() => reloaded,
            () = shutdown.cancelled() => return,
        };
        match reloaded {
            Ok(true) => tracing::info!(why, what, "files changed and reloaded"),
            Ok(false) => tracing::debug!(why, what, "files unchanged"),
            Err(error) => {
                tracing::warn!(why, what, %error, "files not reloaded; what is in use stays")
            }
        }
    }
}
