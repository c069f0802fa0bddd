#!/usr/bin/env bash
# Benchmark the Fibonacci service (release build), back to back in one run:
#   - time from process start to the first 200 on /readiness (target < 100 ms), 5 starts;
#   - resident memory of an idle replica (target < 15 MiB);
#   - wrk at 50 connections: GET /health, then POST /fibonacci {"fibonacci_number": 20}
#     (target: at least 70% of /health), with p50 / p99.
# Figures, not a test: nothing here fails on a slow machine.
#
#   ci/bench-fibonacci.sh [seconds per run, default 10] [connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
rel=${CARGO_TARGET_DIR:-target}/release
duration=${1:-10}
connections=${2:-50}
if ! command -v wrk >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p fibonacci
work=$(mktemp -d)
trap 'kill $fib 2>/dev/null; rm -rf "$work"' EXIT

python3 - "$rel"/fibonacci <<'PY'
import socket, subprocess, sys, time, os
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
            c.sendall(b"GET /readiness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
times = []
for _ in range(5):
    port = free_port()
    env = dict(os.environ, LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.argv[1]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready(port):
        time.sleep(0.0005)
    times.append((time.perf_counter() - t0) * 1000)
    if len(times) == 5:
        time.sleep(2)
        rss = next(l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")).split()[1]
        print(f"idle resident memory: {int(rss) / 1024:.1f} MiB (target < 15 MiB)")
    p.terminate(); p.wait()
print("start to readiness 200: " + ", ".join(f"{t:.1f}" for t in times) + f" ms (median {sorted(times)[2]:.1f} ms, target < 100 ms)")
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LISTEN=127.0.0.1:$port RUST_LOG=warn "$rel"/fibonacci >"$work/fib.log" 2>&1 &
fib=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$base/readiness" >/dev/null && break; sleep 0.05; done
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"fibonacci_number": 20}'
wrk.headers["Content-Type"] = "application/json"
LUA
run() { # name url [script]
  wrk -t2 -c"$connections" -d"${duration}s" --latency ${3:+-s "$3"} "$2" >"$work/$1.txt"
  grep -q "Non-2xx" "$work/$1.txt" && { echo "$1: non-2xx responses" >&2; cat "$work/$1.txt" >&2; exit 1; }
  printf '%-10s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")" \
    "$(awk '$1=="50%" {print $2}' "$work/$1.txt")" "$(awk '$1=="99%" {print $2}' "$work/$1.txt")" >&2
  awk '/Requests\/sec/ {print $2}' "$work/$1.txt"
}
echo "wrk -t2 -c$connections -d${duration}s, $(nproc) cores" >&2
curl -sf "$base/fibonacci?n=20" | grep -q 6765
health=$(run health "$base/health")
fib20=$(run fib-20 "$base/fibonacci" "$work/post.lua")
python3 -c "import sys; print(f'POST /fibonacci n=20 / health = {float(sys.argv[2]) / float(sys.argv[1]):.1%} (target >= 70%)')" "$health" "$fib20"
