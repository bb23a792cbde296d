#!/usr/bin/env bash
# Network benchmarks, each against a baseline measured in the same run:
# 1. a sandbox network's setup + teardown (namespace, veth, tap, addresses, routes, policy and
#    NAT tables) against a bare namespace + veth pair, interleaved, median of RUNS each;
# 2. TCP throughput from a guest to a sink host (a namespace made here, like the tests' test
#    internet) under the full egress policy (an allowlist plus every default block) against the
#    same guest, same VM, with the namespace's filter rules flushed (a plain tap with NAT only),
#    interleaved, median of REPS each, MB megabytes a transfer.
# Needs root, `ip` and `nft` (nftables; only to flush the rules for the baseline) and busybox.
# Usage: bench/net.sh [RUNS] [REPS] [MB]   (env: HEARTH=path/to/hearth, HEARTH_STATE_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
reps=${2:-5}
mb=${3:-32}
hearth=${HEARTH:-hearth}
for tool in ip nft busybox "$hearth"; do
    command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done

echo "== setup + teardown"
cargo run --quiet --release -p hearth-net --example net_bench -- "$runs"

echo "== TCP throughput guest → sink host"
# The sink: its own namespace on a veth pair from the host, outside hearth's pool.
tag=$(printf '%x' $$)
sink_ns=hearth-bench-sink-$tag veth=hbs$tag peer=hbp$tag
host_addr=10.214.254.1 sink_addr=10.214.254.2 port=5001
id=
cleanup() {
    [ -n "$id" ] && "$hearth" rm -f "$id" > /dev/null 2>&1
    [ -n "${sink_pid:-}" ] && kill "$sink_pid" 2> /dev/null
    # The sink's nc, whichever is listening now: every process in that namespace is ours.
    ip netns pids "$sink_ns" 2> /dev/null | xargs -r kill 2> /dev/null
    ip link del "$veth" 2> /dev/null
    ip netns del "$sink_ns" 2> /dev/null
    true
}
trap cleanup EXIT
ip netns add "$sink_ns"
ip link add "$veth" type veth peer name "$peer"
ip link set "$peer" netns "$sink_ns"
ip addr add "$host_addr/24" dev "$veth"
ip link set "$veth" up
ip -n "$sink_ns" link set lo up
ip -n "$sink_ns" addr add "$sink_addr/24" dev "$peer"
ip -n "$sink_ns" link set "$peer" up
ip -n "$sink_ns" route add default via "$host_addr"
bytes=$((mb * 1024 * 1024))
# The sink closes each connection once it has read all bytes (head, run on the socket, exits),
# which ends the guest's nc: the sender's time covers the transfer and nothing after it.
ip netns exec "$sink_ns" sh -c "while :; do busybox nc -l -p $port -e sh -c 'head -c $bytes > /dev/null'; done" &
sink_pid=$!

id=$("$hearth" run -d --allow "$sink_addr/32")
# Seconds the guest takes to send $bytes, by the guest's own clock.
send() {
    "$hearth" exec "$id" -- sh -c "
        read a _ < /proc/uptime
        dd if=/dev/zero bs=64k count=$((mb * 16)) 2> /dev/null | nc $sink_addr $port
        read b _ < /proc/uptime
        echo \$a \$b" | awk '{ printf "%.2f\n", $2 - $1 }'
}
table="inet hearth-$id"
in_ns() { ip netns exec "hearth-$id" "$@"; }
saved=$(in_ns nft list chain $table forward)
policy_on() {
    in_ns nft -f - <<< "flush chain $table forward
$saved"
    [ "$(in_ns nft list chain $table forward)" = "$saved" ] \
        || { echo "the policy's forward chain did not come back as it was" >&2; exit 1; }
}
policy_off() { in_ns nft "flush chain $table forward; chain $table forward { policy accept; }"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

send > /dev/null  # warm up
full=() plain=()
for _ in $(seq "$reps"); do
    policy_on; full+=("$(send)")
    policy_off; plain+=("$(send)")
done
full_med=$(printf '%s\n' "${full[@]}" | median)
plain_med=$(printf '%s\n' "${plain[@]}" | median)
mbps() { awk -v mb="$mb" -v s="$1" 'BEGIN { printf "%.1f", mb / s }'; }
echo "transfer: $mb MB, $reps each, medians of the guest's send time"
echo "full policy:            ${full_med} s ($(mbps "$full_med") MB/s)   [${full[*]}]"
echo "plain tap (NAT only):   ${plain_med} s ($(mbps "$plain_med") MB/s)   [${plain[*]}]"
echo "throughput ratio full/plain: $(awk -v f="$full_med" -v p="$plain_med" 'BEGIN { printf "%.2f", p / f }')"
