#!/usr/bin/env bash
# Proves that a built artifact works on its own architecture: runs
# dist/socksbalance-<version>-TARGET under qemu-user (Linux) or wine
# (Windows) with real microsocks backends, downloads through it with a
# SHA-256 check, and checks that a timer fires (scripts/foreign_test.py).
#
# Usage: scripts/run-foreign.sh TARGET...     one or more targets
#        scripts/run-foreign.sh --all         the whole matrix
# Builds the artifact first (scripts/build.sh --local) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "${1:-}" = "--all" ]; then
    mapfile -t targets < <(sed -n '/^ALL_TARGETS=(/,/^)/p' scripts/build.sh | grep -v '[()]' | tr -d ' ')
else
    targets=("$@")
fi
[ ${#targets[@]} -gt 0 ] || { echo "usage: scripts/run-foreign.sh TARGET... | --all" >&2; exit 2; }

version=$(crate_version)
need_apt microsocks microsocks
need_apt curl curl ca-certificates

results=()
status=0
for t in "${targets[@]}"; do
    exe=""
    [[ "$t" == *windows* ]] && exe=".exe"
    bin="dist/socksbalance-$version-$t$exe"
    [ -f "$bin" ] || scripts/build.sh --local "$t"
    windows=""
    case "$t" in
        x86_64-unknown-linux-musl|i686-unknown-linux-musl) runner="" ;; # the host runs these
        aarch64-*linux*) runner="qemu-aarch64-static" ;;
        armv7-*|arm-*) runner="qemu-arm-static" ;;
        mips-*) runner="qemu-mips-static" ;;
        mipsel-*) runner="qemu-mipsel-static" ;;
        mips64-*) runner="qemu-mips64-static" ;;
        mips64el-*) runner="qemu-mips64el-static" ;;
        riscv64gc-*) runner="qemu-riscv64-static" ;;
        x86_64-pc-windows-gnu)
            export WINEPREFIX=${WINEPREFIX:-/tmp/socksbalance-wine64} WINEDEBUG=-all
            wine_prefix
            runner="wine"; windows="--windows" ;;
        *)
            # i686 Windows needs wine32 (i386 multiarch); aarch64 Windows has
            # no emulator here. Check at least that it is a PE executable for
            # the right machine. See docs/building.md.
            want=$([ "$t" = i686-pc-windows-gnu ] && echo 0x14c || echo 0xaa64)
            if python3 - "$bin" "$want" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read(4096)
pe = struct.unpack_from("<I", data, 0x3C)[0]
ok = data[:2] == b"MZ" and data[pe:pe + 4] == b"PE\0\0" and struct.unpack_from("<H", data, pe + 4)[0] == int(sys.argv[2], 16)
sys.exit(0 if ok else 1)
PY
            then
                echo "== $t: cannot run here (no emulator); PE machine $want checked" >&2
                results+=("$t NOT RUN (no emulator here; PE machine $want OK)")
            else
                echo "== $t: not a PE executable for machine $want" >&2
                results+=("$t FAILED (PE header)")
                status=1
            fi
            continue ;;
    esac
    [ -z "$runner" ] || [ "$runner" = wine ] || need_apt "$runner" qemu-user-static
    echo "== $t ${runner:+(under $runner)}"
    if python3 scripts/foreign_test.py --binary "$bin" ${runner:+--runner "$runner"} $windows; then
        results+=("$t OK")
    else
        results+=("$t FAILED")
        status=1
    fi
done
printf '\n'
printf '%s\n' "${results[@]}"
exit $status
