#!/usr/bin/env bash
# Soak: USERS CMPT 756 users (1 s think; a music, a user and a playlist read each round,
# as scenario 5) through `scaler up`'s ingress for DURATION seconds, sampling every
# platform process (the scaler and its replicas) and the loader every 10 s. Checks:
#   - no failed request after the first 30 s;
#   - resident memory of every platform process grows under 10% from minute 2 to the
#     end (minute 2's median against the lowest sample of the last two minutes: a leak
#     raises the floor, a burst comes and goes);
#   - open file descriptors stable: the same floor at most 10% (or 32) above minute 2's.
# The loader is sampled and reported, not checked: it keeps every request's sample.
# Prints a line per process and writes $OUT (default soak-report/): samples.csv,
# results.json and index.html of the loader, summary.json.
#
#   ci/soak.sh [DURATION_S, default 600] [USERS, default 1500]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
users=${2:-1500}
out=${OUT:-soak-report}
cargo build --profile demo --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/demo
work=$(mktemp -d)
mkdir -p "$out"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$bin/scaler" up --bin-dir "$bin" --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
loader=
cleanup() {
  [ -n "$loader" ] && kill "$loader" 2>/dev/null || true
  kill -INT "$up" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
  # The scaler's log and its replicas' logs stay with the report (events, replacements).
  cp "$work/up.log" "$out/scaler-up.log" 2>/dev/null || true
  cp -r "$work/data/logs" "$out/logs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 600); do grep -q '^ready$' "$work/up.log" && break; kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
grep -q '^ready$' "$work/up.log" || { echo "scaler up did not get ready:" >&2; cat "$work/up.log" >&2; exit 1; }

# A course user (scaler up allows their uid-only login).
token=$(curl -sf -X PUT http://127.0.0.1:30000/api/v1/user/login -d '{"uid":"b66f61e7-4fad-402f-aaad-101e3e2522d3"}')
cat >"$work/soak.toml" <<EOF
name = "soak"
description = "$users users, 1 s think, music + user + playlist reads, ${duration} s"
think = "1s"
forever = true
feeder = { file = "$PWD/gatling/resources/music.csv", mode = "circular" }
injection = { kind = "steps", steps = [[$users, "${duration}s"]] }

[[requests]]
name = "read music"
service = "music"
path = "/api/v1/music/\${UUID}"
headers = { Authorization = "Bearer $token" }

[[requests]]
name = "read user"
service = "user"
path = "/api/v1/user/b66f61e7-4fad-402f-aaad-101e3e2522d3"
headers = { Authorization = "Bearer $token" }

[[requests]]
name = "read playlist"
service = "playlist"
path = "/api/v1/playlist/073ebbe0-3b98-4602-b7ed-2615ae9ee7b1"
headers = { Authorization = "Bearer $token" }
EOF

echo "ci/soak.sh: $users users for $duration s through the ingress (127.0.0.1:30080); a sample every 10 s"
"$bin/loader" run "$work/soak.toml" --duration "${duration}s" --out "$out" >"$work/loader.log" 2>&1 &
loader=$!
started=$(date +%s)
echo "t_s,pid,name,rss_kib,fds" >"$out/samples.csv"
sample() {
  local t=$(($(date +%s) - started))
  for pid in "$up" $(pgrep -P "$up") "$loader"; do
    [ -r "/proc/$pid/status" ] || continue
    local name rss fds
    name=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$t,$pid,$name,$rss,$fds" >>"$out/samples.csv"
  done
  if [ $((t % 60)) -lt 10 ]; then echo "ci/soak.sh: ${t} s"; fi
}
while kill -0 "$loader" 2>/dev/null; do
  sample
  sleep 10
done
loaded=0
wait "$loader" || loaded=$?
loader=
tail -n 20 "$work/loader.log"
[ "$loaded" = 0 ] || echo "ci/soak.sh: the loader exited with $loaded" >&2

python3 - "$out" "$duration" "$users" <<'PY'
import csv, json, sys
out, duration, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
results = json.load(open(f"{out}/results.json"))
timeline = results["timeline"]
total = sum(s["requests"] for s in timeline)
early = sum(s["errors"] for s in timeline if s["second"] < 30)
late = sum(s["errors"] for s in timeline if s["second"] >= 30)
samples = {}
for row in csv.DictReader(open(f"{out}/samples.csv")):
    samples.setdefault((row["pid"], row["name"]), []).append(
        (int(row["t_s"]), int(row["rss_kib"]), int(row["fds"])))
start = min(120, duration // 5)
window = max(30, min(60, duration // 10))
def median(values):
    values = sorted(values)
    return values[len(values) // 2]
failures, processes = [], []
if late:
    failures.append(f"{late} failed requests after the first 30 s")
for (pid, name), rows in sorted(samples.items(), key=lambda kv: kv[0][1]):
    later = [r for r in rows if r[0] >= start]
    if len(later) < 2 or later[-1][0] - later[0][0] < 2 * window:
        continue  # a process that came or went during the run
    # The first window's median against the floor of the last two windows: a leak
    # raises the floor; a burst of connections (or a pause of the machine, after which
    # clients open more) comes and goes, and idle connections close again.
    first = [r for r in later if r[0] < later[0][0] + window]
    last = [r for r in later if r[0] > later[-1][0] - 2 * window]
    t0, t1 = first[0][0], last[-1][0]
    rss0, rss1 = median([r[1] for r in first]), min(r[1] for r in last)
    fd0, fd1 = median([r[2] for r in first]), min(r[2] for r in last)
    growth = (rss1 - rss0) / rss0 * 100
    fds_max = max(r[2] for r in later)
    # The loader keeps every request's sample for exact percentiles (about 24 bytes a
    # request): it grows with the run by design, and it is the tool, not the platform.
    measured = name != "loader"
    processes.append({"name": name, "pid": int(pid), "from_s": t0, "to_s": t1, "rss_kib": [rss0, rss1],
                      "rss_growth_pct": round(growth, 1), "fds": [fd0, fd1], "fds_max": fds_max,
                      "checked": measured})
    print(f"ci/soak.sh: {name:<18} pid {pid:>7}: resident {rss0/1024:7.1f} -> {rss1/1024:7.1f} MiB "
          f"({growth:+.1f}%), open files {fd0} -> {fd1} (max {fds_max}); median of {t0}-{t0 + window} s, "
          f"lowest of {t1 - 2 * window}-{t1} s" + ("" if measured else " (not checked: the load generator)"))
    if not measured:
        continue
    if growth >= 10:
        failures.append(f"{name} ({pid}) resident memory grew {growth:.1f}% from {t0} s to {t1} s")
    if fd1 - fd0 > max(32, fd0 // 10):
        failures.append(f"{name} ({pid}) open files went from {fd0} to {fd1}")
summary = {"users": users, "duration_s": duration, "requests": total, "errors_first_30s": early,
           "errors_after_30s": late, "processes": processes, "failures": failures}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(f"ci/soak.sh: {total} requests ({total / max(1, len(timeline)):.0f}/s), {early} failed in the first 30 s, "
      f"{late} after")
if not processes:
    failures.append("no process was sampled from the start of the comparison to the end")
if failures:
    print("ci/soak.sh: FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print("ci/soak.sh: passed")
PY
