//! Building a pull (merge) request's head on someone's word: `/kiln ok-to-test` in the
//! request, or `ok-to-test <owner/repo> <request>` in chat. A request from a fork waits for
//! it (unless its author is trusted); a fork's build gets no secrets.

use kiln_shared::ident::ChannelName;
use kiln_shared::trigger::{Request, RequestRef};

use crate::app::App;
use crate::config::{Forge, Repository};
use crate::ingress::{self, Accepted};
use crate::repositories;

/// The "forge" of these builds' deliveries, in their keys.
const DOOR: &str = "ok-to-test";

/// Builds the head of request `number` of `repo` on `forge` as it is now, for `by`; the same
/// head is built once, however often it is asked. With `looked_at` (a commit id or its
/// prefix), only if the head is still that commit: a push made after someone looked is not
/// built on their word. The build's cards go to `channel`. The answer says what became of it.
pub async fn build_head(
    app: &App,
    forge: Forge,
    repo: &Repository,
    (number, looked_at): (u64, Option<&str>),
    channel: Option<&ChannelName>,
    by: &str,
) -> anyhow::Result<String> {
    let name = &repo.name;
    let pull = app.forges.pull_request(forge, name, number).await?;
    if let Some(looked_at) = looked_at
        && !pull.head.starts_with(looked_at)
    {
        return Ok(format!(
            "The head of request #{number} is {}, not {looked_at}: look at it, then say \
             `ok-to-test` with it.",
            pull.head
        ));
    }
    let Some(clone_url) = repositories::clone_url(app, repo).await? else {
        return Ok(format!(
            "Kiln does not know where to fetch {name} from yet: set its `clone_url`."
        ));
    };
    let head = pull.head.clone();
    let request = Request {
        repo: name.clone(),
        head: pull.head,
        clone_url,
        author: pull.author,
        // A writer said it may be built: whose it is is not asked.
        head_owner: String::new(),
        title: pull.title,
        about: RequestRef {
            number,
            source_branch: pull.branch,
            target_branch: pull.target,
            from_fork: pull.from_fork,
        },
    };
    let delivery = format!("{name}:{number}:{head}");
    let new = ingress::request_build(repo, request);
    let short: String = head.chars().take(8).collect();
    match ingress::accept_new(app, DOOR, &delivery, new).await? {
        Accepted::New { id, .. } => {
            if let Some(channel) = channel.filter(|c| app.chat.can_post(c)) {
                app.store.follow_build(id, channel).await?;
            }
            Ok(format!(
                "Build #{id} of request #{number} ({short}) is queued, for {by}."
            ))
        }
        Accepted::Duplicate(id) => Ok(format!(
            "Request #{number} at {short} is being built already: build #{id}."
        )),
        Accepted::Promoted(_) => anyhow::bail!("a request's head is no promotion"),
    }
}
