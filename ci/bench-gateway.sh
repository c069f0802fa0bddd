#!/usr/bin/env bash
# Benchmark the database gateway, back to back in one run with wrk:
#   - `/health` of the gateway binary (the ceiling: the kit's layers, no storage);
#   - a `read` of an existing key on each engine asked for (default: sqlite).
# For each run it prints requests/s, p50/p99, and the CPU the gateway (and, for
# dynamodb, the moto server) used, as cores busy over the run. Figures, not a test:
# nothing here fails on a slow machine. Targets: sqlite read >= 40% of /health.
#
#   ci/bench-gateway.sh [seconds per run, default 10] [connections, default 50] [engines: sqlite dynamodb]
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
duration=${1:-10}
connections=${2:-50}
shift $(( $# > 2 ? 2 : $# ))
engines=("${@:-sqlite}")
[ ${#engines[@]} -eq 0 ] && engines=(sqlite)

if ! command -v wrk >/dev/null; then
  echo "installing wrk from Debian packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p database-gateway -p loader

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_gateway() { # database-url -> sets base and gw
  local port; port=$(free_port)
  LISTEN=127.0.0.1:$port DATABASE_URL="$1" RUST_LOG=warn "$rel"/database-gateway >>"$work/gateway.log" 2>&1 &
  gw=$!; pids+=("$gw"); base=http://127.0.0.1:$port
  for _ in $(seq 200); do curl -sf "$base/readiness" >/dev/null && return; sleep 0.1; done
  echo "gateway on $1 not ready:" >&2; cat "$work/gateway.log" >&2; exit 1
}

seed() { # 1000 users, then one key to read -> prints the key
  for i in $(seq 1000); do
    printf '{"objtype":"user","fname":"First%d","lname":"Last%d","email":"u%d@example.org"}\n' "$i" "$i" "$i"
  done | xargs -P 8 -d '\n' -I{} curl -sf -X POST "$base/api/v1/datastore/write" -d {} -o /dev/null
  curl -sf -X POST "$base/api/v1/datastore/write" -d '{"objtype":"user","fname":"George","lname":"Clinton","email":"starchild@pfunk.org"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["user_id"])'
}

run() { # name url [extra pid to measure] -> prints requests/s
  local g0 x0 g1 x1 rps p50 p99 extra=${3:-}
  g0=$(cpu_ticks "$gw"); x0=0; [ -n "$extra" ] && x0=$(cpu_ticks "$extra")
  wrk -t2 -c"$connections" -d"${duration}s" --latency "$2" >"$work/$1.txt"
  g1=$(cpu_ticks "$gw"); x1=0; [ -n "$extra" ] && x1=$(cpu_ticks "$extra")
  if grep -q "Non-2xx" "$work/$1.txt"; then echo "$1: non-2xx responses" >&2; cat "$work/$1.txt" >&2; exit 1; fi
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$1.txt")
  local cpu; cpu=$(python3 -c "print(f'{($g1-$g0)/100/$duration:.2f}')")
  local other=""; [ -n "$extra" ] && other=$(python3 -c "print(f'   moto cpu {($x1-$x0)/100/$duration:.2f} cores')")
  printf '%-14s %10s req/s   p50 %8s   p99 %8s   gateway cpu %s cores%s\n' "$1" "$rps" "$p50" "$p99" "$cpu" "$other" >&2
  echo "$rps"
}

echo "gateway benchmark: wrk -t2 -c$connections -d${duration}s, $(nproc) cores" >&2
results=()
for engine in "${engines[@]}"; do
  case "$engine" in
    sqlite)
      start_gateway "sqlite://$work/bench.db"
      key=$(seed)
      health=$(run health "$base/health")
      read=$(run read-sqlite "$base/api/v1/datastore/read?objtype=user&objkey=$key")
      results+=("sqlite read / health = $(python3 -c "print(f'{$read/$health:.1%}')") (target >= 40%)")
      ;;
    dynamodb)
      python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install --quiet 'moto[server]'
      export AWS_EC2_METADATA_DISABLED=true AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
      export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
      mport=$(free_port)
      python3 -m moto.server -H 127.0.0.1 -p "$mport" >"$work/moto.log" 2>&1 &
      moto=$!; pids+=("$moto")
      export DYNAMODB_URL=http://127.0.0.1:$mport
      for _ in $(seq 100); do curl -s -o /dev/null "$DYNAMODB_URL" && break; sleep 0.2; done
      "$rel"/loader tables create --suffix bench >/dev/null
      start_gateway "dynamodb://bench"
      key=$(seed)
      read=$(run read-dynamodb "$base/api/v1/datastore/read?objtype=user&objkey=$key" "$moto")
      ;;
    *) echo "unknown engine $engine (sqlite, dynamodb)" >&2; exit 2 ;;
  esac
  kill "$gw"; wait "$gw" 2>/dev/null || true
done
printf '%s\n' "${results[@]}"
