#!/usr/bin/env bash
# Builds the release binary at each opt-level and prints its size and the
# relay throughput of examples/throughput.rs, so the profile's opt-level is
# chosen by measurement. Results are recorded in docs/architecture.md.
#
# Usage: scripts/measure-opt-levels.sh [MiB per run] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-512}
runs=${2:-3}
printf '%-10s %12s  %s\n' opt-level "binary bytes" throughput
for level in z s 2 3; do
    dir=target/opt-$level
    CARGO_PROFILE_RELEASE_OPT_LEVEL=$level cargo build --quiet --release --target-dir "$dir" --bin socksbalance
    CARGO_PROFILE_RELEASE_OPT_LEVEL=$level cargo build --quiet --release --target-dir "$dir" --example throughput
    size=$(stat -c %s "$dir/release/socksbalance")
    speed=$("$dir/release/examples/throughput" "$mib" "$runs")
    printf '%-10s %12s  %s\n' "$level" "$size" "$speed"
done
