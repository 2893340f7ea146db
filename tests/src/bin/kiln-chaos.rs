//! `kiln-chaos [--quick] [--only KIND,…]`: faults under load (see `kiln_tests::chaos`), on the
//! services `deploy/dev/services` starts. `deploy/dev/chaos` runs it. Exits 1 when anything
//! was lost, doubled, stuck or left unanswered.

use kiln_tests::chaos::{Fault, run};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut quick, mut only) = (false, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let kinds = args
                    .next()
                    .unwrap_or_else(|| usage("`--only` takes fault kinds, comma-separated"));
                for kind in kinds.split(',') {
                    let fault = Fault::ALL.into_iter().find(|f| f.name() == kind);
                    only.push(fault.unwrap_or_else(|| usage(&format!("no fault `{kind}`"))));
                }
            }
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    let tallies = run(quick, &only).await;
    println!("chaos: faults injected into a whole Kiln under a steady load of pushes");
    for tally in &tallies {
        println!("{}", tally.line());
    }
    let injected: usize = tallies.iter().map(|t| t.injections).sum();
    let failed: Vec<_> = tallies.iter().filter(|t| !t.held()).collect();
    for tally in &failed {
        eprintln!(
            "{}: lost {:?}, doubled {:?}, stuck {:?}, unanswered {:?}",
            tally.fault.name(),
            tally.lost,
            tally.doubled,
            tally.stuck,
            tally.unanswered
        );
    }
    let verdict = if failed.is_empty() { "held" } else { "BROKEN" };
    println!(
        "summary: {injected} faults, {} builds accepted; the rules {verdict} (0 lost, 0 doubled, 0 stuck expected)",
        tallies.iter().map(|t| t.accepted).sum::<usize>()
    );
    std::process::exit(i32::from(!failed.is_empty()));
}

fn usage(why: &str) -> ! {
    let kinds: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
    eprintln!(
        "kiln-chaos: {why}\nusage: kiln-chaos [--quick] [--only KIND,…]; kinds: {}",
        kinds.join(", ")
    );
    std::process::exit(2);
}
