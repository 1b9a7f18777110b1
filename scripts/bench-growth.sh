#!/usr/bin/env bash
# How the server's costs grow with the data (issue 15): fills databases directly to each of
# SIZES (registered clients:queued messages), then measures each against an empty database in
# the same run, alternating between them:
#   - start-up, from the server's spawn to its "listening" line, with the database file in the
#     page cache (warm) and evicted from it (cold), STARTS times each; the server's resident
#     memory (VmRSS) once it listens;
#   - send-pull, CLIENTS clients, durability full, PAIRS alternating runs of DURATION seconds
#     (empty, filled; then filled, empty; ...): requests per second, the ratio filled / empty
#     of each pair and its median, and the server's peak memory under the load;
#   - one client listing the clients over and over, and beside it one client asking keys:
#     the list request's median time, and the longest wait of a key request meanwhile (how long
#     the event loop stalls);
#   - HOARDERS (20) connections that each ask for the list and never read it: the server's
#     memory beyond what it held before they came, and the longest key request meanwhile.
# PARTS (default "start send-pull list") picks the measurements; the filling is always done.
# Prints one markdown table; the progress goes to standard error.
#
#   scripts/bench-growth.sh                          # 100k:1M and 1M:10M
#   SIZES=10000:100000 STARTS=1 PAIRS=1 scripts/bench-growth.sh     # a quick run
#   SERVER_BINS="OLD NEW" scripts/bench-growth.sh    # A/B: each build on its own copy
#
# With several SERVER_BINS, each build gets its own copy of every database (the first build
# creates the schema, the others migrate their copy at a warm-up start), and the order of the
# builds alternates from one round to the next. The databases live in a temporary folder
# (GROWTH_DIR, default under /tmp), removed at the end. Evicting a file from the page cache
# needs nothing but write access to it (dd iflag=nocache).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"100000:1000000 1000000:10000000"}
STARTS=${STARTS:-3}
PAIRS=${PAIRS:-3}
CLIENTS=${CLIENTS:-50}
CONTENT=${CONTENT:-100}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-3}
LIST_SECONDS=${LIST_SECONDS:-3}
HOARDERS=${HOARDERS:-20}
PARTS=${PARTS:-"start send-pull list"}
part() { [[ " $PARTS " == *" $1 "* ]]; }

ulimit -n "$(ulimit -Hn)"
cargo build --release --bin messageu-server --bin messageu-bench >&2
target_dir=${CARGO_TARGET_DIR:-target}
read -r -a bins <<<"${SERVER_BINS:-$target_dir/release/messageu-server}"
bench_bin=$target_dir/release/messageu-bench

work=$(mktemp -d "${GROWTH_DIR:-/tmp}/growth.XXXXXX")
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT

now() { date +%s%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
# The median of the numbers in FILE, "-" if that part was not measured.
median_of() { { cat "$1" 2>/dev/null || true; } | median; }

# start_server BIN DB [ARGS...]: starts BIN on DB and waits until it listens; sets server_pid,
# port and started (seconds from the spawn to the "listening" line).
start_server() {
    local bin=$1 db=$2
    shift 2
    local log=$work/server.log
    : >"$log"
    local t0
    t0=$(now)
    "$bin" --bind 127.0.0.1 --port 0 --db "$db" "$@" </dev/null 2>"$log" &
    server_pid=$!
    port=
    while :; do
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\),.*/\1/p' "$log")
        [ -n "$port" ] && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "$bin did not start on $db:" >&2
            cat "$log" >&2
            exit 2
        fi
        sleep 0.002
    done
    started=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}

rss_mib() { awk '/^VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$server_pid/status"; }

# The page cache: everything of DB read in, or all of it dropped.
warm() { cat "$1"* >/dev/null 2>&1 || true; }
cold() {
    sync
    local file
    for file in "$1"*; do
        if [ -f "$file" ]; then
            dd if="$file" iflag=nocache count=0 status=none
        fi
    done
}

# fill DB CLIENTS MESSAGES: the first build creates the schema, then sqlite3 adds CLIENTS
# clients (unique names, random 16-byte ids and 160-byte keys) and MESSAGES 100-byte messages
# spread evenly over them, with the indexes of messages built once at the end.
fill() {
    local db=$1 clients=$2 messages=$3
    start_server "${bins[0]}" "$db"
    stop_server
    local indexes
    indexes=$(sqlite3 "$db" "SELECT sql || ';' FROM sqlite_master WHERE type = 'index' \
        AND tbl_name = 'messages' AND sql IS NOT NULL")
    sqlite3 "$db" >/dev/null <<SQL
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -1000000;
BEGIN;
$(sqlite3 "$db" "SELECT 'DROP INDEX ' || name || ';' FROM sqlite_master WHERE type = 'index' \
    AND tbl_name = 'messages' AND sql IS NOT NULL")
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $clients)
INSERT INTO clients (rowid, ID, UserName, PublicKey)
    SELECT i, randomblob(16), 'growth-' || i, randomblob(160) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $messages)
INSERT INTO messages (rowid, ID, ToClient, FromClient, Type, Content)
    SELECT i, i,
        (SELECT ID FROM clients WHERE rowid = (i * 7919) % $clients + 1),
        (SELECT ID FROM clients WHERE rowid = i % $clients + 1),
        3, randomblob($CONTENT)
    FROM n;
$indexes
COMMIT;
PRAGMA journal_mode = WAL;
SQL
}

# A registered client of DB (its id in hex), read before a server locks the file.
first_client() {
    local id
    id=$(sqlite3 "$1" "SELECT hex(ID) FROM clients ORDER BY rowid LIMIT 1")
    echo "${id:-00000000000000000000000000000000}"
}

# hoard ID: HOARDERS connections to the server ask for the list as client ID (hex) and read
# nothing; prints the server's memory growth (MiB) once they have asked, and the longest key
# request of a client asking keys meanwhile (ms).
hoard() {
    local id=$1 before fds=() i
    local request
    request="$(echo "$id" | sed 's/../\\x&/g')"'\x02\x59\x02\x00\x00\x00\x00'
    before=$(rss_mib)
    for i in $(seq "$HOARDERS"); do
        exec {fd}<>"/dev/tcp/127.0.0.1/$port"
        printf '%b' "$request" >&"$fd"
        fds+=("$fd")
    done
    local keys after
    # A server that cannot take them may not answer in time, or at all.
    keys=$(bench_row pubkey 1 2 || true)
    after=$(rss_mib 2>/dev/null || echo "$before")
    echo "+$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.1f", a - b }') MiB," \
        "longest key request $(echo "$keys" | field 12) ms"
    for fd in "${fds[@]}"; do
        exec {fd}>&-
    done
}

# One bench run of MIX against the server; prints its first markdown row.
bench_row() {
    local mix=$1 clients=$2 duration=$3
    "$bench_bin" --addr "127.0.0.1:$port" --server-pid "$server_pid" --clients "$clients" \
        --mix "$mix" --size "$CONTENT" --warmup "$WARMUP" --duration "$duration" --no-floor \
        --markdown --durability-label full 2>>"$work/bench.log" | head -n 1
}
field() { awk -F'|' -v n="$1" '{ gsub(/ /, "", $n); print $n }'; }

# The order of the builds in round R: alternates.
order() {
    local i
    if [ $(($1 % 2)) -eq 1 ]; then
        for i in "${!bins[@]}"; do echo "$i"; done
    else
        for i in "${!bins[@]}"; do echo "$i"; done | tac
    fi
}

# measure SIZE: every measurement of the filled databases of SIZE and the empty ones,
# recorded in $work/results/<build>.<database>.<what>.
measure() {
    local size=$1 clients=${1%%:*} messages=${1##*:}
    local r b db kind
    mkdir -p "$work/results"
    echo "== filling $clients clients, $messages messages" >&2
    local t0
    t0=$(now)
    fill "$work/filled.0.db" "$clients" "$messages"
    echo "   filled in $(((($(now) - t0)) / 1000000)) ms, $(du -h "$work/filled.0.db" | cut -f1)" >&2
    for b in "${!bins[@]}"; do
        if [ "$b" -gt 0 ]; then
            cp "$work/filled.0.db" "$work/filled.$b.db"
        fi
        rm -rf "$work/empty.$b.db"*
        # Warm-up starts: create the empty database, migrate a copy.
        for kind in empty filled; do
            start_server "${bins[$b]}" "$work/$kind.$b.db"
            stop_server
        done
    done
    for r in $(seq "$STARTS"); do
        part start || break
        for b in $(order "$r"); do
            for kind in empty filled; do
                db=$work/$kind.$b.db
                warm "$db"
                start_server "${bins[$b]}" "$db"
                echo "$started" >>"$work/results/$b.$size.$kind.warm"
                rss_mib >>"$work/results/$b.$size.$kind.rss"
                stop_server
                cold "$db"
                start_server "${bins[$b]}" "$db"
                echo "$started" >>"$work/results/$b.$size.$kind.cold"
                stop_server
                echo "   start-up, build $b, $kind: warm $(tail -n 1 "$work/results/$b.$size.$kind.warm") s," \
                    "cold $started s" >&2
            done
        done
    done
    for r in $(seq "$PAIRS"); do
        part send-pull || break
        for b in $(order "$r"); do
            local kinds="empty filled"
            [ $((r % 2)) -eq 0 ] && kinds="filled empty"
            for kind in $kinds; do
                start_server "${bins[$b]}" "$work/$kind.$b.db" --durability full
                local row
                row=$(bench_row send-pull "$CLIENTS" "$DURATION")
                stop_server
                echo "$row" | field 6 >>"$work/results/$b.$size.$kind.rate"
                echo "$row" | field 17 >>"$work/results/$b.$size.$kind.peak"
                echo "   send-pull, build $b, $kind: $(echo "$row" | field 6) req/s" >&2
            done
            paste "$work/results/$b.$size.filled.rate" "$work/results/$b.$size.empty.rate" \
                | tail -n 1 | awk '{ printf "%.3f\n", $1 / $2 }' >>"$work/results/$b.$size.ratio"
        done
    done
    for b in "${!bins[@]}"; do
        part list || break
        for kind in empty filled; do
            local hoarder
            hoarder=$(first_client "$work/$kind.$b.db")
            start_server "${bins[$b]}" "$work/$kind.$b.db" --durability full
            hoard "$hoarder" >"$work/results/$b.$size.$kind.hoard"
            bench_row list 1 "$LIST_SECONDS" >"$work/list.row" &
            local lister=$!
            local keys
            keys=$(bench_row pubkey 1 "$LIST_SECONDS")
            wait "$lister"
            stop_server
            field 9 <"$work/list.row" >"$work/results/$b.$size.$kind.list"
            echo "$keys" | field 12 >"$work/results/$b.$size.$kind.stall"
            echo "   list, build $b, $kind: $(cat "$work/results/$b.$size.$kind.list") ms," \
                "longest key request beside it $(cat "$work/results/$b.$size.$kind.stall") ms;" \
                "$HOARDERS hoarders: $(cat "$work/results/$b.$size.$kind.hoard")" >&2
        done
    done
    rm -rf "$work"/filled.*
}

for size in $SIZES; do
    measure "$size"
done

echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr); load" \
    "average $(cut -d' ' -f1-3 /proc/loadavg); ${CONTENT}-byte messages; medians of $STARTS" \
    "start-ups and of $PAIRS alternating send-pull pairs ($CLIENTS clients, durability full," \
    "${DURATION} s each); list: one client listing for ${LIST_SECONDS} s beside one asking keys."
for b in "${!bins[@]}"; do
    echo "Build $b: ${bins[$b]}"
done
echo
echo "| build | clients:messages | start-up warm s | start-up cold s | RSS after start MiB" \
    "| send-pull req/s | filled / empty | peak RSS under load MiB | list p50 ms" \
    "| longest key request beside lists ms | $HOARDERS connections asking for the list, not reading |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for size in $SIZES; do
    for b in "${!bins[@]}"; do
        for kind in empty filled; do
            f=$work/results/$b.$size
            label=$size
            ratio="$(median_of "$f.ratio") ($({ cat "$f.ratio" 2>/dev/null || true; } | tr '\n' ' ' | sed 's/ $//'))"
            if [ "$kind" = empty ]; then
                label="empty (beside $size)"
                ratio=1
            fi
            echo "| $b | $label | $(median_of "$f.$kind.warm") | $(median_of "$f.$kind.cold")" \
                "| $(median_of "$f.$kind.rss") | $(median_of "$f.$kind.rate") | $ratio" \
                "| $(median_of "$f.$kind.peak")" \
                "| $(cat "$f.$kind.list" 2>/dev/null) | $(cat "$f.$kind.stall" 2>/dev/null)" \
                "| $(cat "$f.$kind.hoard" 2>/dev/null) |"
        done
    done
done
