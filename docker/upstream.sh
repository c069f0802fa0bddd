#!/usr/bin/env bash
# Stand-ins for the upstream images the Compose profiles name, made here from Debian's
# packages and PyPI, for machines that cannot pull (CI). Users keep the official images
# (compose/.env); this only adds images under scalelab-local/, never an official name:
#
#   scalelab-local/postgres:15   Debian's postgresql-15 behind an entrypoint that keeps
#                                the official image's contract (POSTGRES_USER, POSTGRES_DB,
#                                POSTGRES_PASSWORD[_FILE], PGDATA, pg_isready)
#   scalelab-local/dynamodb:moto moto's DynamoDB-compatible server on port 8000, one
#                                request at a time as DynamoDB applies them
#                                (docker/moto-serial.py)
#   scalelab-local/prometheus:2.42  Debian's prometheus (2.42) with the official image's
#                                contract (the binary as entrypoint, /prometheus for its
#                                data, user nobody, port 9090)
#
#   bash docker/upstream.sh          # builds what is missing (debootstrap, as root)
#   POSTGRES_IMAGE=scalelab-local/postgres:15 DYNAMODB_IMAGE=scalelab-local/dynamodb:moto \
#     PROMETHEUS_IMAGE=scalelab-local/prometheus:2.42 docker compose ...
set -euo pipefail
cd "$(dirname "$0")/.."
postgres=scalelab-local/postgres:15
dynamodb=scalelab-local/dynamodb:moto
prometheus=scalelab-local/prometheus:2.42
base=scalelab-local/debian:bookworm
have() { docker image inspect "$1" >/dev/null 2>&1; }
# An image made before the one-request-at-a-time wrapper is made again.
serial() { docker run --rm --entrypoint test "$dynamodb" -f /opt/moto/serial.py 2>/dev/null; }
if have "$postgres" && have "$dynamodb" && serial && have "$prometheus"; then
  echo "docker/upstream.sh: $postgres, $dynamodb and $prometheus exist"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A base made before Prometheus joined it lacks the package: it is made again.
if ! have "$base" || ! docker run --rm "$base" test -x /usr/bin/prometheus; then
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
  }
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "docker/upstream.sh: debootstrap bookworm (postgresql-15, prometheus, python3) from $mirror"
  started=$(date +%s)
  debootstrap --variant=minbase --include=postgresql-15,prometheus,python3,python3-venv \
    bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # moto in its own virtual environment: the host's pip fetches the wheels from PyPI
  # (with the host's configuration), the image's installs them offline. Both are
  # CPython 3.11 on glibc 2.36 (bookworm).
  pip download -q --disable-pip-version-check -d "$work/root/tmp/wheels" 'moto[server]'
  chroot "$work/root" python3 -m venv /opt/moto
  chroot "$work/root" /opt/moto/bin/pip install -q --disable-pip-version-check \
    --no-index --find-links /tmp/wheels 'moto[server]'
  rm -rf "$work/root/tmp/wheels"
  chroot "$work/root" apt-get clean
  rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin
  tar -C "$work/root" --numeric-owner -c . | docker import - "$base" >/dev/null
  echo "docker/upstream.sh: $base in $(($(date +%s) - started)) s"
fi

mkdir -p "$work/postgres" "$work/dynamodb" "$work/prometheus"
cat >"$work/postgres/entrypoint.sh" <<'SH'
#!/bin/bash
# The official postgres image's contract, on Debian's postgresql-15.
set -euo pipefail
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
password=${POSTGRES_PASSWORD:-}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then password=$(<"$POSTGRES_PASSWORD_FILE"); fi
[ -n "$password" ] || { echo "POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required" >&2; exit 1; }
bin=/usr/lib/postgresql/15/bin
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s' "$password" >"$pwfile"
  chown postgres "$pwfile"
  as_postgres "$bin/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\";" | as_postgres "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
SH
cat >"$work/postgres/Dockerfile" <<EOF
FROM $base
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
EOF
cp docker/moto-serial.py "$work/dynamodb/"
cat >"$work/dynamodb/Dockerfile" <<EOF
FROM $base
COPY moto-serial.py /opt/moto/serial.py
USER nobody
EXPOSE 8000
ENTRYPOINT ["/opt/moto/bin/python3", "/opt/moto/serial.py", "-H", "0.0.0.0", "-p", "8000"]
EOF
cat >"$work/prometheus/Dockerfile" <<EOF
FROM $base
RUN mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
docker build -q -t "$postgres" "$work/postgres" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
docker build -q -t "$dynamodb" "$work/dynamodb" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
docker build -q -t "$prometheus" "$work/prometheus" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^scalelab-local/' | sort
