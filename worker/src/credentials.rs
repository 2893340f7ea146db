//! `kiln-worker credentials`: makes (or takes back) one worker's own RabbitMQ user and Redis
//! ACL user, with what `kiln_shared::grant` says a worker may do and nothing more.
//!
//! Run by an administrator where `rabbitmqctl` reaches the broker, with a Redis URL that may
//! manage ACL users. RabbitMQ has no user management over AMQP, so its side goes through
//! `rabbitmqctl` (the password on its standard input, never on a command line); Redis's goes
//! through `ACL SETUSER` on the administrator's connection.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use kiln_shared::grant;
use kiln_shared::keys::Keys;
use kiln_shared::platform::Platform;
use kiln_shared::routing::Topology;
use tokio::io::AsyncWriteExt;

/// Whose credentials, and where to make them.
#[derive(Debug, Clone)]
pub struct Request {
    /// The worker (or pool) the user is for: letters, digits, `-`, `_`.
    pub name: String,
    pub platform: Platform,
    /// The installation's prefix (`kiln`).
    pub prefix: String,
    /// RabbitMQ's virtual host.
    pub vhost: String,
    /// `rabbitmqctl` (its path, or its name on the `PATH`).
    pub rabbitmqctl: PathBuf,
    /// A Redis URL whose user may manage ACL users.
    pub redis_admin_url: String,
    pub tls_ca: Option<PathBuf>,
}

/// Credentials made for one worker; both users are named [`Issued::user`].
#[derive(Clone)]
pub struct Issued {
    pub user: String,
    pub amqp_password: String,
    pub redis_password: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// `base` (`amqps://host:5671/%2f`, `rediss://host:6380/`, or a cluster's nodes
    /// separated by commas) with the user and `password` in each URL.
    pub fn url(&self, base: &str, password: &str) -> String {
        let with_user = |url: &str| match url.trim().split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}:{password}@{rest}", self.user),
            None => url.to_owned(),
        };
        base.split(',').map(with_user).collect::<Vec<_>>().join(",")
    }
}

/// The user both services know the worker by: `<prefix>-worker-<name>`.
pub fn user_name(prefix: &str, name: &str) -> anyhow::Result<String> {
    let fine = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !fine(name) || !fine(prefix) {
        bail!("a worker's name and prefix are letters, digits, `-` and `_`: {prefix:?}, {name:?}");
    }
    Ok(format!("{prefix}-worker-{name}"))
}

/// Makes the worker's users, or gives them new passwords and the grant again when they exist.
pub async fn issue(request: &Request) -> anyhow::Result<Issued> {
    let user = user_name(&request.prefix, &request.name)?;
    let issued = Issued {
        user: user.clone(),
        amqp_password: password()?,
        redis_password: password()?,
    };
    let broker = grant::broker_grant(&Topology::new(&request.prefix), request.platform);
    let exists = rabbitmqctl(request, &["list_users", "--silent"], None)
        .await?
        .lines()
        .any(|line| line.split_whitespace().next() == Some(user.as_str()));
    let verb = if exists {
        "change_password"
    } else {
        "add_user"
    };
    rabbitmqctl(request, &[verb, &user], Some(&issued.amqp_password)).await?;
    let vhost = request.vhost.as_str();
    let set_permissions = [
        "set_permissions",
        "-p",
        vhost,
        &user,
        &broker.configure,
        &broker.write,
        &broker.read,
    ];
    rabbitmqctl(request, &set_permissions, None).await?;
    let set_topic_permissions = [
        "set_topic_permissions",
        "-p",
        vhost,
        &user,
        &broker.topic_exchange,
        &broker.topic_write,
        &broker.topic_read,
    ];
    rabbitmqctl(request, &set_topic_permissions, None).await?;

    let mut redis = admin(request).await?;
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(format!(">{}", issued.redis_password));
    for rule in grant::redis_rules(&Keys::new(&request.prefix)) {
        setuser.arg(rule);
    }
    let _: () = setuser
        .query_async(&mut redis)
        .await
        .context("Redis refused ACL SETUSER")?;
    save_acl(&mut redis).await;
    Ok(issued)
}

/// Takes a worker's users back: both are deleted (a missing one is no error).
pub async fn revoke(request: &Request) -> anyhow::Result<()> {
    let user = user_name(&request.prefix, &request.name)?;
    let listed = rabbitmqctl(request, &["list_users", "--silent"], None).await?;
    if listed
        .lines()
        .any(|line| line.split_whitespace().next() == Some(user.as_str()))
    {
        rabbitmqctl(request, &["delete_user", &user], None).await?;
    }
    let mut redis = admin(request).await?;
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut redis)
        .await
        .context("Redis refused ACL DELUSER")?;
    save_acl(&mut redis).await;
    Ok(())
}

async fn admin(request: &Request) -> anyhow::Result<redis::aio::ConnectionManager> {
    let trust = kiln_io::tls::Trust::load(request.tls_ca.as_deref())?;
    let (_, redis) = kiln_io::redis::connect(&request.redis_admin_url, &trust)
        .await
        .with_context(|| {
            let url = kiln_io::tls::redacted(&request.redis_admin_url);
            format!("cannot connect to Redis at {url}")
        })?;
    Ok(redis)
}

/// Writes the ACL users to Redis's ACL file, when it has one; without one they last until
/// Redis restarts, which the command's output says.
async fn save_acl(redis: &mut redis::aio::ConnectionManager) {
    let saved: redis::RedisResult<()> = redis::cmd("ACL").arg("SAVE").query_async(redis).await;
    if let Err(error) = saved {
        tracing::warn!(
            %error,
            "Redis did not save its ACL: without an `aclfile` in redis.conf the user lasts \
             until Redis restarts"
        );
    }
}

/// Runs `rabbitmqctl args…`, with `stdin` on its standard input; its output, or why it failed.
async fn rabbitmqctl(
    request: &Request,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let mut child = tokio::process::Command::new(&request.rabbitmqctl)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", request.rabbitmqctl.display()))?;
    if let Some(mut input) = child.stdin.take() {
        if let Some(text) = stdin {
            input.write_all(format!("{text}\n").as_bytes()).await?;
        }
        drop(input);
    }
    let output = tokio::time::timeout(RABBITMQCTL_DEADLINE, child.wait_with_output())
        .await
        .with_context(|| format!("rabbitmqctl {} took over {RABBITMQCTL_DEADLINE:?}", args[0]))??;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed ({}): {}",
            args[0],
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// How long one `rabbitmqctl` call may take: it starts an Erlang node, a few seconds.
const RABBITMQCTL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// 24 random bytes in hex: a password that needs no escaping in a URL or a shell.
fn password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        assert_eq!(
            user_name("kiln", "mac-1").expect("fine"),
            "kiln-worker-mac-1"
        );
        assert!(user_name("kiln", "a b").is_err());
        assert!(user_name("kiln", "").is_err());
        assert!(user_name("kiln", "x:y").is_err());
    }

    #[test]
    fn urls_carry_the_user() {
        let issued = Issued {
            user: "kiln-worker-a".into(),
            amqp_password: "p".into(),
            redis_password: "q".into(),
        };
        assert_eq!(
            issued.url("amqps://mq:5671/%2f", "p"),
            "amqps://kiln-worker-a:p@mq:5671/%2f"
        );
        assert_eq!(
            issued.url("amqps://mq-0:5671/k, amqps://mq-1:5671/k", "p"),
            "amqps://kiln-worker-a:p@mq-0:5671/k,amqps://kiln-worker-a:p@mq-1:5671/k"
        );
    }
}
