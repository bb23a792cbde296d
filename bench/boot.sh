#!/usr/bin/env bash
# Boot benchmark: `hearth run -- true` against a raw QEMU microvm boot of the same kernel and
# initramfs whose /init only powers off, measured in the same run (interleaved), median of RUNS.
# Usage: bench/boot.sh [RUNS]   (env: HEARTH=path/to/hearth, HEARTH_STATE_DIR)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-7}
hearth=${HEARTH:-hearth}
state=${HEARTH_STATE_DIR:-/var/lib/hearth}
kernel=$state/boot/vmlinuz
initramfs=$state/boot/initramfs.cpio
for f in "$kernel" "$initramfs"; do
    [ -f "$f" ] || { echo "missing $f: run hearth setup" >&2; exit 1; }
done
accel=tcg
if "$hearth" doctor --json 2>/dev/null | grep -q '"accel": *"kvm"'; then accel=kvm; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Baseline initramfs: hearth's own, with a second archive appended whose /init overrides the
# agent by a busybox script that powers off at once (the kernel unpacks both, later wins).
mkdir -p "$tmp/root/bin"
cp /bin/busybox "$tmp/root/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$tmp/root/init"
chmod 755 "$tmp/root/init"
(cd "$tmp/root" && find . | cpio --quiet -o -H newc) > "$tmp/overlay.cpio"
cat "$initramfs" "$tmp/overlay.cpio" > "$tmp/baseline.cpio"

# The baseline boots with exactly the kernel arguments hearth gives its guests (minus hearth's
# own), so tuning such as the TCG clock settings helps both sides alike.
cmdline=$("$hearth" run -- cat /proc/cmdline | tr ' ' '\n' | grep -v '^hearth\.' | tr '\n' ' ')
[ -n "$cmdline" ] || { echo "could not read the guest kernel command line" >&2; exit 1; }

raw_boot() {
    qemu-system-x86_64 -M microvm,acpi=on,pcie=off,rtc=on -accel "$accel" -cpu max -smp 1 -m 512M \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$kernel" -initrd "$tmp/baseline.cpio" \
        -append "$cmdline" -serial "file:$tmp/console.log"
}
hearth_run() { "$hearth" run -- true; }
# Like for like with the raw boot, which has no NIC: the same without hearth's network.
hearth_run_bare() { "$hearth" run --network none -- true; }


raw=(); ours=(); bare=()
hearth_run > /dev/null 2>&1 || { echo "hearth run failed; try it by hand" >&2; exit 1; }  # warm caches
for _ in $(seq "$runs"); do
    raw+=("$(elapsed_ms raw_boot)")
    ours+=("$(elapsed_ms hearth_run)")
    bare+=("$(elapsed_ms hearth_run_bare)")
done
raw_med=$(printf '%s\n' "${raw[@]}" | median)
ours_med=$(printf '%s\n' "${ours[@]}" | median)
bare_med=$(printf '%s\n' "${bare[@]}" | median)
echo "accelerator:              $accel (runs: $runs, medians)"
echo "guest kernel arguments:   $cmdline"
echo "raw QEMU boot → poweroff: ${raw_med} ms   [${raw[*]}]"
echo "hearth run -- true:       ${ours_med} ms   [${ours[*]}]"
echo "  with --network none:    ${bare_med} ms   [${bare[*]}]"
awk -v a="$ours_med" -v b="$raw_med" 'BEGIN { printf "ratio hearth/raw:         %.2f (goal ≤ 1.15; includes the sandbox network)\n", a / b }'
awk -v a="$bare_med" -v b="$raw_med" 'BEGIN { printf "  without the network:    %.2f\n", a / b }'
