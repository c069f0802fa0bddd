#!/usr/bin/env bash
# kustomize reads no file outside a kustomization's directory, so k8s/ keeps copies of
# a few files that live elsewhere in the repository. This refreshes them from their
# originals; with --check it changes nothing and fails when a copy differs (ci/k8s.sh).
#
#   bash k8s/sync-copies.sh           # after editing a dashboard, a rule or a CSV
#   bash k8s/sync-copies.sh --check
set -euo pipefail
cd "$(dirname "$0")/.."

# original -> copy
pairs=(
  gatling/resources/users.csv                 k8s/base/course/users.csv
  gatling/resources/music.csv                 k8s/base/course/music.csv
  gatling/resources/playlist.csv              k8s/base/course/playlist.csv
  observability/prometheus/rules/recording.yml  k8s/components/observability/rules/recording.yml
  observability/prometheus/rules/alerts.yml     k8s/components/observability/rules/alerts.yml
)
for f in observability/grafana/dashboards/*.json; do
  pairs+=("$f" "k8s/components/observability/dashboards/$(basename "$f")")
done

check=false
[ "${1:-}" = --check ] && check=true
stale=0
for ((i = 0; i < ${#pairs[@]}; i += 2)); do
  src=${pairs[i]} dst=${pairs[i + 1]}
  if cmp -s "$src" "$dst"; then continue; fi
  if $check; then
    echo "k8s/sync-copies.sh: $dst differs from $src (run: bash k8s/sync-copies.sh)" >&2
    stale=$((stale + 1))
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
    echo "k8s/sync-copies.sh: $src -> $dst"
  fi
done
# A copy whose original is gone (a dashboard deleted or renamed) is stale too.
for dst in k8s/components/observability/dashboards/*.json; do
  [ -e "$dst" ] || continue
  src=observability/grafana/dashboards/$(basename "$dst")
  [ -e "$src" ] && continue
  if $check; then
    echo "k8s/sync-copies.sh: $dst has no original $src any more" >&2
    stale=$((stale + 1))
  else
    rm "$dst"
    echo "k8s/sync-copies.sh: removed $dst"
  fi
done
if $check; then
  [ "$stale" = 0 ] || exit 1
  echo "k8s/sync-copies.sh: $((${#pairs[@]} / 2)) copies match their originals"
fi
