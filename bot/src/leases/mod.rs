//! `env`: test environments leased from the pools in the configuration, and the reaper that
//! reminds holders before a lease ends and tears the environment down when it has.
//!
//! A lease takes a slot of its pool in one Lua script, so two requests never get the same
//! slot; everything about a lease is in Redis, so a bot that restarts reaps what ended
//! meanwhile. A `docker` pool's environment is a worker's to start and remove
//! ([`environment`]); the bot keeps only the lease.

mod environment;

use std::time::Duration;

use kiln_shared::command::Env;
use kiln_shared::lease::{LeaseId, extended, lease_length, reminder_at};
use kiln_shared::plan::is_group_pool;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::commands::actor::Actor;
use crate::commands::reply::Reply;
use crate::config::PoolKind;
use crate::store::{LeaseRecord, now_ms};

use environment::Started;

/// How often the reaper looks at the leases: well within [`kiln_shared::lease::REMINDER_LEAD`].
const REAP_EVERY: Duration = Duration::from_secs(2);

/// Carries out `env …` for `actor`.
pub async fn run(app: &App, actor: Actor<'_>, env: &Env) -> anyhow::Result<Reply> {
    match env {
        Env::Request {
            pool,
            branch,
            length,
        } => request(app, actor, pool, branch.as_deref(), *length).await,
        Env::List => list(app).await,
        Env::Extend { lease, by } => {
            let lease = match held(app, actor, *lease).await? {
                Ok(lease) => lease,
                Err(reply) => return Ok(reply),
            };
            let Some(pool) = app.config.pool(&lease.pool) else {
                return Ok(Reply::invalid(format!("Pool `{}` is gone.", lease.pool)));
            };
            let now = now_ms();
            let (expires, capped) = extended(now, lease.expires_ms, *by, pool.max_ttl);
            let remind = reminder_at(expires, Duration::from_millis(expires - now));
            if !app.store.extend_lease(lease.id, expires, remind).await? {
                return Ok(Reply::invalid(format!("Lease #{} has ended.", lease.id)));
            }
            Ok(Reply::done(format!(
                "Lease #{} now ends in {}{}.",
                lease.id,
                remaining(now, expires),
                if capped {
                    format!(
                        ", the most pool `{}` lends for ({})",
                        pool.name,
                        humantime::format_duration(pool.max_ttl)
                    )
                } else {
                    String::new()
                }
            )))
        }
        Env::Release { lease } => {
            let lease = match held(app, actor, *lease).await? {
                Ok(lease) => lease,
                Err(reply) => return Ok(reply),
            };
            end(app, &lease, None).await?;
            let gone = !lease.container || environment::removed(app, lease.id).await?;
            Ok(Reply::done(format!(
                "Lease #{} of pool `{}` is released; its environment {}.",
                lease.id,
                lease.pool,
                if gone {
                    "is gone"
                } else {
                    "goes when its worker is back"
                }
            )))
        }
    }
}

/// `env request <pool> [branch] [for <length>]`.
async fn request(
    app: &App,
    actor: Actor<'_>,
    name: &str,
    branch: Option<&str>,
    length: Option<Duration>,
) -> anyhow::Result<Reply> {
    let Some(pool) = app.config.pool(name) else {
        let names: Vec<&str> = app.config.pools.iter().map(|p| p.name.as_str()).collect();
        return Ok(Reply::invalid(if names.is_empty() {
            "Kiln's configuration has no pools.".to_owned()
        } else {
            format!(
                "There is no pool `{name}`; the pools: {}.",
                names.join(", ")
            )
        }));
    };
    if branch.is_some() && pool.kind == PoolKind::Static {
        return Ok(Reply::invalid(format!(
            "Pool `{name}` hands out hosts; only a docker pool starts a branch."
        )));
    }
    let length = match lease_length(length, pool.default_ttl, pool.max_ttl) {
        Ok(length) => length,
        Err(why) => return Ok(Reply::invalid(format!("Pool `{name}`: {why}."))),
    };
    let now = now_ms();
    let expires_ms = now + u64::try_from(length.as_millis()).unwrap_or(u64::MAX / 2);
    let asked = LeaseRecord {
        id: LeaseId(0),
        pool: pool.name.clone(),
        slot: 0,
        holder: actor.id.to_owned(),
        holder_name: actor.name.to_owned(),
        channel: actor.channel.cloned(),
        branch: branch.map(str::to_owned),
        started_ms: now,
        expires_ms,
        remind_ms: reminder_at(expires_ms, length),
        details: String::new(),
        container: pool.kind == PoolKind::Docker,
        failure: None,
    };
    let Some(lease) = app.store.take_slot(&asked, pool.capacity(), None).await? else {
        return Ok(Reply::invalid(format!(
            "Every slot of pool `{name}` is taken ({} of {}); `env list` says who holds them \
             and when they end.",
            pool.capacity(),
            pool.capacity()
        )));
    };
    let id = lease.id;
    let ended = || Ok(Reply::invalid(format!("Lease #{id} ended as it began.")));
    let details = match pool.kind {
        PoolKind::Static => {
            let host = pool.hosts[lease.slot as usize].clone();
            if !app.store.lease_details(id, &host).await? {
                return ended();
            }
            host
        }
        // Recorded in the lease by the worker that started it.
        PoolKind::Docker => match environment::start(app, pool, &lease, branch).await? {
            Started::Up(details) => details,
            Started::Ended => return ended(),
            Started::Failed(why) => {
                end(app, &lease, None).await?;
                return Ok(Reply::failed(format!(
                    "Kiln could not start an environment of pool `{name}`: {why}"
                )));
            }
        },
    };
    Ok(Reply::done(format!(
        "Lease #{id} of pool `{name}`: {details}, for {} (until {}). `env extend {id}` keeps \
         it longer, `env release {id}` gives it back.",
        humantime::format_duration(length),
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(expires_ms)
        ),
    )))
}

/// `env list`.
async fn list(app: &App) -> anyhow::Result<Reply> {
    let leases = app.store.leases().await?;
    let now = now_ms();
    let mut lines = Vec::new();
    for pool in &app.config.pools {
        let held: Vec<&LeaseRecord> = leases.iter().filter(|l| l.pool == pool.name).collect();
        lines.push(format!(
            "Pool `{}` ({}): {} of {} taken",
            pool.name,
            match pool.kind {
                PoolKind::Static => "static",
                PoolKind::Docker => "docker",
            },
            held.len(),
            pool.capacity()
        ));
        for lease in held {
            lines.push(format!(
                "• #{} {}{}, held by {}, ends in {}",
                lease.id,
                if lease.details.is_empty() {
                    "starting"
                } else {
                    &lease.details
                },
                lease
                    .branch
                    .as_deref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default(),
                lease.holder_name,
                remaining(now, lease.expires_ms)
            ));
        }
    }
    if lines.is_empty() {
        return Ok(Reply::done("Kiln's configuration has no pools."));
    }
    Ok(Reply::done(lines.join("\n")))
}

/// Lease `id`, if `actor` holds it (or is an operator); otherwise the answer.
async fn held(
    app: &App,
    actor: Actor<'_>,
    id: LeaseId,
) -> anyhow::Result<Result<LeaseRecord, Reply>> {
    let Some(lease) = app.store.lease(id).await? else {
        return Ok(Err(Reply::invalid(format!(
            "There is no lease #{id}; it may have ended."
        ))));
    };
    if lease.holder != actor.id && !actor.operator {
        return Ok(Err(Reply::refused(format!(
            "Lease #{id} is {}'s; only they (or an operator) may change it.",
            lease.holder_name
        ))));
    }
    Ok(Ok(lease))
}

/// Ends a lease (with `expired_by`, only if it has not been extended past then) and frees
/// its slot; true for the caller that ended it. A container of the lease is removed by its
/// worker's reaper, which sees the lease gone.
async fn end(app: &App, lease: &LeaseRecord, expired_by: Option<u64>) -> anyhow::Result<bool> {
    Ok(app.store.end_lease(lease, expired_by).await?)
}

/// Reminds holders before their leases end, and ends the leases whose time is up, until
/// `shutdown` is cancelled. A pass that fails (Redis) is tried again next time.
pub async fn reap(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(REAP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        if let Err(error) = reap_once(&app).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "reaping leases failed; will retry"
            );
        }
    }
}

async fn reap_once(app: &App) -> anyhow::Result<()> {
    let now = now_ms();
    for lease in &app.store.leases().await? {
        // One lease that cannot be reaped holds up no other.
        if let Err(error) = reap_lease(app, lease, now).await {
            tracing::warn!(lease = %lease.id, error = format!("{error:#}"), "cannot reap a lease");
        }
    }
    // Tasks waiting for slots: some may have come free (a lease released or expired, a
    // release whose wake was lost). A concurrency group is in no configuration: the pools
    // tasks have waited for name it.
    let static_pools = app
        .config
        .pools
        .iter()
        .filter(|p| p.kind == PoolKind::Static);
    let waited = app.store.waited_pools().await?;
    let groups = waited.iter().filter(|pool| is_group_pool(pool));
    let pools: std::collections::BTreeSet<&str> = static_pools
        .map(|p| p.name.as_str())
        .chain(groups.map(String::as_str))
        .collect();
    for pool in pools {
        if let Err(error) = crate::resources::wake(app, pool).await {
            tracing::warn!(pool, error = format!("{error:#}"), "cannot hand out slots");
        }
    }
    Ok(())
}

/// Ends `lease` if its time is up, or reminds its holder if that is due.
async fn reap_lease(app: &App, lease: &LeaseRecord, now: u64) -> anyhow::Result<()> {
    let id = lease.id;
    if lease.expires_ms <= now {
        if end(app, lease, Some(now)).await? {
            tracing::info!(lease = %id, pool = %lease.pool, "lease ended");
            let text = format!(
                "Lease #{id} of pool `{}` has ended; its environment is gone.",
                lease.pool
            );
            tell(app, lease, &text).await;
        }
    } else if lease.remind_ms != 0
        && lease.remind_ms <= now
        && app.store.reminded(id, lease.remind_ms).await?
    {
        let text = format!(
            "{}: lease #{id} of pool `{}` ends in {}; `env extend {id}` keeps it longer.",
            lease.holder_name,
            lease.pool,
            remaining(now, lease.expires_ms)
        );
        tell(app, lease, &text).await;
    }
    Ok(())
}

/// Posts `text` where the lease was asked for, if Kiln can post there.
async fn tell(app: &App, lease: &LeaseRecord, text: &str) {
    let Some(channel) = lease.channel.as_ref().filter(|c| app.chat.can_post(c)) else {
        return;
    };
    if let Err(error) = app.chat.post(channel, text, None, None).await {
        tracing::warn!(lease = %lease.id, %channel, error = format!("{error:#}"), "cannot tell a lease's holder");
    }
}

/// `1h 59m`, to the second under a minute, from `now_ms` to `until_ms`.
fn remaining(now_ms: u64, until_ms: u64) -> String {
    let secs = until_ms.saturating_sub(now_ms) / 1000;
    let rounded = if secs >= 60 { secs / 60 * 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}
