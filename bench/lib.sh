# Helpers shared by the benchmark scripts (sourced, not run).

# Runs a command quietly and prints how long it took in milliseconds; a failure ends the bench.
elapsed_ms() {
    local start end
    start=$(date +%s%N)
    "$@" > /dev/null 2>&1 || { echo "benchmark command failed: $*" >&2; exit 1; }
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}

# The median of the numbers on stdin, one per line.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Fails with an install hint unless every named program is on PATH.
need() {
    local missing=()
    for program in "$@"; do
        command -v "$program" > /dev/null || missing+=("$program")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "missing: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
}

# Proportional set size of the given pids, summed, in KiB (shared pages split between sharers).
pss_kib() {
    local total=0 pid kib
    for pid in "$@"; do
        kib=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        total=$(( total + ${kib:-0} ))
    done
    echo "$total"
}
