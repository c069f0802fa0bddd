#!/usr/bin/env bash
# The load generator against wrk, back to back on the Fibonacci service's /health
# (release builds), at the same number of connections (`loader run health` with USERS
# users and no think time). Target: the loader reaches at least 50% of wrk's rate.
#
#   ci/bench-loader.sh [seconds, default 10] [connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
duration=${1:-10}
connections=${2:-50}
command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p fibonacci -p loader
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LISTEN=127.0.0.1:$port RUST_LOG=warn "$rel/fibonacci" >"$work/fib.log" 2>&1 &
fib=$!
trap 'kill $fib 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
wrk -t2 -c"$connections" -d"${duration}s" "http://127.0.0.1:$port/health" >"$work/wrk.txt"
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
USERS=$connections "$rel/loader" run health --base-url "http://127.0.0.1:$port" --duration "${duration}s" --out "$work/out" >"$work/loader.txt" 2>/dev/null
loader_rps=$(awk '/^all requests/ {print $13}' "$work/loader.txt")
echo "wrk:    $wrk_rps req/s ($connections connections, ${duration}s)"
echo "loader: $loader_rps req/s ($connections users, ${duration}s)"
python3 -c "import sys; print(f'loader / wrk = {float(sys.argv[2]) / float(sys.argv[1]):.1%} (target >= 50%)')" "$wrk_rps" "$loader_rps"
