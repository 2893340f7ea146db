//! `kiln-bench [--quick] [--runs N] [--only NAME,…] [--json FILE]`: Kiln's benchmark (see `kiln_tests::bench`), on the
//! services `deploy/dev/services` starts. `deploy/dev/bench` runs it.

use kiln_tests::bench::{Options, run};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut options = Options {
        runs: 3,
        quick: false,
        only: &[],
    };
    let mut json = None;
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
            "--json" => {
                json = Some(
                    args.next()
                        .unwrap_or_else(|| usage("`--json` takes a file to write")),
                );
            }
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    let figures = run(options).await;
    if let Some(path) = json {
        let all: Vec<_> = figures.iter().map(|figure| figure.json()).collect();
        let text = serde_json::to_string_pretty(&all).expect("figures as JSON");
        if let Err(error) = std::fs::write(&path, text) {
            eprintln!("kiln-bench: cannot write {path}: {error}");
            std::process::exit(1);
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "kiln-bench: {why}\nusage: kiln-bench [--quick] [--runs N] [--only NAME,…] [--json FILE]"
    );
    std::process::exit(2);
}
