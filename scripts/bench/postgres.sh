# Sourced by scripts/bench.sh (PG_CLIENTS=N): messageu-server on PostgreSQL against the same
# server on SQLite, and against PostgreSQL's own commit rate on this machine.
#
#   postgres_report CLIENTS   prints the markdown section (tables and notes) on standard output
#
# It starts a throwaway cluster in a temporary folder (as an unprivileged user when root),
# then, PG_ROUNDS times and in a rotating order: send-pull with durability full against the
# server on SQLite, against one node on the cluster, against two nodes on the same database
# with the clients split between them, each PG_DURATION seconds measured; and pgbench's
# one-row insert transaction with as many clients (the floor). Then one more run on one node
# and on two, with pg_stat_statements on, for what a send-pull pair costs the database:
# statements (each a round trip: the store waits for every reply), commits, rows, WAL, and
# CPU time of the database and of the nodes.
#
# The cluster's settings are PostgreSQL's defaults (fsync, synchronous_commit and
# full_page_writes on) plus what a production set-up would change: shared_buffers 1GB (a
# quarter of the RAM of a small database machine; the default is 128MB), max_connections 200
# (the nodes' connections and pgbench's 50 at once), listening on loopback only, and
# pg_stat_statements loaded (tracking nothing except during the cost runs).

PG_ROUNDS=${PG_ROUNDS:-3}
PG_DURATION=${PG_DURATION:-3}

pg_bin=
pg_dir=
pg_pid=
pg_port=

start_postgres() {
    ensure_program initdb postgresql
    service_user_init
    pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
    [ -n "$pg_bin" ] || pg_bin=$(dirname "$(command -v initdb)")
    pg_dir=$(service_dir)
    "${as_service_user[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 \
        --locale=C >"$pg_dir/initdb.log" 2>&1 || {
        cat "$pg_dir/initdb.log" >&2
        exit 2
    }
    # In the configuration file, not on the command line, which would override the cost
    # runs' ALTER SYSTEM.
    echo "pg_stat_statements.track = none" >>"$pg_dir/data/postgresql.conf"
    pg_port=$(free_port)
    "${as_service_user[@]}" "$pg_bin/postgres" -D "$pg_dir/data" -p "$pg_port" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
        -c shared_buffers=1GB -c max_connections=200 \
        -c shared_preload_libraries=pg_stat_statements \
        </dev/null >"$pg_dir/postgres.log" 2>&1 &
    pg_pid=$!
    await_service PostgreSQL "$pg_pid" "$pg_dir/postgres.log" pg_sql postgres "SELECT 1"
}

stop_postgres() {
    end_service "$pg_pid" INT
    pg_pid=
    if [ -n "$pg_dir" ]; then
        rm -rf "$pg_dir"
        pg_dir=
    fi
}

# pg_sql DATABASE SQL: what it prints, unaligned, without headers.
pg_sql() {
    "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d "$1" -X -q -A -t \
        -v ON_ERROR_STOP=1 -c "$2"
}

# The floor: pgbench's transactions per second, each one prepared one-row insert of SIZE bytes
# committed with synchronous_commit on, at $1 clients on 2 threads (messageu-bench's default).
pgbench_tps() {
    "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -M prepared \
        -c "$1" -j 2 -T "$PG_DURATION" -f "$work/floor.sql" floor 2>"$work/pgbench.err" |
        sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | awk '{ printf "%.0f\n", $1 }'
}

# CPU time (clock ticks) of process $1 and its descendants, the exited ones it reaped
# included: the postmaster reaps the backends of the nodes' connections when they close.
tree_ticks() {
    local pid=$1 child total
    total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$child/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# Starts $1 nodes on the bench database; sets addrs.
start_pg_nodes() {
    local node
    addrs=
    for node in $(seq "$1"); do
        start_node "pg-node-$node" "$server_bin" --db "$pg_url" --durability full
        addrs+="${addrs:+,}127.0.0.1:$port"
        metrics_urls+=("$metrics_url")
    done
}

# One round's measurement of setup $1; appends "setup figures..." to $work/pg_rounds.
pg_measure() {
    local setup=$1 clients=$2 figures
    metrics_urls=()
    case $setup in
    sqlite)
        start_server -- "$server_bin" --durability full
        figures=$(send_pull "127.0.0.1:$port" "$clients" "$PG_DURATION" full)
        judge "$figures"
        stop_server
        ;;
    pg-1 | pg-2)
        start_pg_nodes "${setup#pg-}"
        figures=$(send_pull "$addrs" "$clients" "$PG_DURATION" full)
        judge "$figures"
        stop_nodes
        ;;
    pgbench)
        figures=$(pgbench_tps "$clients")
        [ -n "$figures" ] || {
            cat "$work/pgbench.err" >&2
            exit 2
        }
        ;;
    esac
    echo "== $setup: $figures" >&2
    echo "$setup $figures" >>"$work/pg_rounds"
}

# The database's counters of the bench database and the WAL's, space-separated.
pg_counters() {
    pg_sql bench "SELECT d.xact_commit, d.tup_inserted, d.tup_updated, d.tup_deleted,
            d.tup_returned + d.tup_fetched, w.wal_records, w.wal_bytes, w.wal_sync,
            (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s
              WHERE s.dbid = d.datid AND s.query NOT LIKE '%pg_stat%')
        FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = 'bench'" | tr '|' ' '
}

# Requests served by the nodes, from their metrics: "sends all".
served_requests() {
    local url
    for url in "${metrics_urls[@]}"; do
        curl -fsS "$url"
    done | awk '/^messageu_requests_total/ { all += $NF; if ($0 ~ /operation="send"/) sends += $NF }
        END { print sends + 0, all + 0 }'
}

# What a send-pull pair costs with $1 nodes: one markdown row.
pg_cost() {
    local nodes=$1 clients=$2 before after served figures node_ticks=0 pid db_before db_after
    pg_sql bench "ALTER SYSTEM SET pg_stat_statements.track = 'top'" >/dev/null
    pg_sql bench "SELECT pg_reload_conf()" >/dev/null
    metrics_urls=()
    db_before=$(tree_ticks "$pg_pid")
    start_pg_nodes "$nodes"
    pg_sql bench "SELECT pg_stat_statements_reset(), pg_stat_reset()" >/dev/null
    before=$(pg_counters)
    figures=$(send_pull "$addrs" "$clients" "$PG_DURATION" full)
    judge "$figures"
    served=$(served_requests)
    for pid in "${node_pids[@]}"; do
        node_ticks=$((node_ticks + $(tree_ticks "$pid")))
    done
    stop_nodes
    # Backends report their counters when they exit, and the postmaster reaps them.
    sleep 1
    db_after=$(tree_ticks "$pg_pid")
    after=$(pg_counters)
    pg_sql bench "SELECT calls, regexp_replace(query, '\s+', ' ', 'g') FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')
          AND query NOT LIKE '%pg_stat%' ORDER BY calls DESC LIMIT 12" \
        >"$work/pg_statements_$nodes"
    pg_sql bench "SELECT relname, coalesce(indexrelname, '(table scans)'),
            coalesce(i.idx_scan, t.seq_scan), coalesce(i.idx_tup_read, t.seq_tup_read),
            coalesce(i.idx_tup_fetch, 0)
        FROM pg_stat_user_tables t LEFT JOIN pg_stat_user_indexes i USING (relid, relname)
        WHERE coalesce(i.idx_scan, t.seq_scan) > 0 ORDER BY 4 DESC" \
        >"$work/pg_scans_$nodes"
    pg_sql bench "ALTER SYSTEM RESET pg_stat_statements.track" >/dev/null
    pg_sql bench "SELECT pg_reload_conf()" >/dev/null
    echo "== cost, $nodes node(s): $figures; served $served; counters $before -> $after" >&2
    awk -v nodes="$nodes" -v served="$served" -v before="$before" -v after="$after" \
        -v figures="$figures" -v db="$((db_after - db_before))" -v node="$node_ticks" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(served, s, " "); split(before, b, " "); split(after, a, " "); split(figures, f, " ")
        pairs = s[1]; if (pairs == 0) { print "| " nodes " | no sends served |"; exit }
        for (i = 1; i <= 9; i++) d[i] = (a[i] - b[i]) / pairs
        printf "| %d | %s | %d | %d | %.2f | %.3f | %.2f | %.2f | %.2f | %.2f | %.0f | %.3f | %.0f | %.0f | %s |\n",
            nodes, f[1], pairs, s[2], d[9], d[1], d[2], d[3], d[4], d[5], d[7], d[8],
            db / hz * 1e6 / pairs, node / hz * 1e6 / pairs, f[6]
    }'
}

postgres_report() {
    local clients=$1 round setup setups offset i
    start_postgres
    pg_sql postgres "CREATE DATABASE bench" >/dev/null
    pg_sql postgres "CREATE DATABASE floor" >/dev/null
    pg_sql bench "CREATE EXTENSION pg_stat_statements" >/dev/null
    pg_sql floor "CREATE TABLE floor_rows (id bigserial PRIMARY KEY, body text NOT NULL)" \
        >/dev/null
    echo "INSERT INTO floor_rows (body) VALUES (repeat('m', $SIZE));" >"$work/floor.sql"
    pg_url="postgresql://postgres@127.0.0.1:$pg_port/bench"
    : >"$work/pg_rounds"
    setups=(sqlite pg-1 pg-2 pgbench)
    for round in $(seq "$PG_ROUNDS"); do
        for i in 0 1 2 3; do
            offset=$(((i + round - 1) % 4))
            pg_measure "${setups[$offset]}" "$clients"
        done
    done
    : >"$work/pg_cost"
    pg_cost 1 "$clients" >>"$work/pg_cost"
    pg_cost 2 "$clients" >>"$work/pg_cost"
    pg_report_tables "$clients"
    stop_postgres
}

# Column $2 of setup $1's rounds in $work/pg_rounds, one a line.
pg_column() {
    awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$work/pg_rounds"
}

# The median of column $2 of setup $1 over rounds.
pg_median() {
    pg_column "$1" "$2" | grep -v '^-$' | median
}

# The median over rounds of setup $1's rate / SQLite's in the same round.
pg_ratio() {
    paste -d' ' <(pg_column sqlite 2) <(pg_column "$1" 2) |
        awk '$1 > 0 && $2 != "-" { printf "%.3f\n", $2 / $1 }' | median
}

# The tables of $work/pg_rounds and $work/pg_cost.
pg_report_tables() {
    local clients=$1 setup name
    echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{ print $3 }'); send-pull with" \
        "durability full, $clients clients, ${SIZE}-byte messages, ${PG_ROUNDS} rounds of" \
        "${PG_DURATION} s each in a rotating order (medians of rounds; the ratio is the median" \
        "of each round's rate / SQLite's); load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| setup | msg/s | per round | ratio to SQLite | send p50 ms | send p99 ms | pull p50 ms | pull p99 ms | lost/dup/corrupt | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for setup in sqlite pg-1 pg-2 pgbench; do
        case $setup in
        sqlite) name="messageu-server on SQLite" ;;
        pg-1) name="messageu-server, 1 node on PostgreSQL" ;;
        pg-2) name="messageu-server, 2 nodes on one PostgreSQL database" ;;
        pgbench) name="pgbench: one-row insert transactions per second (the floor)" ;;
        esac
        printf '| %s | %s | %s | %s |' "$name" "$(pg_median "$setup" 2)" \
            "$(pg_column "$setup" 2 | paste -sd, | sed 's/,/, /g')" "$(pg_ratio "$setup")"
        if [ "$setup" = pgbench ]; then
            echo ' - | - | - | - | - | - |'
        else
            printf ' %s | %s | %s | %s | %s | %s |\n' "$(pg_median "$setup" 3)" \
                "$(pg_median "$setup" 4)" "$(pg_median "$setup" 5)" "$(pg_median "$setup" 6)" \
                "$(pg_column "$setup" 7 | paste -sd, | sed 's/,/, /g')" \
                "$(pg_column "$setup" 8 | awk '{ sum += $1 } END { print sum + 0 }')"
        fi
    done
    echo
    echo "Cost of a send-pull pair on the database: one more run of ${PG_DURATION} s per row," \
        "with pg_stat_statements on; counters over the whole run (registrations and the final" \
        "drain included) divided by the sends served; CPU: the cluster's processes and the" \
        "nodes' over the same run."
    echo
    echo "| nodes | msg/s | sends served | requests served | statements (round trips) per pair | commits per pair | rows inserted | rows updated | rows deleted | rows read | WAL bytes per pair | WAL syncs per pair | database CPU µs per pair | nodes' CPU µs per pair | lost/dup/corrupt |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$work/pg_cost"
    echo
    # Columns of a cost row: | nodes | msg/s | ... | commits per pair (the 7th) | ...
    awk -F'|' -v floor="$(pg_median pgbench 2)" '
        { commits = $3 * $7; line = line sep sprintf("%.0f with %d node(s) (%.3f of pgbench)",
            commits, $2, floor > 0 ? commits / floor : 0); sep = ", " }
        END { print "Commits per second in the cost runs (msg/s × commits per pair): " line \
            "; pgbench: " floor " one-row commits/s." }' "$work/pg_cost"
    echo
    echo "The statements of the one-node cost run, most frequent first, per send-pull pair:"
    echo
    echo "| per pair | statement |"
    echo "|---|---|"
    local pairs
    pairs=$(awk -F'|' 'NR == 1 { gsub(/ /, "", $4); print $4 }' "$work/pg_cost")
    awk -F'|' -v pairs="$pairs" \
        'pairs > 0 { printf "| %.3f | `%s` |\n", $1 / pairs, substr($2, 1, 160) }' \
        "$work/pg_statements_1"
    echo
    echo "Where the rows read come from (the same run, per send-pull pair; an index's entries"
    echo "read include those of deleted rows not yet vacuumed, which its live rows fetched do not):"
    echo
    echo "| table | index | scans | entries or rows read | live rows fetched |"
    echo "|---|---|---|---|---|"
    awk -F'|' -v pairs="$pairs" 'pairs > 0 {
        printf "| %s | %s | %.2f | %.2f | %.2f |\n", $1, $2, $3 / pairs, $4 / pairs, $5 / pairs
    }' "$work/pg_scans_1"
}
