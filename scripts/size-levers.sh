#!/usr/bin/env bash
# Measures what each size setting of scripts/lib.sh (size_rustflags and
# friends) contributes to one build-std target's stripped binary: builds
# it once per row, each row adding one setting to the row above, into
# target/size-levers/ (never into dist/). Prints a Markdown table.
#
# Usage: scripts/size-levers.sh [TARGET]     default mipsel-unknown-linux-musl
# Takes one full build-std build per row (about 3-4 minutes each on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
t=${1:-mipsel-unknown-linux-musl}
dir=target/size-levers
out="$dir/$t/release/socksbalance"
budget=$((1024 * 1024))

# Each row: a label, extra rustflags (a TOML array body), extra cargo args.
labels=(
    "baseline: release profile (opt-level s, LTO, 1 CGU, panic=abort, strip), build-std"
    "+ -Cpanic=immediate-abort"
    "+ -Zbuild-std-features=optimize_for_size"
    "+ opt-level z"
    "+ -C force-unwind-tables=no"
)
flags=(
    ""
    ",'-Zunstable-options','-Cpanic=immediate-abort'"
    ",'-Zunstable-options','-Cpanic=immediate-abort'"
    ",'-Zunstable-options','-Cpanic=immediate-abort'"
    ",'-Zunstable-options','-Cpanic=immediate-abort','-Cforce-unwind-tables=no'"
)
args=(
    ""
    ""
    "-Zbuild-std-features=optimize_for_size"
    "-Zbuild-std-features=optimize_for_size --config profile.release.opt-level='z'"
    "-Zbuild-std-features=optimize_for_size --config profile.release.opt-level='z'"
)

commas() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
row() { # label bytes previous
    local d=""
    [ -z "$3" ] || d=$(commas "$(printf '%+d' $(($2 - $3)))")
    printf '| %s | %s | %s | %s |\n' "$1" "$(commas "$2")" "$d" "$(commas "$(printf '%+d' $(($2 - budget)))")"
}

echo "| $t | bytes | change | vs 1 MiB |"
echo "|---|---|---|---|"
prev=""
for i in "${!labels[@]}"; do
    # shellcheck disable=SC2086 # args[i] is a list of words
    cargo +nightly zigbuild --release --locked --target "$t" --target-dir "$dir" \
        -Zbuild-std=std,panic_abort ${args[$i]} \
        --config "target.$t.rustflags=${ZIG_FLAGS%]}${flags[$i]}]" \
        >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
    size=$(stat -c %s "$out")
    row "${labels[$i]}" "$size" "$prev"
    prev=$size
done
if [[ "$t" == mips* ]]; then
    cp "$out" "$out.nopdr"
    strip_pdr "$out.nopdr"
    size=$(stat -c %s "$out.nopdr")
    row "+ strip the .pdr section" "$size" "$prev"
    prev=$size
    # The static relocation model (size_rustflags, MIPS only), .pdr
    # stripped as build.sh does.
    cargo +nightly zigbuild --release --locked --target "$t" --target-dir "$dir" \
        -Zbuild-std=std,panic_abort ${args[-1]} \
        --config "target.$t.rustflags=${ZIG_FLAGS%]}${flags[-1]},'-Crelocation-model=static']" \
        >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
    strip_pdr "$out"
    row "+ -Crelocation-model=static" "$(stat -c %s "$out")" "$prev"
fi
