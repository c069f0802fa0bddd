#!/usr/bin/env bash
# The README's test command as a new user meets it, on any machine of the project's
# kind, busy or not: `git clone` of this checkout's HEAD into a temporary folder with
# its own target folder (debug profile), `cargo test --workspace` RUNS times in a row on
# the machine as it is, then once more while another process keeps one core 100% busy
# (stress-ng --cpu 1 from Debian, installed if missing; a shell busy loop otherwise).
# Prints every run's `test result:` lines and a summary; fails if any run failed.
#
#   ci/suite-under-load.sh [RUNS, default 3]
#
#   CARGO_TARGET_DIR=dir  build there instead of a fresh target folder in the clone
#                         (CI passes its warm one; a fresh one costs a clean build)
#   KEEP=1                keep the clone and the logs
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
[[ "$runs" =~ ^[0-9]+$ ]] || { echo "usage: ci/suite-under-load.sh [RUNS]" >&2; exit 2; }
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "ci/suite-under-load.sh: note: uncommitted changes are not in the clone (it takes HEAD $(git rev-parse --short HEAD))" >&2
fi
work=$(mktemp -d)
busy=
cleanup() {
  [ -n "$busy" ] && kill "$busy" 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then echo "ci/suite-under-load.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
git clone -q --no-hardlinks "$PWD" "$work/clone"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$work/clone/target}
export CARGO_TERM_COLOR=never
echo "ci/suite-under-load.sh: clone of $(git rev-parse --short HEAD) in $work/clone, target $CARGO_TARGET_DIR, $(nproc) cores"

started=$(date +%s)
(cd "$work/clone" && cargo test --workspace --no-run -q 2>"$work/build.log") \
  || { tail -30 "$work/build.log" >&2; exit 1; }
echo "ci/suite-under-load.sh: built in $(($(date +%s) - started)) s"

summary=()
failed=0
suite() { # name -> runs the suite once, records its line in the summary
  local name=$1 log="$work/$1.log" t0 status=0
  t0=$(date +%s)
  (cd "$work/clone" && cargo test --workspace >"$log" 2>&1) || status=$?
  local secs=$(($(date +%s) - t0))
  local passed fails
  passed=$(grep -o '[0-9]* passed' "$log" | awk '{s+=$1} END {print s+0}')
  fails=$(grep -o '[0-9]* failed' "$log" | awk '{s+=$1} END {print s+0}')
  echo "== $name: exit $status, $passed passed, $fails failed, $secs s"
  grep -E '^test result:' "$log"
  if [ "$status" != 0 ]; then
    failed=1
    grep -E -A12 '^---- |^failures:|panicked at' "$log" | head -80 >&2 || true
  fi
  summary+=("$(printf '%-14s exit %-3s %4s passed %3s failed %5s s' "$name" "$status" "$passed" "$fails" "$secs")")
}

for i in $(seq "$runs"); do suite "idle-$i"; done

if ! command -v stress-ng >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 \
    && apt-get install -y -qq stress-ng >/dev/null 2>&1 || true
fi
if command -v stress-ng >/dev/null; then
  stress-ng --cpu 1 --cpu-method int64 --quiet --timeout 0 &
  busy=$!
  how="stress-ng --cpu 1"
else
  bash -c 'while :; do :; done' &
  busy=$!
  how="a shell busy loop"
fi
sleep 1
# The busy processes' CPU (clock ticks) from /proc: the one started and its workers.
ticks() {
  local pid total=0
  for pid in "$busy" $(pgrep -P "$busy" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
cpu0=$(ticks); t0=$(date +%s%N)
suite "one-core-busy"
cpu1=$(ticks); t1=$(date +%s%N)
kill "$busy" 2>/dev/null || true
wait "$busy" 2>/dev/null || true
busy=
share=$(awk -v c="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v ns="$((t1 - t0))" \
  'BEGIN {printf "%.0f", 100 * c / hz / (ns / 1e9)}')
echo "ci/suite-under-load.sh: $how kept $share% of a core busy during the loaded run"

echo "== summary"
printf '%s\n' "${summary[@]}"
[ "$failed" = 0 ] || { echo "ci/suite-under-load.sh: FAILED" >&2; exit 1; }
echo "ci/suite-under-load.sh: passed"
