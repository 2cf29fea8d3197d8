#!/usr/bin/env bash
# The signed package feeds on a real OpenWrt 24.10.2 userland (`owrt`, not
# part of this repository: CI passes ../shared/openwrt/owrt), added the way
# docs/openwrt.md tells users to, and served over HTTP by a python server
# inside the router's network namespace: the opkg feed
# (scripts/opkg_feed.py; its line in /etc/opkg/customfeeds.conf, the usign
# key added with opkg-key), then, on a second router, the apk v3
# repository (packages.adb from `socksbalance-apk index`; its line in
# /etc/apk/repositories.d/, the key in /etc/apk/keys/) with apk-tools 3.
# For opkg it checks, with signature checks on:
#   - before the key is added, `opkg update` refuses the signed feed;
#   - with the key, `opkg update && opkg install socksbalance` installs
#     it from the feed and it runs;
#   - a tampered index (one byte of Packages changed, the signature kept),
#     an unsigned one (no Packages.sig) and one signed by another key are
#     refused, and the router does not see their packages;
#   - a newer release in the feed (-r2) is taken by `opkg upgrade`, its
#     binary runs, and the config file edited on the router is kept.
# For apk the same: an unsigned, a tampered and a foreign-key index
# refused (nothing to install), the signed one taken (`apk update && apk
# add socksbalance`, the daemon runs), and `apk upgrade` to -r2 running
# the new binary with the edited config kept.
# Throwaway keys are made for the run (signify-openbsd, usign's format;
# openssl P-256 for apk); no key is in the repository.
#
# The userland lacks two things a real OpenWrt image has, added here:
# `option check_signature` in /etc/opkg.conf (the image's default) and
# /usr/sbin/opkg-key (OpenWrt's script: usign -V over the list, the key
# named by its fingerprint); and for apk, a `wget` that drops `-T`
# (apk passes it; Debian's busybox 1.35 wget crashes on it, OpenWrt's
# uclient-fetch does not). See docs/openwrt.md, "A package feed".
#
# Usage: scripts/openwrt-feed-test.sh --owrt PATH
#   Needs root, openssl, dist/openwrt/socksbalance_<version>-1_x86_64.ipk and the
#   x86_64 musl binary (scripts/build.sh --local x86_64-unknown-linux-musl
#   && scripts/package-openwrt.sh x86_64), python3 on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

owrt=${OWRT:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --owrt) owrt=$2; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "openwrt-feed-test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$owrt" ] && [ -x "$owrt" ] || { echo "openwrt-feed-test.sh: needs --owrt PATH to the owrt script (or OWRT=)" >&2; exit 2; }
need_apt signify-openbsd signify-openbsd

version=$(crate_version)
ipk1=dist/openwrt/socksbalance_${version}-1_x86_64.ipk
bin=dist/socksbalance-$version-x86_64-unknown-linux-musl
for f in "$ipk1" "$bin"; do
    [ -f "$f" ] || { echo "openwrt-feed-test.sh: $f missing; run scripts/build.sh --local x86_64-unknown-linux-musl && scripts/package-openwrt.sh x86_64" >&2; exit 2; }
done

work=$(mktemp -d /tmp/sb-owrt-feed.XXXXXX)
root=$work/root
cleanup() {
    [ -z "${server:-}" ] || kill "$server" 2>/dev/null || true
    [ -z "${server2:-}" ] || kill "$server2" 2>/dev/null || true
    "$owrt" down "$root" >/dev/null 2>&1 || true
    "$owrt" down "$work/root2" >/dev/null 2>&1 || true
    rm -rf "$work"
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT
r() { "$owrt" sh "$root" "$1"; }
step=""
kind=opkg
ok() { echo "ok   $kind feed: $step"; }
fail() { echo "FAIL $kind feed: $step: $*" >&2; exit 1; }

# The keys: ours, and another one nobody trusts.
signify-openbsd -G -n -c "socksbalance feed (test)" -p "$work/feed.pub" -s "$work/feed.sec"
signify-openbsd -G -n -c "someone else" -p "$work/other.pub" -s "$work/other.sec"

# The -r2 package carries a binary that differs from r1's (a marker after
# the ELF image), so that "the new binary runs" can be told apart.
mkdir -p "$work/bin2"
cp "$bin" "$work/bin2/"
printf 'socksbalance-feed-test-r2\n' >> "$work/bin2/$(basename "$bin")"
scripts/package-openwrt.sh --release 2 --bin-dir "$work/bin2" --out "$work/r2" x86_64 >/dev/null
# shellcheck disable=SC2034 # read inside the eval of the upgrade step
sum2=$(sha256sum < "$work/bin2/$(basename "$bin")" | cut -d' ' -f1)

# The feeds, each as a release would publish it; the one served is the
# symlink www/feed.
python3 scripts/opkg_feed.py "$work/feeds/r1" "$ipk1" --key "$work/feed.sec" >/dev/null
python3 scripts/opkg_feed.py "$work/feeds/r2" "$work/r2/socksbalance_${version}-2_x86_64.ipk" --key "$work/feed.sec" >/dev/null
python3 scripts/opkg_feed.py "$work/feeds/other" "$ipk1" --key "$work/other.sec" >/dev/null
python3 scripts/opkg_feed.py "$work/feeds/unsigned" "$ipk1" >/dev/null
cp -r "$work/feeds/r1" "$work/feeds/tampered"
# One byte of the index changed (what a package's Size says), the
# signature kept.
python3 - "$work/feeds/tampered/x86_64/Packages" <<'PY'
import re, sys
p = sys.argv[1]
text = open(p).read()
# The last digit of the first Size, one up (9 becomes 0).
m = re.search(r"^Size: \d*(\d)$", text, re.M)
d = str((int(m.group(1)) + 1) % 10)
open(p, "w").write(text[: m.end() - 1] + d + text[m.end() :])
PY
cmp -s "$work/feeds/r1/x86_64/Packages" "$work/feeds/tampered/x86_64/Packages" && fail "the tampered index is not changed"
gzip -n -9 -c "$work/feeds/tampered/x86_64/Packages" > "$work/feeds/tampered/x86_64/Packages.gz"
[ -f "$work/feeds/unsigned/x86_64/Packages.sig" ] && fail "the unsigned feed has a signature"
mkdir -p "$work/www"
serve() { ln -sfn "$work/feeds/$1" "$work/www/feed"; }
serve r1

step="boot"
"$owrt" up "$root" >/dev/null
# What a real image has and this userland lacks (see the top).
r 'grep -q "^option check_signature" /etc/opkg.conf || echo "option check_signature" >> /etc/opkg.conf'
r 'cat > /usr/sbin/opkg-key' <<'SH'
#!/bin/sh
# OpenWrt's opkg-key (package/system/opkg/files/opkg-key), as a real image has it.
usage() { echo "Usage: $0 add <file> | remove <file> | verify <sigfile> <list>"; exit 1; }
case "$1" in
    add)
        [ -f "$2" ] || usage
        fingerprint="$(usign -F -p "$2")" || exit 1
        mkdir -p /etc/opkg/keys && cp "$2" "/etc/opkg/keys/$fingerprint" ;;
    remove)
        fingerprint="$(usign -F -p "$2")" || exit 1
        rm -f "/etc/opkg/keys/$fingerprint" ;;
    verify)
        (zcat "$3" 2>/dev/null || cat "$3" 2>/dev/null) | usign -V -P /etc/opkg/keys -q -x "$2" -m - ;;
    *) usage ;;
esac
SH
r 'chmod 0755 /usr/sbin/opkg-key'
"$owrt" net "$root" python3 -m http.server 8089 --bind 127.0.0.1 --directory "$work/www" >"$work/http.log" 2>&1 &
server=$!
until_ 10 "$owrt" net "$root" python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8089/feed/x86_64/Packages")' ||
    fail "the feed server did not start"
r 'echo "src/gz socksbalance http://127.0.0.1:8089/feed/x86_64" >> /etc/opkg/customfeeds.conf'
ok

# update OUTPUT: opkg update; its exit code, its output in OUTPUT.
update() { r 'opkg update' >"$1" 2>&1; }
# Whether the router's lists know socksbalance (from any feed).
listed() { r 'opkg list socksbalance' 2>/dev/null | grep -q '^socksbalance '; }
# refused OUTPUT: an `opkg update` whose feed opkg did not take. opkg
# says so and exits 0 all the same (a feed that fails is not an error to
# it), so what counts is that it said so, that no list of ours is left,
# and that nothing can be installed from it.
refused() {
    update "$1" || true
    grep -qiE 'signature check failed|failed to download the signature|signature' "$1" ||
        fail "opkg did not say it refused the index: $(cat "$1")"
    listed && fail "the router lists the package of a refused index: $(cat "$1")"
    if r 'opkg install --noaction socksbalance' >/dev/null 2>&1; then fail "opkg would install from a refused index"; fi
}

step="before its key is added, opkg update refuses the signed feed"
refused "$work/u0"
ok

step="opkg-key add: the key in /etc/opkg/keys under its fingerprint"
r 'cat > /tmp/socksbalance-feed.pub' < "$work/feed.pub"
r 'opkg-key add /tmp/socksbalance-feed.pub'
fp=$(python3 scripts/opkg_feed.py --fingerprint "$work/feed.pub")
r "test -f /etc/opkg/keys/$fp" || fail "the key is not in /etc/opkg/keys/$fp"
ok

# Refused with the key in place; nothing is installed yet, so whatever
# opkg lists comes from the index it was just given.
# refusals PREFIX CHECK: the tampered, unsigned and foreign-key feeds
# (named PREFIX…), each served in turn and refused as CHECK OUTPUT says.
refusals() {
    local bad
    for bad in tampered unsigned other; do
        case $bad in
            tampered) step="a tampered index (signature kept) is refused" ;;
            unsigned) step="an unsigned index is refused" ;;
            other) step="an index signed by a key nobody added is refused" ;;
        esac
        serve "$1$bad"
        "$2" "$work/u-$1$bad"
        ok
    done
}
refusals "" refused

step="opkg update && opkg install socksbalance: from the feed, running"
serve r1
update "$work/u1" || fail "opkg update failed: $(cat "$work/u1")"
r 'opkg install socksbalance' >"$work/i1" 2>&1 || fail "opkg install failed: $(cat "$work/i1")"
grep -qF "GET /feed/x86_64/socksbalance_${version}-1_x86_64.ipk" "$work/http.log" || fail "the package did not come from the feed"
r 'opkg list-installed socksbalance' | grep -qF "socksbalance - ${version}-1" || fail "not installed: $(r 'opkg list-installed')"
until_ 15 running || fail "the installed daemon does not run"
ok

step="a newer release in the feed: opkg upgrade takes it, keeps the edited config"
r 'echo "# edited on the router" >> /etc/socksbalance/config.yaml'
serve r2
update "$work/u3" || fail "opkg update failed: $(cat "$work/u3")"
r 'opkg list-upgradable' | grep -q "^socksbalance - ${version}-1 - ${version}-2" ||
    fail "opkg sees no upgrade: $(r 'opkg list-upgradable')"
r 'opkg upgrade socksbalance' >"$work/g" 2>&1 || fail "opkg upgrade failed: $(cat "$work/g")"
r 'opkg list-installed socksbalance' | grep -qF "socksbalance - ${version}-2" || fail "not upgraded: $(cat "$work/g")"
r 'tail -n1 /etc/socksbalance/config.yaml' | grep -qF '# edited on the router' ||
    fail "the edited config was not kept: $(r 'tail -n3 /etc/socksbalance/config.yaml')"
until_ 15 eval '[ "$(r "sha256sum /proc/$(pid)/exe" | cut -d" " -f1)" = "$sum2" ]' ||
    fail "the running daemon is not the r2 binary"
ok

# ---- apk (a second router) ----
kind=apk
root=$work/root2
openssl ecparam -name prime256v1 -genkey -noout -out "$work/apk.key" 2>/dev/null
openssl ec -in "$work/apk.key" -pubout -out "$work/socksbalance-feed.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$work/apk-other.key" 2>/dev/null
APK_SIGN_KEY=$work/apk.key scripts/package-openwrt.sh --out "$work/a1" x86_64 >/dev/null
APK_SIGN_KEY=$work/apk.key scripts/package-openwrt.sh --release 2 --bin-dir "$work/bin2" --out "$work/a2" x86_64 >/dev/null
apk_tool=target/release/socksbalance-apk
# apk_feed NAME DIR [KEY]: the repository NAME with DIR's packages.
apk_feed() {
    mkdir -p "$work/feeds/$1/x86_64"
    cp "$2"/x86_64/*.apk "$work/feeds/$1/x86_64/"
    "$apk_tool" index --output "$work/feeds/$1/x86_64/packages.adb" --description "socksbalance (test)" \
        ${3:+--sign-key "$3"} "$work/feeds/$1"/x86_64/*.apk
}
apk_feed apk-r1 "$work/a1" "$work/apk.key"
apk_feed apk-r2 "$work/a2" "$work/apk.key"
apk_feed apk-unsigned "$work/a1"
apk_feed apk-other "$work/a1" "$work/apk-other.key"
cp -r "$work/feeds/apk-r1" "$work/feeds/apk-tampered"
python3 - "$work/feeds/apk-tampered/x86_64/packages.adb" <<'PY'
import sys
p = sys.argv[1]
d = bytearray(open(p, "rb").read())
i = d.find(b"socksbalance (test)")
d[i] ^= 0x20  # one byte of the signed index
open(p, "wb").write(d)
PY
serve apk-r1

step="boot a second router for apk"
"$owrt" up "$root" >/dev/null
r 'rm /usr/bin/wget && cat > /usr/bin/wget && chmod 0755 /usr/bin/wget' <<'SH'
#!/bin/sh
# Test stand-in for OpenWrt's uclient-fetch: Debian's busybox 1.35 wget
# crashes on -T (a timeout), which apk passes; drop it.
n=$#
i=0
while [ "$i" -lt "$n" ]; do
    a=$1
    shift
    i=$((i + 1))
    if [ "$a" = -T ]; then
        shift
        i=$((i + 1))
        continue
    fi
    set -- "$@" "$a"
done
exec busybox wget "$@"
SH
"$owrt" net "$root" python3 -m http.server 8089 --bind 127.0.0.1 --directory "$work/www" >"$work/http2.log" 2>&1 &
server2=$!
until_ 10 "$owrt" net "$root" python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8089/feed/x86_64/packages.adb")' ||
    fail "the feed server did not start"
r 'mkdir -p /etc/apk/repositories.d && echo "http://127.0.0.1:8089/feed/x86_64/packages.adb" > /etc/apk/repositories.d/customfeeds.list'
ok

# Refused before anything was taken, so that no cached index stands in.
apk_refused() {
    if r 'apk update' >"$1" 2>&1; then fail "apk update took it: $(cat "$1")"; fi
    if r 'apk add --simulate socksbalance' >/dev/null 2>&1; then fail "apk would install from a refused index"; fi
}
step="before its key is added, apk update refuses the signed index"
apk_refused "$work/au0"
ok
step="the key in /etc/apk/keys/"
r 'cat > /etc/apk/keys/socksbalance-feed.pem' < "$work/socksbalance-feed.pem"
ok
refusals apk- apk_refused

step="apk update && apk add socksbalance: from the repository, running"
serve apk-r1
r 'apk update' >"$work/au1" 2>&1 || fail "apk update failed: $(cat "$work/au1")"
r 'apk add socksbalance' >"$work/ai1" 2>&1 || fail "apk add failed: $(cat "$work/ai1")"
grep -qF "GET /feed/x86_64/socksbalance-${version}-r1.apk" "$work/http2.log" || fail "the package did not come from the repository"
until_ 15 running || fail "the installed daemon does not run"
ok

step="a newer release in the repository: apk upgrade takes it, keeps the edited config"
r 'echo "# edited on the router" >> /etc/socksbalance/config.yaml'
serve apk-r2
r 'apk update' >"$work/au2" 2>&1 || fail "apk update failed: $(cat "$work/au2")"
r 'apk upgrade socksbalance' >"$work/ag" 2>&1 || fail "apk upgrade failed: $(cat "$work/ag")"
r 'apk info -e socksbalance' | grep -qF "socksbalance-${version}-r2" || r 'apk list -I socksbalance' | grep -qF "${version}-r2" ||
    fail "not upgraded: $(cat "$work/ag")"
r 'tail -n1 /etc/socksbalance/config.yaml' | grep -qF '# edited on the router' ||
    fail "the edited config was not kept: $(r 'tail -n3 /etc/socksbalance/config.yaml')"
until_ 15 eval '[ "$(r "sha256sum /proc/$(pid)/exe" | cut -d" " -f1)" = "$sum2" ]' ||
    fail "the running daemon is not the r2 binary"
ok
echo "openwrt-feed-test.sh: all checks passed"
