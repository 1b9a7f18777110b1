#!/usr/bin/env bash
# Before and after: runs scripts/bench.sh and scripts/bench-large.sh against two
# messageu-server binaries, alternating them PAIRS times each (A B, B A, A B, ...) so that a
# shared, noisy machine drifts alike for both, and prints, for every figure the two scripts
# report, each run's value and the median ratio B/A over the pairs. The full reports are kept
# in OUT (default: a temporary folder, printed at the end).
#
#   scripts/bench-before-after.sh OLD_SERVER_BIN NEW_SERVER_BIN
#
# PAIRS (default 3), and the variables of both scripts (CLIENTS, DURATION, ROUNDS, SIZE...,
# which then apply to both), may be overridden. Set SKIP_LARGE=1 or SKIP_MATRIX=1 to run one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
    echo "usage: $0 OLD_SERVER_BIN NEW_SERVER_BIN" >&2
    exit 2
fi
bins=("$(realpath "$1")" "$(realpath "$2")")
PAIRS=${PAIRS:-3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

# mawk has no asort: the median of v[1..n], sorting in place.
AWK_MEDIAN='function median(v, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return v[int((n + 1) / 2)]
}'

# The figures of one report, a "name<TAB>value" line each.
matrix_figures() {
    awk -F'|' '$2 ~ /^ *[0-9]+ *$/ {
        for (i = 2; i <= 6; i++) gsub(/^ +| +$/, "", $i)
        print $2 " clients, " $3 ", " $4 ", " $5 ": req/s\t" $6
    }' "$1"
}
large_figures() {
    awk -F'|' '
        $2 ~ /^ (send|pull) $/ && $3 ~ /^ *[0-9]+ *$/ {
            gsub(/ /, "", $2); gsub(/ /, "", $3); print "lone transfer, " $2 ": MiB/s\t" $3
        }
        $5 ~ / send / && $4 ~ /alone/ { gsub(/ /, "", $6); alone[++n] = $6 }
        /^Throughput the/ { sub(/.*median /, ""); sub(/\.$/, ""); print "share kept beside transfers\t" $0 }
        END { if (n) print "send-pull alone, median of rounds: req/s\t" median(alone, n) }
        '"$AWK_MEDIAN" "$1"
}

# Runs one script against binary $2, appending its figures, tagged A or B, to $OUT/figures.
run() {
    local script=$1 bin=$2 tag=$3 pair=$4
    local report="$OUT/$(basename "$script" .sh)-$tag-$pair.md"
    echo "== $script, build $tag ($bin), pair $pair" >&2
    SERVER_BIN=$bin "$script" >"$report" 2>>"$OUT/stderr.log" || echo "$script failed; see $report" >&2
    local extract=matrix_figures
    [ "$script" = scripts/bench-large.sh ] && extract=large_figures
    "$extract" "$report" | sed "s/^/$tag\t$pair\t/" >>"$OUT/figures"
}

: >"$OUT/figures"
scripts=()
[ -z "${SKIP_MATRIX:-}" ] && scripts+=(scripts/bench.sh)
[ -z "${SKIP_LARGE:-}" ] && scripts+=(scripts/bench-large.sh)
for script in "${scripts[@]}"; do
    for pair in $(seq "$PAIRS"); do
        if [ $((pair % 2)) -eq 1 ]; then order=(0 1); else order=(1 0); fi
        for i in "${order[@]}"; do
            run "$script" "${bins[$i]}" "$([ "$i" -eq 0 ] && echo A || echo B)" "$pair"
        done
    done
done

echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr)."
echo "A: ${bins[0]}"
echo "B: ${bins[1]}"
echo
echo "| figure | A, per pair | B, per pair | median B/A |"
echo "|---|---|---|---|"
awk -F'\t' '
    { key = $3; if (!(key in seen)) { seen[key] = 1; keys[++k] = key }
      value[key, $1, $2] = $4; if ($2 > pairs) pairs = $2 }
    END {
        for (i = 1; i <= k; i++) {
            key = keys[i]; a = ""; b = ""; n = 0
            for (p = 1; p <= pairs; p++) {
                a = a (p > 1 ? ", " : "") value[key, "A", p]
                b = b (p > 1 ? ", " : "") value[key, "B", p]
                if (value[key, "A", p] > 0 && value[key, "B", p] != "")
                    ratios[++n] = value[key, "B", p] / value[key, "A", p]
            }
            m = n ? sprintf("%.2f", median(ratios, n)) : "-"
            delete ratios
            print "| " key " | " a " | " b " | " m " |"
        }
    }
    '"$AWK_MEDIAN" "$OUT/figures"
echo
echo "Reports: $OUT"
