#!/usr/bin/env bash
# Builds release artifacts for the target matrix into dist/:
#   dist/socksbalance-<version>-<target>[.exe]
#   dist/socksbalance-<version>-<target>.tar.gz   (Linux: binary, README, LICENSE, example config)
#   dist/socksbalance-<version>-<target>.zip      (Windows: exe, README.txt, LICENSE, example config)
#   dist/SHA256SUMS
# and prints a size table.
#
# Usage: scripts/build.sh [--local] [--all | TARGET...]
#
# Two ways to build:
# - With a working Docker and no --local: `cross` (Cross.toml), the usual
#   path on a developer's machine.
# - --local (or no Docker): no containers. rustup targets where rustup has
#   std, nightly + build-std where it has not (the tier-3 MIPS targets),
#   zig as the linker through cargo-zigbuild, mingw for Windows. It installs
#   what it needs, idempotently, and is what CI uses.
# MIPS needs `--cfg fix_y2038` for timers to fire; that lives in
# .cargo/config.toml, so every path gets it. See docs/building.md.
# Targets built with build-std also get the size settings of scripts/lib.sh
# (immediate-abort panics, std's optimize_for_size, no unwind tables; on
# MIPS opt-level z and no .pdr section): docs/performance.md#binary-size.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ALL_TARGETS=(
    x86_64-unknown-linux-musl
    i686-unknown-linux-musl
    aarch64-unknown-linux-musl
    armv7-unknown-linux-musleabihf
    arm-unknown-linux-musleabi
    mips-unknown-linux-musl
    mipsel-unknown-linux-musl
    mips64-unknown-linux-muslabi64
    mips64el-unknown-linux-muslabi64
    riscv64gc-unknown-linux-musl
    x86_64-pc-windows-gnu
    i686-pc-windows-gnu
    aarch64-pc-windows-gnullvm
)

local_build=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --local) local_build=1 ;;
        --all) targets=("${ALL_TARGETS[@]}") ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "usage: scripts/build.sh [--local] [--all | TARGET...]" >&2
    echo "targets: ${ALL_TARGETS[*]}" >&2
    exit 2
fi
for t in "${targets[@]}"; do
    case " ${ALL_TARGETS[*]} " in
        *" $t "*) ;;
        *) echo "build.sh: unknown target $t (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
done

version=$(crate_version)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p dist

if [ $local_build -eq 0 ] && ! docker info >/dev/null 2>&1; then
    echo "build.sh: no working Docker here; using the --local path" >&2
    local_build=1
fi

need_zig() {
    if ! command -v zig >/dev/null 2>&1 && ! command -v python-zig >/dev/null 2>&1; then
        python3 -m pip install -q ziglang==0.15.2
    fi
    command -v cargo-zigbuild >/dev/null 2>&1 || cargo install -q --locked cargo-zigbuild --version 0.24.1
}
need_nightly_src() {
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install -q --profile minimal nightly
    rustup component add rust-src --toolchain nightly >/dev/null 2>&1
}
have_rustup_target() { # rustup has std for this target (not everywhere: see docs/building.md)
    rustup target list --installed | grep -qx "$1" || rustup target add "$1" >/dev/null 2>&1
}
env_name() { echo "$1" | tr 'a-z-' 'A-Z_'; }

build_local() {
    local t=$1 e
    e=$(env_name "$t")
    case "$t" in
        x86_64-unknown-linux-musl|i686-unknown-linux-musl|aarch64-unknown-linux-musl)
            have_rustup_target "$t"
            env "CARGO_TARGET_${e}_LINKER=rust-lld" cargo build --release --locked --target "$t"
            ;;
        x86_64-pc-windows-gnu)
            need_apt x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64
            have_rustup_target "$t"
            cargo build --release --locked --target "$t"
            ;;
        i686-pc-windows-gnu)
            need_apt i686-w64-mingw32-gcc gcc-mingw-w64-i686
            have_rustup_target "$t"
            cargo build --release --locked --target "$t"
            ;;
        aarch64-pc-windows-gnullvm)
            need_zig
            have_rustup_target "$t"
            cargo zigbuild --release --locked --target "$t"
            ;;
        *)
            # armv7, arm, riscv64 (rustup had no std for them here) and the
            # tier-3 MIPS targets: std from source on nightly, zig links.
            need_zig
            if [[ "$t" != mips* ]] && have_rustup_target "$t"; then
                cargo zigbuild --release --locked --target "$t" --config "target.$t.rustflags=$ZIG_FLAGS"
            else
                # Building std here lets it shrink too: the size settings of
                # scripts/lib.sh (docs/performance.md#binary-size).
                need_nightly_src
                local size_args
                mapfile -t size_args < <(size_cargo_args "$t")
                cargo +nightly zigbuild --release --locked --target "$t" -Zbuild-std=std,panic_abort \
                    "${size_args[@]}" --config "target.$t.rustflags=${ZIG_FLAGS%]},$(size_rustflags "$t")]"
                [[ "$t" != mips* ]] || strip_pdr "target/$t/release/socksbalance"
            fi
            ;;
    esac
}

build_cross() {
    local t=$1
    command -v cross >/dev/null 2>&1 || cargo install -q --locked cross --version 0.2.5
    case "$t" in
        mips*|aarch64-pc-windows-gnullvm)
            # Upstream cross has no working image for these (its MIPS musl
            # images are disabled, cross-rs/cross#1422; no aarch64 Windows
            # image, cross-rs/cross#1717). Cross.toml names the build-std
            # setup for when an image is configured; otherwise use --local.
            # MIPS builds std from source, so it gets the size settings of
            # scripts/lib.sh as on the --local path (cargo appends these
            # rustflags to .cargo/config.toml's).
            local size_args=()
            if [[ "$t" == mips* ]]; then
                mapfile -t size_args < <(size_cargo_args "$t")
                size_args+=(--config "target.$t.rustflags=[$(size_rustflags "$t")]")
            fi
            if ! cross +nightly build --release --locked --target "$t" -Zbuild-std=std,panic_abort "${size_args[@]}"; then
                echo "build.sh: cross cannot build $t with its upstream images; run: scripts/build.sh --local $t" >&2
                return 1
            fi
            [[ "$t" != mips* ]] || strip_pdr "target/$t/release/socksbalance"
            ;;
        *) cross build --release --locked --target "$t" ;;
    esac
}

# links_resolve DIR: every relative link in DIR's Markdown files names a
# file in DIR (a shipped README must not point at what is not shipped).
links_resolve() {
    local dir=$1 md link missing=0
    for md in "$dir"/*.md "$dir"/docs/*.md; do
        while read -r link; do
            link=${link%%#*}
            [ -z "$link" ] || [ -e "$(dirname "$md")/$link" ] || {
                echo "build.sh: ${md#"$dir"/} links to $link, which the archive lacks" >&2
                missing=1
            }
        done < <(grep -o '\](\([^)]*\))' "$md" | sed 's/^](\(.*\))$/\1/' | grep -v '^[a-z]*:' || true)
    done
    [ $missing -eq 0 ] || exit 1
}

package() {
    local t=$1 exe="" name stage
    [[ "$t" == *windows* ]] && exe=".exe"
    name="socksbalance-$version-$t"
    cp "target/$t/release/socksbalance$exe" "dist/$name$exe"
    stage=$(mktemp -d)
    mkdir "$stage/$name"
    cp "dist/$name$exe" "$stage/$name/socksbalance$exe"
    cp packaging/config.example.yaml "$stage/$name/config.yaml"
    cp LICENSE "$stage/$name/LICENSE"
    # The documentation the README links to travels with it.
    mkdir "$stage/$name/docs"
    cp docs/*.md docs/*.png "$stage/$name/docs/"
    if [ -n "$exe" ]; then
        need_apt zip zip
        # Windows users get CRLF text files.
        sed 's/$/\r/' packaging/windows/README.txt > "$stage/$name/README.txt"
        sed -i 's/$/\r/' "$stage/$name/config.yaml" "$stage/$name/LICENSE"
        find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
        (cd "$stage" && rm -f "$OLDPWD/dist/$name.zip" && TZ=UTC zip -q -X -r "$OLDPWD/dist/$name.zip" "$name")
    else
        cp README.md "$stage/$name/README.md"
        cp packaging/systemd/socksbalance.service "$stage/$name/"
        links_resolve "$stage/$name"
        tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
            -C "$stage" -cf - "$name" | gzip -n -9 > "dist/$name.tar.gz"
    fi
    rm -rf "$stage"
}

failed=()
for t in "${targets[@]}"; do
    echo "== $t"
    if [ $local_build -eq 1 ]; then
        build_local "$t" || { failed+=("$t"); continue; }
    else
        build_cross "$t" || { failed+=("$t"); continue; }
    fi
    package "$t"
done

(cd dist && sha256sum socksbalance-"$version"-* | sort -k2 > SHA256SUMS)

printf '\n%-36s %10s %10s\n' target binary archive
for t in "${targets[@]}"; do
    exe=""; arc="tar.gz"
    [[ "$t" == *windows* ]] && { exe=".exe"; arc="zip"; }
    bin="dist/socksbalance-$version-$t$exe"
    [ -f "$bin" ] || { printf '%-36s %10s\n' "$t" FAILED; continue; }
    printf '%-36s %10s %10s\n' "$t" "$(stat -c %s "$bin")" "$(stat -c %s "dist/socksbalance-$version-$t.$arc")"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "build.sh: failed: ${failed[*]}" >&2
    exit 1
fi
