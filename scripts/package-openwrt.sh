#!/usr/bin/env bash
# Turns the static binaries in dist/ into OpenWrt packages, without the SDK:
#   dist/openwrt/socksbalance_<version>-<release>_<openwrt-arch>.ipk   (opkg: 23.05, 24.10)
#   dist/openwrt/<openwrt-arch>/socksbalance-<version>-r<release>.apk  (apk v3: 25.12)
#   dist/openwrt/luci-app-socksbalance_<version>-<release>_all.ipk and
#   dist/openwrt/noarch/luci-app-socksbalance-<version>-r<release>.apk (LuCI)
# An .ipk is what opkg reads: a gzip'd tar of ./debian-binary,
# ./data.tar.gz and ./control.tar.gz. An .apk is apk-tools v3's ADB format,
# written by packaging/apk (socksbalance-apk) with the files, scripts and
# lib/apk/packages/ entries OpenWrt 25.12's include/package-pack.mk makes;
# its name is OpenWrt's, which has no arch in it, hence one folder per arch.
# Output is reproducible: sorted names, mtime SOURCE_DATE_EPOCH, owner 0,
# gzip without names or times. APK_SIGN_KEY=key.pem signs the .apk files
# (RSA or ECDSA P-256; see docs/openwrt.md).
#
# Usage: scripts/package-openwrt.sh [--build] [--out DIR] [--release N] [--bin-dir DIR] [OPENWRT_ARCH...]
#   no arch: every arch whose binary is in dist/ (see docs/building.md for
#   the mapping); --build: build missing binaries with scripts/build.sh --local;
#   --release: the package release (default 1), as OpenWrt's PKG_RELEASE;
#   --bin-dir: take the binaries from DIR instead of dist/ (same names).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
umask 022

# OpenWrt architecture -> Rust target (docs/building.md explains the choice).
declare -A TARGET=(
    [x86_64]=x86_64-unknown-linux-musl
    [i386_pentium4]=i686-unknown-linux-musl
    [aarch64_cortex-a53]=aarch64-unknown-linux-musl
    [aarch64_cortex-a72]=aarch64-unknown-linux-musl
    [aarch64_generic]=aarch64-unknown-linux-musl
    [arm_cortex-a7_neon-vfpv4]=armv7-unknown-linux-musleabihf
    [arm_cortex-a9_vfpv3-d16]=armv7-unknown-linux-musleabihf
    [arm_cortex-a15_neon-vfpv4]=armv7-unknown-linux-musleabihf
    [arm_arm1176jzf-s_vfp]=arm-unknown-linux-musleabi
    [mips_24kc]=mips-unknown-linux-musl
    [mipsel_24kc]=mipsel-unknown-linux-musl
    [mipsel_74kc]=mipsel-unknown-linux-musl
    [mips64_octeonplus]=mips64-unknown-linux-muslabi64
    [mips64el_mips64r2]=mips64el-unknown-linux-muslabi64
    [riscv64_riscv64]=riscv64gc-unknown-linux-musl
)

build=0
out=dist/openwrt
release=1
bin_dir=dist
archs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --out) out=$2; shift ;;
        --bin-dir) bin_dir=$2; shift ;;
        --release) release=$2; shift
                   [[ "$release" =~ ^[1-9][0-9]*$ ]] || { echo "package-openwrt.sh: --release takes a number from 1 up" >&2; exit 2; } ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "package-openwrt.sh: unknown option $1" >&2; exit 2 ;;
        *) [ -n "${TARGET[$1]:-}" ] || { echo "package-openwrt.sh: unknown OpenWrt arch $1 (known: ${!TARGET[*]})" >&2; exit 2; }
           archs+=("$1") ;;
    esac
    shift
done

version=$(crate_version)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

explicit=1
if [ ${#archs[@]} -eq 0 ]; then
    explicit=0
    mapfile -t archs < <(printf '%s\n' "${!TARGET[@]}" | sort)
fi

tarball() { # tarball DIR OUT.tar.gz: reproducible tar.gz of DIR's contents
    tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        --format=gnu -C "$1" -cf - . | gzip -n -9 > "$2"
}

# ipk WORK OUT.ipk: WORK/data and WORK/control as an .ipk, in the order
# ipkg-build uses (debian-binary, data, control).
ipk() {
    mkdir "$1/ipk"
    printf '2.0\n' > "$1/ipk/debian-binary"
    tarball "$1/data" "$1/ipk/data.tar.gz"
    tarball "$1/control" "$1/ipk/control.tar.gz"
    chmod 0644 "$1/ipk/"*
    tar --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
        -C "$1/ipk" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz | gzip -n -9 > "$2"
}

# apk_stage WORK NAME: WORK/data copied to WORK/apk/root with the file
# list OpenWrt 25.12 keeps in lib/apk/packages/NAME.list (taken before
# that folder's own files are added).
apk_stage() {
    apkroot="$1/apk/root"
    mkdir -p "$1/apk"
    cp -a "$1/data" "$apkroot"
    mkdir -p "$apkroot/lib/apk/packages"
    (cd "$apkroot" && find . -type f,l -printf '/%P\n' | LC_ALL=C sort) > "$1/apk/list"
    mv "$1/apk/list" "$apkroot/lib/apk/packages/$2.list"
}

# The apk v3 writer, a workspace member (packaging/apk).
cargo build --release --quiet --locked -p socksbalance-apk
apk_tool=target/release/socksbalance-apk
sign_args=()
[ -z "${APK_SIGN_KEY:-}" ] || sign_args=(--sign-key "$APK_SIGN_KEY")

mkdir -p "$out"
made=()
for arch in "${archs[@]}"; do
    target=${TARGET[$arch]}
    bin="$bin_dir/socksbalance-$version-$target"
    if [ ! -f "$bin" ]; then
        if [ $build -eq 1 ] && [ "$bin_dir" = dist ]; then
            scripts/build.sh --local "$target"
        elif [ $explicit -eq 1 ]; then
            echo "package-openwrt.sh: $bin missing; run scripts/build.sh --local $target (or pass --build)" >&2
            exit 1
        else
            continue
        fi
    fi
    work=$(mktemp -d)
    mkdir -p "$work/data/usr/bin" "$work/data/etc/init.d" "$work/data/etc/config" \
        "$work/data/etc/socksbalance" "$work/data/etc/hotplug.d/iface" "$work/control" \
        "$work/data/usr/libexec" "$work/data/usr/share/nftables.d/table-post"
    install -m 0755 "$bin" "$work/data/usr/bin/socksbalance"
    install -m 0755 openwrt/socksbalance/files/socksbalance.init "$work/data/etc/init.d/socksbalance"
    install -m 0600 openwrt/socksbalance/files/socksbalance.config "$work/data/etc/config/socksbalance"
    install -m 0600 openwrt/socksbalance/files/config.yaml "$work/data/etc/socksbalance/config.yaml"
    # Multipath: re-probe uplinks when netifd brings an interface up or down.
    install -m 0644 openwrt/socksbalance/files/socksbalance.hotplug \
        "$work/data/etc/hotplug.d/iface/30-socksbalance"
    # The gateway: its rule generator, and the fw4 include that picks up
    # the rules while the gateway is on (docs/gateway.md).
    install -m 0755 openwrt/socksbalance/files/socksbalance-gateway "$work/data/usr/libexec/socksbalance-gateway"
    # option source 'uci': the YAML made from /etc/config/socksbalance.
    install -m 0755 openwrt/socksbalance/files/socksbalance-uci "$work/data/usr/libexec/socksbalance-uci"
    install -m 0644 openwrt/socksbalance/files/socksbalance.nft \
        "$work/data/usr/share/nftables.d/table-post/socksbalance.nft"
    find "$work/data" -type d -exec chmod 0755 {} +
    installed_size=$(find "$work/data" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

    cat > "$work/control/control" <<CONTROL
Package: socksbalance
Version: $version-$release
Depends:
Source: feeds/socksbalance/socksbalance
SourceName: socksbalance
License: MIT
Section: net
SourceDateEpoch: $SOURCE_DATE_EPOCH
Architecture: $arch
Installed-Size: $installed_size
Maintainer: socksbalance developers <socksbalance@users.noreply.github.com>
Description:  SOCKS5 load balancer with health checks and a web dashboard.
 Spreads SOCKS5 client connections over many upstream SOCKS5 proxies, with
 circuit breakers, per-connection failover and a compact dashboard. Static
 binary built for $target.
CONTROL
    printf '/etc/config/socksbalance\n/etc/socksbalance/config.yaml\n' > "$work/control/conffiles"
    cat > "$work/control/postinst" <<'SCRIPT'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
SCRIPT
    cat > "$work/control/prerm" <<'SCRIPT'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
SCRIPT
    chmod 0644 "$work/control/control" "$work/control/conffiles"
    chmod 0755 "$work/control/postinst" "$work/control/prerm"

    ipk_file="$out/socksbalance_${version}-${release}_${arch}.ipk"
    ipk "$work" "$ipk_file"
    made+=("$ipk_file")

    # The .apk for OpenWrt 25.12, staged as include/package-pack.mk stages
    # it: the file list, the conffiles and their checksums, and its three
    # scripts.
    apk_stage "$work" socksbalance
    cp "$work/control/conffiles" "$apkroot/lib/apk/packages/socksbalance.conffiles"
    while read -r f; do
        printf '%s %s\n' "$f" "$(sha256sum "$apkroot$f" | cut -d' ' -f1)"
    done < "$work/control/conffiles" > "$apkroot/lib/apk/packages/socksbalance.conffiles_static"
    chmod 0644 "$apkroot"/lib/apk/packages/*
    find "$apkroot" -type d -exec chmod 0755 {} +
    cat > "$work/apk/post-install" <<'SCRIPT'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
export root="${IPKG_INSTROOT}"
export pkgname="socksbalance"
add_group_and_user
default_postinst
SCRIPT
    { printf '#!/bin/sh\nexport PKG_UPGRADE=1\n'; sed '1d' "$work/apk/post-install"; } > "$work/apk/post-upgrade"
    cat > "$work/apk/pre-deinstall" <<'SCRIPT'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
export root="${IPKG_INSTROOT}"
export pkgname="socksbalance"
default_prerm
SCRIPT
    mkdir -p "$out/$arch"
    apk="$out/$arch/socksbalance-${version}-r${release}.apk"
    "$apk_tool" build --files "$apkroot" --output "$apk" \
        --name socksbalance --version "${version}-r${release}" --arch "$arch" \
        --description "SOCKS5 load balancer with health checks and a web dashboard: spreads SOCKS5 client connections over many upstream SOCKS5 proxies, with circuit breakers, per-connection failover and a compact dashboard. Static binary built for $target." \
        --license MIT --origin feeds/socksbalance/socksbalance \
        --url https://github.com/socksbalance/socksbalance \
        --maintainer "socksbalance developers <socksbalance@users.noreply.github.com>" \
        --mtime "$SOURCE_DATE_EPOCH" \
        --script "post-install:$work/apk/post-install" \
        --script "post-upgrade:$work/apk/post-upgrade" \
        --script "pre-deinstall:$work/apk/pre-deinstall" \
        "${sign_args[@]}"
    made+=("$apk")
    rm -rf "$work"
done

[ ${#made[@]} -gt 0 ] || { echo "package-openwrt.sh: no binaries in dist/ to package; run scripts/build.sh first" >&2; exit 1; }

# luci-app-socksbalance: the LuCI pages, the menu entry, the rpcd ACL and
# the rpcd plugin (openwrt/luci-app-socksbalance, docs/openwrt.md "LuCI"),
# one package for every arch: Architecture all (.ipk) and noarch (.apk),
# as luci.mk's LUCI_PKGARCH:=all makes them.
luci=openwrt/luci-app-socksbalance
work=$(mktemp -d)
mkdir -p "$work/data/www" "$work/control"
cp -r "$luci/htdocs/." "$work/data/www/"
cp -r "$luci/root/." "$work/data/"
find "$work/data" -type d -exec chmod 0755 {} +
find "$work/data" -type f -exec chmod 0644 {} +
chmod 0755 "$work/data/usr/libexec/rpcd/luci.socksbalance"
installed_size=$(find "$work/data" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
cat > "$work/control/control" <<CONTROL
Package: luci-app-socksbalance
Version: $version-$release
Depends: libc, socksbalance, luci-base
Source: feeds/socksbalance/luci-app-socksbalance
SourceName: luci-app-socksbalance
License: MIT
Section: luci
SourceDateEpoch: $SOURCE_DATE_EPOCH
Architecture: all
Installed-Size: $installed_size
Maintainer: socksbalance developers <socksbalance@users.noreply.github.com>
Description:  LuCI support for socksbalance: settings (backends, users, groups,
 rules, the gateway) and a status page under Services.
CONTROL
# What luci.mk's packages run: LuCI's caches go, rpcd reads the new ACL
# and plugin.
cat > "$work/control/postinst" <<'SCRIPT'
#!/bin/sh
[ -n "${IPKG_INSTROOT}" ] && exit 0
rm -f /tmp/luci-indexcache.*
rm -rf /tmp/luci-modulecache/
killall -HUP rpcd 2>/dev/null
exit 0
SCRIPT
chmod 0644 "$work/control/control"
chmod 0755 "$work/control/postinst"
ipk_file="$out/luci-app-socksbalance_${version}-${release}_all.ipk"
ipk "$work" "$ipk_file"
made+=("$ipk_file")
apk_stage "$work" luci-app-socksbalance
chmod 0644 "$apkroot"/lib/apk/packages/*
find "$apkroot" -type d -exec chmod 0755 {} +
{ printf '#!/bin/sh\n'; sed '1d' "$work/control/postinst"; } > "$work/apk/post-install"
mkdir -p "$out/noarch"
apk="$out/noarch/luci-app-socksbalance-${version}-r${release}.apk"
"$apk_tool" build --files "$apkroot" --output "$apk" \
    --name luci-app-socksbalance --version "${version}-r${release}" --arch noarch \
    --description "LuCI support for socksbalance: settings (backends, users, groups, rules, the gateway) and a status page under Services." \
    --license MIT --origin feeds/socksbalance/luci-app-socksbalance \
    --url https://github.com/socksbalance/socksbalance \
    --maintainer "socksbalance developers <socksbalance@users.noreply.github.com>" \
    --mtime "$SOURCE_DATE_EPOCH" --depends socksbalance --depends luci-base \
    --script "post-install:$work/apk/post-install" \
    --script "post-upgrade:$work/apk/post-install" \
    "${sign_args[@]}"
made+=("$apk")
rm -rf "$work"

printf '%-66s %10s\n' package bytes
for f in "${made[@]}"; do printf '%-66s %10s\n' "$f" "$(stat -c %s "$f")"; done
