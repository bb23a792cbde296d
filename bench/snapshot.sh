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

# The sandbox's QEMU argv made runnable by hand, doing what hearth's restore does: the jail's
# handed-over descriptors (sockets, disks) become paths in our run dir, RAM is mapped from the
# snapshot's memory file copy-on-write, no boot files, no seccomp sandbox (it forbids the
# `exec:` migration used here; hearth passes a descriptor instead).
ram_file=$state/snapshots/$snap/ram
rootfs=$("$hearth" snapshot inspect "$snap" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["rootfs"])')
if [ -d "$rootfs" ]; then disks=$(find "$rootfs" -maxdepth 1 -type f -name '*.erofs' | sort); else disks=$rootfs; fi
mkdir -p "$tmp/run"
python3 - "$tmp/argv" "$ram_file" "$tmp/run" $disks > "$tmp/raw-argv" <<'PY'
import re, sys
argv = open(sys.argv[1]).read().split("\n")[:-1]
ram, run, disks = sys.argv[2], sys.argv[3], sys.argv[4:]
alone = {"-nodefaults", "-no-user-config", "-no-reboot", "-S"}
drop = {"-kernel", "-initrd", "-append", "-sandbox", "-add-fd", "-incoming"}
out, size, i = [argv[0]], None, 1
while i < len(argv):
    flag = argv[i]
    if flag in alone:
        out.append(flag)
        i += 1
        continue
    value = argv[i + 1]
    i += 2
    if flag in drop:
        continue
    if flag == "-m" or (flag == "-object" and value.startswith("memory-backend-file,")):
        size = value if flag == "-m" else re.search(r"size=([^,]+)", value).group(1)
        continue
    if flag == "-chardev" and ",fd=" in value:
        name = re.search(r"id=([^,]+)", value).group(1)
        value = re.sub(r"fd=\d+", f"path={run}/{name}.sock", value).replace("wait=on", "wait=off")
    value = re.sub(r"file=/dev/fdset/(\d+)", lambda m: "file=" + disks[int(m.group(1)) - 1], value)
    if flag == "-M" and "memory-backend=" not in value:
        value += ",memory-backend=microvm.ram"
    out += [flag, value]
out += ["-object", f"memory-backend-file,id=microvm.ram,size={size},mem-path={ram},share=off",
        "-incoming", "defer"]
print("\n".join(out))
PY
raw_restore() {
    rm -f "$tmp/run/"*.sock
    mapfile -t argv < "$tmp/raw-argv"
    "${argv[@]}" > "$tmp/raw.log" 2>&1 &
    local qemu=$!
    python3 - "$tmp/run/qmp.sock" "$state_file" <<'PY' || { kill "$qemu" 2> /dev/null; cat "$tmp/raw.log" >&2; return 1; }
import json, os, socket, sys, time
path, state = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 30
while not os.path.exists(path):
    if time.monotonic() > deadline:
        sys.exit(f"QEMU made no {path} within 30 s; see its log")
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
    wait "$qemu"
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
    # A jailed QEMU maps the file under its own root's name, so the mapping is found by inode.
    pgrep -x qemu-system-x86 | python3 -c '
import os, sys
inode = str(os.stat(sys.argv[1]).st_ino)
total = copied = template = 0
pids = []
for pid in sys.stdin.read().split():
    try:
        lines = open(f"/proc/{pid}/smaps").read().splitlines()
    except OSError:
        continue
    if not any(len(l.split()) > 4 and "-" in l.split()[0] and l.split()[4] == inode for l in lines):
        continue
    pids.append(pid)
    ours = False
    for line in lines:
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0]:
            ours = fields[4] == inode
        elif fields[0] == "Pss:":
            total += int(fields[1])
            if ours:
                template += int(fields[1])
        elif fields[0] == "Anonymous:" and ours:
            copied += int(fields[1])
n = max(len(pids), 1)
mib = lambda kib: kib / n / 1024
print(f"PSS per idle clone, N={len(pids)}: {mib(total):.1f} MiB: guest RAM copied on write "
      f"{mib(copied):.1f}, snapshot RAM shared {mib(template - copied):.1f}, "
      f"QEMU itself {mib(total - template):.1f}")' "$ram_file"
    for i in $(seq "$n"); do "$hearth" rm -f "bench-c$i" > /dev/null; done
done

# The time until BATCH clones started at once (default 50) are all exec-ready (`run -d` returns
# once a sandbox's agent answers), against one clone started alone.
batch() {
    for i in $(seq "$1"); do
        "$hearth" run -d --network none --from-snapshot "$snap" --name "bench-b$i" > /dev/null &
    done
    wait
}
unbatch() { for i in $(seq "$1"); do "$hearth" rm -f "bench-b$i" > /dev/null; done; }
size=${BATCH:-50}
one_ms=$(elapsed_ms batch 1); unbatch 1
all_ms=$(elapsed_ms batch "$size"); unbatch "$size"
echo "one clone exec-ready: ${one_ms} ms; ${size} clones started at once all exec-ready: ${all_ms} ms"
awk -v a="$all_ms" -v b="$one_ms" -v n="$size" 'BEGIN { printf "  %d at once / one alone: %.1fx (%.2fx per clone)\n", n, a / b, a / b / n }'
