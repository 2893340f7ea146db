//! The worker's records, on the real Redis (`deploy/dev/services` starts it): a finish
//! whose answer was lost, tried again, counts as recorded; another end never does; a run
//! whose attempt was taken over or taken back records nothing; a dead run is taken over
//! once, also by its own worker started again under the same name.

use std::collections::BTreeMap;

use kiln_shared::build::{BuildId, TaskOutcome};
use kiln_shared::keys::{Keys, TaskNames};
use kiln_shared::lease::LeaseId;
use kiln_shared::platform::Platform;
use kiln_shared::spec::Runner;
use kiln_shared::wire::{BuildRef, JobRequested};
use kiln_worker::store::{Claim, Claimant, EnvironmentReport, Standing, Store};
use kiln_worker::task::Ran;

/// What the bots name tasks with in these tests.
fn names() -> TaskNames {
    TaskNames::new(b"the bots' secret", BuildId(1))
}

/// The bots' names under `prefix`: the worker's store is given only its job's tag.
fn bots_keys(prefix: &str) -> Keys {
    Keys::new(prefix).with_names(names())
}

fn job() -> JobRequested {
    JobRequested {
        build: BuildRef {
            id: BuildId(7),
            repo: "acme/api".into(),
            branch: "master".into(),
            commit: "abc".into(),
        },
        event: Default::default(),
        request: None,
        clone_url: String::new(),
        task: "t".into(),
        step: "t".into(),
        attempt: 1,
        platform: Platform::LinuxAmd64,
        runner: Runner::Shell,
        image: None,
        pull: Default::default(),
        network: Default::default(),
        commands: vec!["true".into()],
        env: BTreeMap::new(),
        timeout_secs: 60,
        services: Vec::new(),
        build_image: None,
        artifacts: Vec::new(),
        cache: None,
        inputs: Vec::new(),
        secrets: Vec::new(),
        capabilities: Vec::new(),
        read_only: false,
        priority: Default::default(),
        merge_with: None,
        key_tag: names().tag(BuildId(7), "t"),
    }
}

fn ran(outcome: TaskOutcome) -> Ran {
    Ran {
        outcome,
        artifacts: Vec::new(),
        images: Vec::new(),
    }
}

/// The Redis of `KILN_REDIS_URL` (or the local default).
async fn redis() -> redis::aio::ConnectionManager {
    let url = std::env::var("KILN_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    redis::Client::open(url.as_str())
        .expect("Redis URL")
        .get_connection_manager()
        .await
        .expect("Redis answers (deploy/dev/services starts it)")
}

#[tokio::test]
async fn a_finish_tried_again_finds_its_own_record_and_no_other() {
    let mut conn = redis().await;
    let prefix = format!("kw-store-{}", std::process::id());
    let keys = bots_keys(&prefix);
    let job = job();
    let task = keys.task(job.build.id, &job.task);
    assert!(
        task.ends_with(job.key_tag.as_deref().expect("a tag")),
        "{task}"
    );
    // As the bot leaves a task that is ready.
    let _: () = redis::cmd("HSET")
        .arg(&task)
        .arg("status")
        .arg("queued")
        .arg("attempt")
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let store = Store::new(conn.clone(), Keys::new(&prefix));

    let w1 = Claimant::fresh("w1");
    assert_eq!(
        store.claim(&job, None, &w1).await.expect("claim"),
        Claim::Taken
    );
    let passed = ran(TaskOutcome::Passed);
    assert!(store.finish(&job, &w1, &passed).await.expect("finish"));
    assert!(
        store
            .finish(&job, &w1, &passed)
            .await
            .expect("finish again"),
        "the same end, already recorded by this finish"
    );
    let failed = ran(TaskOutcome::Failed { exit_code: 1 });
    assert!(
        !store.finish(&job, &w1, &failed).await.expect("another end"),
        "a task that ended is not ended otherwise"
    );
    let mut later = job.clone();
    later.attempt = 2;
    assert!(
        !store
            .finish(&later, &w1, &passed)
            .await
            .expect("another attempt"),
        "an attempt that never ran records nothing"
    );
    let status: String = redis::cmd("HGET")
        .arg(&task)
        .arg("status")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(status, "passed");
    let _: usize = redis::cmd("DEL")
        .arg(&task)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

#[tokio::test]
async fn a_run_whose_attempt_went_elsewhere_records_nothing() {
    let mut conn = redis().await;
    let prefix = format!("kw-back-{}", std::process::id());
    let keys = bots_keys(&prefix);
    let job = job();
    let task = keys.task(job.build.id, &job.task);
    assert!(
        task.ends_with(job.key_tag.as_deref().expect("a tag")),
        "{task}"
    );
    let set = |fields: &'static [&'static str]| {
        let mut conn = conn.clone();
        let task = task.clone();
        async move {
            let _: () = redis::cmd("HSET")
                .arg(&task)
                .arg(fields)
                .query_async(&mut conn)
                .await
                .expect("HSET");
        }
    };
    set(&["status", "queued", "attempt", "1"]).await;
    let store = Store::new(conn.clone(), Keys::new(&prefix));
    let (w1, w2, w3) = (
        Claimant::fresh("w1"),
        Claimant::fresh("w2"),
        Claimant::fresh("w3"),
    );
    assert_eq!(
        store.claim(&job, None, &w1).await.expect("claim"),
        Claim::Taken
    );
    assert_eq!(
        store.standing(&job, &w1).await.expect("read"),
        Standing::Held
    );

    // RabbitMQ gave the job to w2 after w1's connection died: w2 takes it over.
    assert_eq!(
        store.claim(&job, Some(&w1), &w2).await.expect("claim"),
        Claim::Taken
    );
    // A second copy of the job, handed back by the same death and judged the same way,
    // finds w1 no longer the owner: it does not run the task beside w2.
    assert_eq!(
        store.claim(&job, Some(&w1), &w3).await.expect("claim"),
        Claim::Elsewhere(Some("running".into()))
    );
    assert_eq!(
        store.standing(&job, &w1).await.expect("read"),
        Standing::TakenBack
    );
    let passed = ran(TaskOutcome::Passed);
    assert!(
        !store.finish(&job, &w1, &passed).await.expect("late finish"),
        "the first run's late result changes nothing"
    );
    assert_eq!(
        store.standing(&job, &w2).await.expect("read"),
        Standing::Held
    );

    // The bot took the attempt back from w2 and queued the next one.
    set(&["status", "queued", "attempt", "2"]).await;
    assert_eq!(
        store.standing(&job, &w2).await.expect("read"),
        Standing::TakenBack
    );
    assert!(!store.finish(&job, &w2, &passed).await.expect("late finish"));
    let mut next = job.clone();
    next.attempt = 2;
    assert_eq!(
        store.claim(&next, None, &w3).await.expect("claim"),
        Claim::Taken
    );
    set(&["status", "cancelled"]).await;
    assert_eq!(
        store.standing(&next, &w3).await.expect("read"),
        Standing::Cancelled
    );
    let _: usize = redis::cmd("DEL")
        .arg(&task)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

/// A worker killed while it ran a task, and started again under its name, takes the task
/// over with one copy of its job while another worker holds a second copy (a job published
/// twice, both copies handed back by the death): the name written back is the same, but the
/// claim is not, so the second takeover fails and the task runs once.
#[tokio::test]
async fn a_dead_run_is_taken_over_once_also_by_its_worker_started_again() {
    let mut conn = redis().await;
    let prefix = format!("kw-again-{}", std::process::id());
    let keys = bots_keys(&prefix);
    let job = job();
    let task = keys.task(job.build.id, &job.task);
    let _: () = redis::cmd("HSET")
        .arg(&task)
        .arg(&["status", "queued", "attempt", "1"])
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let store = Store::new(conn.clone(), Keys::new(&prefix));
    let dead = Claimant::fresh("w1");
    assert_eq!(
        store.claim(&job, None, &dead).await.expect("claim"),
        Claim::Taken
    );
    // Both copies read the same dead claim from the record.
    let read = store
        .running_on(&job)
        .await
        .expect("read")
        .expect("running");
    assert_eq!(read, dead);

    let again = Claimant::fresh("w1");
    assert_ne!(again, dead, "each claim has a token of its own");
    assert_eq!(
        store.claim(&job, Some(&read), &again).await.expect("claim"),
        Claim::Taken
    );
    assert_eq!(
        store
            .claim(&job, Some(&read), &Claimant::fresh("w2"))
            .await
            .expect("claim"),
        Claim::Elsewhere(Some("running".into())),
        "the second copy does not run the task beside the first"
    );
    assert_eq!(
        store.standing(&job, &dead).await.expect("read"),
        Standing::TakenBack,
        "the dead run's claim is not the live one's, though the name is"
    );
    assert_eq!(
        store.standing(&job, &again).await.expect("read"),
        Standing::Held
    );
    let passed = ran(TaskOutcome::Passed);
    assert!(!store.finish(&job, &dead, &passed).await.expect("finish"));
    assert!(store.finish(&job, &again, &passed).await.expect("finish"));

    // A run claimed before claims had tokens is taken over by its name alone.
    let _: () = redis::cmd("HSET")
        .arg(&task)
        .arg(&["status", "running", "worker", "w0"])
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let _: usize = redis::cmd("HDEL")
        .arg(&task)
        .arg("claim")
        .query_async(&mut conn)
        .await
        .expect("HDEL");
    let old = store
        .running_on(&job)
        .await
        .expect("read")
        .expect("running");
    assert_eq!((old.worker.as_str(), old.claim.as_str()), ("w0", ""));
    assert_eq!(
        store
            .claim(&job, Some(&old), &Claimant::fresh("w2"))
            .await
            .expect("claim"),
        Claim::Taken
    );
    let _: usize = redis::cmd("DEL")
        .arg(&task)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

#[tokio::test]
async fn an_environment_is_reported_once_and_only_while_its_lease_runs() {
    let mut conn = redis().await;
    let keys = Keys::new(format!("kw-lease-{}", std::process::id()));
    let (id, ended) = (LeaseId(4), LeaseId(5));
    let record = keys.lease(id);
    // As the bot records a lease of a docker pool, before it asks a worker.
    let _: () = redis::cmd("HSET")
        .arg(&record)
        .arg(&["pool", "review", "details", "", "container", "1"])
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let store = Store::new(conn.clone(), keys.clone());

    assert!(store.environment_wanted(id).await.expect("read"));
    assert!(!store.environment_wanted(ended).await.expect("read"));
    let up = EnvironmentReport::Started("10.0.3.7:49153 → 8080".into());
    assert!(store.report_environment(id, &up).await.expect("report"));
    assert!(
        !store.environment_wanted(id).await.expect("read"),
        "a copy of the request finds it started"
    );
    let failed = EnvironmentReport::Failed("no such image".into());
    assert!(
        !store.report_environment(id, &failed).await.expect("report"),
        "a report stands"
    );
    assert!(
        !store.report_environment(ended, &up).await.expect("report"),
        "a lease that ended records nothing"
    );
    let details: String = redis::cmd("HGET")
        .arg(&record)
        .arg("details")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(details, "10.0.3.7:49153 → 8080");
    assert!(store.lease_runs(id).await.expect("read"));
    assert!(!store.lease_runs(ended).await.expect("read"));

    store.environment_gone(ended).await.expect("mark");
    let _: usize = redis::cmd("DEL")
        .arg(&record)
        .arg(keys.lease_gone(ended))
        .query_async(&mut conn)
        .await
        .expect("DEL");
}
