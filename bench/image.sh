#!/usr/bin/env bash
# Image benchmark: `hearth pull` of a >=100 MB three-layer image from a local registry, cold and
# warm, against the usual pipeline measured in the same run: `skopeo copy` to an OCI layout,
# `umoci unpack`, `mkfs.ext4 -d`. Prints the ratios.
# Usage: bench/image.sh   (env: HEARTH=path/to/hearth; needs docker-registry, skopeo, umoci)
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
layers=(); diff_ids=()
for dir in usr/lib/python3.11 usr/lib/python3 usr/share/perl; do
    [ -d "/$dir" ] || continue
    diff_ids+=("\"sha256:$(tar -C / -cf - "$dir" | sha256sum | cut -d' ' -f1)\"")
    read -r digest size < <(tar -C / -cf - "$dir" | gzip -1 | blob)
    layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}")
done
tree_mb=$(du -scm /usr/lib/python3.11 /usr/lib/python3 /usr/share/perl 2>/dev/null | tail -1 | cut -f1)
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(IFS=,; echo "${diff_ids[*]}")]}}"
read -r config_digest config_size < <(printf '%s' "$config" | blob)
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config_digest\",\"size\":$config_size},\"layers\":[$(IFS=,; echo "${layers[*]}")]}"
read -r manifest_digest manifest_size < <(printf '%s' "$manifest" | blob)
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$manifest_digest\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"1\"}}]}" > "$layout/index.json"

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
echo "image:                          ${#layers[@]} gzip layers, ${tree_mb} MB of files"
echo "skopeo copy + umoci unpack + mkfs.ext4 -d: ${base_ms} ms"
echo "hearth pull, cold cache:        ${cold_ms} ms  ($(ratio "$cold_ms" "$base_ms")x the pipeline)"
echo "hearth pull, warm cache:        ${warm_ms} ms  ($(ratio "$warm_ms" "$base_ms")x the pipeline)"
