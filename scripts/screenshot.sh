#!/usr/bin/env bash
# Takes the dashboard screenshots in docs/ (light, dark and phone): runs
# examples/demo.rs for a while so there is history to draw, then points
# headless Chromium at it. Needs Debian's chromium.
#
# Usage: scripts/screenshot.sh [PORT, default 17080]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-17080}
cargo build --quiet --release --example demo
target/release/examples/demo "$port" 90 > /tmp/socksbalance-demo.log &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q dashboard /tmp/socksbalance-demo.log && break
    sleep 0.1
done
sleep 60 # let the demo build up throughput history and latency samples
shoot() {
    local out=$1; shift
    local profile; profile=$(mktemp -d)
    chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
        --window-size=1200,860 --virtual-time-budget=3000 "$@" --screenshot="$out" \
        "http://127.0.0.1:$port/" 2>/dev/null
    rm -rf "$profile"
}
shoot docs/dashboard.png
shoot docs/dashboard-dark.png --force-dark-mode --blink-settings=preferredColorScheme=0
shoot docs/dashboard-phone.png --window-size=390,844
ls -l docs/dashboard*.png
