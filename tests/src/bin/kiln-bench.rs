//! `kiln-bench [--quick] [--runs N] [--only NAME,…]`: Kiln's benchmark (see `kiln_tests::bench`), on the
//! services `deploy/dev/services` starts. `deploy/dev/bench` runs it.

use kiln_tests::bench::{Options, run};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut options = Options {
        runs: 3,
        quick: false,
        only: &[],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                options.quick = true;
                options.runs = 1;
            }
            "--runs" => {
                options.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("`--runs` takes a number above 0"));
            }
            "--only" => {
                let names: Vec<String> = args
                    .next()
                    .unwrap_or_else(|| usage("`--only` takes figure names, comma-separated"))
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                options.only = names.leak();
            }
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    run(options).await;
}

fn usage(why: &str) -> ! {
    eprintln!("kiln-bench: {why}\nusage: kiln-bench [--quick] [--runs N] [--only NAME,…]");
    std::process::exit(2);
}
