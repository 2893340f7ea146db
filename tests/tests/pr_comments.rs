//! Commands in pull request and merge request comments, end to end on the real services:
//! `/kiln build` builds the request's branch for someone the forge lets push, and the build's
//! card is a comment edited as it runs; others are refused; the answer is a comment, through
//! octocrab or the `gitlab` crate pointed at a fake of the forge's API.

use kiln_shared::trigger::Comment;
use kiln_shared::wire::CommentRequested;
use kiln_tests::events::queue_comment;
use kiln_tests::forge::{TestRepo, github_comment_payload, gitlab_note_payload};
use kiln_tests::statuses::{FORGE_TOKEN, FakeForge};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET, wait_for};

/// Waits for a comment that contains `needle` and returns it.
async fn comment(forge: &FakeForge, needle: &str) -> String {
    wait_for(
        &format!("a comment with `{needle}`"),
        E2E_TIMEOUT,
        || async {
            forge
                .comments()
                .into_iter()
                .map(|(_, _, body)| body)
                .find(|body| body.contains(needle))
        },
    )
    .await
}

fn spec() -> String {
    format!("steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: echo \"on $KILN_BRANCH\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_comments_build_for_those_who_may_push() {
    let github = FakeForge::github().await;
    let repo = TestRepo::new();
    repo.commit("feature/x", "The feature", &[(".kiln.yml", &spec())]);
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "clone_url = \"{}\"\n[github]\ntoken = \"{FORGE_TOKEN}\"\napi_url = \"{}\"\n",
        repo.clone_url(),
        github.url()
    )))
    .await;
    github.open_pull(7, "feature/x", false);
    github.open_pull(8, "feature/x", true);
    github.grant("alice", "write");
    github.grant("bob", "read");

    // Alice may push: `/kiln build` builds the pull request's branch, and says so on it.
    let body = github_comment_payload(REPO, 7, "alice", 101, "/kiln build");
    let (status, answer) = kiln
        .send_github("issue_comment", "c-1", &body, TEST_SECRET)
        .await;
    assert_eq!(
        (status, answer["command"].as_str()),
        (202, Some("build")),
        "{answer}"
    );
    let said = comment(&github, "Build #1 of").await;
    assert!(
        said.starts_with("```text\nBuild #1 of acme/api feature/x (")
            && said.ends_with("for alice.\n```"),
        "{said}"
    );
    assert_eq!(kiln.finished_build(1).await["branch"], "feature/x");
    assert_eq!(
        kiln.task_log(1, "unit").await.lines().last(),
        Some("on feature/x")
    );
    // The build's card: a comment on the request, edited to the end, linking to the build.
    let card = comment(&github, "build #1 **passed**").await;
    assert!(card.contains("\n- unit: passed\n"), "{card}");
    assert!(
        card.contains("[Build #1](http://kiln.test/builds/1)"),
        "{card}"
    );
    assert!(github.edits() >= 1, "the card was edited in place");

    // The same delivery again gives nothing twice.
    let (status, again) = kiln
        .send_github("issue_comment", "c-1", &body, TEST_SECRET)
        .await;
    assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)));
    // Its command coming again through the bot's queue (a bot stopped before acknowledging
    // it) is not carried out twice: no second build, no second answer (counted below).
    let requested = CommentRequested {
        forge: "github".into(),
        delivery: "c-1".into(),
        comment: Comment {
            repo: REPO.into(),
            number: 7,
            author: "alice".into(),
            author_id: "101".into(),
            command: "build".into(),
        },
    };
    queue_comment(&kiln, &requested).await;

    // Bob may read the repository, not push: the answers are public, so even looking is
    // not his; nor is retrying. Alice's commands are about this repository only.
    let look = github_comment_payload(REPO, 7, "bob", 102, "/kiln status");
    kiln.send_github("issue_comment", "c-2", &look, TEST_SECRET)
        .await;
    comment(&github, "bob may not `status` on acme/api").await;
    let elsewhere = github_comment_payload(REPO, 7, "alice", 101, "/kiln workers");
    kiln.send_github("issue_comment", "c-6", &elsewhere, TEST_SECRET)
        .await;
    comment(&github, "commands about acme/api and its builds only").await;
    let retry = github_comment_payload(REPO, 7, "bob", 102, "/kiln retry 1");
    kiln.send_github("issue_comment", "c-3", &retry, TEST_SECRET)
        .await;
    comment(&github, "bob may not `retry` on acme/api").await;

    // A pull request from a fork is not built, whoever asks.
    let fork = github_comment_payload(REPO, 8, "alice", 101, "/kiln build");
    kiln.send_github("issue_comment", "c-4", &fork, TEST_SECRET)
        .await;
    comment(&github, "comes from a fork").await;

    // A comment that is not for Kiln is acknowledged and ignored.
    let chat = github_comment_payload(REPO, 7, "alice", 101, "Looks good to me");
    let (status, ignored) = kiln
        .send_github("issue_comment", "c-5", &chat, TEST_SECRET)
        .await;
    assert_eq!(status, 200, "{ignored}");
    assert!(ignored["ignored"].is_string());

    let all = github.comments();
    assert_eq!(all.len(), 6, "five answers and one card: {all:#?}");
    assert!(
        all.iter()
            .all(|(repo, number, _)| repo == REPO && [7, 8].contains(number)),
        "{all:#?}"
    );
    assert!(kiln.build(2).await.is_none(), "nothing but build #1 ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_request_notes_build_for_developers() {
    let gitlab = FakeForge::gitlab().await;
    let repo = TestRepo::new();
    repo.commit("topic", "The topic", &[(".kiln.yml", &spec())]);
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "clone_url = \"{}\"\nforge = \"gitlab\"\n[gitlab]\ntoken = \"{FORGE_TOKEN}\"\nurl = \"{}\"\n",
        repo.clone_url(),
        gitlab.url()
    )))
    .await;
    gitlab.open_pull(3, "topic", false);
    gitlab.grant("41", "30");
    gitlab.grant("42", "20");

    let body = gitlab_note_payload(REPO, 3, 41, "dev", "/kiln build");
    let (status, answer) = kiln
        .send_gitlab("Note Hook", "n-1", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    comment(&gitlab, "Build #1 of acme/api topic (").await;
    assert_eq!(kiln.finished_build(1).await["status"], "passed");
    comment(&gitlab, "build #1 **passed**").await;
    assert!(
        gitlab
            .comments()
            .iter()
            .all(|(repo, iid, _)| repo == REPO && *iid == 3)
    );

    // A reporter (access level 20) may not push, so may not build.
    let body = gitlab_note_payload(REPO, 3, 42, "reporter", "/kiln build");
    kiln.send_gitlab("Note Hook", "n-2", &body, TEST_SECRET)
        .await;
    comment(&gitlab, "reporter may not `build` on acme/api").await;
    assert!(kiln.build(2).await.is_none());
}
