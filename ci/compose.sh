#!/usr/bin/env bash
# Docker Compose end to end, with real requests, on this machine's Docker engine:
#   - the images (docker/build.sh, offline) and the stand-ins for upstream images
#     (docker/upstream.sh, from Debian's packages and PyPI);
#   - `up`: every service healthy (the time it took), the course data loaded by the
#     loader job (George Clinton, the Taylor Swift song, through the ingress);
#   - the course flows through the ingress in jwt mode;
#   - Prometheus of the observability profile (the stand-in image; Grafana and Jaeger
#     cannot be pulled here) finds every replica through the scaler's HTTP service
#     discovery and scrapes them through the tests below; after them, every panel of
#     the service dashboard (music) and of the scaler dashboard returns data
#     (ci/dashboards.py check);
#   - `scaler replicas music 3` under load: three serving containers, then back to 1;
#   - `docker kill` of a music replica under steady load: replaced, 0 failed requests;
#   - `docker network disconnect` of a replica under load (a partition): ejected, under
#     0.5% failed, in rotation or replaced after reconnection;
#   - `docker restart` of the gateway while writes are acknowledged: every one readable;
#   - the course flows again with the postgres profile, and with the dynamodb profile;
#   - `down -v` leaves no container, network or volume of the project.
#
#   ci/compose.sh      env: PROFILE (cargo profile of the binaries, default release),
#                           RATE (steady load, default 250 req/s)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
rate=${RATE:-250}
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
say() { echo "ci/compose.sh: $*"; }
fail() { echo "ci/compose.sh: FAILED: $*" >&2; exit 1; }

if ! docker info >/dev/null 2>&1; then
  say "no Docker engine answers: installing Debian's docker.io and starting dockerd"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
  (dockerd >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/dockerd.log >&2; fail "dockerd did not start"; }
fi
if docker compose version >/dev/null 2>&1; then dc=(docker compose); else
  command -v docker-compose >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null
  }
  dc=(docker-compose)
fi
say "engine $(docker version -f '{{.Server.Version}}'), $("${dc[@]}" version --short 2>/dev/null || "${dc[@]}" version | head -1)"

PROFILE=$profile bash docker/build.sh
bash docker/upstream.sh
export POSTGRES_IMAGE=scalelab-local/postgres:15 DYNAMODB_IMAGE=scalelab-local/dynamodb:moto
export PROMETHEUS_IMAGE=scalelab-local/prometheus:2.42
compose() { "${dc[@]}" -f compose/docker-compose.yml "$@"; }
everything=(--profile sqlite --profile postgres --profile dynamodb --profile observability)
work=$(mktemp -d)
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    compose "${everything[@]}" logs --tail 40 >&2 2>&1 || true
  fi
  compose "${everything[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
compose "${everything[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

admin=http://127.0.0.1:30010
prometheus=http://127.0.0.1:9090
status() { curl -sf "$admin/status"; }
ready() { status | python3 -c "import json,sys; print(json.load(sys.stdin)['services']['$1']['ready'])" 2>/dev/null || echo 0; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Waits until every service with a health check is healthy and the scaler has a ready
# replica of each service; prints the milliseconds since $1.
wait_healthy() {
  local since=$1
  for _ in $(seq 600); do
    local waiting healthy
    waiting=$(docker ps -q --filter label=com.docker.compose.project=scalelab --filter health=starting
      docker ps -q --filter label=com.docker.compose.project=scalelab --filter health=unhealthy)
    healthy=$(docker ps -q --filter label=com.docker.compose.project=scalelab --filter health=healthy | wc -l)
    if [ -z "$waiting" ] && [ "$healthy" -ge 2 ] && status >/dev/null 2>&1 \
      && [ "$(status | python3 -c 'import json,sys; s=json.load(sys.stdin)["services"]; print(all(v["ready"] >= 1 for v in s.values()))')" = True ]; then
      echo $(($(now_ms) - since))
      return 0
    fi
    sleep 0.1
  done
  docker ps -a >&2
  fail "not every service got healthy within 60 s"
}

# Course data, then the course flows through the ingress in jwt mode.
flows() {
  python3 - <<'PY'
import json, urllib.request, uuid
base = "http://127.0.0.1:30080"
def call(method, path, body=None, token=None, expect=200):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    assert status == expect, f"{method} {path}: {status} {text}"
    return text
george = "b66f61e7-4fad-402f-aaad-101e3e2522d3"
# A deployment: course users (no password) cannot log in by uid alone.
refused = call("PUT", "/api/v1/user/login", {"uid": george}, expect=401)
assert "ALLOW_UID_LOGIN" in refused, refused
password = uuid.uuid4().hex
uid = json.loads(call("POST", "/api/v1/user/", {"fname": "Ada", "lname": "Lovelace",
    "email": f"ada-{uuid.uuid4().hex[:8]}@example.com", "password": password}))["user_id"]
token = call("PUT", "/api/v1/user/login", {"uid": uid, "password": password})
george_seen = call("GET", f"/api/v1/user/{george}", token=token)
assert "George" in george_seen and "email" not in george_seen, george_seen
song = call("GET", "/api/v1/music/6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea", token=token)
assert "Taylor Swift" in song, song
print("ci/compose.sh: course data loaded: George Clinton (email hidden from others, no uid-only login) and the Taylor Swift song read through the ingress")
music = json.loads(call("POST", "/api/v1/music/", {"Artist": "Kraftwerk", "SongTitle": "Computer Love"}, token))["music_id"]
assert "Computer Love" in call("GET", f"/api/v1/music/{music}", token=token)
playlist = json.loads(call("POST", "/api/v1/playlist/", {"Name": "lab", "Playlist": [music]}, token))["playlist_id"]
assert music in call("GET", f"/api/v1/playlist/{playlist}", token=token)
call("DELETE", f"/api/v1/playlist/{playlist}", token=token)
call("GET", f"/api/v1/playlist/{playlist}", token=token, expect=404)
print("ci/compose.sh: course flows (jwt): user created, logged in, song created and read, playlist created, read and deleted")
PY
}

# A token of a new user with a password (a deployment has no uid-only login).
token() {
  local password uid
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  uid=$(curl -sf -X POST http://127.0.0.1:30000/api/v1/user/ -H 'Content-Type: application/json' \
    -d "{\"fname\":\"Load\",\"lname\":\"Generator\",\"email\":\"load-$password@example.com\",\"password\":\"$password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["user_id"])')
  curl -sf -X PUT http://127.0.0.1:30000/api/v1/user/login -H 'Content-Type: application/json' \
    -d "{\"uid\":\"$uid\",\"password\":\"$password\"}"
}

# A steady open-model load on a course song through music's balancer, in the background
# (its pid in $load).
steady_load() { # seconds name
  cat >"$work/steady.toml" <<EOF
name = "steady"
forever = true
injection = { kind = "constant_rate", per_second = $rate, during = "${1}s" }

[[requests]]
name = "read a course song"
path = "/api/v1/music/6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea"
headers = { Authorization = "Bearer $(token)" }
EOF
  "$bin/loader" run "$work/steady.toml" --base-url http://127.0.0.1:30001 --duration "${1}s" \
    --out "$work/$2" >"$work/$2.log" 2>&1 &
  load=$!
}
load_result() { # name -> "count failed"
  [ -s "$work/$1/results.json" ] || { cat "$work/$1.log" >&2; fail "the $1 load wrote no results"; }
  python3 -c "import json; a=json.load(open('$work/$1/results.json'))['requests'][-1]; print(a['count'], a['ko'])"
}
music_containers() { docker ps --filter label=scalelab.service=music --format '{{.Names}}' | sort; }
replica_state() { # replica-id -> state
  status | python3 -c "import json,sys; r=[b for b in json.load(sys.stdin)['services']['music']['replicas'] if b['id']=='$1']; print(r[0]['state'] if r else 'gone')"
}

echo "== up (sqlite)"
t0=$(now_ms)
compose up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "compose up"; }
healthy_ms=$(wait_healthy "$t0")
say "every service healthy $healthy_ms ms after up"
for _ in $(seq 300); do
  docker ps -a --filter label=com.docker.compose.service=loader --format '{{.Status}}' | grep -q '^Exited (0)' && break
  sleep 0.2
done
flows

echo "== Prometheus (observability profile) finds every replica"
# Only Prometheus: it watches the scaling, the kill and the partition below, then the
# dashboards' queries run against what it saw.
compose --profile observability up -d --no-deps prometheus >"$work/prometheus.log" 2>&1 \
  || { cat "$work/prometheus.log" >&2; fail "starting prometheus"; }
# "<targets> <services without an up target> <targets not up>" from /api/v1/targets.
targets() {
  curl -sf "$prometheus/api/v1/targets?state=active" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
up = {t["labels"].get("service") for t in targets if t["health"] == "up"}
missing = {"user", "music", "playlist", "fibonacci", "database-gateway", "scaler"} - up
down = [t["labels"].get("replica", t["scrapeUrl"]) for t in targets if t["health"] != "up"]
print(len(targets), ",".join(sorted(missing)) or "-", ",".join(down) or "-")' 2>/dev/null || echo "0 all -"
}
t_prom=$(now_ms)
for _ in $(seq 120); do
  read -r count missing down < <(targets)
  [ "$missing" = - ] && [ "$down" = - ] && break
  sleep 0.5
done
[ "$missing" = - ] && [ "$down" = - ] || {
  compose --profile observability logs --tail 20 prometheus >&2
  fail "Prometheus after 60 s: $count targets, no target up for: $missing; down: $down"
}
say "Prometheus scrapes $count targets, every one up (every service and the scaler), $(($(now_ms) - t_prom)) ms after it started"

echo "== scaling: scaler replicas music 3, then 1"
steady_load 15 scale
compose exec -T scaler scaler replicas music 3
for _ in $(seq 200); do [ "$(ready music)" = 3 ] && break; sleep 0.1; done
[ "$(ready music)" = 3 ] || fail "music did not reach 3 ready replicas"
# Concurrent requests, in rounds for up to 10 s: every replica takes a share (a new
# one's first, cold answers fade from the balancer's estimate within seconds).
: >"$work/answered"
for _ in $(seq 20); do
  seq 100 | xargs -P 20 -I{} curl -s -o /dev/null -D - http://127.0.0.1:30001/api/v1/music/health \
    | tr -d '\r' | sed -n 's/^x-replica: //Ip' >>"$work/answered"
  [ "$(sort -u "$work/answered" | wc -l)" = 3 ] && break
  sleep 0.5
done
serving=$(sort -u "$work/answered" | wc -l)
[ "$serving" = 3 ] || fail "$serving distinct replicas answered in 10 s, not 3"
say "3 serving music containers ($(music_containers | tr '\n' ' '))"
compose exec -T scaler scaler replicas music 1
for _ in $(seq 300); do [ "$(music_containers | wc -l)" = 1 ] && break; sleep 0.1; done
[ "$(music_containers | wc -l)" = 1 ] || fail "scaling back to 1 left $(music_containers | wc -l) music containers"
wait "$load" || true
read -r count failed < <(load_result scale)
say "back to 1 music container; the load meanwhile: $count requests, $failed failed"
[ "$failed" = 0 ] || fail "$failed requests failed while scaling"

echo "== docker kill of a music replica under $rate req/s"
compose exec -T scaler scaler replicas music 2
for _ in $(seq 200); do [ "$(ready music)" = 2 ] && break; sleep 0.1; done
steady_load 20 kill
sleep 5
victim=$(music_containers | head -1)
t_kill=$(now_ms)
docker kill "$victim" >/dev/null
# Replaced: the victim is out of the pool and two replicas are ready again.
for _ in $(seq 400); do
  [ "$(replica_state "${victim#scalelab-}")" = gone ] && [ "$(ready music)" = 2 ] && break
  sleep 0.02
done
recovered_ms=$(($(now_ms) - t_kill))
[ "$(ready music)" = 2 ] || fail "no replacement ready within 8 s of the kill"
wait "$load" || true
read -r count failed < <(load_result kill)
say "killed $victim: a replacement ready $recovered_ms ms after the kill; $count requests, $failed failed"
[ "$recovered_ms" -le 2000 ] || fail "replacement took $recovered_ms ms (over 2 s)"
[ "$failed" = 0 ] || fail "$failed requests failed around the kill"

echo "== docker network disconnect of a music replica under $rate req/s (a partition)"
steady_load 20 partition
sleep 5
cut=$(music_containers | head -1)
id=${cut#scalelab-}
t_cut=$(now_ms)
docker network disconnect -f scalelab "$cut"
for _ in $(seq 500); do [ "$(replica_state "$id")" != alive ] && break; sleep 0.02; done
ejected_ms=$(($(now_ms) - t_cut))
sleep 2
docker network connect scalelab "$cut" 2>/dev/null || true
for _ in $(seq 300); do [ "$(ready music)" = 2 ] && break; sleep 0.1; done
back=$(ready music)
wait "$load" || true
read -r count failed < <(load_result partition)
say "cut $cut off: ejected after $ejected_ms ms; $count requests, $failed failed; $back ready music replicas after reconnecting"
[ "$ejected_ms" -le 3000 ] || fail "ejection took $ejected_ms ms (over 3 s)"
python3 -c "import sys; sys.exit(0 if $failed <= 0.005 * $count else 1)" || fail "$failed of $count failed (over 0.5%)"
[ "$back" = 2 ] || fail "the partitioned replica was neither back in rotation nor replaced"

echo "== every panel of the service (music) and scaler dashboards has data in Prometheus"
# The load of the partition test is within the panels' 1-minute windows; the kill
# above is within the recovery panels' 5 minutes.
python3 ci/dashboards.py lint
python3 ci/dashboards.py check --prometheus "$prometheus" --var service=music \
  --dashboard observability/grafana/dashboards/service.json \
  --dashboard observability/grafana/dashboards/scaler.json >"$work/dashboards.log" 2>&1 \
  || { cat "$work/dashboards.log" >&2; fail "a dashboard panel has no data"; }
sed 's/^/  /' "$work/dashboards.log"
compose --profile observability rm -sf prometheus >/dev/null 2>&1

echo "== docker restart of the gateway while writes are acknowledged"
python3 - "$(token)" "$work/acked" <<'PY' &
import json, sys, time, urllib.request
token, out = sys.argv[1], sys.argv[2]
acked, errors, end = [], 0, time.time() + 12
while time.time() < end:
    req = urllib.request.Request("http://127.0.0.1:30080/api/v1/music/", method="POST",
        data=json.dumps({"Artist": "Acked", "SongTitle": f"write {len(acked)}"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status == 200:
                acked.append(json.loads(r.read())["music_id"])
    except Exception:
        errors += 1
        time.sleep(0.05)
json.dump({"acked": acked, "errors": errors}, open(out, "w"))
PY
writer=$!
sleep 4
gateway=$(docker ps --filter label=com.docker.compose.service=gateway --format '{{.Names}}')
docker restart -t 10 "$gateway" >/dev/null
wait "$writer"
python3 - "$(token)" "$work/acked" <<'PY'
import json, sys, urllib.request
token, acked = sys.argv[1], json.load(open(sys.argv[2]))
missing = []
for music_id in acked["acked"]:
    req = urllib.request.Request(f"http://127.0.0.1:30080/api/v1/music/{music_id}",
        headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    except Exception:
        missing.append(music_id)
print(f"ci/compose.sh: {len(acked['acked'])} writes acknowledged around the gateway restart "
      f"({acked['errors']} refused while it was down), {len(missing)} missing afterwards")
assert acked["acked"] and not missing, missing[:5]
PY

echo "== idle memory"
sleep 3
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep scalelab | tee "$work/stats"
python3 - "$work/stats" <<'PY'
import re, sys
total = 0.0
for line in open(sys.argv[1]):
    value, unit = re.search(r"([\d.]+)([KMG]i?B)", line.split()[1]).groups()
    total += float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1 / 1024, "MB": 1, "GB": 1024}[unit]
print(f"ci/compose.sh: idle memory of the default stack {total:.1f} MiB")
PY

# The stack again on another database: down -v, up with the profile, healthy, the
# course data loaded (the loader job retries until the gateway answers), the flows.
on_profile() { # profile
  echo "== down -v, then up with the $1 profile"
  compose "${everything[@]}" down -v >/dev/null 2>&1
  local t0
  t0=$(now_ms)
  compose --profile "$1" up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "compose up ($1)"; }
  say "$1 profile: every service healthy $(wait_healthy "$t0") ms after up"
  for _ in $(seq 300); do
    flows >/dev/null 2>&1 && break
    sleep 0.2
  done
  flows
}
on_profile postgres
on_profile dynamodb

echo "== down -v leaves nothing"
compose "${everything[@]}" down -v >/dev/null 2>&1
left=$( (docker ps -a --filter label=com.docker.compose.project=scalelab --format 'container {{.Names}}'
  docker ps -a --filter label=scalelab.project=scalelab --format 'container {{.Names}}'
  docker network ls --format 'network {{.Name}}' | grep -w scalelab
  docker volume ls --format 'volume {{.Name}}' | grep -E 'scalelab') || true)
[ -z "$left" ] || fail "left behind: $left"
say "down -v left no container, network or volume"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^scalelab/' | sort
say "passed"
