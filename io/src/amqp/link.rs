//! A process's one RabbitMQ connection, kept open through broker outages by a keeper task
//! that Kiln owns rather than lapin's automatic recovery.
//!
//! The connection goes to one node of a list: a single broker, or the nodes of a cluster.
//! Each process starts at a node of its own choosing (so a fleet spreads over the cluster)
//! and moves to the next one whenever its connection ends or an attempt fails, so a node
//! that goes away costs one failed attempt, not an outage.
//!
//! Each connection's life is a [`Session`]: the connection, a publisher channel in confirm
//! mode and the topology declared on it. When anything sees the session fail (the
//! connection reports an error or stops being connected, a confirm does not come within
//! [`CONFIRM_DEADLINE`], a channel cannot be opened), the keeper closes it and opens the next
//! one, pausing with a jittered exponential backoff between attempts for as long as the
//! broker is away. Consumers take each new session as it comes ([`Link::consume`]); a
//! publish while there is none fails at once ([`PublishError::Down`]), so callers decide
//! what to keep.
//!
//! Why not `enable_auto_recover()`: under broker restarts lapin's recovery sometimes gave up
//! (the process's consumers ended with the IO error), sometimes stayed `Reconnecting` for
//! good with its IO thread spinning, and a publish could wait for a confirm that never came.
//! Here every wait has a deadline and a broken connection is dropped whole, never mended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{CONFIRM_DEADLINE, Message, PublishError, open};
use crate::tls::Trust;

/// How long opening a connection, its publisher channel and the topology may take.
const OPEN_DEADLINE: Duration = Duration::from_secs(15);

/// How long closing a connection that is given up may take; it is dropped after that.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// How often a session's connection is looked at, beside the errors it reports.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// How long [`Link::open`] waits for the first session before it lets the process go on
/// (and the keeper go on trying): a process that starts before its broker still starts.
const FIRST_SESSION_WAIT: Duration = Duration::from_secs(10);

/// The pauses between attempts to connect: from 100 ms, doubling, jittered (so a fleet of
/// workers does not knock all at once), at most 1.5 s (before jitter), for ever: an attempt
/// while the broker is away is a refused connection, cheap, and a broker back is found soon.
fn pauses() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(1500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Declares what a process needs on a new connection (exchanges, queues, bindings), with the
/// connection's publisher channel or channels of its own ([`Preparing`]).
pub type Prepare = Arc<
    dyn Fn(Preparing) -> futures_util::future::BoxFuture<'static, lapin::Result<()>> + Send + Sync,
>;

/// A new connection being prepared: its publisher channel, and more channels on demand (a
/// refused declaration closes the channel it was made on).
#[derive(Clone)]
pub struct Preparing {
    connection: Arc<Connection>,
    /// The channel publishes go out on, in confirm mode.
    pub publisher: Channel,
}

impl std::fmt::Debug for Preparing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preparing").finish_non_exhaustive()
    }
}

impl Preparing {
    /// Opens another channel on the connection.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.connection.create_channel().await
    }
}

/// An AMQP URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the AMQP URL is not valid: {0}")]
pub struct BadUrl(String);

/// The nodes of `urls`: one AMQP URL, or several separated by commas (a cluster's nodes,
/// each with its user, password and virtual host).
fn nodes(urls: &str) -> Result<Vec<AMQPUri>, BadUrl> {
    let nodes = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| url.parse::<AMQPUri>().map_err(BadUrl))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(BadUrl("no URL given".into()));
    }
    Ok(nodes)
}

/// `uri`'s host and port, to name a node in logs (never its password).
fn node_name(uri: &AMQPUri) -> String {
    format!("{}:{}", uri.authority.host, uri.authority.port)
}

/// A handle on the kept connection; cheap to clone. The keeper stops, and closes the
/// connection, when the last handle is dropped.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
    _keeper: Arc<DropGuard>,
}

struct Inner {
    /// The nodes connections go to, in turn.
    nodes: Vec<AMQPUri>,
    trust: Trust,
    name: String,
    prepare: Prepare,
    state: watch::Sender<LinkState>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.inner.name)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

/// Where the link stands.
#[derive(Debug, Clone)]
pub enum LinkState {
    /// Connected, with the topology declared.
    Up(Session),
    /// No usable connection since `since`; the last attempt failed with `error`, if one has
    /// been made.
    Down {
        since: Instant,
        error: Option<String>,
    },
}

/// One connection's life: the connection, its publisher channel, and whether it is broken.
#[derive(Clone)]
pub struct Session {
    connection: Arc<Connection>,
    publisher: Channel,
    broken: CancellationToken,
    /// Counts the sessions of this link, from 1.
    number: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("number", &self.number)
            .field("broken", &self.broken.is_cancelled())
            .finish()
    }
}

impl Session {
    /// Marks the session broken: the keeper replaces it, and its consumers end.
    pub fn fail(&self, why: &str) {
        if !self.broken.is_cancelled() {
            tracing::warn!(session = self.number, why, "RabbitMQ connection given up");
            self.broken.cancel();
        }
    }

    /// Whether the session is broken.
    pub fn is_broken(&self) -> bool {
        self.broken.is_cancelled()
    }

    /// Resolves once the session is broken.
    pub async fn broken(&self) {
        self.broken.cancelled().await;
    }

    /// Opens a channel on the session's connection; failing to is the session's failure.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        let opened = self.connection.create_channel().await;
        if let Err(error) = &opened {
            self.fail(&format!("cannot open a channel: {error}"));
        }
        opened
    }

    /// Publishes `message` and waits, at most [`CONFIRM_DEADLINE`], for the broker's
    /// confirm. A lapin error or a missing confirm breaks the session.
    pub async fn publish(&self, message: &Message<'_>) -> Result<(), PublishError> {
        let publish = async {
            self.publisher
                .basic_publish(
                    message.exchange.into(),
                    message.routing_key.into(),
                    message.options(),
                    message.body,
                    message.properties(),
                )
                .await?
                .await
        };
        let confirm = match tokio::time::timeout(CONFIRM_DEADLINE, publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(error)) => {
                self.fail(&format!("a publish failed: {error}"));
                return Err(error.into());
            }
            Err(_) => {
                self.fail("a publish was not confirmed in time");
                return Err(PublishError::Unconfirmed);
            }
        };
        if confirm.is_nack() {
            return Err(PublishError::Nacked);
        }
        // With `mandatory`, an unroutable message is acked *and* returned.
        if confirm.take_message().is_some() {
            return Err(PublishError::Unroutable(message.routing_key.to_owned()));
        }
        Ok(())
    }
}

impl Link {
    /// Starts keeping a connection to `urls` (one AMQP URL, or a cluster's nodes separated
    /// by commas; over TLS for `amqps://`, the broker verified as `trust` says), named `name`
    /// in the broker's list, with `prepare` run on every new connection before it is used. Waits for the first session at most
    /// [`FIRST_SESSION_WAIT`]; past that the link is returned down (the warning says why),
    /// and the keeper goes on trying. Fails only for a URL that cannot be used at all.
    pub async fn open(
        urls: &str,
        trust: &Trust,
        name: &str,
        prepare: Prepare,
    ) -> Result<Self, BadUrl> {
        let nodes = nodes(urls)?;
        let (state, _) = watch::channel(LinkState::Down {
            since: Instant::now(),
            error: None,
        });
        let inner = Arc::new(Inner {
            nodes,
            trust: trust.clone(),
            name: name.to_owned(),
            prepare,
            state,
        });
        let stop = CancellationToken::new();
        tokio::spawn(keep(inner.clone(), stop.clone()));
        let link = Self {
            inner,
            _keeper: Arc::new(stop.drop_guard()),
        };
        let mut states = link.inner.state.subscribe();
        let up = states.wait_for(|s| matches!(s, LinkState::Up(_)));
        if tokio::time::timeout(FIRST_SESSION_WAIT, up).await.is_err() {
            let why = link.down_reason();
            tracing::warn!(
                why,
                "RabbitMQ is not reachable yet; going on, and connecting as soon as it is"
            );
        }
        Ok(link)
    }

    /// Where the link stands now.
    pub fn state(&self) -> LinkState {
        self.inner.state.borrow().clone()
    }

    /// The session now, if the link is up.
    pub fn session(&self) -> Option<Session> {
        match &*self.inner.state.borrow() {
            LinkState::Up(session) if !session.broken.is_cancelled() => Some(session.clone()),
            _ => None,
        }
    }

    /// Waits for a working session; `None` once `stop` is cancelled.
    pub async fn next_session(&self, stop: &CancellationToken) -> Option<Session> {
        let mut states = self.inner.state.subscribe();
        loop {
            if stop.is_cancelled() {
                return None;
            }
            if let Some(session) = self.session() {
                return Some(session);
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                changed = states.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// A receiver told of every change of the link's state.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.inner.state.subscribe()
    }

    /// Publishes `message` on the current session and waits for its confirm (see
    /// [`Session::publish`]); fails at once while the link is down.
    pub async fn publish(&self, message: &Message<'_>) -> Result<(), PublishError> {
        let session = self
            .session()
            .ok_or_else(|| PublishError::Down(self.down_reason()))?;
        session.publish(message).await
    }

    fn down_reason(&self) -> String {
        match &*self.inner.state.borrow() {
            LinkState::Up(_) => "the connection was just given up".into(),
            LinkState::Down { since, error } => format!(
                "no connection for {:.1} s{}",
                since.elapsed().as_secs_f64(),
                error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Starts consuming `queue` as `tag` on a channel of its own with at most `prefetch`
    /// unacknowledged messages, on the first session that lets it; `None` once `stop` is
    /// cancelled. The consumer ends with its session: take the next one then.
    pub async fn consume(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
        stop: &CancellationToken,
    ) -> Option<(Session, Channel, Consumer)> {
        let (session, channel, mut consumers) =
            self.consume_each(&[(queue, tag, prefetch)], stop).await?;
        let consumer = consumers.pop().expect("one consumer per queue");
        Some((session, channel, consumer))
    }

    /// Starts consuming each of `queues` (name, consumer tag, and how many unacknowledged
    /// messages it may hold) on one channel, on the first session that lets it; the
    /// consumers in the order of `queues`. `None` once `stop` is cancelled.
    pub async fn consume_each(
        &self,
        queues: &[(&str, &str, u16)],
        stop: &CancellationToken,
    ) -> Option<(Session, Channel, Vec<Consumer>)> {
        let names: Vec<&str> = queues.iter().map(|(queue, _, _)| *queue).collect();
        let queue = names.join(", ");
        loop {
            let session = self.next_session(stop).await?;
            let started = async {
                let channel = session.channel().await?;
                let mut consumers = Vec::with_capacity(queues.len());
                for (queue, tag, prefetch) in queues {
                    // Per consumer, never global: global QoS on a quorum queue is a
                    // connection error. It holds for the consumers started after it.
                    channel
                        .basic_qos(*prefetch, BasicQosOptions { global: false })
                        .await?;
                    let consumer = channel
                        .basic_consume(
                            (*queue).into(),
                            (*tag).into(),
                            BasicConsumeOptions::default(),
                            FieldTable::default(),
                        )
                        .await?;
                    consumers.push(consumer);
                }
                lapin::Result::Ok((channel, consumers))
            };
            // A process asked to stop stops waiting for a broker that does not answer.
            let started = tokio::select! {
                () = stop.cancelled() => return None,
                started = tokio::time::timeout(OPEN_DEADLINE, started) => started,
            };
            match started {
                Ok(Ok((channel, consumer))) => return Some((session, channel, consumer)),
                Ok(Err(error)) => session.fail(&format!("cannot consume {queue}: {error}")),
                Err(_) => session.fail(&format!("consuming {queue} did not start in time")),
            }
        }
    }
}

/// Opens a session with `node`: the connection, its publisher channel in confirm mode, the
/// topology.
async fn start_session(inner: &Inner, node: &AMQPUri, number: u64) -> lapin::Result<Session> {
    let connection = Arc::new(open(node.clone(), &inner.name, &inner.trust).await?);
    let opened = async {
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        (inner.prepare)(Preparing {
            connection: connection.clone(),
            publisher: publisher.clone(),
        })
        .await?;
        lapin::Result::Ok(publisher)
    };
    match opened.await {
        Ok(publisher) => Ok(Session {
            connection,
            publisher,
            broken: CancellationToken::new(),
            number,
        }),
        Err(error) => {
            let _ = tokio::time::timeout(CLOSE_DEADLINE, connection.close(200, "".into())).await;
            Err(error)
        }
    }
}

/// The keeper: opens a session, watches it until it breaks, closes it, opens the next (with
/// the next node); until `stop` is cancelled, which closes the last one.
async fn keep(inner: Arc<Inner>, stop: CancellationToken) {
    let mut delays = pauses();
    let mut number = 0;
    let mut at = fastrand::usize(..inner.nodes.len());
    loop {
        let uri = &inner.nodes[at];
        let node = node_name(uri);
        at = (at + 1) % inner.nodes.len();
        let opened = tokio::select! {
            () = stop.cancelled() => break,
            opened = tokio::time::timeout(OPEN_DEADLINE, start_session(&inner, uri, number + 1)) => opened,
        };
        let error = match opened {
            Ok(Ok(session)) => {
                number = session.number;
                delays = pauses();
                tracing::info!(session = number, node, "connected to RabbitMQ");
                inner.state.send_replace(LinkState::Up(session.clone()));
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = session.broken() => {}
                    why = watch_connection(&session.connection) => session.fail(&why),
                }
                inner.state.send_replace(LinkState::Down {
                    since: Instant::now(),
                    error: None,
                });
                let closing = session
                    .connection
                    .close(200, "kiln: connection replaced".into());
                let _ = tokio::time::timeout(CLOSE_DEADLINE, closing).await;
                if stop.is_cancelled() {
                    break;
                }
                // Straight on to the next attempt: the broker may be back already.
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("connecting took over {OPEN_DEADLINE:?}"),
        };
        // Said once per reason: a broker away is expected, but a refused certificate or
        // password is the operator's to fix and must be seen.
        let new_reason = match &*inner.state.borrow() {
            LinkState::Down { error: last, .. } => last.as_deref() != Some(error.as_str()),
            LinkState::Up(_) => true,
        };
        if new_reason {
            tracing::warn!(%error, node, "cannot connect to RabbitMQ");
        } else {
            tracing::debug!(%error, node, "cannot connect to RabbitMQ");
        }
        inner.state.send_modify(|state| match state {
            LinkState::Down { error: last, .. } => *last = Some(error.clone()),
            LinkState::Up(_) => {
                *state = LinkState::Down {
                    since: Instant::now(),
                    error: Some(error.clone()),
                }
            }
        });
        let pause = delays.next().unwrap_or(Duration::from_millis(1500));
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Resolves, with why, once `connection` reports an error or is no longer connected.
async fn watch_connection(connection: &Connection) -> String {
    let mut events = connection.events_listener();
    let mut every = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => return format!("the connection failed: {error}"),
                Some(_) => {}
                None => return "the connection ended".into(),
            },
            _ = every.tick() => {
                if !connection.status().connected() {
                    return "the connection is no longer connected".into();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_urls_is_a_cluster_s_nodes() {
        let nodes = nodes(
            "amqps://w:p@mq-0.example:5671/kiln, amqps://w:p@mq-1.example:5671/kiln,amqp://w:p@mq-2.example/kiln",
        )
        .expect("three nodes");
        let names: Vec<String> = nodes.iter().map(node_name).collect();
        assert_eq!(
            names,
            [
                "mq-0.example:5671",
                "mq-1.example:5671",
                "mq-2.example:5672"
            ]
        );
        assert!(nodes.iter().all(|n| n.vhost == "kiln"));
    }

    #[test]
    fn an_empty_or_broken_list_is_refused() {
        assert!(nodes("").is_err());
        assert!(nodes(" , ").is_err());
        let error = nodes("amqp://127.0.0.1/%2f,http://x").expect_err("not AMQP");
        assert!(error.to_string().contains("not valid"), "{error}");
    }
}
