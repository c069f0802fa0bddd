#!/usr/bin/env bash
# The main job end to end: build the binaries, `scaler up` (default jwt mode) in a
# fresh data dir, log in as a course user and read a course song through music's
# balancer, scale music to 3 with `scaler replicas`, then Ctrl-C (SIGINT) and check
# that no child process is left.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
cargo build -q --workspace --bins
work=$(mktemp -d)
"$bin/scaler" up --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
cleanup() { kill -INT "$up" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
started=$(date +%s%N)
for _ in $(seq 600); do grep -q '^ready$' "$work/up.log" && break; kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
grep -q '^ready$' "$work/up.log" || { echo "scaler up did not get ready:" >&2; cat "$work/up.log" >&2; exit 1; }
echo "ci/up.sh: ready $(( ($(date +%s%N) - started) / 1000000 )) ms after start"
grep -v INFO "$work/up.log"

token=$(curl -sf -X PUT http://127.0.0.1:30000/api/v1/user/login -d '{"uid":"b66f61e7-4fad-402f-aaad-101e3e2522d3"}')
song=$(curl -sf http://127.0.0.1:30001/api/v1/music/6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea -H "Authorization: Bearer $token")
echo "$song" | grep -q '"Artist":"Taylor Swift"' || { echo "unexpected: $song" >&2; exit 1; }
echo "ci/up.sh: music answered $song"
open=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:30002/api/v1/datastore/list?objtype=user")
[ "$open" = 401 ] || { echo "the gateway answered $open without its token (not 401)" >&2; exit 1; }
echo "ci/up.sh: the gateway refuses a caller without its generated token (401)"
curl -sf http://127.0.0.1:30080/api/v1/user/b66f61e7-4fad-402f-aaad-101e3e2522d3 -H "Authorization: Bearer $token" | grep -q George
curl -sf "http://127.0.0.1:30080/fibonacci?n=30" | grep -q 832040

events=$(curl -sN --max-time 1 http://127.0.0.1:30010/events || true)
echo "$events" | grep -q '^event: ready' || { echo "no ready event on /events: $events" >&2; exit 1; }
curl -sf http://127.0.0.1:30010/metrics | grep -q '^scaler_replicas{service="music",state="alive"} 2' || { echo "scaler_replicas missing" >&2; exit 1; }
curl -sf http://127.0.0.1:30010/ | grep -q "scalelab scaler"
echo "ci/up.sh: /events streams, /metrics counts replicas, the dashboard answers"

unauthorized=$(curl -s -o /dev/null -w '%{http_code}' -X PUT http://127.0.0.1:30010/replicas -d '{"service":"music","replicas":0}')
[ "$unauthorized" = 401 ] || { echo "PUT /replicas without the admin token answered $unauthorized (not 401)" >&2; exit 1; }
echo "ci/up.sh: the admin API refuses changes without the generated token (401)"
"$bin/scaler" replicas music 3 --token-file "$work/data/scaler-token"
for _ in $(seq 100); do
  ready=$(curl -sf http://127.0.0.1:30010/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["services"]["music"]["ready"])')
  [ "$ready" = 3 ] && break; sleep 0.1
done
[ "$ready" = 3 ] || { echo "music did not reach 3 replicas" >&2; exit 1; }
echo "ci/up.sh: music scaled to 3"

children=$(pgrep -P "$up" | tr '\n' ' ')
kill -INT "$up"
for _ in $(seq 200); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$up" 2>/dev/null; then echo "scaler up did not stop on SIGINT" >&2; exit 1; fi
for pid in $children; do
  if kill -0 "$pid" 2>/dev/null; then echo "child $pid outlived scaler up" >&2; exit 1; fi
done
echo "ci/up.sh: stopped on SIGINT; none of its $(echo $children | wc -w) children is left"
echo "ci/up.sh: passed"
