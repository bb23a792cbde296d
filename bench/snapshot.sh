#!/usr/bin/env bash
# Snapshot benchmark: cold `hearth run --cold -- true` against `hearth run --from-snapshot S -- true`
# (a snapshot of an idle sandbox) against a raw QEMU restore of the same state file (the
# sandbox's own argv with `-incoming`, then `cont` over QMP), interleaved, medians of RUNS,
# printed as ratios; then PSS per idle clone for N = 1, 10, 50 (CLONES), split into guest RAM
# copied on write and the rest. Those three without the sandbox network, so they do the same
# work; then a plain (warm, from the template) `hearth run -- true`, and cold and warm starts
# with the network, to show what it adds.
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

# The sandbox's argv with its run dir swapped for ours, the console unwaited, RAM mapped from
# the snapshot's memory file copy-on-write and no boot files: what hearth restores with.
ram_file=$state/snapshots/$snap/ram
mkdir -p "$tmp/run"
sed -e "s#$state/vms/$id#$tmp/run#g" -e 's#wait=on#wait=off#' "$tmp/argv" | python3 -c '
import sys
argv = sys.stdin.read().split("\n")[:-1]
ram = sys.argv[1]
out, skip = [], 0
for i, a in enumerate(argv):
    if skip:
        skip -= 1
        continue
    if a in ("-kernel", "-initrd", "-append"):
        skip = 1
        continue
    if a == "-m":
        size = argv[i + 1]
        out += ["-object", f"memory-backend-file,id=microvm.ram,size={size},mem-path={ram},share=off"]
        skip = 1
        continue
    if a.startswith("microvm,"):
        a += ",memory-backend=microvm.ram"
    out.append(a)
print("\n".join(out + ["-incoming", "defer"]))' "$ram_file" > "$tmp/raw-argv"
raw_restore() {
    rm -f "$tmp/run/"*.sock
    mapfile -t argv < "$tmp/raw-argv"
    "${argv[@]}" > "$tmp/raw.log" 2>&1 &
    python3 - "$tmp/run/qmp.sock" "$state_file" <<'PY'
import json, os, socket, sys, time
path, state = sys.argv[1], sys.argv[2]
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
def cmd(name, arguments=None):
    message = {"execute": name}
    if arguments is not None:
        message["arguments"] = arguments
    f.write(json.dumps(message) + "\n"); f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            return reply
cmd("qmp_capabilities")
cmd("migrate-set-capabilities",
    {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
cmd("migrate-incoming", {"uri": f"exec:cat '{state}'"})
while cmd("query-migrate")["return"].get("status") != "completed":
    time.sleep(0.002)
cmd("cont")
cmd("quit")
PY
    wait
}
cold() { "$hearth" run --cold --network none -- true; }
warm() { "$hearth" run --network none --from-snapshot "$snap" -- true; }
# A plain `hearth run`: warm starts by default, from the template of its image and settings.
template() { "$hearth" run --network none -- true; }
# The same two with the sandbox network (namespace, policy, NAT, DNS) made and removed.
cold_net() { "$hearth" run --cold -- true; }
template_net() { "$hearth" run -- true; }

c=(); w=(); r=(); t=(); cn=(); tn=()
warm > /dev/null 2>&1 || { echo "hearth run --from-snapshot failed; try it by hand" >&2; exit 1; }
template > /dev/null 2>&1 && template_net > /dev/null 2>&1 || { echo "hearth run failed" >&2; exit 1; }
for _ in $(seq "$runs"); do
    c+=("$(elapsed_ms cold)")
    w+=("$(elapsed_ms warm)")
    r+=("$(elapsed_ms raw_restore)")
    t+=("$(elapsed_ms template)")
    cn+=("$(elapsed_ms cold_net)")
    tn+=("$(elapsed_ms template_net)")
done
med() { printf '%s\n' "$@" | median; }
c_med=$(med "${c[@]}"); w_med=$(med "${w[@]}"); r_med=$(med "${r[@]}")
t_med=$(med "${t[@]}"); cn_med=$(med "${cn[@]}"); tn_med=$(med "${tn[@]}")
echo "snapshot: state $(du -h "$state_file" | cut -f1), memory file $(du -h "$ram_file" | cut -f1) allocated (runs: $runs, medians)"
echo "cold hearth run --cold -- true:      ${c_med} ms   [${c[*]}]"
echo "hearth run --from-snapshot -- true:  ${w_med} ms   [${w[*]}]"
echo "raw QEMU -incoming restore + cont:   ${r_med} ms   [${r[*]}]"
awk -v c="$c_med" -v w="$w_med" -v r="$r_med" 'BEGIN {
    printf "cold/from-snapshot: %.2fx faster   from-snapshot/raw restore: %.2f\n", c / w, w / r }'
echo "warm start (template), no network:   ${t_med} ms   [${t[*]}]"
echo "with the network, cold:              ${cn_med} ms   [${cn[*]}]"
echo "with the network, warm:              ${tn_med} ms   [${tn[*]}]"
awk -v c="$c_med" -v cn="$cn_med" -v t="$t_med" -v tn="$tn_med" 'BEGIN {
    printf "the network adds %d ms to a cold start (%.2fx) and %d ms to a warm one (%.2fx)\n",
        cn - c, cn / c, tn - t, tn / t }'

# PSS per idle clone: N clones from the snapshot. Of each VMM's PSS, the pages of the memory
# file's mapping that are anonymous are guest RAM the clone copied on write; the file's shared
# pages and QEMU's own memory make the rest.
for n in ${CLONES:-1 10 50}; do
    for i in $(seq "$n"); do
        "$hearth" run -d --network none --from-snapshot "$snap" --name "bench-c$i" > /dev/null
    done
    sleep 2
    pgrep -f -- "mem-path=$ram_file,share=off" | python3 -c '
import sys
ram = sys.argv[1]
pids = sys.stdin.read().split()
total = copied = template = 0
for pid in pids:
    mapping = None
    for line in open(f"/proc/{pid}/smaps"):
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0]:
            mapping = fields[5] if len(fields) > 5 else ""
        elif fields[0] == "Pss:":
            total += int(fields[1])
            if mapping == ram:
                template += int(fields[1])
        elif fields[0] == "Anonymous:" and mapping == ram:
            copied += int(fields[1])
n = max(len(pids), 1)
mib = lambda kib: kib / n / 1024
print(f"PSS per idle clone, N={len(pids)}: {mib(total):.1f} MiB: guest RAM copied on write "
      f"{mib(copied):.1f}, snapshot RAM shared {mib(template - copied):.1f}, "
      f"QEMU itself {mib(total - template):.1f}")' "$ram_file"
    for i in $(seq "$n"); do "$hearth" rm -f "bench-c$i" > /dev/null; done
done
