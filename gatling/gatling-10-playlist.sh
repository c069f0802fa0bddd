#!/usr/bin/env bash
# The course's gatling-10-playlist.sh, natively: ReadPlaylistSim with USERS=10 through `loader run`.
# Extra arguments go to the loader (e.g. --duration 60s, --base-url, --service music=URL).
cd "$(dirname "$0")/.." || exit 1
USERS=10 exec "${LOADER:-${CARGO_TARGET_DIR:-target}/release/loader}" run ReadPlaylistSim "$@"
