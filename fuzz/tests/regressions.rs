//! Every input in `fuzz/regressions/<target>/` (inputs that once crashed a target), and every
//! target's seeds, run through their target without a panic.

use std::path::Path;

use kiln_fuzz::targets::{TARGETS, target};

#[test]
fn the_inputs_that_once_crashed_a_target_no_longer_do() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        let entry = entry.expect("an entry");
        if !entry.file_type().expect("a type").is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = target(&name).unwrap_or_else(|| panic!("no fuzz target `{name}`"));
        for input in std::fs::read_dir(entry.path()).expect("the target's inputs") {
            let path = input.expect("an input").path();
            println!("{name}: {}", path.display());
            (target.run)(&std::fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    for target in TARGETS {
        for seed in target.seeds {
            (target.run)(seed);
            replayed += 1;
        }
    }
    assert!(replayed > TARGETS.len(), "{replayed}");
}
