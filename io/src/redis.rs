//! Redis as both binaries open it: one multiplexed connection that reconnects by itself,
//! over TLS for a `rediss://` URL.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, TlsCertificates};

use crate::tls::Trust;

/// How long a command waits for Redis's answer before it counts as failed: long enough that
/// a Redis slowed by load is not taken for one that is gone.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `url` with `TCP_NODELAY` (each command goes out at once, not held back until the
/// last one is acknowledged) and a [`RESPONSE_TIMEOUT`]: the client, for connections of
/// their own (a blocking read), and the shared connection. A `rediss://` URL is opened over
/// TLS, Redis's certificate verified as `trust` says.
pub async fn connect(
    url: &str,
    trust: &Trust,
) -> redis::RedisResult<(redis::Client, ConnectionManager)> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        crate::tls::install_default_provider();
    }
    let client = match (info.addr(), trust.ca_pem()) {
        (ConnectionAddr::TcpTls { .. }, Some(ca)) => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )?,
        _ => redis::Client::open(info)?,
    };
    let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
    let manager = client.get_connection_manager_with_config(config).await?;
    Ok((client, manager))
}
