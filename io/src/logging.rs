//! Where a process's logs go: standard output, filtered by `RUST_LOG` (`info` by default).

/// Installs the process's log subscriber.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
