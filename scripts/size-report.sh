#!/usr/bin/env bash
# Size report: the stripped release binaries for x86_64 and mipsel musl
# (and mips, if built) against the 1.0 MiB budget of docs/performance.md,
# then what each crate costs (cargo-bloat, installed if missing).
#
# The per-crate table comes from a host build (x86_64 glibc) with the same
# size settings as the MIPS builds (scripts/lib.sh: build-std,
# immediate-abort, optimize_for_size, no unwind tables, opt-level z), in
# target/size-report/: cargo-bloat cannot link through zig, and a host
# build's split between crates is what the MIPS one's is, give or take the
# instruction set. It also sums the serde-generated deserializers that LTO
# files under socksbalance, which belong to the YAML parsing's cost.
#
# Usage: scripts/size-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
version=$(crate_version)
targets=(x86_64-unknown-linux-musl mipsel-unknown-linux-musl)
for t in "${targets[@]}"; do
    [ -f "dist/socksbalance-$version-$t" ] || scripts/build.sh --local "$t" >/dev/null
done
[ ! -f "dist/socksbalance-$version-mips-unknown-linux-musl" ] || targets+=(mips-unknown-linux-musl)
budget=$((1024 * 1024))
printf '%-32s %10s  %s\n' target bytes "vs 1.0 MiB (1,048,576)"
for t in "${targets[@]}"; do
    size=$(stat -c %s "dist/socksbalance-$version-$t")
    printf '%-32s %10s  %+d\n' "$t" "$size" $((size - budget))
done

command -v cargo-bloat >/dev/null 2>&1 || cargo install -q --locked cargo-bloat
rustup toolchain list | grep -q '^nightly' || rustup toolchain install -q --profile minimal nightly
rustup component add rust-src --toolchain nightly >/dev/null 2>&1
host=$(rustc -vV | sed -n 's/^host: //p')
bloat() {
    cargo +nightly bloat --release --target "$host" --target-dir target/size-report \
        -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size \
        --config "profile.release.opt-level='z'" \
        --config "target.$host.rustflags=[$SIZE_RUSTFLAGS]" \
        --message-format json -n 0 "$@" 2>/dev/null
}
json=$(mktemp -d)
trap 'rm -rf "$json"' EXIT
bloat --crates >"$json/crates.json"
bloat >"$json/functions.json"
echo
echo "What each crate costs in .text ($host with the MIPS size settings;"
echo "LTO files generic code from dependencies under socksbalance):"
python3 - "$json/crates.json" "$json/functions.json" <<'PY'
import json, re, sys
crates, functions = (json.load(open(p)) for p in sys.argv[1:3])
text = crates["text-section-size"]
print(f"{'crate':<20} {'bytes':>9} {'of .text':>9}")
for c in crates["crates"][:14]:
    print(f"{c['name']:<20} {c['size']:>9} {100 * c['size'] / text:>8.1f}%")
print(f"{'.text':<20} {text:>9}")
# Code that serde's derive generated for the config structs (Visitor and
# Deserialize impls, the field enums), counted under socksbalance.
serde = sum(f["size"] for f in functions["functions"]
            if f.get("crate") == "socksbalance" and re.search(r"serde|Deserializ|Visitor", f["name"]))
yaml = sum(c["size"] for c in crates["crates"] if c["name"] in ("serde_yaml", "unsafe_libyaml", "serde", "serde_core"))
print(f"\nYAML config parsing: serde_yaml + unsafe_libyaml + serde = {yaml} bytes,")
print(f"plus {serde} bytes of serde-generated code under socksbalance: {yaml + serde} in all.")
tiny = sum(c["size"] for c in crates["crates"] if c["name"] in ("tiny_http", "chunked_transfer", "ascii", "httpdate"))
print(f"Dashboard HTTP server: tiny_http + chunked_transfer + ascii + httpdate = {tiny} bytes.")
PY
