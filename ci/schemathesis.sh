#!/usr/bin/env bash
# Schema-driven testing: schemathesis (PyPI) against the OpenAPI document of user, music
# and playlist, each run on real binaries over a real gateway (SQLite) in jwt mode, with
# a real token. Every check: no 5xx, every status, content type, header and body as the
# document says, bad input refused, good input accepted.
#
#   ci/schemathesis.sh [MAX_EXAMPLES per operation, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-50}
command -v schemathesis >/dev/null || pip install -q 'schemathesis>=4,<5'
cargo build -q -p database-gateway -p user -p music -p playlist --bins
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name port env...
  local name=$1 port=$2; shift 2
  env -i PATH="$PATH" LISTEN="127.0.0.1:$port" "$@" "$bin/$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readiness" >/dev/null && return; sleep 0.1; done
  echo "$name did not get ready:" >&2; cat "$work/$name.log" >&2; exit 1
}
secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
gw=$(free_port); user=$(free_port); music=$(free_port); playlist=$(free_port)
start database-gateway "$gw" DATABASE_URL="sqlite://$work/data.db" DATASTORE_TOKEN="$token"
common=(DATASTORE_URL="http://127.0.0.1:$gw" DATASTORE_TOKEN="$token" JWT_SECRET="$secret")
start user "$user" "${common[@]}"
start music "$music" "${common[@]}"
start playlist "$playlist" "${common[@]}"

# A user with a password and its token, for one service's run.
login() { # user-port
  local password uid
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  uid=$(curl -sf -X POST "http://127.0.0.1:$1/api/v1/user/" -H 'Content-Type: application/json' \
    -d "{\"fname\":\"Schema\",\"lname\":\"Thesis\",\"email\":\"st-$password@example.org\",\"password\":\"$password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["user_id"])')
  curl -sf -X PUT "http://127.0.0.1:$1/api/v1/user/login" -H 'Content-Type: application/json' \
    -d "{\"uid\":\"$uid\",\"password\":\"$password\"}"
}

failed=()
st() { # label url extra-args...
  local label=$1 url=$2; shift 2
  echo "== schemathesis: $label ($url)"
  # A token of its own for each run: the user run may delete or log off its user.
  local jwt
  jwt=$(login "$user")
  if schemathesis --config-file ci/schemathesis.toml run "$url" \
    --header "Authorization: Bearer $jwt" \
    --max-examples "$examples" --workers 2 --seed 756 \
    --suppress-health-check too_slow,filter_too_much \
    --no-color "$@" >"$work/$label.out" 2>&1; then
    grep -E "^(Test cases| +[0-9]+ generated)|generated," "$work/$label.out" | sed "s/^/  $label: /"
  else
    sed -n '/FAILURES/,$p' "$work/$label.out" | head -n 80
    grep -A4 "^Warnings:" "$work/$label.out" || true
    failed+=("$label")
  fi
}
# The user's own account would be deleted part way (its id is in the list it reads):
# the other operations first, then deletion alone.
st user "http://127.0.0.1:$user/openapi.json" --exclude-path '/api/v1/user/{user_id}' --exclude-method DELETE
st user-delete "http://127.0.0.1:$user/openapi.json" --include-path '/api/v1/user/{user_id}' --include-method DELETE
st music "http://127.0.0.1:$music/openapi.json"
st playlist "http://127.0.0.1:$playlist/openapi.json"
if [ ${#failed[@]} -gt 0 ]; then
  echo "ci/schemathesis.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "ci/schemathesis.sh: passed (user, music, playlist; $examples examples per operation and phase)"
