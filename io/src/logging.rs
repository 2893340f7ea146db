//! Where a process's logs go: standard output, filtered by `RUST_LOG` (`info` by default), as
//! text for people or as one JSON object per line for a log pipeline (`--log-format json`):
//! each line then carries its event's fields and those of the spans it is in, so the lines
//! written while a build's event or job is handled have the build's `build_id`.

use std::str::FromStr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is not a log format: text or json")),
        }
    }
}

/// Installs the process's log subscriber.
pub fn init(format: Format) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        Format::Text => logs.init(),
        Format::Json => logs
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}
