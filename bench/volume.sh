#!/usr/bin/env bash
# Volume benchmark: sequential write and read throughput and small-file creation (untar of a
# tree of FILES small files) through a `-v` mount, against the guest's own disk (the overlay's
# upper layer) in the same sandbox and against the same work on the host, all in one run.
# Each figure is the median of RUNS; times are taken inside the guest (and on the host for the
# host's figures), so exec overhead is not counted.
# Usage: bench/volume.sh [RUNS] [MIB] [FILES]   (env: HEARTH=path/to/hearth)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-3}
mib=${2:-32}
files=${3:-2000}
hearth=${HEARTH:-hearth}
need python3 tar "$hearth"

tmp=$(mktemp -d)
name=bench-volume-$$
cleanup() {
    "$hearth" rm -f "$name" > /dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# A source-tree-like tarball: FILES files of 200..4000 bytes in directories of 50.
python3 - "$tmp/tree.tar" "$files" << 'PY'
import io, random, sys, tarfile
path, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
with tarfile.open(path, "w") as tar:
    for i in range(count):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(200, 4000)))
        info = tarfile.TarInfo(f"tree/d{i // 50}/f{i}.c")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
PY
mkdir -p "$tmp/mnt" "$tmp/host"

"$hearth" run -d --name "$name" -v "$tmp/mnt:/mnt" > /dev/null
"$hearth" cp "$tmp/tree.tar" "$name:/tmp/tree.tar"

# Milliseconds of WORK in DIR, as the clock of the side that runs it sees it. DROP=1 drops
# the page cache before a read (the guest's own; the host's is left alone, so its reads come
# from cache, which makes the host a stricter baseline).
# The clock is /proc/uptime (10 ms steps): busybox `date` has no %N.
script='
now() { read up _ < /proc/uptime; echo $(( ${up%.*}${up#*.} * 10 )); }
dir=$1; work=$2; mib=$3; tree=$4; drop=$5
rm -rf "$dir/bench"; mkdir -p "$dir/bench"; sync
case $work in
  write) t0=$(now); dd if=/dev/zero of="$dir/bench/seq" bs=1M count=$mib 2>/dev/null; sync; t1=$(now) ;;
  read) dd if=/dev/zero of="$dir/bench/seq" bs=1M count=$mib 2>/dev/null; sync
        [ "$drop" = 1 ] && echo 3 > /proc/sys/vm/drop_caches
        t0=$(now); dd if="$dir/bench/seq" of=/dev/null bs=1M 2>/dev/null; t1=$(now) ;;
  untar) t0=$(now); tar -xf "$tree" -C "$dir/bench"; sync; t1=$(now) ;;
esac
rm -rf "$dir/bench"
echo $(( t1 - t0 ))'

measure() { # guest|host DIR WORK
    local i
    for i in $(seq "$runs"); do
        if [ "$1" = guest ]; then
            "$hearth" exec "$name" -- sh -c "$script" sh "$2" "$3" "$mib" /tmp/tree.tar 1
        else
            sh -c "$script" sh "$2" "$3" "$mib" "$tmp/tree.tar" 0
        fi
    done | median
}

printf '%-8s %12s %12s %12s %10s %10s\n' work mount_ms disk_ms host_ms mount/disk mount/host
for work in write read untar; do
    mount_ms=$(measure guest /mnt "$work")
    disk_ms=$(measure guest /root "$work")
    host_ms=$(measure host "$tmp/host" "$work")
    awk -v w="$work" -v m="$mount_ms" -v d="$disk_ms" -v h="$host_ms" 'BEGIN {
        d = (d < 1 ? 1 : d); h = (h < 1 ? 1 : h)
        printf "%-8s %12d %12d %12d %10.1f %10.1f\n", w, m, d, h, m / d, m / h }'
done
echo "(write and read: $mib MiB sequential; untar: $files files; median of $runs; lower is better;"
echo " ratios are times, so 3.0 means the mount takes three times as long)"
