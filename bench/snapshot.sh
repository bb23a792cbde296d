#!/usr/bin/env bash
# Snapshot benchmark: cold `hearth run -- true` against `hearth run --from-snapshot S -- true`
# (a snapshot of an idle sandbox) against a raw QEMU restore of the same state file (the
# sandbox's own argv with `-incoming`, then `cont` over QMP), interleaved, medians of RUNS,
# printed as ratios; then PSS per idle clone for a few N. All without the sandbox network, so
# the three do the same work.
# Usage: bench/snapshot.sh [RUNS]   (env: HEARTH=path/to/hearth, HEARTH_STATE_DIR)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need python3
runs=${1:-5}
hearth=${HEARTH:-hearth}
state=${HEARTH_STATE_DIR:-/var/lib/hearth}
snap=bench-snapshot-$$
tmp=$(mktemp -d)
cleanup() {
    "$hearth" ls -a --json 2>/dev/null | python3 -c 'import json,sys
for r in json.load(sys.stdin):
    if r["name"].startswith("bench-"): print(r["name"])' | xargs -r "$hearth" rm -f > /dev/null 2>&1 || true
    "$hearth" snapshot rm "$snap" > /dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# The template: an idle sandbox; its QEMU argv is kept for the raw restore.
id=$("$hearth" run -d --network none --name bench-src)
qemu_pid=$(pgrep -f -- "$state/vms/$id/" | head -1)
tr '\0' '\n' < "/proc/$qemu_pid/cmdline" > "$tmp/argv"
"$hearth" snapshot create --stop bench-src "$snap" > /dev/null
state_file=$state/snapshots/$snap/state

# The sandbox's argv with its run dir swapped for ours, the console unwaited, loading the state.
mkdir -p "$tmp/run"
sed -e "s#$state/vms/$id#$tmp/run#g" -e 's#wait=on#wait=off#' "$tmp/argv" > "$tmp/raw-argv"
raw_restore() {
    rm -f "$tmp/run/"*.sock
    mapfile -t argv < "$tmp/raw-argv"
    "${argv[@]}" -incoming "exec:cat '$state_file'" > "$tmp/raw.log" 2>&1 &
    python3 - "$tmp/run/qmp.sock" <<'PY'
import json, os, socket, sys, time
path = sys.argv[1]
while not os.path.exists(path):
    time.sleep(0.002)
s = socket.socket(socket.AF_UNIX)
while True:
    try:
        s.connect(path); break
    except (ConnectionRefusedError, FileNotFoundError):
        time.sleep(0.002)
f = s.makefile("rw")
f.readline()
def cmd(name):
    f.write(json.dumps({"execute": name}) + "\n"); f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            return reply
cmd("qmp_capabilities")
while cmd("query-status")["return"]["status"] != "paused":
    time.sleep(0.002)
cmd("cont")
cmd("quit")
PY
    wait
}
cold() { "$hearth" run --network none -- true; }
warm() { "$hearth" run --network none --from-snapshot "$snap" -- true; }

c=(); w=(); r=()
warm > /dev/null 2>&1 || { echo "hearth run --from-snapshot failed; try it by hand" >&2; exit 1; }
for _ in $(seq "$runs"); do
    c+=("$(elapsed_ms cold)")
    w+=("$(elapsed_ms warm)")
    r+=("$(elapsed_ms raw_restore)")
done
c_med=$(printf '%s\n' "${c[@]}" | median)
w_med=$(printf '%s\n' "${w[@]}" | median)
r_med=$(printf '%s\n' "${r[@]}" | median)
echo "state file:                          $(du -h "$state_file" | cut -f1) (runs: $runs, medians)"
echo "cold hearth run -- true:             ${c_med} ms   [${c[*]}]"
echo "hearth run --from-snapshot -- true:  ${w_med} ms   [${w[*]}]"
echo "raw QEMU -incoming restore + cont:   ${r_med} ms   [${r[*]}]"
awk -v c="$c_med" -v w="$w_med" -v r="$r_med" 'BEGIN {
    printf "cold/from-snapshot: %.2fx faster   from-snapshot/raw restore: %.2f\n", c / w, w / r }'

# PSS per idle clone: N clones from the snapshot, the VMM processes' PSS summed over N.
for n in ${CLONES:-1 2 4}; do
    for i in $(seq "$n"); do
        "$hearth" run -d --network none --from-snapshot "$snap" --name "bench-c$i" > /dev/null
    done
    sleep 2
    pids=$(pgrep -f -- "$state/vms/" || true)
    # shellcheck disable=SC2086
    total=$(pss_kib $pids)
    echo "PSS per idle clone, N=$n:  $(( total / n / 1024 )) MiB (full-RAM restore: no page sharing yet)"
    for i in $(seq "$n"); do "$hearth" rm -f "bench-c$i" > /dev/null; done
done
