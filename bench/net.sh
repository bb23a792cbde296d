#!/usr/bin/env bash
# Network benchmark: a sandbox network's setup + teardown (namespace, veth, tap, addresses,
# routes, policy and NAT tables) against a bare namespace + veth pair, interleaved in one run,
# median of RUNS each. Needs root.
# Usage: bench/net.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p hearth-net --example net_bench -- "${1:-50}"
