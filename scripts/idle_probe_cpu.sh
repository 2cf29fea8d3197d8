#!/usr/bin/env bash
# The health checker's cost on an idle router with many backends
# (docs/performance.md, "Idle probing"): N microsocks backends on
# 127.0.0.1, a release daemon with all of them in one port range and no
# traffic, and its CPU (utime + stime from /proc/PID/stat) over the first
# WINDOW seconds (the start-up probe round included) and the WINDOW × 2
# after (routine probes of every idle backend each check_interval), and
# its RSS after each (VmRSS, and the peak VmHWM).
#
# Usage: scripts/idle_probe_cpu.sh [N, default 1000] [WINDOW, default 30] [BINARY]
# BINARY defaults to target/release/socksbalance, built first; give
# another build to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
n=${1:-1000}
window=${2:-30}
binary=${3:-}
[ "$n" -ge 1 ] && [ "$n" -le 4096 ] || { echo "N must be 1-4096" >&2; exit 2; }
need_apt microsocks microsocks
ulimit -n $((n * 4 + 256)) 2>/dev/null || true
first=23000
last=$((first + n - 1))
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
if [ -z "$binary" ]; then
    cargo build --quiet --release
    binary=target/release/socksbalance
fi
for p in $(seq "$first" "$last"); do
    microsocks -i 127.0.0.1 -p "$p" >/dev/null 2>&1 &
    pids+=($!)
done
for _ in $(seq 100); do
    up=$(ss -Htln | awk -v a="$first" -v b="$last" '{split($4, x, ":"); if (x[2] >= a && x[2] <= b) c++} END {print c + 0}')
    [ "$up" -ge "$n" ] && break
    sleep 0.1
done
[ "$up" -ge "$n" ] || { echo "only $up of $n microsocks listen" >&2; exit 1; }
printf 'listen: 127.0.0.1:0\nmode: transparent\nweb: {enabled: false}\nbackends:\n  - address: "127.0.0.1:%s-%s"\n' \
    "$first" "$last" > "$work/config.yaml"
"$binary" -c "$work/config.yaml" 2> "$work/log" &
pid=$!
pids+=("$pid")
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
rss() { awk -v k="$1" '$1 == k {print $2}' "/proc/$pid/status"; }
a=$(ticks); sleep "$window"; b=$(ticks); rss_b=$(rss VmRSS:)
sleep $((window * 2)); c=$(ticks); rss_c=$(rss VmRSS:)
pct() { awk -v t="$1" -v s="$2" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz / s * 100}'; }
echo "backends: $n, idle, check_interval 10s (default)"
echo "first ${window}s (start-up probe round): $(pct $((b - a)) "$window") % of a core"
echo "next $((window * 2))s (routine probes): $(pct $((c - b)) $((window * 2))) % of a core"
echo "RSS after the start-up round: $rss_b kB; after the routine probes: $rss_c kB (peak $(rss VmHWM:) kB)"
echo "log lines: $(wc -l < "$work/log")"
