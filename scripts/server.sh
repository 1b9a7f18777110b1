# Sourced by the benchmark scripts: starts and stops one messageu-server on a fresh database
# in "$work" (which the sourcing script creates), on a free loopback port.
#
#   start_server [PREFIX...] -- SERVER_BIN [SERVER_ARGS...]   sets server_pid and port
#   stop_server
#
# PREFIX runs the server under another program (valgrind, say); the server's log is
# "$work/server.log".

server_pid=
port=

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
    port=
    for _ in $(seq 300); do
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\),.*/\1/p' "$work/server.log" 2>/dev/null)
        [ -n "$port" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$(basename "$0"): $bin did not start:" >&2
    cat "$work/server.log" >&2
    exit 2
}

stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
