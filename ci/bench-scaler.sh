#!/usr/bin/env bash
# Benchmark the balancer (release builds, `scaler up`): POST /fibonacci n=20 with wrk at
# 50 connections through fibonacci's balancer (2 replicas), then to one replica
# directly, back to back; prints requests/s and p50/p99 of both and the difference.
# Figures, not a test.
#
#   ci/bench-scaler.sh [seconds per run, default 10] [connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
duration=${1:-10}
connections=${2:-50}
if ! command -v wrk >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q --workspace --bins
work=$(mktemp -d)
RUST_LOG=warn "$rel/scaler" up --auth-mode presence --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
trap 'kill -INT $up 2>/dev/null; sleep 1; rm -rf "$work"' EXIT
for _ in $(seq 300); do grep -q '^ready$' "$work/up.log" && break; sleep 0.1; done
grep -q '^ready$' "$work/up.log" || { cat "$work/up.log" >&2; exit 1; }
direct=$(curl -sf http://127.0.0.1:30010/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["services"]["fibonacci"]["replicas"][0]["url"])')
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"fibonacci_number": 20}'
wrk.headers["Content-Type"] = "application/json"
LUA
run() { # name url
  wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" "$2/fibonacci" >"$work/$1.txt"
  grep -q "Non-2xx" "$work/$1.txt" && { echo "$1: non-2xx responses" >&2; cat "$work/$1.txt" >&2; exit 1; }
  printf '%-26s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")" \
    "$(awk '$1=="50%" {print $2}' "$work/$1.txt")" "$(awk '$1=="99%" {print $2}' "$work/$1.txt")"
}
echo "wrk -t2 -c$connections -d${duration}s, $(nproc) cores, POST /fibonacci n=20"
run "balancer, 2 replicas" http://127.0.0.1:30004
run "1 replica, direct" "$direct"
