#!/usr/bin/env bash
# SDK benchmark: one E2B SDK round trip — `Sandbox.create()`, `commands.run("true")`, `kill()`
# with the real `e2b` Python SDK against `hearth serve --e2b-listen` — against the same work
# through hearth's own CLI (`hearth run -d IMAGE`, `hearth exec -- bash -l -c true`, `hearth
# rm -f`), in the same run on the same image, reported as a ratio of medians (goal: <= 1.1).
# The image is a busybox tree plus the host's /bin/bash (the SDK runs commands with bash),
# made with umoci and imported, unless IMAGE names another.
# Usage: bench/sdk.sh [RUNS]   (env: HEARTH=path/to/hearth, IMAGE=ref; needs python3-venv,
# umoci, PyPI for the SDK)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
hearth=${HEARTH:-hearth}
need python3 umoci ldd "$hearth"

tmp=$(mktemp -d)
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null
    "$hearth" rm -f "bench-sdk-$$" > /dev/null 2>&1 || true
    [ -z "${IMAGE:-}" ] && "$hearth" image rm localhost/hearth-bench-bash:1 > /dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

image=${IMAGE:-}
if [ -z "$image" ]; then
    image=localhost/hearth-bench-bash:1
    umoci init --layout "$tmp/oci" > /dev/null
    umoci new --image "$tmp/oci:1" > /dev/null
    umoci unpack --image "$tmp/oci:1" "$tmp/bundle" > /dev/null
    root=$tmp/bundle/rootfs
    mkdir -p "$root/bin"
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh true cat sleep; do ln -sf busybox "$root/bin/$applet"; done
    for file in /bin/bash $(ldd /bin/bash | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$file")"
        cp -L "$file" "$root$file"
    done
    umoci repack --image "$tmp/oci:1" "$tmp/bundle" > /dev/null
    "$hearth" image import --name "$image" "$tmp/oci" > /dev/null
fi

python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check e2b==2.63.0

echo "sdk-bench-key" > "$tmp/keys"
"$hearth" serve --listen 127.0.0.1:0 --e2b-listen 127.0.0.1:0 --api-key-file "$tmp/keys" \
    --e2b-template "base=$image" > "$tmp/serve.out" 2> "$tmp/serve.err" &
server=$!
for _ in $(seq 100); do grep -q "e2b listening on" "$tmp/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^e2b listening on //p' "$tmp/serve.out")
[ -n "$url" ] || { echo "hearth serve did not start: $(cat "$tmp/serve.err")" >&2; exit 1; }

# The SDK runs in one long-lived process, as in an agent or CI job: Python's start and the
# SDK's import (a few hundred ms) are not part of a round trip.
cat > "$tmp/round_trip.py" << 'PY'
import sys, time
from e2b import Sandbox
def round_trip():
    start = time.monotonic()
    sandbox = Sandbox.create("base")
    sandbox.commands.run("true")
    sandbox.kill()
    return int((time.monotonic() - start) * 1000)
round_trip()  # warm-up
print(round_trip())
PY
sdk() {
    E2B_API_URL=$url E2B_SANDBOX_URL=$url E2B_API_KEY=sdk-bench-key \
        "$tmp/venv/bin/python" "$tmp/round_trip.py"
}
cli() {
    "$hearth" run -d --name "bench-sdk-$$" "$image" -- sleep 1000000 \
        && "$hearth" exec "bench-sdk-$$" -- /bin/bash -l -c true \
        && "$hearth" rm -f "bench-sdk-$$"
}

# Interleaved, after a warm-up each, so both see the same host load.
cli > /dev/null
for _ in $(seq "$runs"); do
    sdk >> "$tmp/sdk.ms" || { echo "the SDK round trip failed" >&2; exit 1; }
    elapsed_ms cli >> "$tmp/cli.ms"
done
ours=$(median < "$tmp/sdk.ms")
theirs=$(median < "$tmp/cli.ms")
echo "create + run(\"true\") + kill, median of $runs on $image:"
echo "  E2B Python SDK through hearth serve:  $ours ms"
echo "  hearth CLI (run -d, exec, rm -f):     $theirs ms"
python3 -c "print('ratio SDK / CLI: %.2f (goal <= 1.1)' % ($ours / $theirs))"
