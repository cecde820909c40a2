#!/usr/bin/env bash
# The project's main job (README): bootstrap .venv, then run the kiwipy demo.
# No broker is installed here: the demo falls back to the in-memory transport when
# no RabbitMQ answers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/python" -m kiwipy.demo "$@"
