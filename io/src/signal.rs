//! The signals that ask a Kiln process to stop, and how long it may take.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a process may take to stop once asked: past it, it exits whatever it is doing,
/// so a wedged dependency never makes it ignore SIGTERM. Below the 30 s that Kubernetes and
/// `docker stop` allow before they kill.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// Resolves on Ctrl-C or, on Unix, SIGTERM: what `kill`, systemd and `docker stop` send.
/// The handlers are installed when this is called, not when the future is first polled, so
/// a signal right after start-up is not lost.
pub fn stop_requested() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = signal(SignalKind::terminate())
            .and_then(|term| signal(SignalKind::interrupt()).map(|interrupt| (term, interrupt)));
        async move {
            match signals {
                Ok((mut term, mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `serve` (which stops when `shutdown` is cancelled) until it ends or a stop is
/// requested; then cancels `shutdown` and waits for it at most [`STOP_GRACE`], past which the
/// process exits with status 1, whatever `serve` is waiting for. The signal handlers are
/// installed when this is called, so a process may say it is ready once it has called it.
pub fn run_until_stopped<T: Send + 'static>(
    serve: impl Future<Output = T> + Send + 'static,
    shutdown: CancellationToken,
) -> impl Future<Output = Result<T, tokio::task::JoinError>> {
    let stop = stop_requested();
    async move {
        let mut running = tokio::spawn(serve);
        tokio::select! {
            ended = &mut running => return ended,
            () = stop => shutdown.cancel(),
        }
        within_grace(running).await
    }
}

/// Like [`run_until_stopped`], for a process that drains before it stops: the first stop
/// request calls `drain`; `stop_now` follows once `drain_for` has passed or at a second
/// request, and from then the process exits within [`STOP_GRACE`] whatever `serve` waits for.
pub fn run_until_drained<T: Send + 'static>(
    serve: impl Future<Output = T> + Send + 'static,
    drain: impl FnOnce() + Send + 'static,
    stop_now: impl FnOnce() + Send + 'static,
    drain_for: Duration,
) -> impl Future<Output = Result<T, tokio::task::JoinError>> {
    let first = stop_requested();
    async move {
        let mut running = tokio::spawn(serve);
        tokio::select! {
            ended = &mut running => return ended,
            () = first => drain(),
        }
        tracing::info!(
            drain_for = %humantime::format_duration(drain_for),
            "stopping: finishing the work in hand; a second signal stops at once"
        );
        let second = stop_requested();
        tokio::select! {
            ended = &mut running => return ended,
            () = second => tracing::warn!("asked again: stopping at once"),
            () = tokio::time::sleep(drain_for) => tracing::warn!("not drained in time: stopping at once"),
        }
        stop_now();
        within_grace(running).await
    }
}

/// `running`'s end, if it comes within [`STOP_GRACE`]; else the process exits with status 1.
async fn within_grace<T>(running: tokio::task::JoinHandle<T>) -> Result<T, tokio::task::JoinError> {
    match tokio::time::timeout(STOP_GRACE, running).await {
        Ok(ended) => ended,
        Err(_) => {
            tracing::error!(grace = ?STOP_GRACE, "not stopped within the grace; exiting");
            std::process::exit(1);
        }
    }
}
