#!/usr/bin/env bash
# Make sure an AMQP broker answers at $KIWIPY_TEST_AMQP_URL
# (default amqp://guest:guest@127.0.0.1:5672/).
#
# - If something listens at the URL's host:port: done.
# - Else, only for the default local broker (localhost/127.x/::1, port 5672): install
#   Debian's rabbitmq-server if missing (root or password-less sudo), start it
#   (`rabbitmq-server -detached`, falling back to `service rabbitmq-server start`),
#   and wait up to 60 s for it.
# - Still nothing: with CI=true print one line and exit 1; otherwise warn and exit 0
#   (the broker tests then skip).
set -euo pipefail

DEFAULT_URL="amqp://guest:guest@127.0.0.1:5672/"
URL="${KIWIPY_TEST_AMQP_URL:-$DEFAULT_URL}"
WAIT_SECONDS=60
PROBE_TIMEOUT=2

log() { printf 'ensure-rabbitmq: %s\n' "$*" >&2; }

# --- parse the URL: scheme://[user[:password]@]host[:port][/vhost][?query] ----------
if [[ "$URL" == *://* ]]; then
    scheme="${URL%%://*}"
    rest="${URL#*://}"
else
    scheme="amqp"
    rest="$URL"
fi
authority="${rest%%/*}"
authority="${authority%%\?*}"
hostport="${authority##*@}"
userinfo=""
[[ "$authority" == *@* ]] && userinfo="${authority%@*}"

if [[ "$hostport" == \[* ]]; then # [IPv6]:port
    host="${hostport%%]*}"
    host="${host#[}"
    after="${hostport#*]}"
    port="${after#:}"
else
    host="${hostport%%:*}"
    port=""
    [[ "$hostport" == *:* ]] && port="${hostport##*:}"
fi
[[ -n "$host" ]] || host="localhost"
if [[ -z "$port" ]]; then
    if [[ "$scheme" == amqps ]]; then port=5671; else port=5672; fi
fi

# Never show the password.
shown_auth=""
if [[ -n "$userinfo" ]]; then
    if [[ "$userinfo" == *:* ]]; then
        shown_auth="${userinfo%%:*}:***@"
    else
        shown_auth="${userinfo}@"
    fi
fi
SHOWN_URL="${scheme}://${shown_auth}${hostport:-$host}"

# --- helpers -----------------------------------------------------------------------
probe() {
    # shellcheck disable=SC2016 # \$1/\$2 expand in the inner bash, on purpose
    timeout "$PROBE_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" \
        >/dev/null 2>&1
}

is_local_host() {
    case "$host" in
    localhost | localhost.localdomain | 127.* | ::1 | 0:0:0:0:0:0:0:1) return 0 ;;
    esac
    [[ "$host" == "$(hostname 2>/dev/null || true)" ]]
}

have_cmd() {
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] || [[ -x "/sbin/$1" ]]
}

give_up() {
    if [[ "${CI:-}" == true ]]; then
        log "error: no AMQP broker at $SHOWN_URL ($*); CI=true, so failing."
        exit 1
    fi
    log "warning: no AMQP broker at $SHOWN_URL ($*); tests that need it will be skipped."
    exit 0
}

# --- 1. already answering? -----------------------------------------------------------
if probe; then
    log "broker answers at $SHOWN_URL"
    exit 0
fi

# --- 2. only the default local broker is ours to install/start ----------------------
if ! is_local_host || [[ "$port" != 5672 ]]; then
    give_up "not the default local broker, so not starting one"
fi

export PATH="$PATH:/usr/sbin:/sbin"
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        give_up "nothing listens and starting RabbitMQ needs root or password-less sudo"
    fi
fi

applog="$(mktemp)"
trap 'rm -f "$applog"' EXIT
if ! have_cmd rabbitmq-server; then
    log "installing rabbitmq-server from Debian packages (apt-get)..."
    if ! { "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq rabbitmq-server; } >"$applog" 2>&1; then
        tail -n 20 "$applog" >&2
        give_up "apt-get install rabbitmq-server failed"
    fi
fi

# The package's postinst may have started it already.
started_how="already running after install"
tried_service=false
if ! probe; then
    started_how="rabbitmq-server -detached"
    if ! "${SUDO[@]}" rabbitmq-server -detached >"$applog" 2>&1; then
        started_how="service rabbitmq-server start"
        tried_service=true
        "${SUDO[@]}" service rabbitmq-server start >>"$applog" 2>&1 || true
    fi
fi

deadline=$((SECONDS + WAIT_SECONDS))
until probe; do
    if ((SECONDS >= deadline)); then
        tail -n 20 "$applog" >&2 || true
        give_up "started with '$started_how' but nothing answered within ${WAIT_SECONDS}s"
    fi
    # -detached can "succeed" and still not bring a node up: try the init script too.
    if ! $tried_service && ((SECONDS >= deadline - WAIT_SECONDS / 2)); then
        tried_service=true
        started_how="$started_how, then service rabbitmq-server start"
        "${SUDO[@]}" service rabbitmq-server start >>"$applog" 2>&1 || true
    fi
    sleep 1
done

# The listener is up; make sure the node has finished booting (best effort).
left=$((deadline - SECONDS))
((left > 5)) || left=5
if ! timeout "$left" "${SUDO[@]}" rabbitmqctl -q await_startup >/dev/null 2>&1 ||
    ! timeout 15 "${SUDO[@]}" rabbitmq-diagnostics -q check_port_connectivity \
        >/dev/null 2>&1; then
    log "note: rabbitmqctl await_startup / check_port_connectivity did not confirm the node"
fi
log "started RabbitMQ ($started_how); broker answers at $SHOWN_URL"
