#!/usr/bin/env bash
# Soak run (not in CI): the fault campaign's mix (tests/fault_campaign.rs)
# against the release proxy binary and a mock upstream process, for a
# while, reporting the proxy's RSS, open file descriptors and latency
# percentiles every interval.
#
#   benches/soak/run.sh                 # 10 minutes, report every 30 s
#   SOAK_SECS=120 SOAK_INTERVAL=10 benches/soak/run.sh
#
# Settings (environment): SOAK_SECS (600), SOAK_INTERVAL (30),
# SOAK_CONCURRENCY (64), SOAK_SEED (1), SOAK_UPSTREAM_PORT (19100),
# SOAK_PROXY_PORT (19200), SOAK_STICKY_TTL (sticky_ttl_secs; the
# default 3600 keeps every session binding of the run, which shows as RSS
# growth bounded by the TTL), SOAK_DIR (a new temporary directory: config,
# logs, report). Only 127.0.0.1 is used. Exits non-zero when a servable
# request was refused or an answer was malformed.
set -euo pipefail

secs=${SOAK_SECS:-600}
interval=${SOAK_INTERVAL:-30}
concurrency=${SOAK_CONCURRENCY:-64}
seed=${SOAK_SEED:-1}
up_port=${SOAK_UPSTREAM_PORT:-19100}
proxy_port=${SOAK_PROXY_PORT:-19200}
dir=${SOAK_DIR:-$(mktemp -d -t relay-soak.XXXXXX)}
mkdir -p "$dir"
cd "$(dirname "$0")/../.."

cargo build --release --example proxy --example soak_upstream --example soak_load
bin=target/release/examples

# The campaign's pool: one Anthropic account per fault plus a slow and a
# healthy one; OpenAI accounts that all fail sometimes; one dead model.
config="$dir/relay.toml"
{
  echo "listen = \"127.0.0.1:$proxy_port\""
  echo "[upstream]"
  echo "first_byte_timeout_secs = 3"
  echo "stream_first_byte_timeout_secs = 3"
  echo "[scheduling]"
  echo "retry_budget_percent = 1000.0"
  echo "request_deadline_secs = 10"
  echo "cooldown_wait_max_secs = 1"
  if [ -n "${SOAK_STICKY_TTL:-}" ]; then echo "sticky_ttl_secs = $SOAK_STICKY_TTL"; fi
  echo "[[keys]]"
  echo "key = \"sk-soak\""
  echo "name = \"soak\""
  for id in a-429 a-529 a-500 a-reset a-hang a-sse-error a-cut a-slow a-healthy \
            o-529 o-reset o-hang o-cut o-dead; do
    case $id in a-*) platform=anthropic ;; *) platform=openai ;; esac
    echo "[[accounts]]"
    echo "id = \"$id\""
    echo "platform = \"$platform\""
    echo "type = \"api_key\""
    echo "api_key = \"cred-$id\""
    echo "base_url = \"http://127.0.0.1:$up_port\""
    if [ "$id" = a-healthy ]; then echo "concurrency = $concurrency"; else echo "concurrency = 16"; fi
    case $id in
      o-dead) echo 'models = ["gpt-dead"]' ;;
      o-*) echo 'models = ["gpt-4o"]' ;;
    esac
  done
} > "$config"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$bin/soak_upstream" --port "$up_port" --seed "$seed" > "$dir/upstream.log" 2>&1 &
pids+=($!)
RUST_LOG=error "$bin/proxy" --config "$config" > "$dir/proxy.log" 2>&1 &
proxy_pid=$!
pids+=($proxy_pid)

for _ in $(seq 100); do
  if grep -q "listening on" "$dir/proxy.log" 2>/dev/null && grep -q "soak upstream on" "$dir/upstream.log"; then
    break
  fi
  sleep 0.1
done

echo "soak: ${secs}s at concurrency $concurrency, report every ${interval}s; proxy pid $proxy_pid; files in $dir"
status=0
"$bin/soak_load" --url "http://127.0.0.1:$proxy_port" --key sk-soak --pid "$proxy_pid" \
  --concurrency "$concurrency" --duration-secs "$secs" --interval-secs "$interval" --seed "$seed" \
  | tee "$dir/report.txt" || status=$?
if ! kill -0 "$proxy_pid" 2>/dev/null; then
  echo "soak: the proxy died; its log:" >&2
  tail -20 "$dir/proxy.log" >&2
  status=1
fi
exit $status
