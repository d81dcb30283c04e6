#!/usr/bin/env bash
# Load benchmark of the relay proxy against a peer relay, LiteLLM's proxy,
# in one run on one machine:
#
#   direct:   wrk -> mock upstream
#   proxy:    wrk -> examples/proxy (release, full default stack, 4 accounts) -> mock upstream
#   litellm:  wrk -> LiteLLM proxy (POST /v1/messages, 4 anthropic/ deployments of one
#             model, uvicorn) -> mock upstream
#
# for non-stream and stream Messages requests at several concurrencies. Prints
# one table (req/s, latency, errors, CPU per request of each relay's process
# tree, proxy / LiteLLM req/s) and each relay's peak RSS.
#
# Needs: cargo, curl, python3 (>= 3.10) with venv, and wrk (installed with
# apt-get when missing). The first run installs LiteLLM from PyPI into a venv;
# at run time everything stays on 127.0.0.1. Not run in CI.
#
# Settings (environment):
#   PEERS_DURATION=6  PEERS_WARMUP=1   seconds measured, and of unmeasured load before,
#                      per (target, mode, concurrency)
#   PEERS_CONCURRENCY="1 32 256"  PEERS_MODES="nonstream stream"  PEERS_PORT=19300 (and the 2 next)
#   PEERS_WORKERS=$(nproc)  LiteLLM worker processes (the proxy: one runtime thread per core)
#   PEERS_VENV=target/peers/venv  PEERS_PYTHON=python3 (creates the venv)
#   PEERS_PROXY_LOG=info  RUST_LOG of the proxy: a usage line per request (LiteLLM: an access line)
#   PEERS_LOGS=null    where the relays' output goes: null or file (in the temp dir)
#   PEERS_KEEP=1       keep the temp dir (configs, logs, raw results)

set -euo pipefail

# Later releases tried (1.106.10, 1.108.x, 1.109.x) require certifi>=2026.10.19,
# which the package index did not have when this was written.
LITELLM_VERSION=1.106.0

DURATION=${PEERS_DURATION:-6}
WARMUP=${PEERS_WARMUP:-1}
CONCURRENCY=${PEERS_CONCURRENCY:-"1 32 256"}
MODES=${PEERS_MODES:-"nonstream stream"}
WORKERS=${PEERS_WORKERS:-$(nproc)}
MOCK_PORT=${PEERS_PORT:-19300}
PROXY_PORT=$((MOCK_PORT + 1))
LITELLM_PORT=$((MOCK_PORT + 2))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
BIN=$ROOT/target/release/examples
VENV=${PEERS_VENV:-$ROOT/target/peers/venv}
PIDS=()
LITELLM_PID=
TMP=$(mktemp -d "${TMPDIR:-/tmp}/relay-peers.XXXXXX")
RESULTS=$TMP/results.txt
WAIT_HINT="PEERS_LOGS=file PEERS_KEEP=1 keep the logs"

cleanup() {
    # LiteLLM runs in a session of its own, so its workers go with it.
    if [[ -n $LITELLM_PID ]] && kill -TERM -- "-$LITELLM_PID" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 -- "-$LITELLM_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$LITELLM_PID" 2>/dev/null || true
    fi
    stop_started
    if [[ ${PEERS_KEEP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
START=$SECONDS

# Per-request log lines are formatted and written either way; null spares the
# disk the hundreds of MB the proxy's usage lines fill in a run.
case ${PEERS_LOGS:-null} in
    null) sink() { echo /dev/null; } ;;
    file) sink() { echo "$TMP/$1.log"; } ;;
    *) die "PEERS_LOGS is null or file" ;;
esac

# === tools ===

if ! command -v wrk >/dev/null; then
    log "installing wrk with apt-get"
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq wrk >/dev/null
fi
command -v curl >/dev/null || die "curl is needed"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ ! -x $BIN/proxy || ! -x $BIN/mock_upstream ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --quiet --example proxy --example mock_upstream)
fi

# Read from the metadata: importing litellm would itself try to fetch the cost map.
installed() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null; }
if [[ $(installed) != "$LITELLM_VERSION" ]]; then
    log "installing litellm[proxy]==$LITELLM_VERSION into $VENV"
    [[ -x $VENV/bin/python ]] || "${PEERS_PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
    [[ $(installed) == "$LITELLM_VERSION" ]] || die "litellm $LITELLM_VERSION did not install in $VENV"
fi

# === processes ===

log "starting mock upstream, proxy, LiteLLM ($WORKERS workers)"
"$BIN/mock_upstream" --listen "127.0.0.1:$MOCK_PORT" >"$(sink mock)" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"

{
    printf 'listen = "127.0.0.1:%s"\nmax_connections = 20000\nlisten_backlog = 4096\n\n' "$PROXY_PORT"
    relay_keys_and_accounts "$MOCK_PORT"
} >"$TMP/relay.toml"
RUST_LOG=${PEERS_PROXY_LOG:-info} "$BIN/proxy" --config "$TMP/relay.toml" >"$(sink proxy)" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_http "http://127.0.0.1:$PROXY_PORT/healthz"

# The proxy's four upstream keys and model mapping; the router's default
# strategy (simple-shuffle) spreads requests over the four deployments.
{
    echo "model_list:"
    for i in 1 2 3 4; do
        printf '  - model_name: claude-sonnet-4-5\n    litellm_params:\n'
        printf '      {model: anthropic/claude-sonnet-4-5-20250929, api_base: "http://127.0.0.1:%s", api_key: sk-ant-api-bench-%s}\n' "$MOCK_PORT" "$i"
    done
    printf 'litellm_settings: {telemetry: False}\ngeneral_settings: {master_key: %s}\n' "$CLIENT_KEY"
} >"$TMP/litellm.yaml"
# Uvicorn's access line per request (as the proxy's usage line) and warnings;
# LiteLLM's own INFO lines (several per request) are off through LITELLM_LOG.
cat >"$TMP/litellm-log.json" <<'EOF'
{"version": 1, "disable_existing_loggers": false,
 "formatters": {"access": {"()": "uvicorn.logging.AccessFormatter", "use_colors": false,
                           "fmt": "%(asctime)s %(client_addr)s \"%(request_line)s\" %(status_code)s"}},
 "handlers": {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
              "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"}},
 "loggers": {"uvicorn": {"handlers": ["err"], "level": "WARNING", "propagate": false},
             "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": false}}}
EOF
# Each remote fetch LiteLLM has a switch for uses its bundled copy instead,
# and anything else bound off the machine meets a closed local port.
LITELLM_ENV=(LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
    LITELLM_LOCAL_BLOG_POSTS=True LITELLM_LOCAL_POLICY_TEMPLATES=True LITELLM_LOCAL_AUTOROUTER_PRESETS=True
    LITELLM_LOG=WARNING HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
    ALL_PROXY=http://127.0.0.1:9 "NO_PROXY=127.0.0.1,localhost")
setsid env "${LITELLM_ENV[@]}" "$VENV/bin/litellm" --config "$TMP/litellm.yaml" --host 127.0.0.1 \
    --port "$LITELLM_PORT" --num_workers "$WORKERS" --log_config "$TMP/litellm-log.json" >"$(sink litellm)" 2>&1 &
LITELLM_PID=$!
PIDS+=("$LITELLM_PID")
wait_http "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 120

# A process and its descendants (LiteLLM: launcher, resource tracker, workers).
tree_pids() { local p; echo "$1"; for p in $(pgrep -P "$1"); do tree_pids "$p"; done; }
# utime+stime+cutime+cstime in ticks (fields 14-17; the name may hold spaces): a
# reaped worker still counts through its parent; one gone before reading, 0.
tree_ticks() {
    local p total=0
    for p in $(tree_pids "$1"); do
        total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
tree_hwm_mib() {
    local p
    for p in $(tree_pids "$1"); do cat "/proc/$p/status" 2>/dev/null || true; done |
        awk '$1 == "VmHWM:" { s += $2 } END { print int(s / 1024) }'
}
TICKS=$(getconf CLK_TCK)

# === requests ===

for mode in nonstream stream; do
    stream=false
    [[ $mode == stream ]] && stream=true
    cat >"$TMP/$mode.lua" <<EOF
$(wrk_request $stream)
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
done

# One request of each mode must come back whole from the mock (its ids are
# msg_mock_N), so a relay that answers from elsewhere or half-way fails here.
check_target() { # name port
    local mode stream want out code
    for mode in nonstream stream; do
        stream=false want='"type":"message"' out=$TMP/check-$1-$mode.out
        [[ $mode == stream ]] && stream=true want='event: message_stop'
        code=$(curl -s -o "$out" -w '%{http_code}' --max-time 30 "http://127.0.0.1:$2/v1/messages" \
            -H 'content-type: application/json' -H "x-api-key: $CLIENT_KEY" -H 'anthropic-version: 2023-06-01' \
            -d "$(body_json $stream)")
        if [[ $code != 200 ]] || ! grep -q 'msg_mock_' "$out" || ! grep -qF "$want" "$out"; then
            die "$1 answered $code to a $mode request: $(head -c 300 "$out")"
        fi
    done
}

# Prints "requests duration_us p50_us p99_us http_errors socket_errors".
run_wrk() { # port mode conc seconds
    wrk -t "$(($3 < 2 ? $3 : 2))" -c "$3" -d "${4}s" --timeout 10s -s "$TMP/$2.lua" \
        "http://127.0.0.1:$1/v1/messages" | awk '/^RESULT/ { print $2, $3, $4, $5, $6, $7 }'
}

# A wrk run's last requests may still be in a relay when it exits (LiteLLM
# works on for seconds at high concurrency): wait (at most 20 s) until neither
# relay uses CPU for half a second, so that work lands in no measurement.
settle() {
    local a b
    for _ in $(seq 1 40); do
        a=$(($(tree_ticks "$PROXY_PID") + $(tree_ticks "$LITELLM_PID")))
        sleep 0.5
        b=$(($(tree_ticks "$PROXY_PID") + $(tree_ticks "$LITELLM_PID")))
        ((b - a <= 2)) && return 0
    done
    log "warning: the relays did not settle"
}

measure() { # target port pid mode conc
    local before=0 after=0 out
    settle
    run_wrk "$2" "$4" "$5" "$WARMUP" >/dev/null
    settle
    if [[ -n $3 ]]; then before=$(tree_ticks "$3"); fi
    out=$(run_wrk "$2" "$4" "$5" "$DURATION")
    if [[ -n $3 ]]; then after=$(tree_ticks "$3"); fi
    [[ -n $out ]] || die "wrk gave no result for $1 $4 c=$5"
    echo "$4 $5 $1 $out $((after - before))" >>"$RESULTS"
    log "$4 c=$5 $1: $out"
}

check_target direct "$MOCK_PORT"
check_target proxy "$PROXY_PORT"
check_target litellm "$LITELLM_PORT"
# LiteLLM imports modules and loads features on first use: get both relays
# past that before anything counts.
for mode in $MODES; do
    run_wrk "$PROXY_PORT" "$mode" 32 3 >/dev/null
    run_wrk "$LITELLM_PORT" "$mode" 32 3 >/dev/null
done

# The three targets of a cell follow each other, so a slow moment of the
# machine lands on neighbours rather than on one relay's whole column.
: >"$RESULTS"
for mode in $MODES; do
    for conc in $CONCURRENCY; do
        measure direct "$MOCK_PORT" "" "$mode" "$conc"
        measure proxy "$PROXY_PORT" "$PROXY_PID" "$mode" "$conc"
        measure litellm "$LITELLM_PORT" "$LITELLM_PID" "$mode" "$conc"
    done
done

# === report ===

echo
echo "Relay vs LiteLLM $LITELLM_VERSION: $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), ${DURATION}s per cell after ${WARMUP}s warm-up, wrk"
echo "LiteLLM: POST /v1/messages, uvicorn, $WORKERS workers, 4 deployments, access log; proxy: 4 accounts, RUST_LOG=${PEERS_PROXY_LOG:-info}"
echo "ok req/s: answers with status < 400 per second. Latencies in microseconds. http: answers >= 400;"
echo "sock: connect/read/write errors and timeouts (10 s). cpu: user+system time of the relay's process"
echo "tree per ok answer, at $TICKS ticks/s. x litellm: the proxy's ok req/s over LiteLLM's in the same cell."
echo
awk -v ticks="$TICKS" '
    { k = $1 " " $2 " " $3; order[++n] = k; row[k] = $0; ok[k] = ($4 - $8) / ($5 / 1e6) }
    END {
      printf "%-9s %5s %-8s %9s %8s %8s %6s %6s %10s %9s\n", "mode", "conc", "target", "ok req/s", "p50", "p99", "http", "sock", "cpu us/req", "x litellm"
      for (i = 1; i <= n; i++) {
        k = order[i]; split(row[k], f, " "); cpu = "-"; x = "-"; l = f[1] " " f[2] " litellm"
        if (f[3] != "direct" && f[4] - f[8] > 0) cpu = sprintf("%.0f", f[10] / ticks * 1e6 / (f[4] - f[8]))
        if (f[3] == "proxy" && (l in ok) && ok[l] > 0) x = sprintf("%.2f", ok[k] / ok[l])
        printf "%-9s %5s %-8s %9.0f %8d %8d %6d %6d %10s %9s\n", f[1], f[2], f[3], ok[k], f[6], f[7], f[8], f[9], cpu, x
      }
    }' "$RESULTS"
echo
echo "Peak RSS (VmHWM summed over the process tree): proxy $(tree_hwm_mib "$PROXY_PID") MiB (1 process);" \
    "LiteLLM $(tree_hwm_mib "$LITELLM_PID") MiB ($(tree_pids "$LITELLM_PID" | wc -l) processes, $WORKERS of them workers)"
echo "Run took $((SECONDS - START)) s."
