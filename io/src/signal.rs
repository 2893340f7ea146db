//! The signals that ask a Kiln process to stop.

use std::time::Duration;

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
