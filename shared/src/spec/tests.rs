//! The spec's behaviour tests: what parses, what is refused, and where.

use super::*;
use crate::platform::Platform;
use crate::trigger::TriggerKind;

fn error(text: &str) -> SpecError {
    Spec::parse(text).expect_err("the spec should be refused")
}

#[test]
fn environments_name_a_stop_step_that_runs_alone() {
    let refused = |steps: &str| error(&format!("steps:\n{steps}")).message;
    let ok = "  d: { image: i, run: x, environment: 'review/{{ branch }}', on_stop: s }\n  \
                  s: { image: i, run: y }\n";
    assert!(Spec::parse(&format!("steps:\n{ok}")).is_ok());
    assert!(
        refused("  d: { image: i, run: x, on_stop: s }\n  s: { image: i, run: y }\n")
            .contains("no `environment` to stop")
    );
    assert!(
        refused("  d: { image: i, run: x, environment: e, on_stop: nope }\n")
            .contains("`nope`, is not a step")
    );
    assert!(
        refused(&format!("{ok}  t: {{ image: i, run: z, needs: [s] }}\n"))
            .contains("runs only when its branch goes")
    );
    assert!(
        refused(
            "  d: { image: i, run: x, environment: e, on_stop: s }\n  \
                 s: { image: i, run: y, needs: [t] }\n  t: { image: i, run: z }\n"
        )
        .contains("may not have `needs`")
    );
    assert!(
        refused("  d: { image: i, run: x, environment: '{{ repo }}' }\n")
            .contains("the environment of step `d`")
    );
}

#[test]
fn parses_a_full_step() {
    let spec = Spec::parse(
        "steps:\n  build:\n    image: kiln/busybox\n    run: make\n  test:\n    image: kiln/busybox\n    needs: [build]\n    env: { A: b }\n    timeout: 90s\n    run:\n      - make test\n      - make lint\n",
    )
    .expect("valid spec");
    let test = &spec.steps["test"].value;
    assert_eq!(
        test.run,
        Commands(vec!["make test".into(), "make lint".into()])
    );
    assert_eq!(test.needs[0].value, "build");
    assert_eq!(
        (
            test.needs[0].referenced.line(),
            test.needs[0].referenced.column()
        ),
        (7, 13)
    );
    assert_eq!(test.env["A"], "b");
    assert_eq!(test.timeout(), Duration::from_secs(90));
    assert_eq!(spec.steps["build"].value.timeout(), DEFAULT_STEP_TIMEOUT);
}

#[test]
fn broken_inputs_name_line_and_column() {
    let check = |text: &str, line: u64, column: u64, needle: &str| {
        let e = error(text);
        assert_eq!((e.line, e.column), (line, column), "{e}");
        assert!(
            e.message.contains(needle),
            "`{}` should mention `{needle}`",
            e.message
        );
    };
    // A tab where YAML wants spaces.
    check("steps:\n  a:\n\timage: x\n", 3, 2, "tabs");
    // Unclosed flow sequence.
    check(
        "steps:\n  a:\n    image: x\n    run: [make\n",
        4,
        10,
        "unclosed bracket",
    );
    // A misspelt key is refused, not ignored.
    check(
        "steps:\n  a:\n    image: x\n    runs: make\n",
        4,
        5,
        "unknown field `runs`",
    );
    // A field of the wrong shape.
    check(
        "steps:\n  a:\n    image: x\n    run: { make: 1 }\n",
        4,
        10,
        "command",
    );
    check(
        "steps:\n  a:\n    image: x\n    run: make\n    timeout: soon\n",
        5,
        14,
        "duration",
    );
    check("steps:\n  a:\n    run: make\n", 3, 5, "image");
    check("steps: {}\n", 1, 8, "empty");
    // YAML 1.1's `yes` is not a boolean here, and `n` is a plain word.
    check(
        "steps:\n  a:\n    image: x\n    run: n\n    allow_failure: yes\n",
        5,
        20,
        "boolean",
    );
    check("steps:\n  a b:\n    image: x\n    run: make\n", 2, 3, "a b");
    check(
        "steps:\n  a:\n    image: x\n    run: []\n",
        4,
        10,
        "empty `run`",
    );
}

#[test]
fn parses_the_whole_format() {
    let spec = Spec::parse(
        "stages: [acceptance, test]
steps:
  smoke: { stage: acceptance, image: i, run: s }
  unit:
    stage: test
    image: { linux/amd64: i, linux/arm64: i-arm }
    platforms: [linux/amd64, linux/arm64]
    shards: 2
    services: { db: { image: redis, command: [redis-server, --port, '7000'] } }
    retry: { max: 1, exit_codes: [137] }
    when: { branch: [master, 'release/*'], event: [push, command], changes: 'src/**' }
    allow_failure: true
    run: make test
  win: { stage: test, platforms: [windows/amd64], runner: shell, retry: 0, run: 'ci\\test.cmd' }
",
    )
    .expect("valid spec");
    let unit = &spec.steps["unit"].value;
    assert_eq!(spec.stage_of(unit), 1);
    assert_eq!(spec.stage_of(&spec.steps["smoke"].value), 0);
    assert_eq!(
        unit.image.as_ref().and_then(|i| i.on(Platform::LinuxArm64)),
        Some("i-arm")
    );
    assert_eq!(unit.shards, 2);
    assert_eq!(
        unit.services["db"].command,
        Some(Commands(vec![
            "redis-server".into(),
            "--port".into(),
            "7000".into()
        ]))
    );
    assert_eq!(
        unit.retry,
        Retry {
            max: 1,
            exit_codes: vec![137]
        }
    );
    assert!(unit.allow_failure);
    let win = &spec.steps["win"].value;
    assert_eq!(win.runner, Runner::Shell);
    assert_eq!(win.retry.max, 0);
    assert_eq!(spec.steps["smoke"].value.retry, Retry::default());
    assert_eq!(
        spec.platforms(win).collect::<Vec<_>>(),
        [Platform::WindowsAmd64]
    );
    assert_eq!(
        spec.platforms(&spec.steps["smoke"].value)
            .collect::<Vec<_>>(),
        [Platform::LinuxAmd64]
    );
}

#[test]
fn when_decides_by_branch_event_and_changed_paths() {
    let spec = Spec::parse(
        "steps:\n  s:\n    image: i\n    run: x\n    when: { branch: [master, 'release/*'], event: [push], changes: ['src/**', '*.toml'] }\n",
    )
    .expect("valid spec");
    let when = &spec.steps["s"].value.when;
    let changed = |paths: &[&str]| paths.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    let cases: &[(&str, TriggerKind, Option<Vec<String>>, bool)] = &[
        ("master", TriggerKind::Push, None, true),
        ("release/1.2", TriggerKind::Push, None, true),
        ("feature", TriggerKind::Push, None, false),
        ("master", TriggerKind::Command, None, false),
        (
            "master",
            TriggerKind::Push,
            Some(changed(&["src/a/b.rs"])),
            true,
        ),
        (
            "master",
            TriggerKind::Push,
            Some(changed(&["Cargo.toml"])),
            true,
        ),
        (
            "master",
            TriggerKind::Push,
            Some(changed(&["docs/Cargo.toml", "README.md"])),
            false,
        ),
        ("master", TriggerKind::Push, Some(Vec::new()), false),
    ];
    for (branch, kind, paths, expect) in cases {
        let trigger = Trigger {
            branch,
            kind: *kind,
            changed_paths: paths.as_deref(),
            vars: &crate::vars::NONE,
        };
        assert_eq!(when.holds(&trigger), *expect, "{trigger:?}");
    }
    assert!(When::default().holds(&Trigger {
        branch: "x",
        kind: TriggerKind::Tag,
        changed_paths: Some(&[]),
        vars: &crate::vars::NONE,
    }));
}

#[test]
fn a_tag_condition_takes_matching_tags_and_a_branch_condition_no_tag() {
    let spec = Spec::parse(
        "steps:\n  release:\n    image: i\n    run: x\n    when: { tag: ['v*'] }\n  \
         nightly:\n    image: i\n    run: x\n    when: { branch: '*' }\n",
    )
    .expect("valid spec");
    let holds = |step: &str, branch: &str, kind: TriggerKind| {
        spec.steps[step].value.when.holds(&Trigger {
            branch,
            kind,
            changed_paths: None,
            vars: &crate::vars::NONE,
        })
    };
    assert!(holds("release", "v1.2.0", TriggerKind::Tag));
    assert!(!holds("release", "nightly-7", TriggerKind::Tag));
    assert!(
        !holds("release", "v1", TriggerKind::Push),
        "a branch named like a tag"
    );
    assert!(holds("nightly", "master", TriggerKind::Push));
    assert!(!holds("nightly", "v1.2.0", TriggerKind::Tag));
    let e = error("steps:\n  s:\n    image: i\n    run: x\n    when: { tag: ['v[1'] }\n");
    assert!(e.message.contains("bad pattern `v[1`"), "{e}");
}

#[test]
fn a_vars_condition_wants_each_variable_set_and_matching() {
    let spec = Spec::parse(
        "steps:\n  deploy:\n    image: i\n    run: x\n    \
         when: { vars: { DEPLOY_TO: [staging, 'eu-*'], DRY_RUN: '' } }\n",
    )
    .expect("valid spec");
    let holds = |vars: &[(&str, &str)]| {
        let vars = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        spec.steps["deploy"].value.when.holds(&Trigger {
            branch: "master",
            kind: TriggerKind::Command,
            changed_paths: None,
            vars: &vars,
        })
    };
    assert!(holds(&[("DEPLOY_TO", "staging"), ("DRY_RUN", "")]));
    assert!(holds(&[
        ("DEPLOY_TO", "eu-west"),
        ("DRY_RUN", ""),
        ("X", "y")
    ]));
    assert!(!holds(&[("DEPLOY_TO", "production"), ("DRY_RUN", "")]));
    assert!(!holds(&[("DEPLOY_TO", "staging")]), "DRY_RUN is not set");
    assert!(!holds(&[]));
    let e = error("steps:\n  s:\n    image: i\n    run: x\n    when: { vars: { KILN_TAG: x } }\n");
    assert!(
        e.message.contains("`KILN_TAG` is Kiln's own variable"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (5, 21), "{e}");
}

#[test]
fn refuses_impossible_steps_with_a_place() {
    let check = |text: &str, line: u64, column: u64, needle: &str| {
        let e = error(text);
        assert_eq!((e.line, e.column), (line, column), "{e}");
        assert!(
            e.message.contains(needle),
            "`{}` should mention `{needle}`",
            e.message
        );
    };
    let table: &[(&str, u64, u64, &str)] = &[
        (
            "steps:\n  a: { image: i, run: x, platforms: [linux/riscv] }\n",
            2,
            38,
            "unknown platform `linux/riscv`",
        ),
        (
            "steps:\n  a: { image: i, run: x, platforms: [windows/amd64] }\n",
            2,
            38,
            "use `runner: shell`",
        ),
        (
            "steps:\n  a: { image: i, run: x, platforms: [linux/amd64, linux/amd64] }\n",
            2,
            51,
            "twice",
        ),
        (
            "steps:\n  a: { image: { linux/amd64: i }, run: x, platforms: [linux/arm64] }\n",
            2,
            15,
            "no `image` for linux/arm64",
        ),
        (
            "steps:\n  a: { runner: shell, image: i, run: x }\n",
            2,
            30,
            "remove it",
        ),
        (
            "steps:\n  a: { runner: shell, run: x, services: { db: { image: r } } }\n",
            2,
            41,
            "Docker runner",
        ),
        (
            "steps:\n  a: { runner: podman, run: x }\n",
            2,
            16,
            "unknown variant `podman`",
        ),
        (
            "steps:\n  a: { image: i, run: x, shards: 0 }\n",
            2,
            34,
            "1 to 64",
        ),
        (
            "steps:\n  a: { image: i, run: x, shards: 65 }\n",
            2,
            34,
            "1 to 64",
        ),
        (
            "steps:\n  a: { image: i, run: x, retry: 11 }\n",
            2,
            33,
            "the most is 10",
        ),
        (
            "steps:\n  a: { image: i, run: x, retry: { times: 1 } }\n",
            2,
            35,
            "unknown field `times`",
        ),
        (
            "steps:\n  a: { image: i, run: x, services: { Db_1: { image: r } } }\n",
            2,
            38,
            "host name",
        ),
        (
            "steps:\n  a: { image: i, run: x, env: { KILN_TASK: x } }\n",
            2,
            33,
            "Kiln's",
        ),
        (
            "steps:\n  a: { image: i, run: x, when: { branch: 'a[' } }\n",
            2,
            42,
            "bad pattern `a[`",
        ),
        (
            "steps:\n  a: { image: i, run: x, when: { event: [pull] } }\n",
            2,
            42,
            "unknown variant `pull`",
        ),
        (
            "steps:\n  a: { image: i, run: x, stage: test }\n",
            2,
            33,
            "lists no `stages`",
        ),
        (
            "stages: [build]\nsteps:\n  a: { image: i, run: x, stage: test }\n",
            3,
            33,
            "not one of `stages`",
        ),
        (
            "stages: [build, build]\nsteps:\n  a: { image: i, run: x }\n",
            1,
            17,
            "listed twice",
        ),
        (
            "stages: [a, b]\nsteps:\n  x: { image: i, run: x, stage: a, needs: [y] }\n  y: { image: i, run: x, stage: b }\n",
            3,
            44,
            "later stage",
        ),
        (
            "steps:\n  a: { image: i, run: x, needs: [nope] }\n",
            2,
            34,
            "needs `nope`, which is not a step",
        ),
        (
            "steps:\n  a: { image: i, run: x, needs: [a] }\n",
            2,
            34,
            "needs itself",
        ),
    ];
    let images: &[(&str, u64, u64, &str)] = &[
        (
            "images:\n  b: { context: ../x }\nsteps:\n  a: { image: b, run: x }\n",
            2,
            17,
            "may not leave the repository",
        ),
        (
            "images:\n  B: { context: x }\nsteps:\n  a: { image: i:1, run: x }\n",
            2,
            3,
            "lowercase",
        ),
        (
            "images:\n  b: { context: x, args: { A: '{{ nope }}' } }\nsteps:\n  a: { image: b, run: x }\n",
            2,
            31,
            "unknown `{{ nope }}`",
        ),
        (
            "images:\n  build: { context: x }\nsteps:\n  a: { image: biuld, run: x }\n",
            4,
            15,
            "`biuld`, which is not one of `images`",
        ),
        (
            "steps:\n  a: { image: i, run: x, artifacts: [/etc/passwd] }\n",
            2,
            38,
            "must be relative",
        ),
        (
            "steps:\n  a: { image: i, run: x, artifacts: ['dist/[x'] }\n",
            2,
            38,
            "is not a pattern",
        ),
        (
            "steps:\n  a: { image: i, run: x, cache: { key: k, paths: [] } }\n",
            2,
            50,
            "no `paths`",
        ),
        (
            "steps:\n  a: { image: i, run: x, cache: { key: '{{ hash(Cargo.lock) }}', paths: [t] } }\n",
            2,
            40,
            "quoted path",
        ),
        (
            "steps:\n  a: { image: i, run: x, services: { db: { image: r, command: \"sh -c 'x\" } } }\n",
            2,
            63,
            "unclosed quote",
        ),
        (
            "steps:\n  a: { image: i, run: x, timeout: 2d }\n",
            2,
            35,
            "from 1s to 24h",
        ),
        (
            "steps:\n  a: { image: i, run: x, secrets: [deploy_token] }\n",
            2,
            36,
            "in capitals",
        ),
        (
            "steps:\n  a: { image: i, run: x, secrets: [KILN_TOKEN] }\n",
            2,
            36,
            "not starting with KILN_",
        ),
        (
            "steps:\n  a: { image: i, run: x, secrets: [TOKEN], env: { TOKEN: x } }\n",
            2,
            36,
            "sets `TOKEN` twice",
        ),
    ];
    for (text, line, column, needle) in table.iter().chain(images) {
        check(text, *line, *column, needle);
    }
}

#[test]
fn the_checked_in_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/kiln.schema.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if checked_in != json_schema() {
        if std::env::var_os("KILN_UPDATE_SCHEMA").is_some() {
            std::fs::write(path, json_schema()).expect("write the schema");
        } else {
            panic!(
                "schema/kiln.schema.json is out of date: run `KILN_UPDATE_SCHEMA=1 cargo test -p kiln-shared`"
            );
        }
    }
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).expect("json");
    let step = &schema["$defs"]["Step"]["properties"];
    for field in [
        "stage",
        "image",
        "run",
        "needs",
        "platforms",
        "shards",
        "services",
        "env",
        "timeout",
        "retry",
        "when",
        "runner",
        "allow_failure",
    ] {
        assert!(step.get(field).is_some(), "the schema has no `{field}`");
    }
}

#[test]
fn refuses_oversized_files() {
    let e = error(&"#".repeat(MAX_SPEC_BYTES + 1));
    assert!(e.message.contains("most Kiln reads"), "{e}");
}

#[test]
fn error_text_names_the_file() {
    let e = SpecError {
        line: 4,
        column: 2,
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), ".kiln.yml line 4, column 2: bad");
}

proptest::proptest! {
    #[test]
    fn never_panics(text in "\\PC{0,200}") {
        let _ = Spec::parse(&text);
    }

    #[test]
    fn never_panics_on_yamlish_input(text in "(steps|image|run|needs|[:\\-\\[\\]{} \n]|a|b){0,60}") {
        let _ = Spec::parse(&text);
    }
}
