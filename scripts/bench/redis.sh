# Sourced by scripts/bench.sh (REDIS=N clients): messageu-server's durable send-pull against
# Redis SET on this machine, alternating.
#
#   redis_report CLIENTS   prints the markdown section (table and notes) on standard output
#
# REDIS_PAIRS times, in an order that alternates, it measures: Redis with persistence off
# (--save '' --appendonly no), messageu-server with durability full, messageu-server with
# durability normal, Redis with --appendonly yes --appendfsync always. Redis runs on a free
# loopback port, as an unprivileged user when root, its files in a temporary folder; the load
# is redis-benchmark -t set with as many clients, SIZE-byte values, random keys, on
# REDIS_THREADS threads (2: messageu-bench's default), and about REDIS_DURATION seconds of
# requests (the count follows the last rate measured). Our side is messageu-bench's send-pull
# for REDIS_DURATION seconds, each run on a fresh server and database.
#
# What each side counts: redis-benchmark counts acknowledged SETs per second; ours counts
# acknowledged messages per second: a send, acknowledged once stored (durably with
# durability full), and the client's next request, a pull, that delivers messages to it.

REDIS_PAIRS=${REDIS_PAIRS:-3}
REDIS_DURATION=${REDIS_DURATION:-3}
REDIS_THREADS=${REDIS_THREADS:-2}

redis_pid=
redis_dir=
redis_port=

# start_redis ARGS...: a fresh server with these persistence options.
start_redis() {
    service_user_init
    redis_dir=$(service_dir)
    redis_port=$(free_port)
    "${as_service_user[@]}" redis-server --bind 127.0.0.1 --port "$redis_port" \
        --dir "$redis_dir" --daemonize no --logfile "$redis_dir/redis.log" "$@" </dev/null &
    redis_pid=$!
    await_service redis-server "$redis_pid" "$redis_dir/redis.log" redis_up
}

redis_up() {
    [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]
}

stop_redis() {
    end_service "$redis_pid" TERM
    redis_pid=
    if [ -n "$redis_dir" ]; then
        rm -rf "$redis_dir"
        redis_dir=
    fi
}

# redis_set MODE CLIENTS: "SET/s p50 p99" of one redis-benchmark run on a fresh server.
declare -A redis_requests=([off]=200000 [always]=50000)
redis_set() {
    local mode=$1 clients=$2 csv
    case $mode in
    off) start_redis --save '' --appendonly no ;;
    always) start_redis --save '' --appendonly yes --appendfsync always ;;
    esac
    # --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    # "p95_latency_ms","p99_latency_ms","max_latency_ms"
    csv=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -t set -c "$clients" -d "$SIZE" \
        -r 1000000 -n "${redis_requests[$mode]}" --threads "$REDIS_THREADS" --csv)
    stop_redis
    awk -F'","' '$1 ~ /SET/ { gsub(/"/, "", $2); gsub(/"/, "", $7); gsub(/"/, "", $5)
        printf "%.0f %s %s\n", $2, $5, $7 }' <<<"$csv"
}

# One measurement of side $1; appends "side figures..." to $work/redis_rounds.
redis_measure() {
    local side=$1 clients=$2 figures
    case $side in
    redis-off | redis-always)
        figures=$(redis_set "${side#redis-}" "$clients")
        [ -n "$figures" ] || {
            echo "$(basename "$0"): redis-benchmark printed no SET rate" >&2
            exit 2
        }
        # The next run of this mode takes about REDIS_DURATION seconds.
        redis_requests[${side#redis-}]=$(awk -v rate="${figures%% *}" -v s="$REDIS_DURATION" \
            'BEGIN { n = int(rate * s); print (n < 10000 ? 10000 : n) }')
        ;;
    full | normal)
        start_server -- "$server_bin" --durability "$side"
        figures=$(send_pull "127.0.0.1:$port" "$clients" "$REDIS_DURATION" "$side")
        judge "$figures"
        stop_server
        ;;
    esac
    echo "== $side: $figures" >&2
    echo "$side $figures" >>"$work/redis_rounds"
}

redis_column() {
    awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$work/redis_rounds"
}

# The median over pairs of side $1's rate / side $2's.
redis_ratio() {
    paste -d' ' <(redis_column "$2" 2) <(redis_column "$1" 2) |
        awk '$1 > 0 && $2 != "-" { printf "%.3f\n", $2 / $1 }' | median
}

redis_report() {
    local clients=$1 pair side order name ldc
    ensure_program redis-server redis-server
    ensure_program redis-benchmark redis-tools
    : >"$work/redis_rounds"
    for pair in $(seq "$REDIS_PAIRS"); do
        order="redis-off full normal redis-always"
        if [ $((pair % 2)) -eq 0 ]; then
            order="redis-always normal full redis-off"
        fi
        for side in $order; do
            redis_measure "$side" "$clients"
        done
    done
    echo "$(redis-server --version | awk '{ print $1, $2, $3 }'); $clients clients," \
        "${SIZE}-byte values and messages, $REDIS_PAIRS pairs of about ${REDIS_DURATION} s" \
        "per side, alternating (medians of pairs); redis-benchmark on $REDIS_THREADS threads;" \
        "load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| side | acknowledged per second | per pair | p50 ms | p99 ms | lost/dup/corrupt |"
    echo "|---|---|---|---|---|---|"
    for side in redis-off redis-always full normal; do
        ldc=$(redis_column "$side" 7 | paste -sd, | sed 's/,/, /g')
        [ -n "${ldc//[, ]/}" ] || ldc=-
        case $side in
        redis-off) name="Redis SET, persistence off" ;;
        redis-always) name="Redis SET, appendfsync always" ;;
        full) name="messageu send-pull, durability full (send p50/p99)" ;;
        normal) name="messageu send-pull, durability normal (send p50/p99)" ;;
        esac
        printf '| %s | %s | %s | %s | %s | %s |\n' "$name" \
            "$(redis_column "$side" 2 | median)" \
            "$(redis_column "$side" 2 | paste -sd, | sed 's/,/, /g')" \
            "$(redis_column "$side" 3 | median)" "$(redis_column "$side" 4 | median)" "$ldc"
    done
    echo
    echo "| ratio (median of pairs) | value | target (issue 15) |"
    echo "|---|---|---|"
    echo "| durability full / Redis persistence off | $(redis_ratio full redis-off) | ≥ 0.7 |"
    echo "| durability full / Redis appendfsync always | $(redis_ratio full redis-always) | ≥ 1.3 |"
    echo "| durability normal / Redis persistence off | $(redis_ratio normal redis-off) | ≥ 0.9 |"
    echo "| durability normal / Redis appendfsync always | $(redis_ratio normal redis-always) | |"
}
