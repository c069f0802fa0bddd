#!/usr/bin/env bash
# Builds the images scalelab/<binary>:<workspace version> for every binary.
#
#   bash docker/build.sh                # offline, what CI does (no registry needed)
#   bash docker/build.sh --from-source  # users with internet: docker/Dockerfile whole
#
# Offline: the binaries are built on the host (PROFILE, default release; CI passes
# demo, the release build at opt-level 1 it already has), stripped, and put on the
# runtime stages of docker/Dockerfile (the same lines, with the build stage left out),
# over a base image made here from the host's own runtime libraries (glibc, libgcc:
# what distroless cc holds) as scalelab-local/runtime-base:<version>.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
binaries=(database-gateway user music playlist fibonacci loader scaler)

if [ "${1:-}" = --from-source ]; then
  for b in "${binaries[@]}"; do
    docker build -f docker/Dockerfile --target "$b" -t "scalelab/$b:$version" .
  done
  docker image ls 'scalelab/*'
  exit 0
fi

profile=${PROFILE:-release}
dir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
echo "docker/build.sh: building the binaries (profile $profile)"
cargo build -q --profile "$profile" --workspace --bins

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/context/bin/data"
for b in "${binaries[@]}"; do strip -o "$work/context/bin/$b" "$dir/$b"; done

# The base: the libraries the binaries link (ldd), CA certificates, a nonroot user
# (65532, as distroless), and DNS through glibc's own files/dns lookup.
base=scalelab-local/runtime-base:$version
root=$work/rootfs
mkdir -p "$root"/{etc/ssl/certs,tmp,home/nonroot,usr/local/bin}
chmod 1777 "$root/tmp"
for lib in $(ldd "${binaries[@]/#/$work/context/bin/}" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chown -R 65532:65532 "$root/home/nonroot"
tar -C "$root" --numeric-owner -c . | docker import - "$base" >/dev/null
echo "docker/build.sh: base $base ($(du -sh "$root" | cut -f1) of libraries and certificates)"

sed -e '/^FROM .* AS build$/,/^$/d' -e 's|--from=build /out/|bin/|' docker/Dockerfile >"$work/context/Dockerfile"
for b in "${binaries[@]}"; do
  docker build -q --build-arg "RUNTIME_BASE=$base" --target "$b" -t "scalelab/$b:$version" "$work/context" \
    >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
done
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^scalelab(-local)?/" | sort
