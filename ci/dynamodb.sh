#!/usr/bin/env bash
# The gateway suite on the DynamoDB engine: installs moto's DynamoDB-compatible server
# from PyPI if missing, starts it on 127.0.0.1 and a free port, creates the tables with
# `loader tables create` and checks the gateway starts on them (and refuses missing
# ones), runs the same engine-agnostic suite as on SQLite and PostgreSQL (each test on
# tables of its own), deletes the tables and stops the server.
#
# Where it may (root, `unshare` available), the run happens in a network namespace of
# its own that has only a loopback interface: any attempt to reach AWS or an instance
# metadata address fails there, so a green run shows none was needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug

# Everything stays on 127.0.0.1: no instance metadata, no profiles, dummy static keys.
export AWS_EC2_METADATA_DISABLED=true AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN HTTP_PROXY HTTPS_PROXY http_proxy https_proxy || true

if [ "${1:-}" != --isolated ]; then
  if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    echo "ci/dynamodb.sh: installing moto[server] from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  fi
  # Everything that needs the network (crates) happens before isolation.
  cargo build -q -p loader -p database-gateway
  cargo test -q -p database-gateway --test api --no-run 2>/dev/null
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    echo "ci/dynamodb.sh: running in a network namespace with loopback only"
    exec unshare -n bash "$0" --isolated
  fi
else
  ip link set lo up
  export CARGO_NET_OFFLINE=true
fi

work=$(mktemp -d /tmp/scalelab-dynamo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# One request at a time, as DynamoDB applies them (see docker/moto-serial.py).
python3 docker/moto-serial.py -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
cleanup() { kill "$moto" 2>/dev/null || true; [ -n "${gw:-}" ] && kill "$gw" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export DYNAMODB_URL="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -s -o /dev/null "$DYNAMODB_URL" && break; sleep 0.2; done
echo "ci/dynamodb.sh: moto $(python3 -c 'import moto; print(moto.__version__)') on $DYNAMODB_URL"

cargo build -q -p loader -p database-gateway
"$bin"/loader tables create --suffix ci
"$bin"/loader tables create --suffix ci | grep -q "already there"

# The gateway refuses tables that do not exist, saying how to make them...
if DATABASE_URL=dynamodb://missing LISTEN=127.0.0.1:0 "$bin"/database-gateway >"$work/missing.log" 2>&1; then
  echo "the gateway started without its tables" >&2; exit 1
fi
grep -q "loader tables create --suffix missing" "$work/missing.log" || { cat "$work/missing.log" >&2; exit 1; }

# ...and serves on the ones the loader made.
gw_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL=dynamodb://ci LISTEN=127.0.0.1:$gw_port "$bin"/database-gateway >"$work/gateway.log" 2>&1 &
gw=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$gw_port/readiness" >/dev/null && break; sleep 0.1; done
id=$(curl -sf -X POST "http://127.0.0.1:$gw_port/api/v1/datastore/write" -d '{"objtype":"music","Artist":"Backxwash","SongTitle":"Bad Juju"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["music_id"])')
curl -sf "http://127.0.0.1:$gw_port/api/v1/datastore/read?objtype=music&objkey=$id" | grep -q "Bad Juju"
kill "$gw"; gw=

TEST_DATABASE_URL=dynamodb:// cargo test -p database-gateway --test api

"$bin"/loader tables delete --suffix ci --yes
echo "ci/dynamodb.sh: passed"
