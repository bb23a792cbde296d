#!/usr/bin/env bash
# Base image format benchmark: the same merged tree (this host's python3 and perl libraries,
# >= 100 MB of small files, like an image's layers applied) made into a read-only base with the
# `mkfs.ext4 -d` flags hearth used before (sized as it sized them: the baseline), and with
# `mkfs.erofs` as hearth now runs it (plain; lz4hc too, for comparison). Prints each one's build
# time and allocated size as ratios against ext4, measured in the same run.
# Usage: bench/base_format.sh   (needs e2fsprogs and erofs-utils)
set -euo pipefail
for tool in mkfs.ext4 mkfs.erofs; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install e2fsprogs erofs-utils" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/tree
mkdir -p "$tree"
for dir in usr/lib/python3.11 usr/lib/python3 usr/share/perl; do
    [ -d "/$dir" ] && tar -C / -cf - "$dir" | tar -C "$tree" -xf -
done
tree_mb=$(du -sm "$tree" | cut -f1)
files=$(find "$tree" | wc -l)

elapsed_ms() {
    local start end
    sync
    start=$(date +%s%N)
    "$@" > /dev/null 2>&1 || { echo "benchmark command failed: $*" >&2; exit 1; }
    sync
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
# The former ext4 sizing of hearth-image's rootfs.rs: files rounded to 4 KiB, a fifth more,
# 16 MiB of metadata.
ext4() {
    local kb inodes
    kb=$(( $(du -s --block-size=4096 "$tree" | cut -f1) * 4 * 6 / 5 + 16384 ))
    inodes=$(( files * 6 / 5 + 1024 ))
    mkfs.ext4 -q -F -d "$tree" -L hearth-image -O ^has_journal -m 0 -b 4096 -N "$inodes" \
        -E root_owner=0:0 "$tmp/base.ext4" "${kb}k"
}
erofs() { mkfs.erofs --quiet --preserve-mtime "$tmp/base.erofs" "$tree"; }
erofs_lz4hc() { mkfs.erofs --quiet --preserve-mtime -zlz4hc "$tmp/base.lz4hc.erofs" "$tree"; }

ext4_ms=$(elapsed_ms ext4)
erofs_ms=$(elapsed_ms erofs)
lz4_ms=$(elapsed_ms erofs_lz4hc)
# Allocated bytes: the ext4 image is sparse, so its length overstates it.
size() { du -k "$1" | cut -f1; }
ext4_kb=$(size "$tmp/base.ext4"); erofs_kb=$(size "$tmp/base.erofs"); lz4_kb=$(size "$tmp/base.lz4hc.erofs")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "tree:                 ${tree_mb} MB, ${files} entries"
echo "mkfs.ext4 -d:          ${ext4_ms} ms, ${ext4_kb} KiB allocated (the baseline)"
echo "mkfs.erofs (hearth):   $(ratio "$erofs_ms" "$ext4_ms")x the time, $(ratio "$erofs_kb" "$ext4_kb")x the space"
echo "mkfs.erofs -zlz4hc:    $(ratio "$lz4_ms" "$ext4_ms")x the time, $(ratio "$lz4_kb" "$ext4_kb")x the space"
