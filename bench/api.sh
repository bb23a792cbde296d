#!/usr/bin/env bash
# API benchmark: median latency of `true` run in one sandbox through `POST /v1/sandboxes/{s}/exec`
# (curl, a new connection each time, as a simple client does) against `hearth exec SANDBOX --
# true`, measured in the same run (hyperfine, RUNS each), reported as a ratio (goal: <= 1.05).
# Usage: bench/api.sh [RUNS]   (env: HEARTH=path/to/hearth; needs hyperfine, curl, python3)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-100}
hearth=${HEARTH:-hearth}
need hyperfine curl python3 "$hearth"

tmp=$(mktemp -d)
name=bench-api-$$
cleanup() {
    "$hearth" rm -f "$name" > /dev/null 2>&1 || true
    [ -n "${server:-}" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "api-bench-key" > "$tmp/keys"
"$hearth" serve --listen 127.0.0.1:0 --api-key-file "$tmp/keys" > "$tmp/serve.out" 2> "$tmp/serve.err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$tmp/serve.out")
[ -n "$url" ] || { echo "hearth serve did not start: $(cat "$tmp/serve.err")" >&2; exit 1; }

auth="Authorization: Bearer api-bench-key"
curl -sf -H "$auth" -H 'content-type: application/json' \
    -d "{\"name\": \"$name\", \"network\": {\"mode\": \"none\"}}" "$url/v1/sandboxes" > /dev/null
printf '{"command": ["true"]}' > "$tmp/exec.json"
api="curl -sf -H '$auth' -H 'content-type: application/json' --data-binary @$tmp/exec.json $url/v1/sandboxes/$name/exec"
cli="$hearth exec $name -- true"

hyperfine -N --warmup 5 --runs "$runs" --export-json "$tmp/result.json" "$api" "$cli" > /dev/null
python3 - "$tmp/result.json" << 'PY'
import json, sys
api, cli = (r["median"] * 1000 for r in json.load(open(sys.argv[1]))["results"])
print(f"exec through the API:  {api:.1f} ms (median)")
print(f"hearth exec:           {cli:.1f} ms (median)")
print(f"ratio API / CLI:       {api / cli:.2f}")
PY
