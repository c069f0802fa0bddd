#!/usr/bin/env bash
# USERS CMPT 756 users against `scaler up` with its defaults (release build, no CPU
# limits, presence auth), the loader on the same machine: scenario 5's requests (a
# music, a user and a playlist read per round, 1 s think) through the ingress, all users
# arriving at once, for SECONDS. ROUNDS runs, each on a fresh platform. Per round it
# prints the loader's table (with the row of requests answered after the first 10 s:
# the steady state), the CPU each process used over the load (cores: 1.00 is one core
# busy for the whole run) and writes bench-users/round-N/ (the loader's report, cpu.csv).
# Figures, not a test.
#
#   ci/bench-users.sh [USERS, default 1500] [SECONDS, default 60] [ROUNDS, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-1500}
duration=${2:-60}
rounds=${3:-1}
warmup=10
out=${OUT:-bench-users}
cargo build --release -q -p scaler -p fibonacci -p database-gateway -p user -p music -p playlist -p loader
rel=${CARGO_TARGET_DIR:-target}/release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$out"

# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

summary=()
for round in $(seq "$rounds"); do
  work=$(mktemp -d)
  dir="$out/round-$round"
  mkdir -p "$dir"
  RUST_LOG=warn "$rel/scaler" up --auth-mode presence --bin-dir "$rel" --data-dir "$work/data" >"$work/up.log" 2>&1 &
  up=$!
  trap 'kill -INT $up 2>/dev/null || true; rm -rf "$work"' EXIT
  for _ in $(seq 600); do grep -q '^ready$' "$work/up.log" && break; kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
  grep -q '^ready$' "$work/up.log" || { echo "scaler up did not get ready:" >&2; cat "$work/up.log" >&2; exit 1; }

  # Scenario 5's requests and think time, for $users users.
  sed -e "s|^injection = .*|injection = { kind = \"steps\", steps = [[$users, \"${duration}s\"]] }|" \
    -e "s|\.\./resources/|$PWD/gatling/resources/|" \
    gatling/scenarios/cmpt756-scenario-5.toml >"$work/users.toml"
  procs=("$up" $(pgrep -P "$up"))
  declare -A before=()
  for pid in "${procs[@]}"; do before[$pid]=$(ticks "$pid"); done
  started=$(date +%s.%N)
  until_s=$(( $(date +%s) + duration ))
  "$rel/loader" run "$work/users.toml" --duration "${duration}s" \
    --warmup "${warmup}s" --out "$dir" >"$work/loader.log" 2>&1 &
  loader=$!
  # The loader's own CPU is read just before it exits (its report is built after the
  # load; that part is not counted).
  loader_ticks=0
  while kill -0 "$loader" 2>/dev/null; do
    t=$(ticks "$loader"); [ "$t" -gt 0 ] && loader_ticks=$t
    [ "$(date +%s)" -lt "$until_s" ] || break
    sleep 1
  done
  # Replicas started during the load count from their start.
  for pid in $(pgrep -P "$up"); do [ -n "${before[$pid]:-}" ] || { before[$pid]=0; procs+=("$pid"); }; done
  declare -A after=()
  for pid in "${procs[@]}"; do after[$pid]=$(ticks "$pid"); done
  ended=$(date +%s.%N)
  status=0
  wait "$loader" || status=$?
  tail -n 8 "$work/loader.log"
  hz=$(getconf CLK_TCK)
  {
    echo "process,pid,cores"
    for pid in "${procs[@]}"; do
      name=$(cat "/proc/$pid/comm" 2>/dev/null || echo gone)
      echo "$name,$pid,$(python3 -c "print(round(($((after[$pid] - before[$pid])))/$hz/($ended-$started), 3))")"
    done
    echo "loader,$loader,$(python3 -c "print(round($loader_ticks/$hz/($ended-$started), 3))")"
  } >"$dir/cpu.csv"
  line=$(python3 - "$dir" "$round" "$status" <<'PY'
import csv, json, sys
d, rnd, status = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(f"{d}/results.json"))
rows = {x["name"]: x for x in r["requests"]}
whole = rows["all requests"]
steady = next(x for n, x in rows.items() if n.startswith("after the first"))
cpu = {}
for row in csv.DictReader(open(f"{d}/cpu.csv")):
    cpu[row["process"]] = cpu.get(row["process"], 0) + float(row["cores"])
cores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
print(f"round {rnd}: {whole['count']} requests ({whole['requests_per_second']:.0f}/s), {whole['ko']} failed; "
      f"whole run p50 {whole['p50_ms']:.1f} p99 {whole['p99_ms']:.1f} max {whole['max_ms']:.1f} ms; "
      f"after {steady['name'].split()[-2]} s p50 {steady['p50_ms']:.1f} p99 {steady['p99_ms']:.1f} max {steady['max_ms']:.1f} ms; "
      f"CPU (cores): {cores}; loader exit {status}")
PY
)
  echo "$line"
  summary+=("$line")
  kill -INT "$up" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$work"
  trap - EXIT
done
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
