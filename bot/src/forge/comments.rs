//! A forge's pull (merge) requests as chat channels: `github:owner/name#7` is the comments of
//! pull request 7, where Kiln posts the cards of the builds a comment asked for.

use std::sync::Arc;

use async_trait::async_trait;
use kiln_shared::ident::RepoName;

use super::{ForgeClient, within};
use crate::config::{Forge, Person};
use crate::notify::chat::{Buttons, ChatClient, Vendor};
use crate::notify::render::Dialect;

/// Why a request cannot `subscribe`.
const UNSUBSCRIBABLE: &str =
    "Subscriptions are for chat channels; a pull request hears of the builds it asks for.";

/// `forge`'s requests as a chat vendor: `mark` is how it writes a request's reference,
/// `dialect` how its comments are written; posts go through `client` when it is configured.
pub fn vendor(
    forge: Forge,
    mark: char,
    dialect: &'static Dialect,
    client: Option<Arc<dyn ForgeClient>>,
) -> Vendor {
    let is_channel: fn(&str) -> bool = match mark {
        '!' => |id| parse(id, '!').is_some(),
        _ => |id| parse(id, '#').is_some(),
    };
    Vendor {
        scheme: forge.as_str(),
        dialect,
        is_channel,
        // Whoever asked for the build in the request is told by the forge already.
        mention: |_| None,
        unsubscribable: Some(UNSUBSCRIBABLE),
        client: client
            .map(|client| Arc::new(Comments { forge, client }) as Arc<dyn ChatClient>)
            .ok_or("this forge is not configured"),
        everywhere: Vec::new(),
    }
}

/// A request's repository and number, from the channel id `owner/name<mark>7`.
fn parse(id: &str, mark: char) -> Option<(&str, u64)> {
    let (repo, number) = id.rsplit_once(mark)?;
    Some((repo, number.parse().ok()?))
}

/// Posts to requests' comments.
#[derive(Debug)]
struct Comments {
    forge: Forge,
    client: Arc<dyn ForgeClient>,
}

impl Comments {
    fn request(&self, id: &str) -> anyhow::Result<(RepoName, u64)> {
        let (repo, number) = parse(id, self.client.request_mark())
            .ok_or_else(|| anyhow::anyhow!("`{id}` is not a request"))?;
        Ok((repo.into(), number))
    }
}

/// A comment has no buttons: its text links to the build.
#[async_trait]
impl ChatClient for Comments {
    async fn post(
        &self,
        id: &str,
        text: &str,
        _buttons: Option<&Buttons>,
        _ping: Option<&Person>,
    ) -> anyhow::Result<String> {
        let (repo, number) = self.request(id)?;
        within(self.forge, self.client.comment(&repo, number, text)).await
    }

    async fn edit(
        &self,
        id: &str,
        message: &str,
        text: &str,
        _buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        let (repo, number) = self.request(id)?;
        within(
            self.forge,
            self.client.edit_comment(&repo, number, message, text),
        )
        .await
    }
}
