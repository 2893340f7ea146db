//! `deploy/dev/chaos --quick`, so it never rots and the delivery rules stay shown: a few of
//! every kind of fault (workers killed and frozen, the bot killed, RabbitMQ and Redis
//! restarted, Redis killed) under a steady load of pushes, with nothing lost, stuck or left
//! unanswered, and no attempt run twice.

use kiln_tests::chaos::{Fault, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_chaos_loses_doubles_and_strands_nothing() {
    let tallies = run(true, &[]).await;
    let kinds: Vec<Fault> = tallies.iter().map(|t| t.fault).collect();
    assert_eq!(kinds, Fault::ALL);
    for tally in &tallies {
        let line = tally.line();
        assert!(tally.injections > 0 && tally.accepted > 0, "{line}");
        assert!(tally.lost.is_empty(), "{line}: {:?}", tally.lost);
        assert!(tally.stuck.is_empty(), "{line}: {:?}", tally.stuck);
        assert!(
            tally.unanswered.is_empty(),
            "{line}: {:?}",
            tally.unanswered
        );
        assert!(tally.doubled.is_empty(), "{line}: {:?}", tally.doubled);
        assert_eq!(tally.passed, tally.accepted, "{line}");
        assert_eq!(tally.recoveries.len(), tally.injections, "{line}");
    }
}
