#!/usr/bin/env bash
# The course's gatling-1000-music.sh, natively: ReadMusicSim with USERS=1000 through `loader run`.
# Extra arguments go to the loader (e.g. --duration 60s, --base-url, --service music=URL).
cd "$(dirname "$0")/.." || exit 1
USERS=1000 exec "${LOADER:-${CARGO_TARGET_DIR:-target}/release/loader}" run ReadMusicSim "$@"
