#!/usr/bin/env bash
# Load benchmark of the relay proxy, in one run on one machine:
#
#   direct:  wrk -> mock upstream
#   nginx:   wrk -> nginx proxy_pass (keep-alive upstream) -> mock upstream
#   hyper:   wrk -> examples/bare_forward (the proxy's hyper server, client, runtime and
#            allocator, none of its layers) -> mock upstream: the floor under any hyper relay
#   proxy:   wrk -> examples/proxy (release, full default stack, 4 accounts) -> mock upstream
#
# for non-stream and stream Messages requests at several concurrencies, then
# the delay the proxy adds to each event of a paced stream and the proxy's
# memory per open stream. Prints one table. See README.md, "Benchmarks".
#
# Needs: cargo, curl, and nginx and wrk (installed with apt-get when missing).
# Everything listens on 127.0.0.1 only. Not run in CI.
#
# Settings (environment):
#   LOAD_ROUNDS=3            rounds of the table; each round measures every target once per cell,
#                            one after the other, and the report gives each figure's median over
#                            the rounds and each ratio's median (with its range) over the rounds
#   LOAD_DURATION=6          seconds measured per (round, target, mode, concurrency)
#   LOAD_WARMUP=1            seconds of unmeasured load before each measurement
#   LOAD_CONCURRENCY="1 32 256"
#   LOAD_MODES="nonstream stream"
#   LOAD_PROBE_STREAMS=10    paced streams (200 events, 10 ms apart) at once for the per-event delay
#   LOAD_PROBE_EVENTS=200  LOAD_PROBE_INTERVAL_MS=10
#   LOAD_HOLD_STREAMS=2000   streams held open at once for RSS per stream (0: skip)
#   LOAD_HOLD_SECS=8
#   LOAD_PORT=19100          first of 9 consecutive ports used
#   LOAD_PROXY_LOG=info      RUST_LOG of the proxy (its default: a usage line per request;
#                            nginx writes its access log line per request too)
#   LOAD_LOGS=null           where those per-request lines go: null (/dev/null: formatted and written,
#                            but a run does not fill the disk with ~600 MB) or file (in the temp dir)
#   LOAD_KEEP=1              keep the temp dir (configs, logs, raw results)

set -euo pipefail

ROUNDS=${LOAD_ROUNDS:-3}
DURATION=${LOAD_DURATION:-6}
WARMUP=${LOAD_WARMUP:-1}
CONCURRENCY=${LOAD_CONCURRENCY:-"1 32 256"}
MODES=${LOAD_MODES:-"nonstream stream"}
PROBE_STREAMS=${LOAD_PROBE_STREAMS:-10}
PROBE_EVENTS=${LOAD_PROBE_EVENTS:-200}
PROBE_INTERVAL_MS=${LOAD_PROBE_INTERVAL_MS:-10}
HOLD_STREAMS=${LOAD_HOLD_STREAMS:-2000}
HOLD_SECS=${LOAD_HOLD_SECS:-8}
PORT=${LOAD_PORT:-19100}
PROXY_LOG=${LOAD_PROXY_LOG:-info}
LOGS=${LOAD_LOGS:-null}

# Ports: three mocks (plain, stamped paced streams, long streams), an nginx
# port in front of each, the bare hyper forwarder, and the proxy.
MOCK_PORT=$PORT
MOCK_PACED_PORT=$((PORT + 1))
MOCK_LONG_PORT=$((PORT + 2))
NGINX_PORT=$((PORT + 3))
NGINX_PACED_PORT=$((PORT + 4))
BARE_PORT=$((PORT + 5))
PROXY_PORT=$((PORT + 6))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
BIN=$ROOT/target/release/examples
TMP=$(mktemp -d "${TMPDIR:-/tmp}/relay-load.XXXXXX")
chmod 755 "$TMP"
RESULTS=$TMP/results.tsv
case $LOGS in
    null) ACCESS_LOG=/dev/null ;;
    file) ACCESS_LOG=$TMP/nginx-access.log ;;
    *) echo "error: LOAD_LOGS is null or file" >&2; exit 1 ;;
esac
PIDS=()

WAIT_HINT="LOAD_LOGS=file LOAD_KEEP=1 keep the logs"

cleanup() {
    stop_started
    if [[ ${LOAD_KEEP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        # nginx's workers may still be closing files: try again once.
        rm -rf "$TMP" 2>/dev/null || { sleep 1; rm -rf "$TMP"; }
    fi
}
trap cleanup EXIT

# === tools ===

need_apt() {
    local missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    ((${#missing[@]} == 0)) && return
    log "installing ${missing[*]} with apt-get"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    # The package may start a system nginx on port 80; ours is separate.
}
need_apt
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v curl >/dev/null || die "curl is needed"

# Thousands of sockets per process for the open-streams test.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= 3 * HOLD_STREAMS + 256 )) || log "warning: ulimit -n $(ulimit -n) may be too low for $HOLD_STREAMS streams"

log "building (release)"
(cd "$ROOT" && cargo build --release --quiet --example proxy --example mock_upstream --example stream_probe --example bare_forward)

# === processes ===

start_mock() { # port, extra args...
    local port=$1
    shift
    "$BIN/mock_upstream" --listen "127.0.0.1:$port" "$@" >"$TMP/mock-$port.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/v1/models"
}

start_nginx() {
    local temp
    for temp in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$TMP/nginx-$temp"; done
    cat >"$TMP/nginx.conf" <<EOF
worker_processes auto;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 16384; }
http {
    access_log $ACCESS_LOG;
    client_body_temp_path $TMP/nginx-client_body;
    proxy_temp_path $TMP/nginx-proxy;
    fastcgi_temp_path $TMP/nginx-fastcgi;
    uwsgi_temp_path $TMP/nginx-uwsgi;
    scgi_temp_path $TMP/nginx-scgi;
    client_max_body_size 32m;
    keepalive_requests 1000000;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 1024; keepalive_requests 1000000; }
    upstream mock_paced { server 127.0.0.1:$MOCK_PACED_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # As a relay must: each upstream frame goes out at once.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }
    }
    server {
        listen 127.0.0.1:$NGINX_PACED_PORT;
        location / {
            proxy_pass http://mock_paced;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
    "$NGINX" -c "$TMP/nginx.conf" -g 'daemon off;' 2>>"$TMP/nginx-error.log" &
    NGINX_PID=$!
    PIDS+=($NGINX_PID)
    wait_http "http://127.0.0.1:$NGINX_PORT/v1/models"
}

PROXY_PID=
start_proxy() { # upstream port
    local upstream=$1
    {
        printf 'listen = "127.0.0.1:%s"\nmax_connections = 20000\nlisten_backlog = 4096\n\n' "$PROXY_PORT"
        relay_keys_and_accounts "$upstream"
    } >"$TMP/relay-$upstream.toml"
    local log=/dev/null
    [[ $LOGS == file ]] && log=$TMP/proxy-$upstream.log
    env ${LOAD_PROXY_ENV:-} RUST_LOG=$PROXY_LOG "$BIN/proxy" --config "$TMP/relay-$upstream.toml" >"$TMP/proxy-$upstream.out" 2>"$log" &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
    wait_http "http://127.0.0.1:$PROXY_PORT/healthz"
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
}

# /proc readings of the proxy.
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# utime + stime, in clock ticks (fields 14 and 15; the command name may hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# The same for a process and its children (nginx's master and workers).
tree_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1"); do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}
TICKS=$(getconf CLK_TCK)

# === requests ===


for mode in nonstream stream; do
    stream=false
    [[ $mode == stream ]] && stream=true
    cat >"$TMP/$mode.lua" <<EOF
$(wrk_request $stream)
wrk.headers["user-agent"] = "claude-cli/2.0.14 (external, cli)"
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
        e.status + e.connect + e.read + e.write + e.timeout))
end
EOF
done

# Checks once that each target answers a request of each mode with 200.
check_target() { # name port
    local mode stream code
    for mode in nonstream stream; do
        stream=false
        [[ $mode == stream ]] && stream=true
        code=$(curl -s -o "$TMP/check-$1-$mode.out" -w '%{http_code}' "http://127.0.0.1:$2/v1/messages" \
            -H 'content-type: application/json' -H "x-api-key: $CLIENT_KEY" -H 'anthropic-version: 2023-06-01' \
            -d "$(body_json $stream)")
        [[ $code == 200 ]] || die "$1 answered $code to a $mode request: $(head -c 300 "$TMP/check-$1-$mode.out")"
    done
}

# wrk: prints "requests duration_us p50_us p99_us p999_us errors".
run_wrk() { # port mode conc seconds
    local threads=$(( $3 < 2 ? $3 : 2 ))
    wrk -t "$threads" -c "$3" -d "${4}s" --timeout 10s -s "$TMP/$2.lua" "http://127.0.0.1:$1/v1/messages" \
        | awk '/^RESULT/ { print $2, $3, $4, $5, $6, $7 }'
}

measure() { # round target port mode conc
    local round=$1 target=$2 port=$3 mode=$4 conc=$5 before=0 after=0 rss=0 out
    run_wrk "$port" "$mode" "$conc" "$WARMUP" >/dev/null
    case $target in
        proxy) before=$(cpu_ticks "$PROXY_PID") ;;
        hyper) before=$(cpu_ticks "$BARE_PID") ;;
        nginx) before=$(tree_ticks "$NGINX_PID") ;;
    esac
    out=$(run_wrk "$port" "$mode" "$conc" "$DURATION")
    [[ -n $out ]] || die "wrk gave no result for $target $mode c=$conc"
    case $target in
        proxy)
            after=$(cpu_ticks "$PROXY_PID")
            rss=$(status_kib "$PROXY_PID" VmRSS)
            ;;
        hyper) after=$(cpu_ticks "$BARE_PID") ;;
        nginx) after=$(tree_ticks "$NGINX_PID") ;;
    esac
    echo "$round $mode $conc $target $out $((after - before)) $rss" >>"$RESULTS"
    log "round $round $mode c=$conc $target: $out"
}

# === 1. throughput and latency ===

log "starting mock upstream, nginx, the bare hyper forwarder, proxy"
start_mock "$MOCK_PORT"
start_mock "$MOCK_PACED_PORT" --events "$PROBE_EVENTS" --interval-ms "$PROBE_INTERVAL_MS" --stamp
# Streams that outlast the hold: an event every 500 ms for a minute past it.
start_mock "$MOCK_LONG_PORT" --events $(((HOLD_SECS + 60) * 2)) --interval-ms 500
start_nginx
"$BIN/bare_forward" --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$MOCK_PORT" >"$TMP/bare.out" 2>&1 &
BARE_PID=$!
PIDS+=($BARE_PID)
wait_http "http://127.0.0.1:$BARE_PORT/v1/models"
start_proxy "$MOCK_PORT"
check_target direct "$MOCK_PORT"
check_target nginx "$NGINX_PORT"
check_target hyper "$BARE_PORT"
check_target proxy "$PROXY_PORT"
run_wrk "$PROXY_PORT" nonstream 32 "$WARMUP" >/dev/null
RSS_WARM=$(status_kib "$PROXY_PID" VmRSS)

: >"$RESULTS"
# Rounds outermost, so a slow minute of the machine lands on one round of
# every cell rather than on all rounds of one cell; the four targets of a
# cell follow each other, so each round's ratios compare neighbours.
for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        for conc in $CONCURRENCY; do
            measure "$round" direct "$MOCK_PORT" "$mode" "$conc"
            measure "$round" nginx "$NGINX_PORT" "$mode" "$conc"
            measure "$round" hyper "$BARE_PORT" "$mode" "$conc"
            measure "$round" proxy "$PROXY_PORT" "$mode" "$conc"
        done
    done
done
kill "$BARE_PID" 2>/dev/null || true
RSS_END=$(status_kib "$PROXY_PID" VmRSS)
PROXY_REQUESTS=$(awk '$4 == "proxy" { n += $5 } END { print n + 0 }' "$RESULTS")
# Growth: one more run at the highest concurrency, after the proxy has
# already seen it (its pools and buffers are grown), must leave RSS flat.
SOAK_CONC=$(echo $CONCURRENCY | awk '{ m = $1; for (i = 2; i <= NF; i++) if ($i > m) m = $i; print m }')
SOAK=$(run_wrk "$PROXY_PORT" nonstream "$SOAK_CONC" "$DURATION")
RSS_SOAK=$(status_kib "$PROXY_PID" VmRSS)
HWM=$(status_kib "$PROXY_PID" VmHWM)
stop_proxy

# === 2. per-event delay of a paced stream ===

log "per-event delay: $PROBE_STREAMS streams of $PROBE_EVENTS events, $PROBE_INTERVAL_MS ms apart"
start_proxy "$MOCK_PACED_PORT"
probe() { "$BIN/stream_probe" delay --key "$CLIENT_KEY" --streams "$PROBE_STREAMS" --url "http://127.0.0.1:$1/v1/messages"; }
probe "$PROXY_PORT" >/dev/null # warm-up
# The three at once, so a burst of other work on the machine hits all alike.
PROBES=()
probe "$MOCK_PACED_PORT" >"$TMP/delay-direct.out" &
PROBES+=($!)
probe "$NGINX_PACED_PORT" >"$TMP/delay-nginx.out" &
PROBES+=($!)
probe "$PROXY_PORT" >"$TMP/delay-proxy.out" &
PROBES+=($!)
for pid in "${PROBES[@]}"; do
    wait "$pid" || die "a stream probe failed"
done
DELAY_DIRECT=$(cat "$TMP/delay-direct.out")
DELAY_NGINX=$(cat "$TMP/delay-nginx.out")
DELAY_PROXY=$(cat "$TMP/delay-proxy.out")
stop_proxy

# === 3. memory per open stream ===

HOLD_LINE="skipped"
if ((HOLD_STREAMS > 0)); then
    log "memory: $HOLD_STREAMS open streams"
    start_proxy "$MOCK_LONG_PORT"
    hold() { "$BIN/stream_probe" hold --key "$CLIENT_KEY" --url "http://127.0.0.1:$PROXY_PORT/v1/messages" --streams "$1" --hold-secs "$2"; }
    hold 50 1 >/dev/null # warm-up: pools, buffers, runtime threads
    sleep 1
    RSS_IDLE=$(status_kib "$PROXY_PID" VmRSS)
    hold "$HOLD_STREAMS" "$HOLD_SECS" >"$TMP/hold.out" 2>"$TMP/hold.err" &
    HOLD_PID=$!
    for _ in $(seq 1 600); do
        grep -q '^open' "$TMP/hold.out" 2>/dev/null && break
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.1
    done
    OPENED=$(awk '/^open/ { print $2 }' "$TMP/hold.out")
    RSS_HELD=0
    for _ in $(seq 1 $((HOLD_SECS > 2 ? HOLD_SECS - 2 : 1))); do
        sleep 1
        rss=$(status_kib "$PROXY_PID" VmRSS)
        ((rss > RSS_HELD)) && RSS_HELD=$rss
    done
    wait "$HOLD_PID" || true
    [[ -s $TMP/hold.err ]] && log "$(head -3 "$TMP/hold.err")"
    if [[ -n $OPENED && $OPENED -gt 0 ]]; then
        HOLD_LINE=$(awk -v idle="$RSS_IDLE" -v held="$RSS_HELD" -v n="$OPENED" \
            'BEGIN { printf "%d streams open: proxy RSS %.1f MiB (idle %.1f MiB) -> %.1f KiB per stream", n, held / 1024, idle / 1024, (held - idle) / n }')
    else
        HOLD_LINE="no stream opened (see $TMP/hold.err)"
    fi
    stop_proxy
fi

# === report ===

echo
echo "Relay load benchmark: $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS round(s) of ${DURATION}s per cell after ${WARMUP}s warm-up, wrk"
echo "Each figure is the median over the rounds. Latencies in microseconds; +p50 etc.: added over direct"
echo "at the same mode and concurrency (medians); x ng: the proxy's (or the bare hyper forwarder's) figure"
echo "over nginx's (req/s: the median of the rounds' ratios, each against nginx's cell of the same round,"
echo "with their lowest-highest in 'range'; added latency: ratio of the medians, '-' where either is not"
echo "positive, i.e. lost in noise). cpu: user+system time of the proxy (or of nginx's master and workers)"
echo "per request, at ${TICKS} ticks/s; rss: the proxy's VmRSS after the cell. rps x hy: the proxy's req/s"
echo "over the bare hyper forwarder's (median of the rounds' ratios), the floor its layers stand on."
echo
awk -v ticks="$TICKS" '
    # The median of the space-separated numbers in s.
    function median(s,   a, n, i, j, t) {
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function lowest(s,   a, n, i, m) { n = split(s, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 < m) m = a[i] + 0; return m }
    function highest(s,   a, n, i, m) { n = split(s, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 > m) m = a[i] + 0; return m }
    function add(arr, k, v) { arr[k] = (k in arr) ? arr[k] " " v : v }
    # A ratio of added latencies means nothing when either is not positive (noise).
    function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2f", a / b) : "-" }
    { r = $1; cell = $2 " " $3; k = cell " " $4
      rps = $5 / ($6 / 1e6)
      if (!(k in seen)) { seen[k] = 1; order[++rows] = k; tgt[k] = $4; mode[k] = $2; conc[k] = $3 }
      add(RPS, k, rps); add(P50, k, $7); add(P99, k, $8); add(P999, k, $9); err[k] += $10
      if ($5 > 0) add(CPU, k, $11 / ticks * 1e6 / $5)
      rss[k] = $12
      round_rps[r " " k] = rps }
    END {
      # Per-round ratios against nginx and the floor, collected per row.
      for (rk in round_rps) {
        split(rk, f, " "); r = f[1]; k = f[2] " " f[3] " " f[4]; cell = f[2] " " f[3]
        if (tgt[k] != "proxy" && tgt[k] != "hyper") continue
        if ((r " " cell " nginx") in round_rps && round_rps[r " " cell " nginx"] > 0) add(XNG, k, round_rps[rk] / round_rps[r " " cell " nginx"])
        if (tgt[k] == "proxy" && (r " " cell " hyper") in round_rps && round_rps[r " " cell " hyper"] > 0) add(XHY, k, round_rps[rk] / round_rps[r " " cell " hyper"])
      }
      printf "%-9s %5s %-6s %9s %7s %7s %7s %7s %7s %7s %5s %8s %11s %9s %9s %8s %10s %7s\n", "mode", "conc", "target", "req/s", "p50", "p99", "p99.9", "+p50", "+p99", "+p99.9", "errs", "rps x ng", "range", "+p50 x ng", "+p99 x ng", "rps x hy", "cpu us/req", "rss MiB"
      for (i = 1; i <= rows; i++) {
        k = order[i]; cell = mode[k] " " conc[k]; d = cell " direct"; g = cell " nginx"
        a50 = "-"; a99 = "-"; a999 = "-"; r1 = "-"; range = "-"; r2 = "-"; r3 = "-"; r4 = "-"; c = "-"; m = "-"
        if (tgt[k] != "direct") {
          a50 = sprintf("%.0f", median(P50[k]) - median(P50[d])); a99 = sprintf("%.0f", median(P99[k]) - median(P99[d])); a999 = sprintf("%.0f", median(P999[k]) - median(P999[d]))
        }
        if ((tgt[k] == "proxy" || tgt[k] == "hyper") && (k in XNG)) {
          r1 = sprintf("%.2f", median(XNG[k])); range = sprintf("%.2f-%.2f", lowest(XNG[k]), highest(XNG[k]))
          r2 = ratio(a50, median(P50[g]) - median(P50[d])); r3 = ratio(a99, median(P99[g]) - median(P99[d]))
        }
        if (tgt[k] == "proxy") { if (k in XHY) r4 = sprintf("%.2f", median(XHY[k])); m = sprintf("%.1f", rss[k] / 1024) }
        if (tgt[k] != "direct" && (k in CPU)) c = sprintf("%.1f", median(CPU[k]))
        printf "%-9s %5s %-6s %9.0f %7d %7d %7d %7s %7s %7s %5d %8s %11s %9s %9s %8s %10s %7s\n", mode[k], conc[k], tgt[k], median(RPS[k]), median(P50[k]), median(P99[k]), median(P999[k]), a50, a99, a999, err[k], r1, range, r2, r3, r4, c, m
      }
    }' "$RESULTS"
echo
echo "Proxy memory: RSS after warm-up $((RSS_WARM / 1024)) MiB, after the table's $PROXY_REQUESTS requests $((RSS_END / 1024)) MiB;"
echo "  after $(echo "$SOAK" | awk '{ print $1 }') more non-stream requests at concurrency $SOAK_CONC: $((RSS_SOAK / 1024)) MiB; peak (VmHWM) $((HWM / 1024)) MiB"
echo "Per-event delay, $PROBE_STREAMS streams x $PROBE_EVENTS events ${PROBE_INTERVAL_MS} ms apart (mock send stamp -> client arrival):"
echo "  direct: $DELAY_DIRECT"
echo "  nginx:  $DELAY_NGINX"
echo "  proxy:  $DELAY_PROXY"
awk -v d="$DELAY_DIRECT" -v x="$DELAY_PROXY" -v g="$DELAY_NGINX" 'function f(s, k,   a, i, kv) { split(s, a, " "); for (i in a) { split(a[i], kv, "="); if (kv[1] == k) return kv[2] } }
    BEGIN { printf "  added by the proxy: p50 %+d us, p99 %+d us (nginx: p50 %+d us, p99 %+d us)\n",
        f(x, "p50_us") - f(d, "p50_us"), f(x, "p99_us") - f(d, "p99_us"), f(g, "p50_us") - f(d, "p50_us"), f(g, "p99_us") - f(d, "p99_us") }'
echo "Open streams: $HOLD_LINE"
