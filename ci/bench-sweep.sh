#!/usr/bin/env bash
# `loader sweep` against ApacheBench, back to back on the same endpoint (the
# Fibonacci service, release build): for each concurrency, mean / p98 / longest from
# both (ab -k: keep-alive, as the loader). Figures, not a test.
#
#   ci/bench-sweep.sh [requests, default 2000] [concurrencies, default 10,100,500]
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
requests=${1:-2000}
levels=${2:-10,100,500}
command -v ab >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq apache2-utils >/dev/null; }
cargo build --release -q -p fibonacci -p loader
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LISTEN=127.0.0.1:$port RUST_LOG=warn "$rel/fibonacci" >"$work/fib.log" 2>&1 &
fib=$!
trap 'kill $fib 2>/dev/null; rm -rf "$work"' EXIT
url="http://127.0.0.1:$port/fibonacci?n=20"
for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.05; done
ulimit -n 65536 2>/dev/null || true
printf '%-12s %-8s %10s %10s %12s\n' concurrency tool "mean ms" "p98 ms" "longest ms"
for c in ${levels//,/ }; do
  "$rel/loader" sweep "$url" --concurrency "$c" --requests "$requests" --out "$work/sweep" >/dev/null 2>&1
  python3 - "$work/sweep/results.json" "$c" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["targets"][0]["runs"][0]
print(f"{sys.argv[2]:<12} {'loader':<8} {r['mean_ms']:>10.2f} {r['p98_ms']:>10.2f} {r['max_ms']:>12.2f}")
PY
  ab -k -q -n "$requests" -c "$c" "$url" >"$work/ab.txt" 2>&1
  # ab's "Time per request (mean)" has decimals; its percentiles are whole milliseconds.
  mean=$(awk '/^Time per request:/ && /\(mean\)/ {print $4; exit}' "$work/ab.txt")
  p98=$(awk '$1=="98%" {print $2}' "$work/ab.txt")
  longest=$(awk '$1=="100%" {print $2}' "$work/ab.txt")
  printf '%-12s %-8s %10s %10s %12s\n' "$c" ab "$mean" "$p98" "$longest"
done
