#!/usr/bin/env bash
# Exec benchmark: median latency of `hearth exec SANDBOX -- true` against a container exec of
# `true` measured in the same run (hyperfine, interleaved warm-up, RUNS each), and the memory
# (PSS) of the idle sandbox's host processes against the idle container's.
#
# Baseline: `podman exec` (runc, cgroupfs, --network none) when podman can start a container
# here. Where it cannot (podman always asks the runtime to raise RLIMIT_NOFILE, which needs
# CAP_SYS_RESOURCE; machines without it, such as hearth's development machines, refuse), the
# baseline is `runc exec` on a runc container of the same busybox tree in its own network
# namespace: the work `podman exec` hands to its runtime, without podman's own overhead, so a
# stricter baseline than the goal names. The script says which one it used.
# Usage: bench/exec.sh [RUNS]   (env: HEARTH=path/to/hearth; needs hyperfine, runc, podman)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-200}
hearth=${HEARTH:-hearth}
need hyperfine runc python3 "$hearth"

tmp=$(mktemp -d)
name=bench-exec-$$
container=bench-exec-$$
image=localhost/hearth-bench-busybox:latest
cleanup() {
    "$hearth" rm -f "$name" > /dev/null 2>&1 || true
    podman rm -f "$container" > /dev/null 2>&1 || true
    podman rmi "$image" > /dev/null 2>&1 || true
    runc delete -f "$container" > /dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# The container's tree: busybox and its applets, like hearth's built-in image.
mkdir -p "$tmp/bundle/rootfs/bin"
cp /bin/busybox "$tmp/bundle/rootfs/bin/busybox"
for applet in sh true sleep; do ln -s busybox "$tmp/bundle/rootfs/bin/$applet"; done

baseline=""
if command -v podman > /dev/null \
    && tar -C "$tmp/bundle/rootfs" -c . | podman import -q - "$image" > /dev/null 2>&1 \
    && podman --runtime runc --cgroup-manager cgroupfs run -d --name "$container" \
        --network none "$image" sleep 1000000 > /dev/null 2> "$tmp/podman.err"; then
    baseline="podman exec $container true"
    container_pids=$(podman inspect --format '{{.State.ConmonPid}} {{.State.Pid}}' "$container")
else
    echo "podman cannot start containers here: $(tail -1 "$tmp/podman.err" 2>/dev/null)" >&2
    echo "using runc exec as the baseline (podman's runtime, without podman)" >&2
    (cd "$tmp/bundle" && runc spec)
    python3 - "$tmp/bundle/config.json" << 'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"].pop("rlimits", None)  # needs CAP_SYS_RESOURCE; the defaults are kept instead
config["process"]["terminal"] = False
config["process"]["args"] = ["sleep", "1000000"]
json.dump(config, open(path, "w"))
PY
    (cd "$tmp/bundle" && runc run -d "$container" < /dev/null > /dev/null)
    baseline="runc exec $container true"
    container_pids=$(runc state "$container" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
fi

"$hearth" run -d --name "$name" > /dev/null
id=$("$hearth" inspect "$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

hyperfine -N --style basic --warmup 10 --runs "$runs" --export-json "$tmp/exec.json" \
    "$hearth exec $name -- true" "$baseline" > "$tmp/hyperfine.out"
read -r ours theirs < <(python3 -c '
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print(" ".join("%.2f" % (r["median"] * 1000) for r in results))' "$tmp/exec.json")

# Host processes of the idle sandbox: its supervisor (which also relays the agent's channels)
# and QEMU (the guest's RAM is QEMU's own, so its touched pages count once).
sleep 2
sandbox_pids=$(pgrep -f "supervise $id|vms/$id/" | tr '\n' ' ')
ours_kib=$(pss_kib $sandbox_pids)
theirs_kib=$(pss_kib $container_pids)

echo "exec latency, median of $runs (hyperfine):"
echo "  hearth exec $name -- true:  $ours ms"
echo "  $baseline:  $theirs ms"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "  ratio hearth/baseline: %.2f (goal ≤ 1.5 against podman exec)\n", a / b }'
echo "idle memory (PSS of host processes):"
echo "  hearth sandbox (pids $sandbox_pids): $(( ours_kib / 1024 )) MiB (guest RAM 512 MiB, touched pages only)"
echo "  container (pids $container_pids): $(( theirs_kib / 1024 )) MiB"
awk -v a="$ours_kib" -v b="$theirs_kib" 'BEGIN { printf "  ratio hearth/container: %.1f\n", a / b }'
