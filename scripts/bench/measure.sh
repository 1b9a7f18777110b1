# Sourced by the benchmark parts that compare messageu-server with something else (PostgreSQL,
# Redis): one send-pull run of messageu-bench, reduced to the figures a comparison needs, and
# medians. Needs bench_bin, SIZE, WARMUP and status from scripts/bench.sh.
#
#   send_pull ADDRS CLIENTS SECONDS LABEL   prints: msg/s send-p50 send-p99 pull-p50 pull-p99
#                                           lost/dup/corrupt errors (ms; "-" if none)
#   judge FIGURES                            sets status=1 unless they show a clean run
#   median                                   the median of the numbers on standard input

send_pull() {
    local addrs=$1 clients=$2 seconds=$3 label=$4 rows
    # Exit status 1 (something was lost, duplicated or corrupted) still prints the rows, which
    # say what; judge reads it there, as this runs in a command substitution.
    rows=$("$bench_bin" --addr "$addrs" --clients "$clients" --mix send-pull --size "$SIZE" \
        --warmup "$WARMUP" --duration "$seconds" --no-floor --markdown \
        --durability-label "$label") || true
    # Columns: | clients | mix | durability | op | req/s | ... | p50 | p99 | ... | errors |
    # served | lost/dup/corrupt | ...; one row for send, then one for pull.
    awk -F'|' '
        function trim(s) { gsub(/ /, "", s); return s }
        $5 ~ /send/ { rate = trim($6); sp50 = trim($9); sp99 = trim($10); ldc = trim($16)
                      errors += trim($14) }
        $5 ~ /pull/ { pp50 = trim($9); pp99 = trim($10); errors += trim($14) }
        END { if (rate == "") print "- - - - - - -"
              else print rate, sp50, sp99, pp50, pp99, ldc, errors + 0 }' <<<"$rows"
}

judge() {
    local rate ldc
    read -r rate _ _ _ _ ldc _ <<<"$1"
    if [ "$rate" = - ] || [ "$ldc" != 0/0/0 ]; then
        echo "$(basename "$0"): a send-pull run failed or lost, duplicated or corrupted" \
            "messages: $1" >&2
        status=1
    fi
}

median() {
    sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) print "-"
              else if (NR % 2) print v[(NR + 1) / 2]
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
