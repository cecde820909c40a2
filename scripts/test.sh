#!/usr/bin/env bash
# The project's test command (README; CI runs it via .ci/run):
#   bootstrap .venv -> make sure RabbitMQ answers -> tmux -> ruff check -> ruff format --check
#   -> mypy (strict, config in pyproject.toml) -> pytest "$@"
# Stops at the first failing step and says which one failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export KIWIPY_TEST_AMQP_URL="${KIWIPY_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"

step() {
    local name="$1" rc=0
    shift
    printf '\n==> %s\n' "$name"
    "$@" || rc=$?
    if ((rc != 0)); then
        if [[ "$name" == pytest* && $rc -eq 5 ]]; then
            printf '\nFAILED: %s collected no tests (exit 5)\n' "$name" >&2
        else
            printf '\nFAILED: %s (exit %d)\n' "$name" "$rc" >&2
        fi
        exit "$rc"
    fi
}

step "bootstrap (.venv, pip install -e '.[dev]')" bash "$ROOT/scripts/bootstrap.sh"
step "ensure RabbitMQ" bash "$ROOT/scripts/ensure-rabbitmq.sh"

# tests/test_top.py runs `kiwipy top` in a real terminal: tmux. Installed from Debian when we
# are root; otherwise that one test is skipped, with the reason.
ensure_tmux() {
    command -v tmux >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq tmux >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq tmux >/dev/null; }
    else
        printf 'tmux is not installed: the terminal test of kiwipy top will be skipped\n' >&2
    fi
}
step "ensure tmux" ensure_tmux

PY="$ROOT/.venv/bin/python"
step "ruff check" "$PY" -m ruff check src tests kiwipy_reliability bench
step "ruff format --check" "$PY" -m ruff format --check src tests kiwipy_reliability bench
step "mypy" "$PY" -m mypy
step "pytest" "$PY" -m pytest "$@"
