#!/usr/bin/env bash
# Creates the Secret `scalelab-secrets` in the namespace `scalelab` with random values
# (no value lives in the repository), as Compose's `secrets` job does:
#
#   jwt-secret          HS256 key of user, music, playlist (JWT_SECRET_FILE)
#   datastore-token     the services' bearer token for the gateway (DATASTORE_TOKEN_FILE)
#   loader-token        the loader's token for the gateway's /load (SVC_LOADER_TOKEN_FILE)
#   scaler-token        the scaler's admin API (SCALER_TOKEN_FILE)
#   postgres-password   PostgreSQL's password (overlay local-postgres)
#   postgres-url        the gateway's DATABASE_URL_FILE for it
#
#   bash k8s/secrets.sh             # create it if missing; an existing one is kept
#   bash k8s/secrets.sh --rotate    # new values (then restart the pods)
#
# Uses the current kubectl context; NAMESPACE overrides the namespace.
set -euo pipefail
ns=${NAMESPACE:-scalelab}
name=scalelab-secrets

if [ "${1:-}" != --rotate ] && kubectl -n "$ns" get secret "$name" >/dev/null 2>&1; then
  echo "k8s/secrets.sh: $ns/$name exists, kept (--rotate replaces it)"
  exit 0
fi

# 32 random bytes, hex: as `scaler secrets` makes them (and >= the 32 bytes HS256 wants).
rand() {
  if command -v openssl >/dev/null; then
    openssl rand -hex 32
  else
    python3 -c 'import secrets; print(secrets.token_hex(32))'
  fi
}
declare -A v
for k in jwt-secret datastore-token loader-token scaler-token postgres-password; do v[$k]=$(rand); done
v[postgres-url]="postgres://scalelab:${v[postgres-password]}@postgres:5432/scalelab"

# The namespace first, so this can run before `kubectl apply -k` (which labels it).
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Values through file descriptors (printf is a builtin): never on a command line,
# never in a file.
kubectl create secret generic "$name" -n "$ns" \
  --from-file=jwt-secret=<(printf %s "${v[jwt-secret]}") \
  --from-file=datastore-token=<(printf %s "${v[datastore-token]}") \
  --from-file=loader-token=<(printf %s "${v[loader-token]}") \
  --from-file=scaler-token=<(printf %s "${v[scaler-token]}") \
  --from-file=postgres-password=<(printf %s "${v[postgres-password]}") \
  --from-file=postgres-url=<(printf %s "${v[postgres-url]}") \
  --dry-run=client -o yaml |
  kubectl label --local -f - app.kubernetes.io/part-of=scalelab -o yaml |
  kubectl apply -f - >/dev/null
echo "k8s/secrets.sh: $ns/$name written (jwt-secret, datastore-token, loader-token, scaler-token, postgres-password, postgres-url)"
