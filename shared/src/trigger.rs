//! What a forge told Kiln, in Kiln's own words: every forge adapter translates its webhooks
//! into a [`ForgeEvent`] at the door, so nothing past the door knows a vendor's payload.

/// A webhook, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeEvent {
    /// The forge checking that the hook works.
    Ping,
    /// Commits pushed to a branch: build the newest.
    Push(Push),
    /// Something Kiln does not build (a tag, a deleted branch, an event it has no use for).
    Ignored {
        /// Said back to the forge and logged, so people see why nothing happened.
        reason: String,
    },
}

/// Commits pushed to a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `owner/name`.
    pub repo: String,
    pub branch: String,
    /// The branch's new head: the commit to build.
    pub commit: String,
    /// Where the forge says the repository can be cloned from.
    pub clone_url: String,
    /// The head commit's author, as the forge names them.
    pub author: String,
    /// The head commit's subject line.
    pub subject: String,
    /// Every file the pushed commits added, changed or removed; `None` when the forge's list
    /// may be incomplete (a new or force-pushed branch, a long push).
    pub changed_paths: Option<Vec<String>>,
}

/// What started a build, as `.kiln.yml`'s `when: { event: [...] }` names it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// Commits pushed to a branch.
    #[default]
    Push,
    /// A tag pushed.
    Tag,
    /// A merge or pull request opened or updated.
    MergeRequest,
    /// Someone asked in chat or the web console.
    Command,
}
