#!/usr/bin/env bash
# The large-file measurement (docs/large-files.md): builds in release mode, starts
# messageu-server on a fresh temporary database (durability full), then
#   1. sends and pulls one SIZE-byte file message (default 1 GiB) with the large_file example
#      (bench/examples/large_file.rs), against a raw loopback copy and a disk write of the
#      same bytes, reporting the server's peak resident memory during each transfer;
#   2. runs CLIENTS clients of send-pull with messageu-bench, alone and then while the same
#      transfer repeats beside them, ROUNDS times alternately, prints every row, the share of
#      throughput the clients kept in each round and its median, and the rates of the
#      transfers that completed beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1073741824}
CLIENTS=${CLIENTS:-50}
DURATION=${DURATION:-8}
DURABILITY=${DURABILITY:-full}
ROUNDS=${ROUNDS:-3}

cargo build --release --bin messageu-server --bin messageu-bench --example large_file >&2
# SERVER_BIN measures another build (or another MessageU server) with the same tools.
server_bin=${SERVER_BIN:-${CARGO_TARGET_DIR:-target}/release/messageu-server}
bench_bin=${CARGO_TARGET_DIR:-target}/release/messageu-bench
transfer_bin=${CARGO_TARGET_DIR:-target}/release/examples/large_file

work=$(mktemp -d)
server_pid=
transfers_pid=
cleanup() {
    [ -n "$transfers_pid" ] && kill "$transfers_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$server_bin" --bind 127.0.0.1 --port 0 --db "$work/large.db" --durability "$DURABILITY" </dev/null 2>"$work/server.log" &
server_pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\),.*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/server.log" >&2; exit 2; }
addr=127.0.0.1:$port

echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr); durability $DURABILITY."
echo
"$transfer_bin" --addr "$addr" --size "$SIZE" --server-pid "$server_pid" --disk-dir "$work"
# The disk's best durable write of the same size, as dd does it: O_DIRECT, then fdatasync
# (a file system without O_DIRECT reports an error instead).
dd_rate=$( (dd if=/dev/zero of="$work/dd" bs=1M count=$((SIZE >> 20)) oflag=direct \
    conv=fdatasync || true) 2>&1 | tail -n 1)
rm -f "$work/dd"
echo
echo "Disk floor, dd O_DIRECT + fdatasync: $dd_rate"
echo

bench() {
    "$bench_bin" --addr "$addr" --clients "$CLIENTS" --mix send-pull --duration "$DURATION" \
        --no-floor --markdown --durability-label "$1"
}
# Transfers back to back, each logging its rates, until stopped (with the one in progress);
# one that fails is followed by the next.
transfers() {
    set +e
    child=
    trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM
    while true; do
        "$transfer_bin" --addr "$addr" --size "$SIZE" --no-floor >>"$work/transfers.md" &
        child=$!
        wait "$child"
    done
}
"$bench_bin" --markdown-header
for _ in $(seq "$ROUNDS"); do
    bench "$DURABILITY, alone"
    transfers &
    transfers_pid=$!
    bench "$DURABILITY, beside $SIZE-byte transfers"
    kill "$transfers_pid"
    wait "$transfers_pid" || true
    transfers_pid=
done >"$work/rows.md"
cat "$work/rows.md"

median() { sort -n | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "-"}'; }
echo
awk -F'|' '$5 ~ /send/ {
    gsub(/ /, "", $6)
    if ($4 ~ /alone/) alone = $6; else printf "%.2f\n", $6 / alone
}' "$work/rows.md" >"$work/kept"
echo "Throughput the $CLIENTS clients kept beside the transfers, per round (beside / alone just before):" \
    "$(tr '\n' ' ' <"$work/kept")-> median $(median <"$work/kept")."
for op in send pull; do
    awk -F'|' -v op="$op" '$2 ~ " " op " " {gsub(/ /, "", $3); print $3}' "$work/transfers.md" \
        >"$work/$op.rates"
done
echo "Transfers completed beside the clients: $(wc -l <"$work/send.rates") sends (median" \
    "$(median <"$work/send.rates") MiB/s), $(wc -l <"$work/pull.rates") pulls (median" \
    "$(median <"$work/pull.rates") MiB/s)."
