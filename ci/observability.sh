#!/usr/bin/env bash
# Prometheus against the real platform (issue 16, part A).
#  1. promtool: check config (scaler up and Compose), check rules, the rules' unit tests.
#  2. `scaler up` (debug build, its own data dir) with music v2 failing 50% of song reads
#     ([env.music]) and fibonacci's self-healing off ([healing]); a real Prometheus on a
#     free port with a copy of observability/prometheus/prometheus.yml scraping and
#     evaluating every 2 s (the rules' `for:` as written); the loader's CMPT 756 reads
#     (a course user's token) and fibonacci-rate through the ingress.
#  3. Checks: every http_sd target is up; every recording rule has data;
#     ServiceErrorRatioHigh fires for music; ci/dashboards.py (if present) lints and
#     queries every panel; TargetDown fires once both fibonacci replicas are SIGKILLed
#     (with healing off they stay listed as dead: a target that is still there and does
#     not answer, which is what TargetDown is for; scaling to 0 would only remove them).
# Bounds are behaviour: an alert fires within its `for:` plus a generous margin.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${CARGO_TARGET_DIR:-target}/debug
prom_dir=observability/prometheus

say() { echo "ci/observability.sh: $*"; }
fail() { echo "ci/observability.sh: FAILED: $*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --- 1. promtool ---------------------------------------------------------------------
if ! command -v promtool >/dev/null; then
  # Debian's package. policy-rc.d usually stops it from starting its service; if it
  # started one anyway, that process is ours to stop (Prometheus runs only as ours).
  before=$(pgrep -x prometheus || true)
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  for pid in $(pgrep -x prometheus || true); do
    grep -qw "$pid" <<<"$before" || { say "stopping the prometheus ($pid) the package started"; kill "$pid"; }
  done
fi
promtool --version 2>&1 | head -1
(cd "$prom_dir" && promtool check config prometheus.yml && promtool check config prometheus-compose.yml \
  && promtool check rules rules/*.yml && promtool test rules tests/*.yml)

# --- 2. the platform, Prometheus and the load ----------------------------------------
cargo build -q --bins -p scaler -p loader -p database-gateway -p user -p music -p playlist -p fibonacci

ports="30000 30001 30002 30003 30004 30010 30080"
busy() { for p in $ports; do ss -Hltn "sport = :$p" | grep -q . && return 0; done; return 1; }
waited=0
while busy; do
  # Another run of the platform (ours or someone's) holds the ports: wait, never kill.
  [ "$waited" -ge 900 ] && fail "the ports $ports stayed busy for 15 minutes"
  [ $(( waited % 60 )) -eq 0 ] && say "waiting for the ports $ports to be free"
  sleep 5; waited=$(( waited + 5 ))
done

work=$(mktemp -d)
up=""; prom=""; loads=""
cleanup() {
  for pid in $loads $prom; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$up" ]; then
    kill -INT "$up" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/scaler.toml" <<'EOF'
[replicas]
database-gateway = 1
user = 1
music = 2
playlist = 1
fibonacci = 2

# Music v2 fails MUSIC_ERROR_PERCENT of its song reads: ServiceErrorRatioHigh.
[env.music]
MUSIC_VERSION = "v2"
MUSIC_ERROR_PERCENT = "50"

# Playlist holds every request 600 ms (an injected delay fault, above its 0.5 s SLO
# threshold): ServiceLatencySLOBurn.
[env.playlist]
FAULT_DELAY = "600ms"

# Killed fibonacci replicas stay listed and down: TargetDown.
[healing]
fibonacci = false
EOF
"$bin/scaler" up --config "$work/scaler.toml" --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 900); do grep -q '^ready$' "$work/up.log" && break; kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
grep -q '^ready$' "$work/up.log" || { cat "$work/up.log" >&2; fail "scaler up did not get ready"; }
say "scaler up is ready"

prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$prom_port"
mkdir -p "$work/prometheus"
sed -e 's/^\(  scrape_interval:\).*/\1 2s/' -e 's/^\(  evaluation_interval:\).*/\1 2s/' \
    -e 's/^\(  scrape_timeout:\).*/\1 1s/' -e 's/^\(        refresh_interval:\).*/\1 2s/' \
    -e "s|^  - rules/|  - $root/$prom_dir/rules/|" "$prom_dir/prometheus.yml" >"$work/prometheus/prometheus.yml"
promtool check config "$work/prometheus/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/prometheus/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom=$!
for _ in $(seq 300); do curl -sf "$api/-/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$api/-/ready" >/dev/null || { cat "$work/prometheus.log" >&2; fail "prometheus did not get ready"; }
say "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') on $api"

# q EXPR: the query's result as JSON lines [labels, value].
q() {
  curl -sf "$api/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    print(json.dumps([r["metric"], r["value"][1]]))'
}
# firing NAME LABEL VALUE: whether the alert NAME fires with LABEL=VALUE.
firing() {
  curl -sf "$api/api/v1/alerts" | python3 -c '
import json, sys
name, label, value = sys.argv[1:]
alerts = json.load(sys.stdin)["data"]["alerts"]
sys.exit(0 if any(a["labels"].get("alertname") == name and a["labels"].get(label) == value
                  and a["state"] == "firing" for a in alerts) else 1)' "$1" "$2" "$3"
}

token=$(curl -sf -X PUT http://127.0.0.1:30000/api/v1/user/login -d '{"uid":"b66f61e7-4fad-402f-aaad-101e3e2522d3"}')
[ -n "$token" ] || fail "no token for the course user"
load_s=210
load_started=$(now_ms)
for sim in ReadMusicSim:20 ReadUserSim:5 ReadPlaylistSim:5; do
  TOKEN=$token USERS=${sim#*:} "$bin/loader" run "${sim%:*}" --duration "${load_s}s" \
    --out "$work/load-${sim%:*}" >"$work/load-${sim%:*}.log" 2>&1 &
  loads="$loads $!"
done
RATE=30 DURATION=${load_s}s "$bin/loader" run fibonacci-rate --out "$work/load-fib" >"$work/load-fib.log" 2>&1 &
loads="$loads $!"
say "load for ${load_s} s: ReadMusicSim (20 users), ReadUserSim (5), ReadPlaylistSim (5), fibonacci-rate (30/s)"

# --- 3. checks -------------------------------------------------------------------------
# ServiceErrorRatioHigh: `for: 1m` after the 1-minute rate has data; within 3 minutes.
while ! firing ServiceErrorRatioHigh service music; do
  [ $(( $(now_ms) - load_started )) -gt 180000 ] && { q 'service:http_request_error_ratio:rate1m' >&2; fail "ServiceErrorRatioHigh did not fire for music within 180 s"; }
  sleep 1
done
error_fired_s=$(python3 -c "print(f'{($(now_ms) - $load_started) / 1000:.1f}')")
say "ServiceErrorRatioHigh fired for music ${error_fired_s} s after the load started (for: 1m)"

# Every target the scaler lists is scraped and up.
sd=$(curl -sf http://127.0.0.1:30010/prometheus/targets | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
read -r active up_count < <(curl -sf "$api/api/v1/targets?state=active" | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
print(len(t), sum(1 for x in t if x["health"] == "up"))')
[ "$active" = "$sd" ] || fail "the scaler lists $sd targets, prometheus scrapes $active"
[ "$up_count" = "$sd" ] || { q 'up' >&2; fail "$up_count of $sd targets are up"; }
say "targets: $sd listed by the scaler's http_sd, $active scraped, $up_count up:"
q 'up' | python3 -c '
import json, sys
for line in sorted(sys.stdin):
    m, v = json.loads(line)
    print("    %-17s %-15s %-22s up=%s" % (m["service"], m["replica"], m["instance"], v))'

# Every recording rule returns data; its values per service.
say "recording rules (value per service):"
for rule in $(python3 -c '
import re, sys
seen = []
for name in re.findall(r"record: (\S+)", open(sys.argv[1]).read()):
    if name not in seen: seen.append(name); print(name)' "$prom_dir/rules/recording.yml"); do
  out=$(q "$rule")
  [ -n "$out" ] || fail "recording rule $rule returned no data"
  echo "  $rule"
  echo "$out" | python3 -c '
import json, sys
for line in sorted(sys.stdin):
    m, v = json.loads(line)
    extra = (" le=" + m["le"]) if "le" in m else ""
    print("    %-17s %.4g%s" % (m.get("service", "-"), float(v), extra))'
done
# The balancer's own metrics and the event counter per service, from the scaler target.
for expr in 'sum by (service, code) (rate(scaler_balancer_requests_total[1m]))' \
            'histogram_quantile(0.99, sum by (service, le) (rate(scaler_balancer_request_duration_seconds_bucket[1m])))' \
            'sum by (service) (scaler_events_total{kind="ready"})'; do
  out=$(q "$expr")
  [ -n "$out" ] || fail "no data for $expr"
  echo "  $expr"
  echo "$out" | python3 -c '
import json, sys
for line in sorted(sys.stdin):
    m, v = json.loads(line)
    print("    %s %.4g" % (" ".join(k + "=" + m[k] for k in sorted(m)), float(v)))'
done

# A recovery for the scaler dashboard's recovery panels: one music replica SIGKILLed
# (healing on), replaced, and the recovery scraped.
music_pid=$(pgrep -P "$up" -x music | head -1)
[ -n "$music_pid" ] || fail "no music replica process under scaler up"
kill -KILL "$music_pid"
killed=$(now_ms)
until [ -n "$(q 'scaler_recovery_seconds_count{service="music"} > 0')" ]; do
  [ $(( $(now_ms) - killed )) -gt 60000 ] && fail "no music recovery in Prometheus within 60 s of the kill"
  sleep 1
done
recovery=$(q 'scaler_recovery_seconds_sum{service="music"} / scaler_recovery_seconds_count{service="music"}' |
  python3 -c 'import json, sys; print("%.2f" % float(json.loads(sys.stdin.readline())[1]))')
say "music replica $music_pid SIGKILLed: replaced in ${recovery} s (scaler_recovery_seconds), in Prometheus $(( ($(now_ms) - killed) / 1000 )) s after the kill"

if [ -f ci/dashboards.py ]; then
  music_replica=$(q 'up{service="music"} == 1' | head -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[0]["replica"])')
  python3 ci/dashboards.py lint
  # The service dashboard for every service with traffic (all replicas), then once more
  # for one music replica; the scaler and Fibonacci dashboards once.
  python3 ci/dashboards.py check --prometheus "$api" --dashboard observability/grafana/dashboards/service.json \
    --var service=music --var service=user --var service=playlist --var service=database-gateway --var service=fibonacci
  python3 ci/dashboards.py check --prometheus "$api" --var service=music --var replica="$music_replica"
  say "ci/dashboards.py: lint and check passed (service.json for music, user, playlist, database-gateway, fibonacci; every dashboard with service=music, replica=$music_replica)"
else
  say "ci/dashboards.py is not there (yet): dashboard panels not checked"
fi

# ServiceLatencySLOBurn: every playlist request is slower than its 0.5 s threshold, so
# both burn windows exceed 14.4%; `for: 2m`, so within 4 minutes of the load starting.
while ! firing ServiceLatencySLOBurn service playlist; do
  [ $(( $(now_ms) - load_started )) -gt 240000 ] && { q 'service:http_requests_slower_than_slo:ratio_rate5m' >&2; fail "ServiceLatencySLOBurn did not fire for playlist within 240 s"; }
  sleep 1
done
slo_fired_s=$(python3 -c "print(f'{($(now_ms) - $load_started) / 1000:.1f}')")
slow=$(q 'service:http_requests_slower_than_slo:ratio_rate5m{service="playlist"}' | python3 -c 'import json,sys; print("%.1f%%" % (100 * float(json.loads(sys.stdin.readline())[1])))')
say "ServiceLatencySLOBurn fired for playlist ${slo_fired_s} s after the load started (for: 2m; ${slow} of its requests over 5 min slower than 0.5 s)"

for pid in $loads; do wait "$pid" || true; done
loads=""
say "the loader's summaries (music v2's 500s are expected KOs):"
for f in "$work"/load-*.log; do
  echo "  $(basename "$f" .log):"; tail -n 4 "$f" | sed 's/^/    /'
done

# ReplicasFlapping: five scaling changes of user within seconds (PUT /replicas, as an
# oscillating autoscaler would make them).
admin_token=$(cat "$work/data/scaler-token")
for n in 2 1 2 1 2; do
  curl -sf -X PUT http://127.0.0.1:30010/replicas -H "Authorization: Bearer $admin_token" \
    -H 'Content-Type: application/json' -d "{\"service\":\"user\",\"replicas\":$n}" >/dev/null ||
    fail "PUT /replicas user $n"
  sleep 1
done
scaled=$(now_ms)
until firing ReplicasFlapping service user; do
  [ $(( $(now_ms) - scaled )) -gt 60000 ] && fail "ReplicasFlapping did not fire for user within 60 s of five scaling changes"
  sleep 1
done
flap_fired_s=$(python3 -c "print(f'{($(now_ms) - $scaled) / 1000:.1f}')")
say "ReplicasFlapping fired for user ${flap_fired_s} s after its fifth scaling change in 5 s"

# TargetDown: both fibonacci replicas SIGKILLed with healing off; they stay listed.
fib_pids=$(pgrep -P "$up" -x fibonacci | tr '\n' ' ')
[ "$(wc -w <<<"$fib_pids")" = 2 ] || fail "expected 2 fibonacci replicas, found pids: $fib_pids"
kill -KILL $fib_pids
killed=$(now_ms)
say "SIGKILLed both fibonacci replicas ($fib_pids)"
down=0
while [ "$down" -lt 2 ]; do
  [ $(( $(now_ms) - killed )) -gt 90000 ] && { q 'up{service="fibonacci"}' >&2; fail "TargetDown did not fire for both fibonacci replicas within 90 s"; }
  sleep 1
  down=$(curl -sf "$api/api/v1/alerts" | python3 -c '
import json, sys
print(sum(1 for a in json.load(sys.stdin)["data"]["alerts"]
          if a["labels"].get("alertname") == "TargetDown" and a["labels"].get("service") == "fibonacci"
          and a["state"] == "firing"))')
done
down_fired_s=$(python3 -c "print(f'{($(now_ms) - $killed) / 1000:.1f}')")
listed=$(curl -sf http://127.0.0.1:30010/prometheus/targets | python3 -c '
import json, sys
print(sum(1 for g in json.load(sys.stdin) if g["labels"]["service"] == "fibonacci"))')
[ "$listed" = 2 ] || fail "the scaler lists $listed fibonacci targets after the kill (2 expected: healing is off)"
pgrep -P "$up" -x fibonacci >/dev/null && fail "a fibonacci replica was started again with healing off"
say "TargetDown fired for both fibonacci replicas ${down_fired_s} s after the kill (for: 30s); both still listed, none replaced"

echo
say "figures: $sd targets; ServiceErrorRatioHigh (music) fired ${error_fired_s} s after the load started; ServiceLatencySLOBurn (playlist) ${slo_fired_s} s after; ReplicasFlapping (user) ${flap_fired_s} s after the fifth change; TargetDown (fibonacci x2) ${down_fired_s} s after the kill"
say "passed"
