#!/usr/bin/env bash
# Benchmark: a gateway `read` of an existing key on SQLite against the same binary's
# `/health`, back to back, with wrk at 50 connections. Prints both throughputs, the
# ratio (target: read >= 40% of health) and latency percentiles. Figures, not a test:
# nothing here fails on a slow machine.
#
#   ci/bench-gateway.sh [seconds per run, default 10] [connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-50}

if ! command -v wrk >/dev/null; then
  echo "installing wrk from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p database-gateway

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LISTEN=127.0.0.1:$port DATABASE_URL="sqlite://$work/bench.db" RUST_LOG=warn \
  target/release/database-gateway >"$work/gateway.log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null; rm -rf "$work"' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$base/readiness" >/dev/null && break; sleep 0.1; done

# A realistic table: 1000 users, and one key to read.
for i in $(seq 1000); do
  printf '{"objtype":"user","fname":"First%d","lname":"Last%d","email":"u%d@example.org"}\n' "$i" "$i" "$i"
done | while read -r body; do curl -sf -X POST "$base/api/v1/datastore/write" -d "$body" >/dev/null; done
key=$(curl -sf -X POST "$base/api/v1/datastore/write" -d '{"objtype":"user","fname":"George","lname":"Clinton","email":"starchild@pfunk.org"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["user_id"])')

run() { # name url
  wrk -t2 -c"$connections" -d"${duration}s" --latency "$2" >"$work/$1.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$1.txt")
  if grep -q "Non-2xx" "$work/$1.txt"; then echo "$1: non-2xx responses!" >&2; cat "$work/$1.txt" >&2; exit 1; fi
  printf '%-8s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$rps" "$p50" "$p99" >&2
  echo "$rps"
}
echo "gateway on SQLite, wrk -t2 -c$connections -d${duration}s, $(nproc) cores" >&2
curl -sf "$base/health" >/dev/null
health=$(run health "$base/health")
read=$(run read "$base/api/v1/datastore/read?objtype=user&objkey=$key")
python3 -c "import sys; h, r = float(sys.argv[1]), float(sys.argv[2]); print(f'read / health = {r / h:.1%} (target >= 40%)')" "$health" "$read"
