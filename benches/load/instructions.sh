#!/usr/bin/env bash
# User-space instructions the proxy spends per request, counted by
# valgrind's callgrind: repeatable to about ±4% whatever else the machine
# is doing, where wall-clock load figures on a shared 2-core VM move by
# ±15%. Use it to compare two builds of the proxy:
#
#   benches/load/instructions.sh                      # the current release build
#   benches/load/instructions.sh OLD_BINARY           # OLD_BINARY, then the current build, and new/old
#
# Each binary serves N1 and then N2 requests (wrk, 4 connections, the load
# benchmark's requests, non-stream and stream) in two runs under callgrind;
# (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one
# request without start-up (timers and the log thread still add some
# noise: the same build reads within about ±4%). Kernel time (TCP, wake-ups) is not counted:
# see run.sh for that.
#
# Needs: cargo, curl, wrk and valgrind (installed with apt-get when missing).
# Everything listens on 127.0.0.1 only. Not run in CI.
#
# Settings (environment): INSTR_N1=400 INSTR_N2=2000 INSTR_PORT=19300
#   INSTR_MODES="nonstream stream"  INSTR_LOG=info (the proxy's RUST_LOG)

set -euo pipefail

N1=${INSTR_N1:-400}
N2=${INSTR_N2:-2000}
PORT=${INSTR_PORT:-19300}
MODES=${INSTR_MODES:-"nonstream stream"}
PROXY_LOG=${INSTR_LOG:-info}
MOCK_PORT=$PORT
PROXY_PORT=$((PORT + 1))
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
BIN=$ROOT/target/release/examples
TMP=$(mktemp -d "${TMPDIR:-/tmp}/relay-instr.XXXXXX")
PIDS=()

cleanup() {
    stop_started
    rm -rf "$TMP"
}
trap cleanup EXIT

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]} with apt-get"
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v curl >/dev/null || die "curl is needed"
((N2 > N1)) || die "INSTR_N2 must be above INSTR_N1"

log "building (release)"
(cd "$ROOT" && cargo build --release --quiet --example proxy --example mock_upstream)
NEW=$TMP/proxy-current
cp "$BIN/proxy" "$NEW"
BINARIES=()
if (($# > 0)); then
    [[ -x $1 ]] || die "$1 is not an executable"
    BINARIES+=("$1")
fi
BINARIES+=("$NEW")

"$BIN/mock_upstream" --listen "127.0.0.1:$MOCK_PORT" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"

{
    printf 'listen = "127.0.0.1:%s"\n\n' "$PROXY_PORT"
    relay_keys_and_accounts "$MOCK_PORT"
} >"$TMP/relay.toml"

# The wrk script: the load benchmark's request, `count` answers over four threads.
script() { # mode count
    local stream=false
    [[ $1 == stream ]] && stream=true
    cat <<EOF
$(wrk_request $stream)
local n = 0
response = function(status, headers, body)
    if status ~= 200 then io.write("status " .. status .. "\n") end
    n = n + 1
    if n == $(($2 / 4)) then
        -- wrk itself runs out its duration: the script stops it.
        io.stderr:write("done\n")
        wrk.thread:stop()
    end
end
EOF
}

# How many wrk threads have had their answers.
finished() {
    local n
    n=$(grep -c '^done' "$TMP/wrk.err" 2>/dev/null) || true
    echo "${n:-0}"
}

# Instructions of one proxy run under callgrind serving `count` requests.
instructions() { # binary mode count
    local out=$TMP/callgrind.out proxy
    script "$2" "$3" >"$TMP/run.lua"
    RUST_LOG=$PROXY_LOG valgrind --tool=callgrind --callgrind-out-file="$out" \
        --log-file="$TMP/valgrind.log" "$1" --config "$TMP/relay.toml" >/dev/null 2>&1 &
    proxy=$!
    # Under valgrind the proxy takes a while to start.
    wait_http "http://127.0.0.1:$PROXY_PORT/healthz" 30
    wrk -t4 -c4 -d600s -s "$TMP/run.lua" "http://127.0.0.1:$PROXY_PORT/v1/messages" \
        >"$TMP/wrk.out" 2>"$TMP/wrk.err" &
    local load=$!
    while (($(finished) < 4)); do
        kill -0 "$load" 2>/dev/null || die "wrk stopped early: $(cat "$TMP/wrk.err")"
        sleep 0.2
    done
    kill "$load"
    wait "$load" 2>/dev/null || true
    grep -q '^status' "$TMP/wrk.out" && die "the proxy answered $(grep -m1 '^status' "$TMP/wrk.out")"
    kill -TERM "$proxy"
    wait "$proxy" || true
    awk '/Collected :/ { print $NF }' "$TMP/valgrind.log"
}

echo
echo "Instructions per request (callgrind, user space only; requests $N1 -> $N2, RUST_LOG=$PROXY_LOG)"
declare -A PER
for mode in $MODES; do
    for binary in "${BINARIES[@]}"; do
        log "$mode: $binary"
        # A disturbed run (a stall that keeps timers and the log thread
        # busy) can cost more than a longer one: measure such a pair again.
        for try in 1 2 3; do
            low=$(instructions "$binary" "$mode" "$N1")
            high=$(instructions "$binary" "$mode" "$N2")
            [[ -n $low && -n $high ]] || die "callgrind gave no count (see $TMP/valgrind.log)"
            ((high > low)) && break
            log "$N2 requests counted no more than $N1 (try $try): measuring again"
        done
        ((high > low)) || die "$N2 requests never counted more than $N1: the machine is too disturbed"
        PER[$mode $binary]=$(((high - low) / (N2 - N1)))
        name=current
        [[ $binary == "$NEW" ]] || name=$binary
        printf '%-10s %-40s %9d\n' "$mode" "$name" "${PER[$mode $binary]}"
    done
    if ((${#BINARIES[@]} == 2)); then
        awk -v old="${PER[$mode ${BINARIES[0]}]}" -v new="${PER[$mode $NEW]}" -v mode="$mode" \
            'BEGIN { printf "%-10s %-40s %9.3f\n", mode, "current / old", new / old }'
    fi
done
