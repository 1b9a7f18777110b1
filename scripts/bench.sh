#!/usr/bin/env bash
# The standard benchmark matrix: builds in release mode, then for every durability, mix and
# client count starts messageu-server on a fresh temporary database, runs messageu-bench
# against it (and its floor, in the same invocation), and stops it. Prints one markdown table
# on standard output; the full reports go to standard error.
#
# Each run alternates ROUNDS windows of DURATION seconds against the server with as many
# against the floor; ratios are the median over rounds (this machine may be shared and noisy).
# Exits non-zero if any run lost, duplicated or corrupted a message, or could not be carried
# out. Override the matrix with DURABILITIES, MIXES, CLIENTS, SIZE, WARMUP, DURATION, ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."

DURABILITIES=${DURABILITIES:-"full normal"}
MIXES=${MIXES:-"send-pull pubkey"}
CLIENTS=${CLIENTS:-"1 50 500 5000"}
SIZE=${SIZE:-100}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-0.5}
ROUNDS=${ROUNDS:-5}

# 5,000 clients need 5,000 descriptors in the server and twice that in the generator (which
# also hosts the floor).
ulimit -n "$(ulimit -Hn)"

cargo build --release --bin messageu-server --bin messageu-bench >&2
# SERVER_BIN measures another build (or another MessageU server) with the same tools.
server_bin=${SERVER_BIN:-target/release/messageu-server}
bench_bin=target/release/messageu-bench

work=$(mktemp -d)
. scripts/server.sh
trap 'stop_server; rm -rf "$work"' EXIT

status=0
for durability in $DURABILITIES; do
    for mix in $MIXES; do
        for clients in $CLIENTS; do
            start_server -- "$server_bin" --durability "$durability"
            echo "== durability $durability, mix $mix, $clients clients" >&2
            "$bench_bin" --addr "127.0.0.1:$port" --server-pid "$server_pid" \
                --clients "$clients" --mix "$mix" --size "$SIZE" \
                --warmup "$WARMUP" --duration "$DURATION" --rounds "$ROUNDS" \
                --markdown --durability-label "$durability" >>"$work/rows" || status=1
            stop_server
        done
    done
done

echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr);" \
    "${SIZE}-byte content; ${WARMUP} s warm-up, then ${ROUNDS} rounds of ${DURATION} s against" \
    "the server and ${DURATION} s against the floor."
echo
"$bench_bin" --markdown-header
cat "$work/rows"
exit "$status"
