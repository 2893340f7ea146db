//! What every part of the bot shares: configuration and connections.

use std::sync::Arc;

use kiln_io::registry::oci::Oci;

use crate::amqp::Broker;
use crate::config;
use crate::config::Config;
use crate::forge::{ForgeClient, Forges};
use crate::health::Watchdog;
use crate::logs::{Archive, Logs};
use crate::metrics::Metrics;
use crate::mirror::Mirrors;
use crate::notify::Chat;
use crate::notify::keepers::Keepers;
use crate::notify::render::Templates;
use crate::outbox::Outbox;
use crate::schedules::kept::FileSchedules;
use crate::specs::Specs;
use crate::spool::Spool;
use crate::store::Store;
use crate::vendors;
use crate::vendors::discord::interactions::Interactions;

/// The bot's shared state; cheap to clone into each request and task.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub broker: Broker,
    pub mirrors: Mirrors,
    /// The `.kiln.yml` texts read lately, parsed.
    pub specs: Specs,
    pub templates: Arc<Templates>,
    /// The chat vendors cards and notifications are posted to.
    pub chat: Arc<Chat>,
    /// The builds whose cards are being kept up to date.
    pub cards: Keepers,
    /// The forges commit statuses are set on.
    pub forges: Arc<Forges>,
    /// Discord's slash commands, when configured.
    pub interactions: Option<Arc<Interactions>>,
    /// Tells the outbox's relay that builds wait for it.
    pub outbox: Outbox,
    /// The work in progress, for `/healthz`.
    pub watchdog: Watchdog,
    /// For answers to chat front ends (Slack's `response_url`) and Slack's Web API.
    pub http: reqwest::Client,
    /// The installation's registry, where workers keep artifacts, when configured.
    pub registry: Option<Oci>,
    /// What `GET /metrics` shows.
    pub metrics: Arc<Metrics>,
    /// Tasks' logs, from Redis or their archive.
    pub logs: Logs,
    /// The deliveries that wait until Redis or RabbitMQ is back.
    pub spool: Spool,
    /// The schedules repositories' files name ([`crate::schedules`] reads them).
    pub file_schedules: FileSchedules,
}

impl App {
    /// Assembles the bot from its configuration and open connections.
    pub fn new(
        config: Config,
        store: Store,
        broker: Broker,
        mirrors: Mirrors,
        spool: Spool,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let metrics = Arc::new(Metrics::default());
        let forges = Arc::new(forges(&config, &metrics)?);
        let registry = match &config.registry {
            Some(r) => {
                let credentials = match &r.auth {
                    Some(path) => kiln_io::registry::load(path).map_err(anyhow::Error::msg)?,
                    None => Default::default(),
                };
                Some(Oci::new(&r.address, credentials.get(&r.address)))
            }
            None => None,
        };
        let archive = match (&registry, &config.retention.archive_dir) {
            (Some(oci), _) => Some(Archive::Registry(oci.clone())),
            (None, Some(dir)) => Some(Archive::Directory(dir.clone())),
            (None, None) => None,
        };
        let logs = Logs::new(store.clone(), archive);
        let interactions = match &config.discord {
            Some(d) => Interactions::new(d)?.map(Arc::new),
            None => None,
        };
        Ok(Self {
            chat: Arc::new(Chat::new(
                vendors::chats(&config, &http, &forges),
                metrics.clone(),
            )),
            forges,
            cards: Keepers::default(),
            config: Arc::new(config),
            store,
            broker,
            mirrors,
            specs: Specs::default(),
            templates: Arc::new(Templates::new(vendors::DIALECTS)?),
            interactions,
            outbox: Outbox::default(),
            watchdog: Watchdog::default(),
            http,
            registry,
            metrics,
            logs,
            spool,
            file_schedules: FileSchedules::default(),
        })
    }
}

/// The configured forges' clients.
fn forges(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Forges> {
    let mut clients: Vec<(config::Forge, Arc<dyn ForgeClient>)> = Vec::new();
    if let Some(github) = &config.github {
        clients.push((
            config::Forge::GitHub,
            Arc::new(vendors::github::GitHub::new(github)?),
        ));
    }
    if let Some(gitlab) = &config.gitlab {
        clients.push((
            config::Forge::GitLab,
            Arc::new(vendors::gitlab::GitLab::new(gitlab)),
        ));
    }
    Ok(Forges::new(clients, metrics.clone()))
}
