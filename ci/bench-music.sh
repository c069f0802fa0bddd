#!/usr/bin/env bash
# Benchmark a song read through the whole chain, back to back with the same binary's
# /health, with wrk at 50 connections (release builds):
#   GET /api/v1/music/<id> with a valid JWT: music -> gateway -> SQLite
#   (target: at least 25% of music's /health), with p50 / p99.
# Figures, not a test: nothing here fails on a slow machine.
#
#   ci/bench-music.sh [seconds per run, default 10] [connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
duration=${1:-10}
connections=${2:-50}
if ! command -v wrk >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p database-gateway -p user -p music
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() { # name port env...
  local name=$1 port=$2; shift 2
  env LISTEN=127.0.0.1:$port RUST_LOG=warn "$@" "$rel/$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readiness" >/dev/null && return; sleep 0.05; done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}
gw=$(free_port); user=$(free_port); music=$(free_port)
secret=bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
start database-gateway "$gw" DATABASE_URL="sqlite://$work/bench.db"
start user "$user" DATASTORE_URL=http://127.0.0.1:$gw JWT_SECRET="$secret"
start music "$music" DATASTORE_URL=http://127.0.0.1:$gw JWT_SECRET="$secret"

uid=$(curl -sf -X POST "http://127.0.0.1:$user/api/v1/user/" -d '{"fname":"Bench","lname":"Mark","email":"bench@example.org","password":"bench password"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["user_id"])')
token=$(curl -sf -X PUT "http://127.0.0.1:$user/api/v1/user/login" -d "{\"uid\":\"$uid\",\"password\":\"bench password\"}")
song=$(curl -sf -X POST "http://127.0.0.1:$music/api/v1/music/" -H "Authorization: Bearer $token" \
  -d '{"Artist":"Taylor Swift","SongTitle":"The Last Great American Dynasty"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["music_id"])')
curl -sf "http://127.0.0.1:$music/api/v1/music/$song" -H "Authorization: Bearer $token" | grep -q "Dynasty"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name url [header]
  local m0 g0; m0=$(cpu_ticks "${pids[2]}"); g0=$(cpu_ticks "${pids[0]}")
  wrk -t2 -c"$connections" -d"${duration}s" --latency ${3:+-H "$3"} "$2" >"$work/$1.txt"
  grep -q "Non-2xx" "$work/$1.txt" && { echo "$1: non-2xx responses" >&2; cat "$work/$1.txt" >&2; exit 1; }
  printf '%-12s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")" \
    "$(awk '$1=="50%" {print $2}' "$work/$1.txt")" "$(awk '$1=="99%" {print $2}' "$work/$1.txt")" >&2
  python3 -c "import sys; m, g, d = (float(x) for x in sys.argv[1:]); print(f'             cpu: music {m/100/d:.2f} cores, gateway {g/100/d:.2f} cores')" \
    "$(( $(cpu_ticks "${pids[2]}") - m0 ))" "$(( $(cpu_ticks "${pids[0]}") - g0 ))" "$duration" >&2
  awk '/Requests\/sec/ {print $2}' "$work/$1.txt"
}
echo "wrk -t2 -c$connections -d${duration}s, $(nproc) cores; music -> gateway -> SQLite, JWT auth" >&2
health=$(run health "http://127.0.0.1:$music/health")
read=$(run song-read "http://127.0.0.1:$music/api/v1/music/$song" "Authorization: Bearer $token")
python3 -c "import sys; print(f'song read / music health = {float(sys.argv[2]) / float(sys.argv[1]):.1%} (target >= 25%)')" "$health" "$read"
