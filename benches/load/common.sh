# Shared by run.sh and instructions.sh (sourced): the client key, the
# proxy's keys and accounts, and the request both scripts send, so the two
# measure the same thing; and the helpers both use.

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Stops every process the script started (their pids in the array PIDS).
stop_started() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}

# Waits until `url` answers, for at most `seconds` (default 10); WAIT_HINT,
# when set, is added to the error.
wait_http() { # url [seconds]
    local i
    for i in $(seq 1 $((${2:-10} * 20))); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.05
    done
    die "nothing answers at $1${WAIT_HINT:+ ($WAIT_HINT)}"
}

CLIENT_KEY=sk-relay-bench

# The `[[keys]]` and four `[[accounts]]` tables of the proxy's config, the
# accounts pointing at the mock upstream on 127.0.0.1:PORT.
relay_keys_and_accounts() { # upstream port
    local i
    printf '[[keys]]\nkey = "%s"\nname = "bench"\n' "$CLIENT_KEY"
    for i in 1 2 3 4; do
        printf '\n[[accounts]]\nid = "bench-%s"\nplatform = "anthropic"\ntype = "api_key"\n' "$i"
        printf 'api_key = "sk-ant-api-bench-%s"\nbase_url = "http://127.0.0.1:%s"\n' "$i" "$1"
        printf 'concurrency = 100000\n'
        printf 'model_mapping = { "claude-sonnet-4-5" = "claude-sonnet-4-5-20250929" }\n'
    done
}

# The start of a wrk script sending body_json's request with the client key;
# each script adds its own headers and callbacks.
wrk_request() { # stream: true|false
    printf 'wrk.method = "POST"\nwrk.body = [[%s]]\n' "$(body_json "$1")"
    printf 'wrk.headers["content-type"] = "application/json"\n'
    printf 'wrk.headers["anthropic-version"] = "2023-06-01"\n'
    printf 'wrk.headers["x-api-key"] = "%s"\n' "$CLIENT_KEY"
}

# A realistic small Messages request (~1.6 KB): a system prompt and a few turns.
body_json() { # stream: true|false
    local turn="Explain how the relay chooses an account and what happens when it fails over."
    printf '{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":%s,' "$1"
    printf '"system":[{"type":"text","text":"You are a helpful assistant for the platform team."}],'
    printf '"metadata":{"user_id":"user_bench"},"messages":['
    printf '{"role":"user","content":"1: %s %s"},' "$turn" "$turn"
    printf '{"role":"assistant","content":"2: %s %s"},' "$turn" "$turn"
    printf '{"role":"user","content":"3: %s %s"},' "$turn" "$turn"
    printf '{"role":"assistant","content":"4: %s %s"},' "$turn" "$turn"
    printf '{"role":"user","content":"5: %s %s"}]}' "$turn" "$turn"
}
