#!/usr/bin/env bash
# A/B comparison of two messageu-server binaries under the same load, alternating, so that a
# shared, noisy machine drifts alike for both. Each run starts a server on a fresh temporary
# database and drives it with messageu-bench (no floor); pairs alternate their order (A B,
# B A, ...). Prints every run's rate of the mix's first operation and the median ratio B/A.
#
#   scripts/bench-ab.sh OLD_SERVER_BIN NEW_SERVER_BIN
#
# Build an older revision with, for example:
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release)
# Override with PAIRS, DURABILITY, MIX, CLIENTS, SIZE, WARMUP, DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
    echo "usage: $0 OLD_SERVER_BIN NEW_SERVER_BIN" >&2
    exit 2
fi
bins=("$1" "$2")
PAIRS=${PAIRS:-3}
DURABILITY=${DURABILITY:-full}
MIX=${MIX:-send-pull}
CLIENTS=${CLIENTS:-50}
SIZE=${SIZE:-100}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-3}

ulimit -n "$(ulimit -Hn)"
cargo build --release --bin messageu-bench >&2
bench_bin=${CARGO_TARGET_DIR:-target}/release/messageu-bench

work=$(mktemp -d)
. scripts/server.sh
trap 'stop_server; rm -rf "$work"' EXIT

# Runs binary $1 once; prints the rate (requests per second) of the mix's first operation.
run_once() {
    start_server -- "$1" --durability "$DURABILITY"
    "$bench_bin" --addr "127.0.0.1:$port" --clients "$CLIENTS" --mix "$MIX" --size "$SIZE" \
        --warmup "$WARMUP" --duration "$DURATION" --no-floor --markdown 2>/dev/null \
        | awk -F'|' 'NR == 1 { gsub(/ /, "", $6); print $6 }'
    stop_server
}

ratios=()
echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr);" \
    "$MIX, $CLIENTS clients, ${SIZE}-byte content, durability $DURABILITY, ${DURATION} s runs"
echo "| pair | A (req/s) | B (req/s) | B/A |"
echo "|---|---|---|---|"
for pair in $(seq "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then
        a=$(run_once "${bins[0]}")
        b=$(run_once "${bins[1]}")
    else
        b=$(run_once "${bins[1]}")
        a=$(run_once "${bins[0]}")
    fi
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
    ratios+=("$ratio")
    echo "| $pair | $a | $b | $ratio |"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }')
echo "median B/A: $median"
