#!/usr/bin/env bash
# Benchmark the Compose stack against `scaler up`, same binaries (PROFILE, default
# release), same machine, alternating ROUNDS times: GET of a course song with a JWT
# through the ingress (30080 -> music -> gateway -> SQLite), wrk -t1 -c50, through the
# published port on 127.0.0.1 and at the scaler's address on the Compose network. Prints
# each run, the medians and the ratios; then the Compose figures: time from `up` to
# every service healthy, each image's size, idle memory of the default stack. Figures,
# not a test.
#
#   ci/bench-compose.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
rounds=${2:-3}
profile=${PROFILE:-release}
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
if ! command -v wrk >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
PROFILE=$profile bash docker/build.sh >/dev/null
if docker compose version >/dev/null 2>&1; then dc=(docker compose); else dc=(docker-compose); fi
compose() { "${dc[@]}" -f compose/docker-compose.yml "$@"; }
work=$(mktemp -d)
up=
cleanup() {
  [ -n "$up" ] && kill -INT "$up" 2>/dev/null && wait "$up" 2>/dev/null
  compose down -v >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
song=6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea
token() { curl -sf -X PUT http://127.0.0.1:30000/api/v1/user/login -d '{"uid":"b66f61e7-4fad-402f-aaad-101e3e2522d3"}'; }
measure() { # name -> one line; requests/s into $work/<name>.rps
  local t
  t=$(token)
  wrk -t1 -c50 -d"${duration}s" --latency -H "Authorization: Bearer $t" \
    "${base:-http://127.0.0.1:30080}/api/v1/music/$song" >"$work/$1.txt"
  if grep -q "Non-2xx" "$work/$1.txt"; then cat "$work/$1.txt" >&2; echo "$1: non-2xx answers" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' "$work/$1.txt" >>"$work/${1%-*}.rps"
  printf '%-12s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")" \
    "$(awk '$1=="50%" {print $2}' "$work/$1.txt")" "$(awk '$1=="99%" {print $2}' "$work/$1.txt")"
}
healthy() {
  for _ in $(seq 600); do
    [ -z "$(docker ps -q --filter label=com.docker.compose.project=scalelab --filter health=starting)" ] \
      && [ "$(docker ps -q --filter label=com.docker.compose.project=scalelab --filter health=healthy | wc -l)" -ge 2 ] \
      && curl -sf http://127.0.0.1:30010/status >/dev/null \
      && token >/dev/null && return 0
    sleep 0.1
  done
  echo "compose stack not healthy" >&2; exit 1
}

echo "GET a course song with a JWT through the ingress, wrk -t1 -c50 -d${duration}s, $(nproc) cores, $profile binaries"
for round in $(seq "$rounds"); do
  RUST_LOG=warn "$bin/scaler" up --data-dir "$work/data-$round" >"$work/up.log" 2>&1 &
  up=$!
  for _ in $(seq 600); do grep -q '^ready$' "$work/up.log" && break; sleep 0.1; done
  measure "up-$round"
  kill -INT "$up"; wait "$up" || true; up=

  t0=$(date +%s%N)
  compose up -d >/dev/null 2>&1
  healthy
  echo "$((($(date +%s%N) - t0) / 1000000))" >>"$work/healthy.ms"
  measure "compose-$round"
  # The same stack on its own network, without Docker's port publishing in between
  # (on 127.0.0.1 that is the engine's userland proxy, a process per connection path).
  scaler=$(docker ps -q --filter label=com.docker.compose.service=scaler)
  ip=$(docker inspect -f '{{(index .NetworkSettings.Networks "scalelab").IPAddress}}' "$scaler")
  base=http://$ip:30080 measure "direct-$round"
  if [ "$round" = 1 ]; then
    sleep 3
    docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep scalelab >"$work/stats"
  fi
  compose down -v >/dev/null 2>&1
done

python3 - "$work" <<'PY'
import re, statistics, sys
work = sys.argv[1]
def med(name):
    return statistics.median(float(x) for x in open(f"{work}/{name}"))
up, compose, direct = med("up.rps"), med("compose.rps"), med("direct.rps")
print(f"median: scaler up {up:.0f} req/s, compose through 127.0.0.1 {compose:.0f} req/s "
      f"(compose/up = {compose / up:.2f}), compose on its own network {direct:.0f} req/s "
      f"(direct/up = {direct / up:.2f})")
print(f"compose up -> every service healthy: median {med('healthy.ms'):.0f} ms")
total = 0.0
for line in open(f"{work}/stats"):
    value, unit = re.search(r"([\d.]+)([KMG]i?B)", line.split()[1]).groups()
    total += float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]
print(f"idle memory of the default stack: {total:.1f} MiB")
PY
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^scalelab/' | sort
