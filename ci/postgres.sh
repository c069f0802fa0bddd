#!/usr/bin/env bash
# The gateway suite on PostgreSQL: installs PostgreSQL from Debian packages if it is
# missing, starts a throwaway cluster on 127.0.0.1 and a free port, runs the same
# engine-agnostic suite as on SQLite, then the outage test (readiness follows the
# database), and removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ]; then
  echo "ci/postgres.sh: installing PostgreSQL from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
PGBIN=$(pg_bin)
[ -x "$PGBIN/initdb" ] || { echo "ci/postgres.sh: no initdb under /usr/lib/postgresql" >&2; exit 1; }

# PostgreSQL refuses to run as root: use the postgres account when we are root.
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); else as_pg=(); fi
work=$(mktemp -d /tmp/scalelab-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_ctl=("${as_pg[@]}" "$PGBIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w)

stop() {
  "${pg_ctl[@]}" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop EXIT

"${as_pg[@]}" "$PGBIN/initdb" -D "$work/data" -A trust -U postgres >/dev/null
opts="-c listen_addresses=127.0.0.1 -p $port -k $work -c max_connections=400 -c fsync=on"
"${pg_ctl[@]}" -o "$opts" start >/dev/null
echo "ci/postgres.sh: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"

export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
cargo test -p database-gateway --test api

export TEST_PG_STOP="${pg_ctl[*]} stop -m fast"
export TEST_PG_START="${pg_ctl[*]} -o '$opts' start"
cargo test -p database-gateway --test api -- --ignored --nocapture outage::
echo "ci/postgres.sh: passed"
