#!/usr/bin/env bash
# The project's main job (README): bootstrap .venv, then run `kiwipy demo` (the console script).
# It installs the package alone (no dev tools). With no URL it runs on the local broker.
# Arguments go to the demo, e.g. scripts/demo.sh --tasks 50 --workers 4 --url amqp://...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/bootstrap.sh" base
exec "$ROOT/.venv/bin/kiwipy" demo "$@"
