#!/usr/bin/env bash
# The project's main job (README): bootstrap .venv, then run `kiwipy demo` (the console script).
# With no RabbitMQ answering, the demo says so and runs on the in-memory transport.
# Arguments go to the demo, e.g. scripts/demo.sh --tasks 50 --workers 4 --url amqp://...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/kiwipy" demo "$@"
