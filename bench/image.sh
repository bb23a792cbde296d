#!/usr/bin/env bash
# Image benchmark: `hearth pull` of a >=100 MB three-layer image from a local registry, cold and
# warm, against the usual pipeline measured in the same run: `skopeo copy` to an OCI layout,
# `umoci unpack`, `mkfs.ext4 -d`. Prints the ratios.
# Then the disk two images sharing layers take, and a cold boot of stacked layers against the
# same files in one layer.
# Usage: bench/image.sh   (env: HEARTH=path/to/hearth, RUNS (5), HEARTH_AGENT for its setup;
# needs docker-registry, skopeo, umoci)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
hearth=${HEARTH:-hearth}
for tool in docker-registry skopeo umoci mkfs.ext4 "$hearth"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run ./install.sh" >&2; exit 1; }
done

tmp=$(mktemp -d)
registry_pid=
cleanup() {
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# The image: three gzip layers made from this host's own files (no network needed).
layout=$tmp/layout
mkdir -p "$layout/blobs/sha256"
blob() {  # stores stdin as a blob, prints "digest size"
    local f=$tmp/blob.tmp digest
    cat > "$f"
    digest=$(sha256sum "$f" | cut -d' ' -f1)
    mv "$f" "$layout/blobs/sha256/$digest"
    echo "sha256:$digest $(stat -c %s "$layout/blobs/sha256/$digest")"
}
# layer DIR...: one gzip layer of those dirs; sets $layer (its descriptor) and $diff_id.
layer() {
    diff_id="\"sha256:$(tar -C / -cf - "$@" | sha256sum | cut -d' ' -f1)\""
    read -r digest size < <(tar -C / -cf - "$@" | gzip -1 | blob)
    layer="{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}"
}
# image TAG: a manifest of the layers in ${layers[@]} / ${diff_ids[@]}, added to the index.
manifests=()
image() {
    local config config_digest config_size manifest manifest_digest manifest_size
    config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(IFS=,; echo "${diff_ids[*]}")]}}"
    read -r config_digest config_size < <(printf '%s' "$config" | blob)
    manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config_digest\",\"size\":$config_size},\"layers\":[$(IFS=,; echo "${layers[*]}")]}"
    read -r manifest_digest manifest_size < <(printf '%s' "$manifest" | blob)
    manifests+=("{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$manifest_digest\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$1\"}}")
}
dirs=()
for dir in usr/lib/python3.11 usr/lib/python3 usr/share/perl; do
    [ -d "/$dir" ] && dirs+=("$dir")
done
[ "${#dirs[@]}" -ge 2 ] || { echo "need at least two of /usr/lib/python3.11, /usr/lib/python3, /usr/share/perl" >&2; exit 1; }
# busybox in the bottom layer gives the boot comparison a program to run.
dirs[0]="${dirs[0]} bin/busybox"
layers=(); diff_ids=()
for dir in "${dirs[@]}"; do
    # shellcheck disable=SC2086 # the bottom entry is two paths
    layer $dir; layers+=("$layer"); diff_ids+=("$diff_id")
done
image 1
layer_count=${#layers[@]}
# Tag 2 shares every layer of tag 1 but the top one, and adds a small one of its own.
unset 'layers[-1]' 'diff_ids[-1]'
layer etc/apt; layers+=("$layer"); diff_ids+=("$diff_id")
image 2
# Tag 3 is tag 1's files in one layer, to weigh booting stacked layers against one.
# shellcheck disable=SC2068
layer ${dirs[@]}; layers=("$layer"); diff_ids=("$diff_id")
image 3
# shellcheck disable=SC2046
tree_mb=$(du -scmL $(printf '/%s ' ${dirs[*]}) 2>/dev/null | tail -1 | cut -f1)
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
echo "{\"schemaVersion\":2,\"manifests\":[$(IFS=,; echo "${manifests[*]}")]}" > "$layout/index.json"

# A registry of our own on a free loopback port.
port=$(shuf -i 20000-60000 -n 1)
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$tmp/registry" "$port" > "$tmp/registry.yml"
docker-registry serve "$tmp/registry.yml" > "$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
image=127.0.0.1:$port/bench:1
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:1" "docker://$image"
for tag in 2 3; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$tag" "docker://${image%:1}:$tag"
done

pipeline() {
    rm -rf "$tmp/p"; mkdir -p "$tmp/p"
    skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$tmp/p/layout:1"
    umoci unpack --image "$tmp/p/layout:1" "$tmp/p/bundle"
    local mb
    mb=$(du -sm "$tmp/p/bundle/rootfs" | cut -f1)
    mkfs.ext4 -q -F -d "$tmp/p/bundle/rootfs" -O ^has_journal -m 0 "$tmp/p/rootfs.ext4" "$(( mb * 6 / 5 + 16 ))M"
}
state=$tmp/state
hearth_cold() { rm -rf "$state"; HEARTH_STATE_DIR=$state "$hearth" pull -q "$image"; }
hearth_warm() { HEARTH_STATE_DIR=$state "$hearth" pull -q "$image"; }

base_ms=$(elapsed_ms pipeline)
cold_ms=$(elapsed_ms hearth_cold)
warm_ms=$(elapsed_ms hearth_warm)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "image:                          ${layer_count} gzip layers, ${tree_mb} MB of files"
echo "skopeo copy + umoci unpack + mkfs.ext4 -d: ${base_ms} ms"
echo "hearth pull, cold cache:        ${cold_ms} ms  ($(ratio "$cold_ms" "$base_ms")x the pipeline)"
echo "hearth pull, warm cache:        ${warm_ms} ms  ($(ratio "$warm_ms" "$base_ms")x the pipeline)"

# Disk: the state dir (blobs and images, hard links counted once) with tag 1, then with tag 2
# too, against what the two would take stored apart (the sum of their sizes).
one=$(du -sB1 "$state" | cut -f1)
HEARTH_STATE_DIR=$state "$hearth" pull -q "${image%:1}:2" > /dev/null
two=$(du -sB1 "$state" | cut -f1)
apart=$(HEARTH_STATE_DIR=$state "$hearth" image ls --json | python3 -c 'import json, sys; print(sum(i["size_bytes"] for i in json.load(sys.stdin)))')
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo "disk, tag 1 alone:              $(mb "$one") (blobs and layers)"
echo "disk, tags 1 and 2 (sharing $(( layer_count - 1 )) of ${layer_count} layers): $(mb "$two")  ($(ratio "$two" "$one")x one image; goal <= 1.1)"
echo "their bases stored apart:      $(mb "$apart"); hearth's images dir holds $(mb "$(du -sB1 "$state/images" | cut -f1)")"

# Boot: cold `hearth run` of tag 1 (three layers, one erofs disk each, stacked by overlayfs in
# the guest) against tag 3 (the same files in one layer), interleaved, medians of RUNS.
runs=${RUNS:-5}
HEARTH_STATE_DIR=$state "$hearth" setup > /dev/null 2>&1
HEARTH_STATE_DIR=$state "$hearth" pull -q "${image%:1}:3" > /dev/null
boot() { HEARTH_STATE_DIR=$state "$hearth" run --cold --network none "$1" -- /bin/busybox true; }
stacked=(); flat=()
for _ in $(seq "$runs"); do
    stacked+=("$(elapsed_ms boot "$image")")
    flat+=("$(elapsed_ms boot "${image%:1}:3")")
done
stacked_med=$(printf '%s\n' "${stacked[@]}" | median)
flat_med=$(printf '%s\n' "${flat[@]}" | median)
echo "cold run, ${layer_count} stacked layers:    ${stacked_med} ms  [${stacked[*]}]"
echo "cold run, the same in one layer: ${flat_med} ms  [${flat[*]}]  (stacked/one: $(ratio "$stacked_med" "$flat_med"))"
