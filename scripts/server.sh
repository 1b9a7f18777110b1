# Sourced by the benchmark scripts: starts and stops messageu-server processes on free loopback
# ports, in "$work" (which the sourcing script creates).
#
#   start_server [PREFIX...] -- SERVER_BIN [SERVER_ARGS...]   sets server_pid and port
#   stop_server
#
# start_server runs one server on a fresh SQLite database, "$work/bench.db"; PREFIX runs it
# under another program (valgrind, say); its log is "$work/server.log".
#
#   start_node NAME SERVER_BIN [SERVER_ARGS...]   sets port and metrics_url
#   stop_nodes
#
# start_node runs one more server beside any others, on the database its arguments name
# (several nodes on one PostgreSQL database, say), serving metrics on a free port too; its
# log is "$work/NAME.log". stop_nodes stops every node.

server_pid=
port=
node_pids=()
metrics_url=

# Waits for the server $1, logging to $2, to listen; sets port (exits if it does not start).
await_listening() {
    local pid=$1 log=$2
    port=
    for _ in $(seq 300); do
        # The log may not exist yet: the server's shell has not opened it.
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\),.*/\1/p' "$log" 2>/dev/null || true)
        [ -n "$port" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$(basename "$0"): the server did not start:" >&2
    cat "$log" >&2
    exit 2
}

start_server() {
    local prefix=()
    while [ "$1" != "--" ]; do
        prefix+=("$1")
        shift
    done
    shift
    local bin=$1
    shift
    # The old log holds the previous server's port: it must be gone before the new one starts.
    rm -rf "$work"/bench.db* "$work/server.log"
    "${prefix[@]}" "$bin" --bind 127.0.0.1 --port 0 --db "$work/bench.db" "$@" \
        </dev/null 2>"$work/server.log" &
    server_pid=$!
    await_listening "$server_pid" "$work/server.log"
}

stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}

start_node() {
    local name=$1 bin=$2
    shift 2
    local log="$work/$name.log"
    rm -f "$log"
    "$bin" --bind 127.0.0.1 --port 0 --metrics 127.0.0.1:0 "$@" </dev/null 2>"$log" &
    node_pids+=("$!")
    await_listening "$!" "$log"
    # The metrics address is logged just after the listening line.
    metrics_url=
    for _ in $(seq 100); do
        metrics_url=$(sed -n 's/.*metrics on \(http:[^ ,]*\).*/\1/p' "$log" | head -n 1 || true)
        [ -n "$metrics_url" ] && return 0
        sleep 0.05
    done
    echo "$(basename "$0"): $name logged no metrics address" >&2
    exit 2
}

stop_nodes() {
    local pid
    for pid in "${node_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${node_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    node_pids=()
}
