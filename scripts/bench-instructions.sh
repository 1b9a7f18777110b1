#!/usr/bin/env bash
# Instructions per request of messageu-server binaries, counted by valgrind's callgrind:
# unlike a wall-clock rate, the count barely moves when the machine is busy, so it shows the
# cost of a change on a shared, noisy machine. Each binary runs under callgrind on a fresh
# temporary database while messageu-bench drives it (send-pull, no floor) for DURATION
# seconds; instructions are divided by the requests the bench completed. The count includes
# start-up (about 11 million instructions) and depends a little on how many requests share
# a commit, so compare runs of the same length, and repeat.
#
#   scripts/bench-instructions.sh SERVER_BIN [SERVER_BIN ...]
#
# Override with DURABILITY (normal), MIX (send-pull), CLIENTS (50), DURATION (8), RUNS (2).
# With PROFILES=DIR, each run's callgrind output is kept there (callgrind.<binary>.<run>.out),
# to be read with `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: $0 SERVER_BIN [SERVER_BIN ...]" >&2
    exit 2
fi
DURABILITY=${DURABILITY:-normal}
MIX=${MIX:-send-pull}
CLIENTS=${CLIENTS:-50}
DURATION=${DURATION:-8}
RUNS=${RUNS:-2}

command -v valgrind >/dev/null || { echo "bench-instructions.sh: needs valgrind" >&2; exit 2; }
cargo build --release --bin messageu-bench >&2
bench_bin=${CARGO_TARGET_DIR:-target}/release/messageu-bench

work=$(mktemp -d)
. scripts/server.sh
trap 'stop_server; rm -rf "$work"' EXIT

# Prints instructions, requests and instructions per request of one run of binary $1.
run_once() {
    rm -f "$work/callgrind.out"
    start_server valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" -- \
        "$1" --durability "$DURABILITY"
    # The rate of every operation of the mix, times the window: the requests completed.
    requests=$("$bench_bin" --addr "127.0.0.1:$port" --clients "$CLIENTS" --mix "$MIX" \
        --warmup 1 --duration "$DURATION" --no-floor --markdown 2>/dev/null |
        awk -F'|' -v d="$DURATION" '{ gsub(/ /, "", $6); sum += $6 } END { printf "%d", sum * d }')
    stop_server
    instructions=$(awk '/^summary:/ { print $2; exit }' "$work/callgrind.out")
    if [ -n "${PROFILES:-}" ]; then
        mkdir -p "$PROFILES"
        cp "$work/callgrind.out" "$PROFILES/callgrind.$(basename "$1").$2.out"
    fi
    awk -v i="$instructions" -v r="$requests" 'BEGIN { printf "%d | %d | %d", i, r, i / r }'
}

echo "Machine: $(nproc) cores; $(uname -sr); $MIX, $CLIENTS clients, durability $DURABILITY," \
    "${DURATION} s under callgrind"
echo "| binary | run | instructions | requests | per request |"
echo "|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    for bin in "$@"; do
        echo "| $bin | $run | $(run_once "$bin" "$run") |"
    done
done
