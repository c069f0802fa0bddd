#!/usr/bin/env bash
# The balancer against nginx, in front of the same replicas, in one run (lab 02's
# setup): `scaler up` (release) with its two fibonacci replicas; fibonacci's balancer
# (port 30004) and nginx from Debian (1 worker, upstream keepalive 64, round robin over
# the same two replicas) take turns under wrk, ROUNDS times, in each case:
#   GET  /fibonacci?n=20                         at 50 and 500 connections
#   POST /fibonacci {"fibonacci_number": 20, 1 KB} at 50 and 500 connections
# Prints every round's requests/s and p99 of both, the ratio ours/nginx per case
# (median of the rounds), and writes bench-balancer/results.csv. Figures, not a test.
#
#   ci/bench-balancer.sh [ROUNDS, default 3] [SECONDS per run, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
duration=${2:-8}
out=${OUT:-bench-balancer}
rel=${CARGO_TARGET_DIR:-target}/release
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release -q -p scaler -p fibonacci -p database-gateway -p user -p music -p playlist -p loader
work=$(mktemp -d)
mkdir -p "$out"
RUST_LOG=warn "$rel/scaler" up --auth-mode presence --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  kill -INT "$up" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 600); do grep -q '^ready$' "$work/up.log" && break; kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
grep -q '^ready$' "$work/up.log" || { cat "$work/up.log" >&2; exit 1; }
mapfile -t replicas < <(curl -sf http://127.0.0.1:30010/status | python3 -c '
import json, sys
for r in json.load(sys.stdin)["services"]["fibonacci"]["replicas"]:
    print(r["url"].removeprefix("http://"))')
[ "${#replicas[@]}" = 2 ] || { echo "expected 2 fibonacci replicas, got: ${replicas[*]}" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream fibonacci {
    server ${replicas[0]};
    server ${replicas[1]};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://fibonacci;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$nginx_bin" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/fibonacci?n=20" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/fibonacci?n=20" >/dev/null || { cat "$work/nginx/error.log" >&2; exit 1; }

pad=$(python3 -c 'print("x" * 990)')
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"fibonacci_number": 20, "pad": "$pad"}'
wrk.headers["Content-Type"] = "application/json"
EOF
echo 'wrk.method = "GET"' >"$work/get.lua"
body_bytes=$(python3 -c "import sys; print(len(open('$work/post.lua').read().split(\"'\")[1]))")

# run NAME BASE METHOD CONNECTIONS -> "req/s p99_ms"
run() {
  local file="$work/$1-$3-$4.txt" path="/fibonacci"
  [ "$3" = GET ] && path="/fibonacci?n=20"
  wrk -t1 -c"$4" -d"${duration}s" --latency -s "$work/$(tr A-Z a-z <<<"$3").lua" "$2$path" >"$file"
  if grep -q "Non-2xx\|Socket errors" "$file"; then
    echo "$1 $3 c=$4: errors:" >&2; grep "Non-2xx\|Socket errors" "$file" >&2
  fi
  python3 - "$file" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
print(f"{rps:.0f} {p99:.2f}")
PY
}

echo "ci/bench-balancer.sh: $(nproc) cores; replicas ${replicas[*]}; nginx $("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///') on :$port (1 worker, keepalive 64); ours on :30004"
echo "wrk -t1 -d${duration}s; POST body $body_bytes bytes; $rounds rounds, alternating (who goes first alternates too)"
echo "case,round,proxy,rps,p99_ms" >"$out/results.csv"
printf '%-14s %5s   %-28s %-28s\n' case round "ours (req/s, p99)" "nginx (req/s, p99)"
for method in GET POST; do
  for c in 50 500; do
    for r in $(seq "$rounds"); do
      if [ $((r % 2)) = 1 ]; then
        read -r our_rps our_p99 < <(run ours http://127.0.0.1:30004 "$method" "$c")
        read -r ng_rps ng_p99 < <(run nginx "http://127.0.0.1:$port" "$method" "$c")
      else
        read -r ng_rps ng_p99 < <(run nginx "http://127.0.0.1:$port" "$method" "$c")
        read -r our_rps our_p99 < <(run ours http://127.0.0.1:30004 "$method" "$c")
      fi
      echo "$method c=$c,$r,ours,$our_rps,$our_p99" >>"$out/results.csv"
      echo "$method c=$c,$r,nginx,$ng_rps,$ng_p99" >>"$out/results.csv"
      printf '%-14s %5s   %8s  %8s ms          %8s  %8s ms\n' "$method c=$c" "$r" "$our_rps" "$our_p99" "$ng_rps" "$ng_p99"
    done
  done
done
python3 - "$out/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("\nmedian of the rounds: ours / nginx")
for case in dict.fromkeys(r["case"] for r in rows):
    get = lambda proxy, key: statistics.median(float(r[key]) for r in rows if r["case"] == case and r["proxy"] == proxy)
    print(f"  {case:<12} req/s {get('ours','rps'):8.0f} / {get('nginx','rps'):8.0f} = {get('ours','rps')/get('nginx','rps'):.2f}x"
          f"   p99 {get('ours','p99_ms'):7.2f} / {get('nginx','p99_ms'):7.2f} ms")
PY
echo "wrote $out/results.csv"
