//! Every field a user writes in `.kiln.yml`, broken: the error names that field's own line and
//! column (its value, or its key when the key is the name that is wrong), and reads as a
//! sentence for the chat the bot shows it in.

use super::*;

/// A file with one step `a` (line 2) whose fields start at line 3, with `fields` after them
/// from line 5.
fn step(fields: &str) -> String {
    format!("steps:\n  a:\n    image: i\n    run: x\n{fields}")
}

/// `yaml` is refused with `expect`, as the bot would show it (after the file's name).
fn check(yaml: &str, expect: &str) {
    let error = Spec::parse(yaml).expect_err(yaml);
    assert_eq!(error.to_string(), format!(".kiln.yml {expect}"), "\n{yaml}");
}

/// One broken value per field, in the order of the file's format, and the error it gets: at
/// the value's own line and column (at the key when the key is the name that is wrong; at the
/// step when a field is missing).
#[test]
fn every_field_is_blamed_where_it_is_written() {
    check(
        "stages: [build, 'b c']\nsteps:\n  a: { image: i, run: x }\n",
        "line 1, column 17: stage name `b c` may only use letters, digits, `-` and `_`",
    );
    check(
        "stages: [build]\nsteps:\n  a:\n    image: i\n    run: x\n    stage: test\n",
        "line 6, column 12: step `a` is in stage `test`, which is not one of `stages`",
    );
    check(
        "images:\n  App: { context: . }\nsteps:\n  a: { image: i, run: x }\n",
        "line 2, column 3: image name `App` may only use lowercase letters, digits, `-` and `_`",
    );
    check(
        "images:\n  app:\n    context: /abs\nsteps:\n  a: { image: i, run: x }\n",
        "line 3, column 14: the context `/abs` of image `app` must be relative to the repository",
    );
    check(
        "images:\n  app:\n    context: .\n    dockerfile: ../Dockerfile\nsteps:\n  a: { image: i, run: x }\n",
        "line 4, column 17: the dockerfile `../Dockerfile` of image `app` may not leave the repository (`..`)",
    );
    check(
        "images:\n  app:\n    context: .\n    args: { A: '{{ nope }}' }\nsteps:\n  a: { image: i, run: x }\n",
        "line 4, column 16: build argument `A` of image `app`: unknown `{{ nope }}`; known are branch, branch_slug, repo and hash('path')",
    );
    check(
        "images:\n  app:\n    context: .\n    target: [x]\nsteps:\n  a: { image: i, run: x }\n",
        "line 4, column 13: expected a single value here, not a list or a map",
    );
    check(
        "images:\n  app:\n    context: .\n    from: x\nsteps:\n  a: { image: i, run: x }\n",
        "line 4, column 5: unknown field `from`, expected one of context, dockerfile, args, target",
    );
    check(
        "images:\n  app: { context: . }\nsteps:\n  a:\n    image: ap\n    run: x\n",
        "line 5, column 12: step `a` runs in image `ap`, which is not one of `images`; name an image from elsewhere in full, e.g. `ap:latest`",
    );
    check(
        "images:\n  app: { context: . }\nsteps:\n  a:\n    image: { linux/amd64: app, linux/arm64: ap }\n    platforms: [linux/amd64, linux/arm64]\n    run: x\n",
        "line 5, column 45: step `a` runs in image `ap`, which is not one of `images`; name an image from elsewhere in full, e.g. `ap:latest`",
    );
    check(
        &step("    cache:\n      key: ' '\n      paths: [target]\n"),
        "line 6, column 12: the `cache` of step `a` has an empty `key`",
    );
    check(
        &step("    cache:\n      key: k\n      paths: [target, /tmp]\n"),
        "line 7, column 23: cache path `/tmp` of step `a` must be relative to the repository",
    );
    check(
        "steps: {}\n",
        "line 1, column 8: `steps` is empty: there is nothing to run",
    );
    check(
        "steps:\n  a.b: { image: i, run: x }\n",
        "line 2, column 3: step name `a.b` may only use letters, digits, `-` and `_`",
    );
    check(
        "steps:\n  a:\n    image: [i]\n    run: x\n",
        "line 3, column 12: invalid type: sequence, expected an image name or a map of platform to image name",
    );
    check(
        "steps:\n  a:\n    image: 1\n    run: x\n",
        "line 3, column 12: invalid type: integer `1`, expected an image name or a map of platform to image name",
    );
    check(
        "steps:\n  a:\n    run: x\n",
        "line 3, column 5: step `a` runs in Docker and needs an `image`",
    );
    check(
        "steps:\n  a:\n    image: { linux/amd64: i, linux/mips: i }\n    run: x\n",
        "line 3, column 30: unknown platform `linux/mips`; Kiln runs linux/amd64, linux/arm64, windows/amd64, macos/arm64",
    );
    check(
        "steps:\n  a:\n    image: [i]\n    run: x\n",
        "line 3, column 12: invalid type: sequence, expected an image name or a map of platform to image name",
    );
    check(
        &step("    stage: [a]\n"),
        "line 5, column 12: expected a single value here, not a list or a map",
    );
    check(
        "steps:\n  a:\n    image: i\n    run: []\n",
        "line 4, column 10: step `a` has an empty `run`",
    );
    check(
        "steps:\n  a:\n    image: i\n    run: [make, { x: 1 }]\n",
        "line 4, column 17: expected a single value here, not a list or a map",
    );
    check(
        "steps:\n  a:\n    image: i\n    run: 1\n",
        "line 4, column 10: invalid type: integer `1`, expected a command or a list of commands",
    );
    check(
        "steps:\n  a:\n    image: i\n    run:\n",
        "line 4, column 8: nothing here, expected a command or a list of commands",
    );
    check(
        "steps:\n  a:\n    image: i\n    run: true\n",
        "line 4, column 10: invalid type: boolean `true`, expected a command or a list of commands",
    );
    check(
        &step("    needs: [a]\n"),
        "line 5, column 13: step `a` needs itself",
    );
    check(
        &step("    needs: [b]\n"),
        "line 5, column 13: step `a` needs `b`, which is not a step",
    );
    check(
        &step("    needs: a\n"),
        "line 5, column 12: expected a list here, such as `[a, b]`",
    );
    check(
        &step("    platforms: [linux/amd64, linux/mips]\n"),
        "line 5, column 30: unknown platform `linux/mips`; Kiln runs linux/amd64, linux/arm64, windows/amd64, macos/arm64",
    );
    check(
        &step("    platforms: [linux/amd64, windows/amd64]\n"),
        "line 5, column 30: step `a` runs in Docker, which has Linux containers only; use `runner: shell` to run on windows/amd64",
    );
    check(
        &step("    shards: 0\n"),
        "line 5, column 13: step `a` asks for 0 shards; it may have 1 to 64",
    );
    check(
        &step("    shards: many\n"),
        "line 5, column 13: `many` is not a whole number",
    );
    check(
        &step("    shards: [1]\n"),
        "line 5, column 13: expected a single value here, not a list or a map",
    );
    check(
        &step("    shards: 1.5\n"),
        "line 5, column 13: `1.5` is not a whole number",
    );
    check(
        &step("    services:\n      Db: { image: r }\n"),
        "line 6, column 7: service name `Db` of step `a` must be a host name: lowercase letters, digits and `-`",
    );
    check(
        &step("    services:\n      db: { image: ' ' }\n"),
        "line 6, column 20: service `db` of step `a` has no `image`",
    );
    check(
        &step("    services:\n      db:\n        image: r\n        command: \"sh -c 'x\"\n"),
        "line 8, column 18: service `db` of step `a` has a `command` with an unclosed quote",
    );
    check(
        &step("    services:\n      db:\n        image: r\n        command: { a: b }\n"),
        "line 8, column 18: invalid type: map, expected a command or a list of commands",
    );
    check(
        &step("    services:\n      db:\n        image: r\n        env: { A: [x] }\n"),
        "line 8, column 19: expected a single value here, not a list or a map",
    );
    check(
        &step("    env:\n      KILN_X: y\n"),
        "line 6, column 7: step `a` sets `KILN_X`; names starting with KILN_ are Kiln's",
    );
    check(
        &step("    env:\n      A: { b: c }\n"),
        "line 6, column 10: expected a single value here, not a list or a map",
    );
    check(
        &step("    timeout: soon\n"),
        "line 5, column 14: timeout: `soon` is not a duration such as 90s or 10m (expected number at 0)",
    );
    check(
        &step("    timeout: 25h\n"),
        "line 5, column 14: step `a` asks for a timeout of 1day 1h; it may be from 1s to 24h",
    );
    check(
        &step("    retry: 11\n"),
        "line 5, column 12: step `a` asks for 11 retries; the most is 10",
    );
    check(
        &step("    retry:\n      max: 11\n"),
        "line 6, column 12: step `a` asks for 11 retries; the most is 10",
    );
    check(
        &step("    retry:\n      max: -1\n"),
        "line 6, column 12: step `a` asks for -1 retries; retries cannot be negative",
    );
    check(
        &step("    retry: many\n"),
        "line 5, column 12: `many` is not a whole number",
    );
    check(
        &step("    retry: [1]\n"),
        "line 5, column 12: invalid type: sequence, expected a number of retries or `{ max, exit_codes }`",
    );
    check(
        &step("    retry: 1.5\n"),
        "line 5, column 12: invalid type: floating point `1.5`, expected a number of retries or `{ max, exit_codes }`",
    );
    check(
        &step("    retry:\n      exit_codes: [x]\n"),
        "line 6, column 20: `x` is not a whole number",
    );
    check(
        &step("    when:\n      branch: [main, 'a[']\n"),
        "line 6, column 22: step `a` has a bad pattern `a[` in `when`: unclosed character class; missing ']'",
    );
    check(
        &step("    when:\n      branch: { a: b }\n"),
        "line 6, column 15: invalid type: map, expected a pattern or a list of patterns",
    );
    check(
        &step("    when:\n      event: [push, pull]\n"),
        "line 6, column 21: unknown variant `pull`, expected one of push, tag, merge_request, pull_request, command, schedule, stop",
    );
    check(
        &step("    when:\n      changes: 'src/[x'\n"),
        "line 6, column 16: step `a` has a bad pattern `src/[x` in `when`: unclosed character class; missing ']'",
    );
    check(
        &step("    when:\n      tag: 'v[1'\n"),
        "line 6, column 12: step `a` has a bad pattern `v[1` in `when`: unclosed character class; missing ']'",
    );
    check(
        &step("    when:\n      tags: x\n"),
        "line 6, column 7: unknown field `tags`, expected one of branch, tag, event, changes, vars, manual",
    );
    check(
        &step("    runner: podman\n"),
        "line 5, column 13: unknown variant `podman`, expected one of docker, shell",
    );
    check(
        &step("    pull: sometimes\n"),
        "line 5, column 11: unknown variant `sometimes`, expected one of if-not-present, always",
    );
    check(
        "steps:\n  a:\n    runner: shell\n    run: x\n    pull: always\n",
        "line 5, column 11: step `a` runs in the shell, where `pull` means nothing; remove it",
    );
    check(
        &step("    network: host\n"),
        "line 5, column 14: unknown variant `host`, expected one of none, egress",
    );
    check(
        "steps:\n  a:\n    runner: shell\n    run: x\n    network: egress\n",
        "line 5, column 14: step `a` runs in the shell, where `network` means nothing; remove it",
    );
    check(
        &step("    allow_failure: yes\n"),
        "line 5, column 20: invalid boolean (strict mode expects true/false)",
    );
    check(
        &step("    artifacts: [dist, ../out]\n"),
        "line 5, column 23: artifact `../out` of step `a` may not leave the repository (`..`)",
    );
    check(
        &step("    cache:\n      key: k\n      paths: []\n"),
        "line 7, column 14: the `cache` of step `a` has no `paths`",
    );
    check(
        &step("    secrets: [TOKEN, token]\n"),
        "line 5, column 22: secret `token` of step `a` must be an environment variable's name in capitals (A-Z, 0-9, _), not starting with KILN_",
    );
    check(
        &step("    environment: '{{ repo }}'\n"),
        "line 5, column 18: the environment of step `a`: unknown `{{ repo }}`; known are branch, branch_slug and hash('path')",
    );
    check(
        &step("    resources: [lab, 'a b']\n"),
        "line 5, column 22: step `a`: resource `a b` must be a pool's name (letters, digits, `-`, `_`, `.`), listed once",
    );
    check(
        &step("    concurrency: 'deploy prod'\n"),
        "line 5, column 18: step `a`: concurrency group `deploy prod` must be a name (letters, digits, `-`, `_`, `.`)",
    );
    check(
        &step("    environment: review\n    on_stop: nope\n"),
        "line 6, column 14: the `on_stop` of step `a`, `nope`, is not a step",
    );
    check(
        &step("    on_stop: s\n"),
        "line 5, column 14: step `a` has an `on_stop` but no `environment` to stop",
    );
    check(
        &step("    capabilities: [CHOWN, CAP_SETUID]\n"),
        "line 5, column 27: step `a`: `CAP_SETUID` is not a Linux capability; name one without its `CAP_` prefix, e.g. `CHOWN` or `NET_BIND_SERVICE`",
    );
    check(
        &step("    capabilities: [CHOWN, CHOWN]\n"),
        "line 5, column 27: step `a` lists the capability `CHOWN` twice",
    );
    check(
        "steps:\n  a:\n    runner: shell\n    run: x\n    capabilities: [KILL]\n",
        "line 5, column 20: step `a` runs in the shell, where `capabilities` means nothing; remove it",
    );
    check(
        "steps:\n  a:\n    runner: shell\n    run: x\n    read_only: true\n",
        "line 5, column 16: step `a` runs in the shell, where `read_only` means nothing; remove it",
    );
}

/// `schedules`: each field broken in turn, and a whole one read.
#[test]
fn schedules_are_blamed_where_they_are_written() {
    let with =
        |schedule: &str| format!("steps:\n  a: {{ image: i, run: x }}\nschedules:\n{schedule}");
    check(
        &with("  'a b': { cron: '0 2 * * *' }\n"),
        "line 4, column 3: schedule name `a b` may only use letters, digits, `-` and `_`",
    );
    check(
        &with("  nightly:\n    cron: 'every night'\n"),
        "line 5, column 11: the cron expression `every night` of schedule `nightly` needs five fields (minute to day of week), or six with seconds first",
    );
    check(
        &with("  nightly:\n    cron: '0 2 * * *'\n    branch: release\n"),
        "line 6, column 5: unknown field `branch`, expected one of cron, vars, timezone",
    );
    check(
        &with("  nightly:\n    cron: '0 2 * * *'\n    vars: { KILN_X: '1' }\n"),
        "line 6, column 11: schedule `nightly`: `KILN_X` is Kiln's own variable",
    );
    check(
        &with("  nightly:\n    cron: '0 2 * * *'\n    when: never\n"),
        "line 6, column 5: unknown field `when`, expected one of cron, vars, timezone",
    );
    let spec = Spec::parse(&with(
        "  nightly:\n    cron: '0 2 * * *'\n    vars: { SUITE: full }\n    timezone: Europe/Berlin\n",
    ))
    .expect("a schedule");
    let nightly = &spec.schedules["nightly"].value;
    assert_eq!(nightly.cron, "0 2 * * *");
    assert_eq!(nightly.vars["SUITE"], "full");
    assert_eq!(nightly.timezone.as_deref(), Some("Europe/Berlin"));
}
