#!/usr/bin/env bash
# Size report: the stripped release binaries for x86_64 and mipsel musl
# (the latter against the 1.0 MiB budget of docs/performance.md), then what
# each crate costs in the x86_64 build (cargo-bloat, installed if missing).
#
# Usage: scripts/size-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
version=$(crate_version)
for t in x86_64-unknown-linux-musl mipsel-unknown-linux-musl; do
    [ -f "dist/socksbalance-$version-$t" ] || scripts/build.sh --local "$t" >/dev/null
done
budget=$((1024 * 1024))
printf '%-32s %10s  %s\n' target bytes "vs 1.0 MiB"
for t in x86_64-unknown-linux-musl mipsel-unknown-linux-musl; do
    size=$(stat -c %s "dist/socksbalance-$version-$t")
    printf '%-32s %10s  %+d\n' "$t" "$size" $((size - budget))
done
command -v cargo-bloat >/dev/null 2>&1 || cargo install -q --locked cargo-bloat
echo
echo "What each crate costs in .text (x86_64, host build; LTO files generic"
echo "code from dependencies under socksbalance):"
cargo bloat --release --crates -n 12 2>/dev/null | sed -n '/File/,$p'
