#!/usr/bin/env bash
# Database failover, scripted: a PostgreSQL primary and its synchronous standby on this
# machine (Debian's PostgreSQL programs, installed with apt-get when missing and run as
# root), two messageu-server nodes whose --db names both, and messageu-bench loading each
# node. Mid-load the primary is killed (SIGKILL to the postmaster and every backend at once)
# and the standby promoted; the nodes reconnect by themselves and the load goes on. Each
# bench then drains its clients' queues and judges its ledger: acknowledged sends lost
# (must be 0), duplicated (reported), corrupted (must be 0). Prints a summary; exits 1 if a
# message was lost or corrupted, or a node died or did not come back.
#
# Settings (seconds unless said): CLIENTS per node [20], BEFORE_KILL [3], BEFORE_PROMOTION
# [1], DURATION of the bench's measured window [8] (after its 1 s warm-up), KEEP=1 keeps the
# folder with every log. As root, PostgreSQL runs as the system user messageu-test (created
# if missing), as the tests run it. Everything lives in one temporary folder and is stopped
# and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-20}
BEFORE_KILL=${BEFORE_KILL:-3}
BEFORE_PROMOTION=${BEFORE_PROMOTION:-1}
DURATION=${DURATION:-8}
KEEP=${KEEP:-}
STANDBY=standby

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q postgresql
    else
        echo "$0 needs Debian's PostgreSQL programs: sudo apt-get install postgresql" >&2
        exit 1
    fi
fi
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

cargo build --release --bin messageu-server --bin messageu-bench >&2
target_dir=${CARGO_TARGET_DIR:-target}
server_bin=$(realpath "$target_dir/release/messageu-server")
bench_bin=$(realpath "$target_dir/release/messageu-bench")

work=$(mktemp -d /tmp/messageu-failover-XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    id -u messageu-test >/dev/null 2>&1 ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            messageu-test
    as_pg=(setpriv "--reuid=$(id -u messageu-test)" "--regid=$(id -g messageu-test)"
        --clear-groups --)
    chown messageu-test: "$work"
fi

node_pids=()
bench_pids=()
cleanup() {
    for pid in "${bench_pids[@]}" "${node_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${bench_pids[@]}" "${node_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for data in primary standby; do
        if [ -f "$work/$data/postmaster.pid" ]; then
            "${as_pg[@]}" "$pg_bin/pg_ctl" stop -D "$work/$data" -m immediate >/dev/null 2>&1 || true
        fi
    done
    if [ -n "$KEEP" ]; then
        echo "logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# A loopback port nothing listens on.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

psql_on() {
    local port=$1
    shift
    "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -X -q -A -t \
        -v ON_ERROR_STOP=1 -c "$@"
}

# pg_ctl makes the postmaster a session leader: its process group is it and its backends.
start_postgres() {
    local data=$1 port=$2
    "${as_pg[@]}" "$pg_bin/pg_ctl" start -w -D "$work/$data" -l "$work/$data.log" \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" >/dev/null
}

primary_port=$(free_port)
standby_port=$(free_port)
echo "== primary on port $primary_port, standby on $standby_port, in $work" >&2
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/primary" -U postgres -A trust -E UTF8 --locale=C \
    >"$work/initdb.log"
cat >>"$work/primary/postgresql.conf" <<EOF
wal_level = replica
max_wal_senders = 5
synchronous_commit = on
EOF
start_postgres primary "$primary_port"
psql_on "$primary_port" "SELECT pg_create_physical_replication_slot('$STANDBY')" >/dev/null
"${as_pg[@]}" "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
    -D "$work/standby" -R -S "$STANDBY" -X stream -c fast
# After -R's line, so that it wins: the name synchronous_standby_names gives the standby.
echo "primary_conninfo = 'host=127.0.0.1 port=$primary_port user=postgres application_name=$STANDBY'" \
    >>"$work/standby/postgresql.auto.conf"
start_postgres standby "$standby_port"
# Only now, so that the standby's copy of the configuration does not name a standby: once
# promoted, it must not wait for one that does not exist.
psql_on "$primary_port" "ALTER SYSTEM SET synchronous_standby_names = '$STANDBY'" >/dev/null
psql_on "$primary_port" "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 300); do
    state=$(psql_on "$primary_port" \
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$STANDBY'")
    [ "$state" = sync ] && break
    sleep 0.1
done
if [ "$state" != sync ]; then
    echo "$0: the standby did not become synchronous (state: '${state}')" >&2
    exit 1
fi
echo "== the standby is synchronous" >&2
psql_on "$primary_port" "CREATE DATABASE messageu" >/dev/null

db="host=127.0.0.1,127.0.0.1 port=$primary_port,$standby_port user=postgres dbname=messageu"
db="$db target_session_attrs=read-write connect_timeout=2"
node_ports=()
for node in 0 1; do
    mkdir "$work/node$node"
    (cd "$work/node$node" && exec "$server_bin" --bind 127.0.0.1 --port 0 --db "$db" \
        --durability full </dev/null 2>"$work/node$node.log") &
    node_pids+=($!)
    port=
    for _ in $(seq 300); do
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\),.*/\1/p' "$work/node$node.log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "$0: node $node did not start:" >&2
        cat "$work/node$node.log" >&2
        exit 1
    fi
    node_ports+=("$port")
    echo "== node $node on port $port" >&2
done

for node in 0 1; do
    "$bench_bin" --addr "127.0.0.1:${node_ports[$node]}" --clients "$CLIENTS" --warmup 1 \
        --duration "$DURATION" --no-floor >"$work/bench$node.report" 2>&1 &
    bench_pids+=($!)
done
sleep "$BEFORE_KILL"
primary_pid=$(head -n 1 "$work/primary/postmaster.pid")
killed_at=$(date +%s.%N)
kill -KILL -- "-$primary_pid"
echo "== primary killed (process group $primary_pid)" >&2
sleep "$BEFORE_PROMOTION"
"${as_pg[@]}" "$pg_bin/pg_ctl" promote -w -D "$work/standby" >/dev/null
promoted_at=$(date +%s.%N)
echo "== standby promoted" >&2
for pid in "${bench_pids[@]}"; do
    wait "$pid" || true
done
bench_pids=()

status=0
echo
echo "database failover: primary killed after ${BEFORE_KILL} s of load, standby promoted" \
    "$(awk "BEGIN { printf \"%.2f\", $promoted_at - $killed_at }") s later (when pg_ctl promote -w returned)"
for node in 0 1; do
    log=$work/node$node.log
    report=$work/bench$node.report
    delivery=$(grep '^delivery:' "$report" || true)
    echo "node $node:"
    if ! kill -0 "${node_pids[$node]}" 2>/dev/null; then
        echo "  DIED; its log:"
        tail -n 20 "$log"
        status=1
    fi
    back=$(grep -o 'connected to the database again.*' "$log" || true)
    echo "  ${back:-DID NOT RECONNECT}"
    [ -n "$back" ] || status=1
    grep '^errors in' "$report" | sed 's/^/  9000s and failures: /' || true
    if [ -z "$delivery" ]; then
        echo "  the bench did not finish:"
        tail -n 20 "$report"
        status=1
        continue
    fi
    echo "  $delivery"
    lost=$(echo "$delivery" | sed -n 's/.* lost \([0-9]*\),.*/\1/p')
    corrupted=$(echo "$delivery" | sed -n 's/.* corrupted \([0-9]*\);.*/\1/p')
    if [ "${lost:-x}" != 0 ] || [ "${corrupted:-x}" != 0 ]; then
        status=1
    fi
done
if [ "$status" -eq 0 ]; then
    echo "verdict: no acknowledged message lost or corrupted; duplicates as reported above"
else
    echo "verdict: FAILED (logs: KEEP=1 keeps $work)"
fi
exit "$status"
