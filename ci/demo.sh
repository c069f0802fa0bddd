#!/usr/bin/env bash
# `scaler demo` as a user runs it: build (the `demo` profile), run it (steps of STEP,
# default 20s), then check the report: replicas rose with the user steps, the killed
# music replica was replaced within 5 s, at least 99% of requests answered, four charts with the
# killed/replaced markers.
#
#   ci/demo.sh [STEP, default 20s]
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-20s}
out=${OUT:-demo-report}
start=$(date +%s)
cargo build --profile demo --workspace --bins
built=$(date +%s)
target/demo/scaler demo --step "$step" --out "$out"
end=$(date +%s)
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
r = json.load(open(f"{out}/demo.json"))
scaled = ["user", "music", "playlist"]
first, last = r["steps"][0]["replicas"], r["steps"][-1]["replicas"]
assert all(first[s] == 1 for s in scaled), f"step 0 should run 1 replica each: {first}"
assert sum(last[s] for s in scaled) > 3, f"no service scaled up by 1500 users: {last}"
# Bounds on behaviour, not speeds: the replacement starts while 900 users load the machine.
assert r["killed"] is not None and r["killed"][1] < 5.0, f"killed replica not replaced in 5 s: {r['killed']}"
assert r["requests"] > 0 and r["failed"] <= 0.01 * r["requests"], f"{r['failed']} of {r['requests']} failed"
html = open(f"{out}/index.html").read()
assert html.count('<svg class="chart"') == 4, "four charts"
assert 'class="event killed"' in html and 'class="event replaced"' in html, "healing markers"
print(f"ci/demo.sh: replicas (user, music, playlist) {[first[s] for s in scaled]} at 3 users -> "
      f"{[last[s] for s in scaled]} at 1500; {r['killed'][0]} replaced in {r['killed'][1]:.2f} s; "
      f"{r['requests']} requests, {r['failed']} failed")
PY
echo "ci/demo.sh: build $((built - start)) s, demo $((end - built)) s, report $out/index.html"
