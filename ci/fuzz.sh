#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers that read outside
# input: the loader's HTTP/1 answer reader, course CSVs and scenario files, the
# gateway's query, cursor and attribute checks, and JWT parsing (fuzz/fuzz_targets/).
#
#   bash ci/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (all by default) for SECONDS (20 in CI; by hand, e.g. 600) from
# its committed seeds (fuzz/seeds/<target>/) plus what earlier runs found
# (fuzz/corpus/, ignored by git). Fails on the first crash, naming the input that
# caused it and the commands to replay and minimize it; keep that input as a
# regression #[test] in the crate it belongs to.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true

# cargo fuzz passes nightly-only flags to rustc; the stable toolchain accepts them
# with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo install cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# No sanitizer: the code under test forbids `unsafe`; panics and hangs are what we look for.
fuzz=(cargo fuzz)
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== cargo fuzz build (${targets[*]})"
"${fuzz[@]}" build -s none

failed=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    log="fuzz/artifacts/$target.log"
    mkdir -p "$corpus" "$seeds" "fuzz/artifacts/$target"
    echo "== fuzz $target for ${seconds}s (log: $log)"
    if "${fuzz[@]}" run -s none "$target" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$log" || true
    else
        tail -n 40 "$log"
        artifact="$(ls -t "fuzz/artifacts/$target"/* 2>/dev/null | head -n 1 || true)"
        echo "fuzz: $target failed on ${artifact:-(no artifact)}"
        if [ -n "$artifact" ]; then
            echo "  replay:   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $target $artifact"
            echo "  minimize: RUSTC_BOOTSTRAP=1 cargo fuzz tmin -s none $target $artifact"
            echo "  bytes:    $(od -An -c "$artifact" | head -n 8 | tr -s ' ')"
        fi
        failed=1
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "fuzz: a target failed (above)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
