# Sourced by the benchmark parts that run another program's server (PostgreSQL, Redis): a
# free loopback port, the packages they need, and an unprivileged user to run them as.
#
#   free_port                      prints a loopback port nothing listens on
#   ensure_program PROGRAM PACKAGE installs PACKAGE with apt-get if PROGRAM is missing (as root)
#   service_user_init              chooses the service's user (creating it if need be)
#   service_dir                    prints a new temporary folder the service's user owns
#   "${as_service_user[@]}" CMD    runs CMD as that user (as root), dying with this script
#   await_service NAME PID LOG CHECK...  waits until CHECK succeeds, or shows LOG and exits
#   end_service PID SIGNAL         stops the service PID with SIGNAL and waits for it

# Some port in the range Linux does not hand out as ephemeral (32768-60999 by default), so
# that no client's connection takes it between the check and the service's bind.
free_port() {
    local candidate
    while :; do
        candidate=$((10000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
}

ensure_program() {
    local program=$1 package=$2
    if command -v "$program" >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/$program" >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "$(basename "$0"): $program is missing: install $package (apt-get install $package)" >&2
        exit 2
    fi
    echo "== installing $package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q "$package" >&2
}

# PostgreSQL refuses to run as root, and neither service needs to: as root they run as the
# system user the tests' cluster uses (created if missing, else nobody). setpriv also gives
# them SIGQUIT if this script dies without stopping them.
service_user=
as_service_user=()
service_user_init() {
    as_service_user=(setpriv --pdeathsig SIGQUIT)
    if [ "$(id -u)" -eq 0 ]; then
        id -u messageu-test >/dev/null 2>&1 ||
            useradd --system --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin messageu-test 2>/dev/null || true
        service_user=messageu-test
        id -u "$service_user" >/dev/null 2>&1 || service_user=nobody
        as_service_user+=(--reuid="$(id -u "$service_user")"
            --regid="$(id -g "$service_user")" --clear-groups)
    fi
    as_service_user+=(--)
}

# Up to 30 s, while PID lives.
await_service() {
    local name=$1 pid=$2 log=$3
    shift 3
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$(basename "$0"): $name did not start:" >&2
    cat "$log" >&2
    exit 2
}

end_service() {
    if [ -n "$1" ]; then
        kill "-$2" "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

service_dir() {
    local dir
    dir=$(mktemp -d)
    if [ -n "$service_user" ]; then
        chown "$service_user:" "$dir"
    fi
    echo "$dir"
}
