//! Promotion: moving a repository's `production` branch to a commit of `master` that passed,
//! by fast-forward, once people other than the one who asked have approved it.
//!
//! This module holds the rules, as plain data: which build stands for a commit, who may
//! approve, which approvals still count, where a rollback goes, and the event every step
//! publishes. The bot carries them out against git, Redis and RabbitMQ.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::build::{BuildId, BuildStatus, TaskStatus};
use crate::ident::{BranchName, CommitId, RepoName};
use crate::routing::event_key;

/// A promotion's number, unique across the installation and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PromotionId(pub u64);

impl fmt::Display for PromotionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    /// Waiting for approvals; it holds its repository's promotion slot.
    AwaitingApproval,
    /// Approved; the branch is being pushed.
    Pushing,
    /// The branch was moved.
    Promoted,
    /// The forge refused the push (the branch moved meanwhile), or a gate no longer held
    /// when it was time to push.
    Rejected,
    /// Kiln could not push (the forge unreachable, say).
    Failed,
    /// Not approved in time.
    Lapsed,
}

impl PromotionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Pushing => "pushing",
            Self::Promoted => "promoted",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Lapsed => "lapsed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::AwaitingApproval,
            Self::Pushing,
            Self::Promoted,
            Self::Rejected,
            Self::Failed,
            Self::Lapsed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the promotion is over.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::AwaitingApproval | Self::Pushing)
    }
}

impl fmt::Display for PromotionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().replace('_', " "))
    }
}

/// What a build of a commit did, as far as promotion cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSummary {
    pub id: BuildId,
    pub status: BuildStatus,
    /// Each task's step and status.
    pub tasks: Vec<(String, TaskStatus)>,
}

/// Why a promotion or an approval is refused; the message is for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The commit is not on the branch promotions take commits from.
    NotOnSource { commit: CommitId, from: BranchName },
    /// No build of the commit on the source branch passed.
    NotPassed {
        commit: CommitId,
        builds: Vec<(BuildId, BuildStatus)>,
    },
    /// The build passed but a step the promotion requires did not.
    Requirement {
        build: BuildId,
        step: String,
        status: Option<TaskStatus>,
    },
    /// The target branch is not an ancestor of the commit: only a merge could get there.
    NotFastForward { commit: CommitId, to: BranchName },
    /// The target branch is at the commit already.
    AlreadyThere { commit: CommitId, to: BranchName },
    /// No passed build of the source branch is newer than the target branch.
    NothingToPromote { from: BranchName, to: BranchName },
    /// Another promotion holds the repository.
    InFlight(PromotionId),
    /// Nothing was promoted before the current commit, or the target branch is not where
    /// Kiln put it.
    NoRollback(String),
    /// The approver asked for the promotion themselves.
    SelfApproval,
    /// The approver is not among the repository's approvers.
    NotApprover { who: String },
}

fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOnSource { commit, from } => {
                write!(f, "commit {} is not on `{from}`", short(commit))
            }
            Self::NotPassed { commit, builds } if builds.is_empty() => {
                write!(f, "commit {} has no build of its own yet", short(commit))
            }
            Self::NotPassed { commit, builds } => {
                let seen: Vec<String> = builds.iter().map(|(id, s)| format!("#{id} {s}")).collect();
                write!(
                    f,
                    "no build of commit {} passed ({})",
                    short(commit),
                    seen.join(", ")
                )
            }
            Self::Requirement {
                build,
                step,
                status: None,
            } => write!(
                f,
                "build #{build} has no step `{step}`, which a promotion requires"
            ),
            Self::Requirement {
                build,
                step,
                status: Some(status),
            } => write!(
                f,
                "step `{step}` of build #{build} {status}; a promotion requires it to pass"
            ),
            Self::NotFastForward { commit, to } => write!(
                f,
                "`{to}` has commits that {} does not: it cannot be fast-forwarded there",
                short(commit)
            ),
            Self::AlreadyThere { commit, to } => {
                write!(f, "`{to}` is at {} already", short(commit))
            }
            Self::NothingToPromote { from, to } => write!(
                f,
                "no passed build of `{from}` has a commit that `{to}` lacks"
            ),
            Self::InFlight(id) => write!(
                f,
                "promotion #{id} of this repository is in flight; one at a time"
            ),
            Self::NoRollback(why) => f.write_str(why),
            Self::SelfApproval => {
                f.write_str("a promotion is approved by people other than the one who asked for it")
            }
            Self::NotApprover { who } => write!(
                f,
                "only the repository's approvers in Kiln's configuration approve its \
                 promotions, and `{who}` is not one of them"
            ),
        }
    }
}

/// The build that lets `commit` be promoted: among `builds` (of the commit, on the source
/// branch), one that passed with every step `requires` names passed. Otherwise why not,
/// from the newest build's point of view.
pub fn passing_build(
    commit: &CommitId,
    builds: &[BuildSummary],
    requires: &[String],
) -> Result<BuildId, Refusal> {
    let mut why = None;
    for build in builds.iter().filter(|b| b.status == BuildStatus::Passed) {
        match missing_requirement(build, requires) {
            None => return Ok(build.id),
            Some(refusal) => {
                why.get_or_insert(refusal);
            }
        }
    }
    Err(why.unwrap_or_else(|| Refusal::NotPassed {
        commit: commit.clone(),
        builds: builds.iter().map(|b| (b.id, b.status)).collect(),
    }))
}

/// A required step that did not pass in `build`: every one of its tasks must have passed
/// (a task allowed to fail does not pass by failing).
fn missing_requirement(build: &BuildSummary, requires: &[String]) -> Option<Refusal> {
    requires.iter().find_map(|step| {
        let mut tasks = build.tasks.iter().filter(|(s, _)| s == step).peekable();
        if tasks.peek().is_none() {
            return Some(Refusal::Requirement {
                build: build.id,
                step: step.clone(),
                status: None,
            });
        }
        tasks
            .find(|(_, status)| *status != TaskStatus::Passed)
            .map(|(_, status)| Refusal::Requirement {
                build: build.id,
                step: step.clone(),
                status: Some(*status),
            })
    })
}

/// Who approves, and who asked.
#[derive(Debug, Clone, Copy)]
pub struct Approver<'a> {
    /// As permissions know them (`slack:U1`), with their roles.
    pub id: &'a str,
    pub roles: &'a [String],
    /// The person behind the id: the same for each of one person's accounts.
    pub person: &'a str,
}

/// Whether `approver` may approve a promotion that the person `requester` asked for, given
/// the repository's `approvers` (user ids and role ids).
pub fn may_approve(
    requester: &str,
    approver: Approver<'_>,
    approvers: &[String],
) -> Result<(), Refusal> {
    let Approver {
        id: who,
        roles,
        person,
    } = approver;
    if person == requester {
        return Err(Refusal::SelfApproval);
    }
    if approvers
        .iter()
        .any(|a| a == who || roles.iter().any(|r| r == a))
    {
        Ok(())
    } else {
        Err(Refusal::NotApprover {
            who: who.to_owned(),
        })
    }
}

/// The oldest moment, in milliseconds since the epoch, that an approval counted at `now_ms`
/// may have been given: approvals expire after `ttl`.
pub fn approvals_since(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Where a rollback moves the target branch: the commit promoted before `head`, given the
/// commits Kiln promoted, newest first. Refused unless the branch is where Kiln last put
/// it, so a rollback never drops a commit someone else pushed.
pub fn rollback_target<'a>(
    promoted: &'a [CommitId],
    head: Option<&CommitId>,
    to: &BranchName,
) -> Result<&'a CommitId, Refusal> {
    let Some(head) = head else {
        return Err(Refusal::NoRollback(format!("`{to}` does not exist")));
    };
    match promoted {
        [] => Err(Refusal::NoRollback(format!(
            "Kiln has promoted nothing to `{to}` yet"
        ))),
        [last, ..] if last != head => Err(Refusal::NoRollback(format!(
            "`{to}` is at {}, which Kiln did not promote; roll back by hand",
            short(head)
        ))),
        [_] => Err(Refusal::NoRollback(format!(
            "{} is the first commit Kiln promoted to `{to}`; there is nothing before it",
            short(head)
        ))),
        [_, previous, ..] => Ok(previous),
    }
}

/// What happened to a promotion: published on the events exchange as
/// `promotion.<what>.<repo>.<target branch>`, so other teams follow releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "promotion")]
pub struct PromotionEvent {
    /// `requested`, `approved`, `refused`, `promoted`, `rejected`, `failed`, `lapsed`.
    pub what: String,
    /// None for a request refused before it became a promotion.
    pub promotion: Option<PromotionId>,
    pub repo: RepoName,
    /// The branch being moved (`production`).
    pub branch: BranchName,
    /// The commit it is moved to, once chosen.
    pub commit: Option<CommitId>,
    /// Whether it moves the branch back.
    pub rollback: bool,
    /// Who did what happened (`requested`, `approved`, `refused`), as permissions know them.
    pub actor: Option<String>,
    /// Approvals that count, and how many are required.
    pub approvals: u32,
    pub required: u32,
    /// The build the move started on the target branch.
    pub build: Option<BuildId>,
    /// Why, for `refused`, `rejected` and `failed`.
    pub reason: Option<String>,
}

impl PromotionEvent {
    /// `promotion.<what>.<repo>.<branch>`, see [`crate::routing`].
    pub fn routing_key(&self) -> String {
        event_key("promotion", &self.what, &self.repo, &self.branch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(id: u64, status: BuildStatus, tasks: &[(&str, TaskStatus)]) -> BuildSummary {
        BuildSummary {
            id: BuildId(id),
            status,
            tasks: tasks.iter().map(|(s, t)| ((*s).to_owned(), *t)).collect(),
        }
    }

    #[test]
    fn a_passed_build_with_its_required_steps_lets_a_commit_through() {
        use TaskStatus::{Failed, Passed};
        let requires = vec!["deploy-staging".to_owned()];
        let ok = build(
            4,
            BuildStatus::Passed,
            &[("unit", Passed), ("deploy-staging", Passed)],
        );
        assert_eq!(
            passing_build(&"c".into(), std::slice::from_ref(&ok), &requires),
            Ok(BuildId(4))
        );
        // The newest failed but an older build of the same commit passed: it counts.
        let failed = build(5, BuildStatus::Failed, &[("unit", Failed)]);
        assert_eq!(
            passing_build(&"c".into(), &[failed.clone(), ok], &requires),
            Ok(BuildId(4))
        );
        let refusal =
            passing_build(&"c0ffee1234".into(), &[failed], &requires).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "no build of commit c0ffee12 passed (#5 failed)"
        );
        assert_eq!(
            passing_build(&"c0ffee1234".into(), &[], &requires)
                .expect_err("refused")
                .to_string(),
            "commit c0ffee12 has no build of its own yet"
        );
        // Allowed to fail, so the build passed; but a requirement must pass itself.
        let lenient = build(
            6,
            BuildStatus::Passed,
            &[("deploy-staging", Passed), ("deploy-staging", Failed)],
        );
        assert_eq!(
            passing_build(&"c".into(), &[lenient], &requires)
                .expect_err("refused")
                .to_string(),
            "step `deploy-staging` of build #6 failed; a promotion requires it to pass"
        );
        let without = build(7, BuildStatus::Passed, &[("unit", Passed)]);
        assert_eq!(
            passing_build(&"c".into(), &[without], &requires)
                .expect_err("refused")
                .to_string(),
            "build #7 has no step `deploy-staging`, which a promotion requires"
        );
    }

    #[test]
    fn approvers_are_others_named_by_id_or_role() {
        let approvers = vec!["slack:U2".to_owned(), "discord:77".to_owned()];
        let user = |id| Approver {
            id,
            roles: &[],
            person: id,
        };
        assert_eq!(
            may_approve("slack:U2", user("slack:U2"), &approvers),
            Err(Refusal::SelfApproval)
        );
        assert_eq!(
            may_approve("slack:U1", user("slack:U2"), &approvers),
            Ok(())
        );
        let role = ["discord:77".to_owned()];
        let moderator = Approver {
            id: "discord:5",
            roles: &role,
            person: "person:ann",
        };
        assert_eq!(may_approve("slack:U1", moderator, &approvers), Ok(()));
        // The same person through another front end is still the one who asked.
        assert_eq!(
            may_approve("person:ann", moderator, &approvers),
            Err(Refusal::SelfApproval)
        );
        assert!(matches!(
            may_approve("slack:U1", user("slack:U3"), &approvers),
            Err(Refusal::NotApprover { .. })
        ));
    }

    #[test]
    fn approvals_expire() {
        let hour = Duration::from_secs(3600);
        assert_eq!(approvals_since(10 * 3_600_000, hour), 9 * 3_600_000);
        assert_eq!(approvals_since(5, hour), 0);
    }

    #[test]
    fn a_rollback_goes_to_the_commit_promoted_before_the_head() {
        let promoted: Vec<CommitId> = ["c3", "c2", "c1"].map(CommitId::from).into();
        let production = BranchName::from("production");
        assert_eq!(
            rollback_target(&promoted, Some(&"c3".into()), &production),
            Ok(&"c2".into())
        );
        let refused = |promoted: &[CommitId], head: Option<&str>| {
            rollback_target(promoted, head.map(CommitId::from).as_ref(), &production)
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&promoted, Some("c9")).contains("which Kiln did not promote"));
        assert!(refused(&promoted[2..], Some("c1")).contains("nothing before it"));
        assert!(refused(&[], Some("c1")).contains("promoted nothing"));
        assert!(refused(&promoted, None).contains("does not exist"));
    }

    #[test]
    fn events_are_routed_by_what_happened() {
        let event = PromotionEvent {
            what: "promoted".into(),
            promotion: Some(PromotionId(3)),
            repo: "acme/api".into(),
            branch: "production".into(),
            commit: Some("abc".into()),
            rollback: false,
            actor: None,
            approvals: 2,
            required: 2,
            build: Some(BuildId(9)),
            reason: None,
        };
        assert_eq!(
            event.routing_key(),
            "promotion.promoted.acme/api.production"
        );
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["type"], "promotion");
        assert_eq!(json["promotion"], 3);
    }
}
