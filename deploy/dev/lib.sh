#!/usr/bin/env bash
# Shared helpers for the deploy/dev scripts. Source it; don't run it.
# Human messages go to stderr so a script's stdout can stay machine-readable
# (deploy/dev/services prints only `export ...` lines there).
set -euo pipefail

KILN_STATE_DIR="${KILN_STATE_DIR:-/var/tmp/kiln}"
KILN_LOG_DIR="$KILN_STATE_DIR/logs"
mkdir -p "$KILN_LOG_DIR"

log() { printf '[kiln %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[kiln] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_for <description> <max_seconds> <command...>
# Polls the command every 0.25 s until it succeeds; fails after max_seconds.
# The caller names the log to read in the description, so the error says it.
wait_for() {
    local what="$1" max="$2"; shift 2
    local deadline=$((SECONDS + max))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${max}s waiting for $what"
        sleep 0.25
    done
}

# pid_alive PID / running NAME: true for a live process, false for a zombie.
# PID 1 on this kind of machine reaps killed daemons only seconds later, and
# pgrep or kill -0 would take those zombies for running services.
pid_alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ "$st" != Z* ]]; }
running() {
    ps -eo stat=,comm= | awk -v n="$1" '$2 == n && $1 !~ /^Z/ { f = 1 } END { exit !f }'
}

# ensure_packages [--no-install-recommends] pkg... : installs the Debian
# packages that are missing (with the option, without what they recommend).
# `apt-get update` runs at most once per shell, and only when needed, so a
# machine that already has everything never touches the network.
ensure_packages() {
    local options=() missing=() p
    if [[ "${1:-}" == --no-install-recommends ]]; then
        options+=("$1")
        shift
    fi
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing missing packages: ${missing[*]}"
    # No prompts (CI has no stdin), and no needrestart run after the install.
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    if [[ -z "${_KILN_APT_UPDATED:-}" ]]; then
        apt-get update -qq </dev/null >&2 || die "apt-get update failed"
        _KILN_APT_UPDATED=1
    fi
    apt-get install -y -qq "${options[@]}" "${missing[@]}" </dev/null >&2 \
        || die "apt-get install ${missing[*]} failed"
}
