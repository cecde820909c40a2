#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in <repo>/.venv.
#
# Usable both ways:
#   bash scripts/bootstrap.sh          # bootstrap with the dev tools (tests, ruff, mypy)
#   bash scripts/bootstrap.sh base     # only what the package needs (the demo)
#   source scripts/bootstrap.sh        # bootstrap, then use $KIWIPY_ROOT / $KIWIPY_VENV
#
# - finds a python3 >= 3.10 (python3, then python3.13 .. python3.10 on PATH);
# - creates .venv if missing or broken (installs Debian's python3-venv when root);
# - runs `pip install -e '.[dev]'` (or `-e .` for base) only when pyproject.toml changed since
#   the last successful install (a hash of it and what was installed are kept in
#   .venv/.kiwipy-bootstrap-stamp); a dev install serves base too.
set -euo pipefail

KIWIPY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIWIPY_VENV="$KIWIPY_ROOT/.venv"
export KIWIPY_ROOT KIWIPY_VENV

_kb_log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Print the first python >= 3.10 found on PATH.
_kb_find_python() {
    local cand
    for cand in python3 python3.13 python3.12 python3.11 python3.10; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

# True when .venv holds a usable python >= 3.10 with pip.
_kb_venv_ok() {
    [[ -x "$KIWIPY_VENV/bin/python" ]] &&
        "$KIWIPY_VENV/bin/python" -c \
            'import sys, pip; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

_kb_create_venv() {
    local py="$1" ver log
    log="$(mktemp)"
    # A half-made venv (e.g. ensurepip missing) would look present next time: start clean.
    rm -rf "$KIWIPY_VENV"
    if "$py" -m venv "$KIWIPY_VENV" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    rm -rf "$KIWIPY_VENV"
    if ! grep -qiE 'ensurepip|python3(\.[0-9]+)?-venv' "$log"; then
        cat "$log" >&2
        rm -f "$log"
        _kb_log "error: '$py -m venv' failed (output above)"
        return 1
    fi
    rm -f "$log"

    ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$(id -u)" != 0 ]]; then
        _kb_log "error: $py cannot create virtualenvs (ensurepip is missing). Run:"
        _kb_log "    sudo apt-get update && sudo apt-get install -y python3-venv python${ver}-venv"
        _kb_log "then re-run this command."
        return 1
    fi
    _kb_log "ensurepip missing: installing Debian's python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # python3-venv matches the distribution's python3; pythonX.Y-venv the one we picked.
    apt-get install -y -qq python3-venv >/dev/null ||
        _kb_log "warning: 'apt-get install python3-venv' failed"
    if ! "$py" -m venv "$KIWIPY_VENV" >/dev/null 2>&1; then
        rm -rf "$KIWIPY_VENV"
        apt-get install -y -qq "python${ver}-venv" >/dev/null
        if ! "$py" -m venv "$KIWIPY_VENV"; then
            rm -rf "$KIWIPY_VENV"
            _kb_log "error: '$py -m venv' still fails after installing python3-venv"
            return 1
        fi
    fi
}

# True when kiwipy is importable from this checkout's src/ (editable install in place).
_kb_package_ok() {
    "$KIWIPY_VENV/bin/python" - "$KIWIPY_ROOT/src/kiwipy" <<'EOF' >/dev/null 2>&1
import importlib.util, os, sys
spec = importlib.util.find_spec("kiwipy")
dirs = list(spec.submodule_search_locations or []) if spec is not None else []
sys.exit(0 if os.path.realpath(sys.argv[1]) in map(os.path.realpath, dirs) else 1)
EOF
}

kiwipy_bootstrap() {
    local kind="${1:-dev}" py stamp want have="" target
    case "$kind" in
    dev) target='.[dev]' ;;
    base) target='.' ;;
    *)
        _kb_log "error: unknown install kind '$kind' (dev or base)"
        return 1
        ;;
    esac
    if ! _kb_venv_ok; then
        if ! py="$(_kb_find_python)"; then
            _kb_log "error: no python3 >= 3.10 found (tried python3, python3.13 .. python3.10)."
            _kb_log "On Debian: apt-get install -y python3 python3-venv"
            return 1
        fi
        _kb_log "creating .venv with $py ($("$py" --version 2>&1))"
        _kb_create_venv "$py" || return 1
    fi

    stamp="$KIWIPY_VENV/.kiwipy-bootstrap-stamp"
    want="$(sha256sum "$KIWIPY_ROOT/pyproject.toml" | cut -d' ' -f1)"
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if _kb_stamp_serves "$have" "$want" "$kind" && _kb_package_ok; then
        return 0
    fi

    _kb_log "installing kiwipy ($kind) into .venv (pip install -e '$target')"
    (
        cd "$KIWIPY_ROOT"
        # Serialise concurrent bootstraps sharing this venv.
        if command -v flock >/dev/null 2>&1; then
            exec 9>"$KIWIPY_VENV/.kiwipy-bootstrap.lock"
            flock 9
            # Someone else may have finished the same install while we waited.
            if [[ -f "$stamp" ]] && _kb_stamp_serves "$(cat "$stamp")" "$want" "$kind" &&
                _kb_package_ok; then
                exit 0
            fi
        fi
        PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
            "$KIWIPY_VENV/bin/python" -m pip install -q -e "$target"
    ) || {
        _kb_log "error: pip install -e '$target' failed (output above)"
        return 1
    }
    # A dev install already in place stays the stamp's kind: it serves base too.
    [[ "$kind" == base && "$have" == "$want dev" ]] && kind=dev
    printf '%s %s\n' "$want" "$kind" >"$stamp"
}

# True when the stamp "<hash> <kind>" says what is installed serves an install of kind $3.
_kb_stamp_serves() {
    local have="$1" want="$2" kind="$3"
    [[ "$have" == "$want dev" ]] || [[ "$kind" == base && "$have" == "$want base" ]]
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    kiwipy_bootstrap "$@"
else
    kiwipy_bootstrap "$@" || return 1
fi
