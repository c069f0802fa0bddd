#!/usr/bin/env bash
# Pages in a real browser (Debian's headless Chromium, installed if missing):
#   - a `loader run` HTML report opens without errors and shows its four charts;
#   - the Fibonacci service's live page runs its script (the CPU figure gets filled in);
#   - the scaler's dashboard shows a backend named with markup as text, not as markup.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
if ! command -v chromium >/dev/null; then
  echo "ci/browser.sh: installing chromium from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
cargo build -q --workspace --bins
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LISTEN=127.0.0.1:$port RUST_LOG=warn "$bin/fibonacci" >"$work/fib.log" 2>&1 &
fib=$!
up=
trap 'kill $fib 2>/dev/null; [ -n "$up" ] && kill -INT $up 2>/dev/null; sleep 1; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
browser() { # url -> the DOM after scripts ran; console messages to $work/console.log
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$work/profile-$RANDOM" \
    --enable-logging=stderr --v=0 --virtual-time-budget=5000 --dump-dom "$1" 2>>"$work/console.log"
}

RATE=50 DURATION=3s "$bin/loader" run fibonacci-rate --service "fibonacci=http://127.0.0.1:$port" --out "$work/report" >/dev/null 2>&1
dom=$(browser "file://$work/report/index.html")
charts=$(grep -o '<svg class="chart"' <<<"$dom" | wc -l)
[ "$charts" = 4 ] || { echo "the report shows $charts charts, not 4" >&2; exit 1; }
grep -q '<table>' <<<"$dom"
echo "ci/browser.sh: the loader report renders with $charts charts"

dom=$(browser "http://127.0.0.1:$port/")
cpu=$(grep -o '<b id="cpu">[^<]*</b>' <<<"$dom" || true)
case "$cpu" in
  *'>–<'*|'') echo "the live page's script did not fill the CPU figure: $cpu" >&2; exit 1 ;;
esac
echo "ci/browser.sh: the fibonacci page is live ($cpu)"
# The dashboard: a backend whose URL carries markup (PUT /servers takes any http:// URL).
"$bin/scaler" up --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 600); do grep -q '^ready$' "$work/up.log" && break; kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
grep -q '^ready$' "$work/up.log" || { echo "scaler up did not get ready:" >&2; cat "$work/up.log" >&2; exit 1; }
curl -sf -X PUT "http://127.0.0.1:30010/servers?service=fibonacci" -H "Authorization: Bearer $(cat "$work/data/scaler-token")" \
  -H 'Content-Type: application/json' -d '{"adds": ["http://x/<img src=x onerror=alert(1)>"]}' >/dev/null
# The dashboard streams /events, so virtual time never runs out there: load it with a
# plain timeout, again until its first refresh has filled the table.
live_dom() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$work/profile-$RANDOM" \
    --enable-logging=stderr --v=0 --timeout=3000 --dump-dom "$1" 2>>"$work/console.log"
}
for _ in $(seq 20); do
  dom=$(live_dom "http://127.0.0.1:30010/" || true)
  grep -q 'fibonacci-1</td>' <<<"$dom" && break
  sleep 0.5
done
grep -q 'fibonacci-1</td>' <<<"$dom" || { echo "the dashboard never showed its replicas" >&2; exit 1; }
grep -q 'http://x/&lt;img src=x onerror=alert(1)&gt;' <<<"$dom" || { echo "the dashboard does not show the backend's name as text" >&2; exit 1; }
if grep -q '<img' <<<"$dom"; then echo "the dashboard turned a backend's name into markup" >&2; exit 1; fi
echo "ci/browser.sh: the dashboard shows a backend named with markup as text"
kill -INT "$up"; wait "$up" 2>/dev/null || true; up=

if grep -E 'Uncaught|SyntaxError|ReferenceError' "$work/console.log"; then
  echo "script errors in the browser console" >&2; exit 1
fi
echo "ci/browser.sh: passed"
