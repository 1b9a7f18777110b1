#!/usr/bin/env bash
# The standard benchmark matrix: builds in release mode, then for every durability, mix and
# client count starts messageu-server on a fresh temporary database, runs messageu-bench
# against it (and its floor, in the same invocation), and stops it. Prints one markdown table
# on standard output; the full reports go to standard error.
#
# Each run alternates ROUNDS windows of DURATION seconds against the server with as many
# against the floor; ratios are the median over rounds (this machine may be shared and noisy).
# Exits non-zero if any run lost, duplicated or corrupted a message, or could not be carried
# out. Override the matrix with DURABILITIES, MIXES, CLIENTS, SIZE, WARMUP, DURATION, ROUNDS
# (DURABILITIES= skips it).
#
# Then, for each of PUSH_CLIENTS (default 50; empty: none), the push mix (as many senders to as
# many subscribed recipients) against send-pull with as many clients, in one invocation with
# durability full, as a second table; and, if IDLE_SUBSCRIBERS is set (10000, say), the idle
# subscribers' report (IDLE_IDS ids shared round robin, IDLE_SECONDS idle).
#
# Further parts, each off unless its variable is set (docs/performance.md and
# docs/scaling.md show their tables):
#
#   PER_REQUEST=N   clients that open a connection per request, as most published clients
#                   do: exact (--conn-per-request) and zero-padded to 1024-byte blocks
#                   (--padded), each against the floor in the same mode; send-pull and pubkey
#                   at N clients, durability full (PER_REQUEST_MIXES)
#   PG_CLIENTS=N    PostgreSQL (scripts/bench/postgres.sh): send-pull, durability full, at N
#                   clients on SQLite, on one node on a throwaway cluster and on two nodes
#                   sharing its database, alternating with pgbench's one-row insert
#                   transactions (the database's commit rate here, the floor), PG_ROUNDS
#                   rounds of PG_DURATION s; then what a send-pull pair costs the database.
#                   Installs postgresql with apt-get when missing (as root)
#   REDIS=N         Redis (scripts/bench/redis.sh): redis-benchmark SET at N clients with
#                   persistence off and with appendfsync always, alternating with send-pull
#                   at N clients, durability full and normal, REDIS_PAIRS pairs of about
#                   REDIS_DURATION s; ratios. Installs redis-server with apt-get when missing
#
#   DURABILITIES= PUSH_CLIENTS= PER_REQUEST=50 PG_CLIENTS=50 REDIS=50 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURABILITIES=${DURABILITIES-"full normal"}
MIXES=${MIXES:-"send-pull pubkey"}
CLIENTS=${CLIENTS:-"1 50 500 5000"}
SIZE=${SIZE:-100}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-0.5}
ROUNDS=${ROUNDS:-5}
PUSH_CLIENTS=${PUSH_CLIENTS-50}
IDLE_SUBSCRIBERS=${IDLE_SUBSCRIBERS-}
IDLE_IDS=${IDLE_IDS:-100}
IDLE_SECONDS=${IDLE_SECONDS:-3}
PER_REQUEST=${PER_REQUEST-}
PER_REQUEST_MIXES=${PER_REQUEST_MIXES:-"send-pull pubkey"}
PG_CLIENTS=${PG_CLIENTS-}
REDIS=${REDIS-}

# 5,000 clients need 5,000 descriptors in the server and twice that in the generator (which
# also hosts the floor).
ulimit -n "$(ulimit -Hn)"

cargo build --release --bin messageu-server --bin messageu-bench >&2
# SERVER_BIN measures another build (or another MessageU server) with the same tools.
target_dir=${CARGO_TARGET_DIR:-target}
server_bin=${SERVER_BIN:-$target_dir/release/messageu-server}
bench_bin=$target_dir/release/messageu-bench

work=$(mktemp -d)
. scripts/server.sh
. scripts/bench/services.sh
. scripts/bench/measure.sh
. scripts/bench/postgres.sh
. scripts/bench/redis.sh
trap 'stop_server; stop_nodes; stop_postgres; stop_redis; rm -rf "$work"' EXIT

status=0
touch "$work/rows" "$work/push_rows"
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

for clients in $PUSH_CLIENTS; do
    start_server -- "$server_bin" --durability full
    echo "== push against send-pull, durability full, $clients clients" >&2
    "$bench_bin" --addr "127.0.0.1:$port" --server-pid "$server_pid" \
        --clients "$clients" --mix push --size "$SIZE" \
        --warmup "$WARMUP" --duration "$DURATION" --rounds "$ROUNDS" \
        --markdown --durability-label full >>"$work/push_rows" || status=1
    stop_server
done

touch "$work/per_request_rows"
if [ -n "$PER_REQUEST" ]; then
    for padding in exact zero-padded; do
        style=--conn-per-request
        [ "$padding" = exact ] || style=--padded
        for mix in $PER_REQUEST_MIXES; do
            start_server -- "$server_bin" --durability full
            echo "== a connection per request, $padding, mix $mix, $PER_REQUEST clients" >&2
            "$bench_bin" --addr "127.0.0.1:$port" --server-pid "$server_pid" "$style" \
                --clients "$PER_REQUEST" --mix "$mix" --size "$SIZE" \
                --warmup "$WARMUP" --duration "$DURATION" --rounds "$ROUNDS" \
                --markdown --durability-label full |
                sed "s/^| /| $padding | /" >>"$work/per_request_rows" || status=1
            stop_server
        done
    done
fi

if [ -n "$IDLE_SUBSCRIBERS" ]; then
    start_server -- "$server_bin" --durability full --max-connections "$((IDLE_SUBSCRIBERS + 100))"
    echo "== $IDLE_SUBSCRIBERS idle subscribers" >&2
    "$bench_bin" --addr "127.0.0.1:$port" --server-pid "$server_pid" --size "$SIZE" \
        --idle-subscribers "$IDLE_SUBSCRIBERS" --idle-ids "$IDLE_IDS" \
        --idle-seconds "$IDLE_SECONDS" >"$work/idle" || status=1
    stop_server
fi

if [ -n "$PG_CLIENTS" ]; then
    echo "== PostgreSQL, $PG_CLIENTS clients" >&2
    postgres_report "$PG_CLIENTS" >"$work/postgres"
fi
if [ -n "$REDIS" ]; then
    echo "== Redis, $REDIS clients" >&2
    redis_report "$REDIS" >"$work/redis"
fi

echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr);" \
    "${SIZE}-byte content; ${WARMUP} s warm-up, then ${ROUNDS} rounds of ${DURATION} s against" \
    "the server and ${DURATION} s against the floor (push: against send-pull)."
if [ -s "$work/rows" ]; then
    echo
    "$bench_bin" --markdown-header
    cat "$work/rows"
fi
if [ -s "$work/push_rows" ]; then
    echo
    "$bench_bin" --markdown-header --mix push
    cat "$work/push_rows"
fi
if [ -s "$work/per_request_rows" ]; then
    echo
    "$bench_bin" --markdown-header | sed '1s/^| /| framing | /; 2s/^|/|---|/'
    cat "$work/per_request_rows"
fi
if [ -s "$work/idle" ]; then
    echo
    cat "$work/idle"
fi
for part in postgres redis; do
    if [ -s "$work/$part" ]; then
        echo
        cat "$work/$part"
    fi
done
exit "$status"
