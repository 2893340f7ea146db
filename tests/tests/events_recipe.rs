//! Another team's subscription, exactly as the README's recipe puts it: a queue of its own
//! bound to `kiln.events` with `build.*.<repo>.master` gets that branch's build events, and
//! nothing of other branches or of tasks.

use kiln_shared::wire::Event;
use kiln_tests::events::{next_event, subscribe};
use kiln_tests::forge::TestRepo;
use kiln_tests::{Kiln, REPO, TEST_IMAGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bound_to_a_branch_gets_exactly_its_build_events() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let mut events = subscribe(&kiln, &format!("build.*.{REPO}.master")).await;
    let repo = TestRepo::new();
    let spec = format!("steps:\n  only:\n    image: {TEST_IMAGE}\n    run: echo fine\n");

    // First a build of another branch, then one of master: events of one installation are
    // published in order, so the feature branch's would arrive first if they matched.
    let feature = repo.commit("feature/x", "Elsewhere", &[(".kiln.yml", &spec)]);
    let other = kiln.push(&repo, "feature/x", &feature, "d-recipe-1").await;
    kiln.finished_build(other).await;
    let master = repo.commit("master", "Here", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &master, "d-recipe-2").await;

    let mut received = Vec::new();
    loop {
        let event = next_event(&mut events).await;
        let done = matches!(event, Event::BuildFinished(_));
        received.push((event.routing_key(), event.build().id.0));
        if done {
            break;
        }
    }
    assert_eq!(
        received,
        [
            (format!("build.requested.{REPO}.master"), id),
            (format!("build.passed.{REPO}.master"), id),
        ]
    );
}
