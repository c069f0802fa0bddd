#!/usr/bin/env bash
# `loader sweep` against ApacheBench, back to back on the same endpoint (the
# Fibonacci service, release build). Figures, not a test.
#
#   ci/bench-sweep.sh [requests, default 2000] [concurrencies, default 10,100,500] [runs, default 5]
#
# For each concurrency the two tools run alternately `runs` times (a run of 2000
# requests lasts tens of milliseconds on a laptop, so one run of each is mostly noise)
# and the medians are compared, like for like:
#   mean      the mean of the requests' own times: the loader's `mean_ms`; for ab, the
#             mean of the per-request times it sorts for its percentiles (read from its
#             `-e` file, 101 quantiles with microseconds, so ab's whole-millisecond
#             "Total" row is not needed);
#   t/req     ab's headline "Time per request (mean)", concurrency x wall time /
#             requests, and the loader's `time_per_request_ms`, computed the same way;
#   p98, longest  from the same sorted times.
# Both tools start the clock before opening the clients' connections and count a
# connection's setup in its first request.
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
requests=${1:-2000}
levels=${2:-10,100,500}
runs=${3:-5}
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
echo "fibonacci $url: $requests requests per run, $runs runs of each tool per concurrency, alternating"
for c in ${levels//,/ }; do
  for r in $(seq "$runs"); do
    "$rel/loader" sweep "$url" --concurrency "$c" --requests "$requests" --out "$work/sweep" >/dev/null 2>"$work/loader.err" \
      || { cat "$work/loader.err" >&2; exit 1; }
    python3 - "$work/sweep/results.json" "$c" >>"$work/runs.tsv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["targets"][0]["runs"][0]
assert r["failures"] == 0, f"loader: {r['failures']} failed requests"
print(sys.argv[2], "loader", r["mean_ms"], r["time_per_request_ms"], r["p98_ms"], r["max_ms"], sep="\t")
PY
    ab -k -q -n "$requests" -c "$c" -e "$work/ab.csv" "$url" >"$work/ab.txt" 2>&1 || { cat "$work/ab.txt" >&2; exit 1; }
    python3 - "$work/ab.txt" "$work/ab.csv" "$c" >>"$work/runs.tsv" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
failed = int(re.search(r"Failed requests:\s+(\d+)", text).group(1))
assert failed == 0, f"ab: {failed} failed requests"
headline = float(re.search(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)\n", text).group(1))
q = [float(line.split(",")[1]) for line in open(sys.argv[2]).read().splitlines()[1:]]
mean = sum((q[i] + q[i + 1]) / 2 for i in range(100)) / 100
print(sys.argv[3], "ab", mean, headline, q[98], q[100], sep="\t")
PY
  done
done
python3 - "$work/runs.tsv" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    c, tool, *values = line.split("\t")
    runs[(int(c), tool)].append([float(v) for v in values])
names = ["mean", "t/req", "p98", "longest"]
print(f"\n{'conc':>5} {'':>7}" + "".join(f" {n + ' ms':>12}" for n in names))
worst = [0.0] * 4
for c in sorted({c for c, _ in runs}):
    med = {}
    for tool in ("loader", "ab"):
        med[tool] = [statistics.median(col) for col in zip(*runs[(c, tool)])]
        print(f"{c:>5} {tool:>7}" + "".join(f" {v:>12.3f}" for v in med[tool]))
    ratios = [l / a if a else float("nan") for l, a in zip(med["loader"], med["ab"])]
    print(f"{c:>5} {'ratio':>7}" + "".join(f" {r:>12.2f}" for r in ratios))
    worst = [max(w, abs(r - 1)) for w, r in zip(worst, ratios)]
print("\nthe loader's medians against ab's, largest difference over the concurrencies (issue 6 asks for 20%):")
print("  " + ", ".join(f"{n} {w * 100:.0f}%" for n, w in zip(names, worst))
      + " (longest is one request per run)")
print("every run (concurrency, tool, mean, t/req, p98, longest):")
print(open(sys.argv[1]).read(), end="")
PY
