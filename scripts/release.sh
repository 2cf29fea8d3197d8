#!/usr/bin/env bash
# Makes a release in dist/release/VERSION/, the one command for it (the
# release workflow runs it too, .github/workflows/release.yml):
#   socksbalance-VERSION-<target>[.exe], .tar.gz / .zip   every target of
#       the matrix with the size settings (scripts/build.sh --local: no
#       Docker), each archive with README, LICENSE and the example config;
#   openwrt/<arch>/   the .ipk and .apk packages of that OpenWrt
#       architecture and the LuCI app, as an opkg feed (Packages,
#       Packages.gz and Packages.sig: scripts/opkg_feed.py) and an apk v3
#       repository (packages.adb: socksbalance-apk index);
#   SHA256SUMS        of every file above, and SHA256SUMS.sig, a usign /
#       signify signature over it.
# Two runs from the same commit give the same files (SOURCE_DATE_EPOCH is
# the commit's time; archives and packages carry no other time, Ed25519
# signatures are deterministic); .ci/run checks it on a subset.
#
# Usage: scripts/release.sh [--snapshot] [--targets T1,T2,...] VERSION
#   VERSION must be Cargo.toml's. Without --snapshot the tree must be clean,
#   HEAD must carry the tag vVERSION, and the release key must be given.
#   --snapshot: a dirty tree and no tag are fine (a test build), and an
#   unsigned release too. --targets: only those targets (and their
#   OpenWrt architectures), for a quick check.
# Keys, from files outside the repository:
#   SOCKSBALANCE_RELEASE_KEY   usign/signify secret key: SHA256SUMS.sig and
#                              the feeds' Packages.sig
#   APK_SIGN_KEY               PEM key for the .apk packages and the
#                              repository's packages.adb (optional;
#                              docs/openwrt.md, "Signing the .apk")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

snapshot=0
targets=()
version=""
while [ $# -gt 0 ]; do
    case "$1" in
        --snapshot) snapshot=1 ;;
        --targets) IFS=, read -r -a targets <<< "$2"; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        -*) echo "release.sh: unknown option $1" >&2; exit 2 ;;
        *) [ -z "$version" ] || { echo "release.sh: one VERSION only" >&2; exit 2; }
           version=$1 ;;
    esac
    shift
done
[ -n "$version" ] || { echo "usage: scripts/release.sh [--snapshot] [--targets T1,T2] VERSION" >&2; exit 2; }
crate=$(crate_version)
[ "$version" = "$crate" ] || { echo "release.sh: Cargo.toml's version is $crate, not $version" >&2; exit 2; }
key=${SOCKSBALANCE_RELEASE_KEY:-}
[ -z "$key" ] || [ -f "$key" ] || { echo "release.sh: SOCKSBALANCE_RELEASE_KEY=$key: no such file" >&2; exit 2; }
if [ $snapshot -eq 0 ]; then
    [ -z "$(git status --porcelain)" ] ||
        { echo "release.sh: the tree has uncommitted changes (git status); commit them, or --snapshot for a test build" >&2; exit 2; }
    [ "$(git rev-parse -q --verify "refs/tags/v$version^{commit}" || true)" = "$(git rev-parse HEAD)" ] ||
        { echo "release.sh: HEAD is not tagged v$version (git tag -a v$version); or --snapshot" >&2; exit 2; }
    [ -n "$key" ] || { echo "release.sh: a release is signed: set SOCKSBALANCE_RELEASE_KEY (or --snapshot)" >&2; exit 2; }
fi
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n '/^ALL_TARGETS=(/,/^)/p' scripts/build.sh | grep -v '[()]' | tr -d ' ')
fi
out=dist/release/$version
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== binaries and archives: ${targets[*]}"
scripts/build.sh --local "${targets[@]}"
rm -rf "$out"
mkdir -p "$out"
for t in "${targets[@]}"; do
    exe=""; arc=tar.gz
    [[ "$t" == *windows* ]] && { exe=.exe; arc=zip; }
    cp "dist/socksbalance-$version-$t$exe" "dist/socksbalance-$version-$t.$arc" "$out/"
done

# The OpenWrt architectures whose binary is among the targets.
mapfile -t archs < <(sed -n '/^declare -A TARGET=(/,/^)/p' scripts/package-openwrt.sh |
    sed -n 's/^ *\[\([^]]*\)\]=\(.*\)$/\1 \2/p' |
    while read -r arch target; do
        for t in "${targets[@]}"; do [ "$t" = "$target" ] && echo "$arch"; done
    done)
if [ ${#archs[@]} -gt 0 ]; then
    echo "== OpenWrt packages and feeds: ${archs[*]}"
    scripts/package-openwrt.sh --out "$work/openwrt" "${archs[@]}" >/dev/null
    python3 scripts/opkg_feed.py "$out/openwrt" "$work"/openwrt/*.ipk ${key:+--key "$key"}
    # The apk v3 repository beside it: the .apk files and packages.adb,
    # signed with the .apk key when there is one.
    for arch in "${archs[@]}"; do
        mkdir -p "$out/openwrt/$arch"
        cp "$work/openwrt/$arch"/*.apk "$work/openwrt/noarch"/*.apk "$out/openwrt/$arch/"
        target/release/socksbalance-apk index --output "$out/openwrt/$arch/packages.adb" \
            --description "socksbalance $version" ${APK_SIGN_KEY:+--sign-key "$APK_SIGN_KEY"} "$out/openwrt/$arch"/*.apk
    done
fi

echo "== SHA256SUMS"
(cd "$out" && find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.sig | sed 's|^\./||' | LC_ALL=C sort |
    xargs sha256sum > SHA256SUMS)
if [ -n "$key" ]; then
    if command -v usign >/dev/null 2>&1; then
        usign -S -m "$out/SHA256SUMS" -s "$key" -x "$out/SHA256SUMS.sig"
    else
        need_apt signify-openbsd signify-openbsd
        signify-openbsd -S -s "$key" -m "$out/SHA256SUMS" -x "$out/SHA256SUMS.sig"
    fi
else
    echo "release.sh: no SOCKSBALANCE_RELEASE_KEY: SHA256SUMS and the feeds are unsigned (a snapshot)" >&2
fi
echo "release.sh: $out: $(find "$out" -type f | wc -l) files"
