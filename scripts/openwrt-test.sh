#!/usr/bin/env bash
# The x86_64 OpenWrt packages on a real OpenWrt 24.10.2 userland: procd as
# PID 1, ubus, logd, uci, opkg and apk, booted in its own namespaces by
# `owrt` (not part of this repository: CI passes ../shared/openwrt/owrt).
# What it checks, for the .ipk (opkg) and the .apk (apk-tools 3) in turn:
#   install; the procd instance (respawn, limits, --syslog); a real download
#   through the daemon inside the router's network namespace; logd keeping
#   info lines as info; reload with an edited and with a broken YAML;
#   UCI `enabled 0` + reload_config and back; kill -9 and respawn; an
#   upgrade to a -r2 package and the new binary running; the LAN address
#   missing at start and added later (and the hotplug hook); the gateway
#   (UCI gateway 1): a LAN client redirected through the daemon, rules in
#   fw4 that survive fw4 reload and go with stop, none with gateway 0;
#   UCI as the configuration (every option into YAML, a bad value logged
#   with its UCI option name, a change applied without a restart);
#   luci-app-socksbalance (installed with stand-ins for luci-base and libc,
#   its rpcd plugin over ubus and uhttpd's /ubus with the ACL, and in the
#   apk round LuCI itself in headless Chromium: scripts/luci_test.py);
#   removal.
# See docs/openwrt.md, "Tested on an OpenWrt userland".
#
# Usage: scripts/openwrt-test.sh [--owrt PATH] [--no-luci] [ipk|apk...]
#   --no-luci: skip the LuCI pages in Chromium (needs chromium,
#   chromium-driver and python3's selenium; LUCI_SHOTS=DIR keeps the
#   screenshots).
#   Needs root, dist/openwrt/ from scripts/package-openwrt.sh x86_64, and
#   curl and python3 on the host (run inside the router's namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

owrt=${OWRT:-}
kinds=()
with_luci=1
while [ $# -gt 0 ]; do
    case "$1" in
        --owrt) owrt=$2; shift ;;
        ipk|apk) kinds+=("$1") ;;
        --no-luci) with_luci=0 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "openwrt-test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ ${#kinds[@]} -gt 0 ] || kinds=(ipk apk)
[ -n "$owrt" ] && [ -x "$owrt" ] || { echo "openwrt-test.sh: needs --owrt PATH to the owrt script (or OWRT=)" >&2; exit 2; }
for tool in curl python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "openwrt-test.sh: needs $tool on the host" >&2; exit 2; }
done

version=$(crate_version)
ipk1=dist/openwrt/socksbalance_${version}-1_x86_64.ipk
apk1=dist/openwrt/x86_64/socksbalance-${version}-r1.apk
bin=dist/socksbalance-$version-x86_64-unknown-linux-musl
for f in "$ipk1" "$apk1" "$bin"; do
    [ -f "$f" ] || { echo "openwrt-test.sh: $f missing; run scripts/build.sh --local x86_64-unknown-linux-musl && scripts/package-openwrt.sh x86_64" >&2; exit 2; }
done

work=$(mktemp -d /tmp/sb-owrt.XXXXXX)
root=$work/root
cleanup() {
    "$owrt" down "$root" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The -r2 packages carry a binary that differs from r1's (a marker after the
# ELF image, which the loader ignores), so that "the new binary runs" can be
# told apart from "the old one still runs".
mkdir -p "$work/bin2"
cp "$bin" "$work/bin2/"
printf 'socksbalance-openwrt-test-r2\n' >> "$work/bin2/$(basename "$bin")"
scripts/package-openwrt.sh --release 2 --bin-dir "$work/bin2" --out "$work/r2" x86_64 >/dev/null
ipk2=$work/r2/socksbalance_${version}-2_x86_64.ipk
apk2=$work/r2/x86_64/socksbalance-${version}-r2.apk
sum2=$(sha256sum < "$work/bin2/$(basename "$bin")" | cut -d' ' -f1)

# The file served inside the router's namespace, and its checksum.
head -c 3000000 /dev/urandom > "$work/blob"
blob_sum=$(sha256sum < "$work/blob" | cut -d' ' -f1)

step=""

# The gateway (UCI gateway 1) on the router, with a LAN device and an
# "internet" of their own: a client namespace on a port of br-lan
# (192.168.1.50), and one behind the router's wan9 (198.18.30.0/24) with a
# web server on 198.19.0.1. The router does not forward between them (wan9
# is in no fw4 zone), so the client reaches the server only through
# socksbalance's redirect listener and its direct backend.
gateway_checks() {
    local c=sbgwc$$ i=sbgwi$$ got
    ip netns add "$c"
    ip netns add "$i"
    net ip link add lan1 master br-lan type veth peer name c0 netns "$c"
    net ip link set lan1 up
    net ip link add wan9 type veth peer name i0 netns "$i"
    net ip addr add 198.18.30.1/24 dev wan9
    net ip link set wan9 up
    net ip route add 198.19.0.0/24 via 198.18.30.2
    ip -n "$c" addr add 192.168.1.50/24 dev c0
    ip -n "$c" link set c0 up
    ip -n "$c" link set lo up
    ip -n "$c" route add default via 192.168.1.1
    ip -n "$i" addr add 198.18.30.2/24 dev i0
    ip -n "$i" addr add 198.19.0.1/32 dev lo
    ip -n "$i" link set i0 up
    ip -n "$i" link set lo up
    ip -n "$i" route add 192.168.1.0/24 via 198.18.30.1
    ip netns exec "$i" python3 -m http.server 80 --bind 198.19.0.1 --directory "$work" \
        >"$work/origin.log" 2>&1 &
    local origin=$!
    until_ 10 ip netns exec "$i" curl -sf -o /dev/null http://198.19.0.1/blob || fail "the origin did not start"
    lan_get() { ip netns exec "$c" curl -sf --max-time 5 http://198.19.0.1/blob | sha256sum | cut -d' ' -f1; }

    step="gateway 0 (the default): the firewall is what fw4 makes without socksbalance"
    r 'fw4 -q reload'
    ruleset > "$work/ruleset.off"
    diff -u "$work/ruleset.before" "$work/ruleset.off" || fail "the ruleset changed"
    [ "$(lan_get)" != "$blob_sum" ] || fail "the LAN client reached the origin with no gateway"
    ok

    step="gateway 1: the LAN client's TCP goes through the daemon, rules in table inet fw4"
    gateway_yaml redirect 7893
    r 'uci set socksbalance.main.gateway=1 && uci commit socksbalance && /etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running"
    until_ 10 r 'nft list chain inet fw4 socksbalance_prerouting >/dev/null' || fail "no socksbalance chain in table inet fw4"
    until_ 10 eval "r 'nft list chain inet fw4 socksbalance_take' | grep -q 'redirect to :7893'" ||
        fail "the rule does not redirect to :7893: $(r 'nft list chain inet fw4 socksbalance_take' 2>&1)"
    got=$(lan_get)
    [ "$got" = "$blob_sum" ] || fail "the LAN client's download failed or was damaged"
    grep -q '^198.18.30.1 .*GET /blob' "$work/origin.log" || fail "the origin did not see the router's address"
    ok

    step="fw4 reload (a firewall restart) keeps the rules"
    r 'fw4 reload'
    r 'nft list chain inet fw4 socksbalance_prerouting >/dev/null' || fail "the rules are gone after fw4 reload"
    [ "$(lan_get)" = "$blob_sum" ] || fail "no download after fw4 reload"
    ok

    step="dns_hijack and dnsmasq: LAN DNS to the dns: listener, dnsmasq forwarding to it"
    # No dnsmasq in this userland: its conf-dir stands in for it.
    r 'mkdir -p /tmp/dnsmasq.d'
    gateway_yaml redirect 7893 'dns: {listen: "0.0.0.0:5353", upstreams: ["198.19.0.53"]}'
    r 'uci set socksbalance.main.dns_hijack=1 && uci set socksbalance.main.dnsmasq=1 && uci commit socksbalance && /etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running"
    hijacks() { r 'nft list chain inet fw4 socksbalance_dns' 2>/dev/null | grep -q 'dport 53 redirect to :5353'; }
    until_ 10 hijacks || fail "no DNS hijack rule to :5353"
    [ "$(r 'cat /tmp/dnsmasq.d/socksbalance.conf')" = "$(printf 'server=127.0.0.1#5353\nno-resolv')" ] || fail "dnsmasq's conf: $(r 'cat /tmp/dnsmasq.d/socksbalance.conf')"
    r 'uci set socksbalance.main.dns_hijack=0 && uci set socksbalance.main.dnsmasq=0 && uci commit socksbalance && /etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running"
    ! r 'nft list chain inet fw4 socksbalance_dns' >/dev/null 2>&1 || fail "the DNS rule stayed with dns_hijack 0"
    r '[ ! -e /tmp/dnsmasq.d/socksbalance.conf ]' || fail "dnsmasq's conf stayed with dnsmasq 0"
    [ "$(lan_get)" = "$blob_sum" ] || fail "no download after the change"
    ok

    step="gateway_mode tproxy with udp 1: the LAN client's TCP through tproxy, TCP and UDP rules, the policy route"
    gateway_yaml tproxy 7894
    # As on a router without kmod-br-netfilter: with bridge-nf-call-iptables
    # on (this host has br_netfilter loaded), tproxy drops what comes in
    # over a bridge (docs/gateway.md).
    net sh -c 'echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables; echo 0 > /proc/sys/net/bridge/bridge-nf-call-ip6tables' 2>/dev/null || true
    r 'uci set socksbalance.main.gateway_mode=tproxy && uci set socksbalance.main.udp=1 && uci commit socksbalance && /etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running"
    takes_udp() { r 'nft list chain inet fw4 socksbalance_take' 2>/dev/null | grep -q 'meta l4proto { tcp, udp } tproxy to :7894'; }
    until_ 10 takes_udp || fail "no tproxy rule for TCP and UDP: $(r 'nft list chain inet fw4 socksbalance_take' 2>&1)"
    r 'ip rule' | grep -q 'fwmark 0x5343' || fail "no policy route for the tproxy mark: $(r 'ip rule' 2>&1)"
    [ "$(lan_get)" = "$blob_sum" ] || fail "the LAN client's download failed through tproxy"
    r 'uci set socksbalance.main.gateway_mode=redirect && uci set socksbalance.main.udp=0 && uci commit socksbalance'
    gateway_yaml redirect 7893
    r '/etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running"
    ! r 'ip rule' | grep -q 'fwmark 0x5343' || fail "the tproxy policy route stayed"
    ok

    step="stop removes every rule, and the client no longer gets through"
    r '/etc/init.d/socksbalance stop'
    until_ 15 stopped || fail "did not stop"
    ruleset > "$work/ruleset.stopped"
    diff -u "$work/ruleset.before" "$work/ruleset.stopped" || fail "rules left behind"
    [ "$(lan_get)" != "$blob_sum" ] || fail "the LAN client still reaches the origin"
    r 'uci set socksbalance.main.gateway=0 && uci commit socksbalance'
    write_yaml < openwrt/socksbalance/files/config.yaml
    r '/etc/init.d/socksbalance start'
    until_ 10 running || fail "not running again"
    ok

    kill "$origin" 2>/dev/null || true
    ip netns del "$c"
    ip netns del "$i"
}
r() { "$owrt" sh "$root" "$1"; }           # a command line inside the router
net() { "$owrt" net "$root" "$@"; }        # a host program in its network namespace
ok() { echo "ok   $kind: $step"; }
fail() {
    echo "FAIL $kind: $step: $*" >&2
    echo "---- logread -e socksbalance" >&2
    r 'logread -e socksbalance' >&2 || true
    exit 1
}
# until_ SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds.
stopped() { [ -z "$(pid)" ] && ! r 'pidof socksbalance'; }
log_has() { r 'logread -e socksbalance' | grep -qF -- "$1"; }
log_count() { r 'logread -e socksbalance' | grep -cF -- "$1" || true; }
# download PROXY: the blob through the daemon, checked byte for byte.
download() {
    local got
    got=$(net curl -sf --max-time 20 --socks5-hostname "$1" "http://127.0.0.1:18080/blob" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$blob_sum" ]
}
write_yaml() { cat > "$root/etc/socksbalance/config.yaml"; }
# gateway_yaml PROTOCOL PORT [LINE]: the YAML the gateway steps use, a
# listener of PROTOCOL on [::]:PORT and a direct backend (and LINE).
gateway_yaml() {
    printf 'listen:\n  - 127.0.0.1:1080\n  - {address: "[::]:%s", protocol: %s}\nmode: socks5\n%s\nbackends:\n  - direct: true\n    name: direct\n' \
        "$2" "$1" "${3:-}" | write_yaml
}
# UCI as the source (option source 'uci'): socksbalance-uci turns every
# option of tests/uci-every-option.config into the YAML beside it, which
# the daemon takes; then the daemon runs on UCI alone, a bad value is
# logged with its UCI option and leaves it running, and a good change is
# applied without a restart.
uci_checks() {
    local t=openwrt/socksbalance/tests first
    step="socksbalance-uci: every option, the escape hatch, disabled sections"
    mkdir -p "$root/root/uci-test"
    cp "$t/uci-every-option.config" "$root/root/uci-test/socksbalance"
    printf 'limits:\n  max_connections: 200\n' > "$root/root/uci-test/custom.yaml"
    printf 'example.org\n' > "$root/root/uci-test/direct.txt"
    r 'UCI_CONFIG_DIR=/root/uci-test /usr/libexec/socksbalance-uci /root/uci-test/out.yaml' || fail "socksbalance-uci failed"
    diff -u "$t/uci-every-option.yaml" "$root/root/uci-test/out.yaml" || fail "the YAML differs from $t/uci-every-option.yaml"
    [ "$(stat -c %a "$root/root/uci-test/out.yaml")" = 600 ] || fail "the YAML is not 0600"
    grep -qxF "$(printf '24\tsocksbalance.tor.address')" "$root/root/uci-test/out.yaml.map" || fail "no map line for tor's address"
    grep -qF "socksbalance.@backend[1].password" "$root/root/uci-test/out.yaml.map" || fail "no map line for an anonymous section"
    r '/usr/bin/socksbalance check -c /root/uci-test/out.yaml >/dev/null' || fail "socksbalance refuses the YAML made from UCI"
    printf 'config socksbalance main\n\toption custom_yaml /nonexistent.yaml\n' > "$root/root/uci-test/socksbalance"
    ! r 'UCI_CONFIG_DIR=/root/uci-test /usr/libexec/socksbalance-uci /root/uci-test/bad.yaml 2>/root/uci-test/err' || fail "a missing custom_yaml was taken"
    grep -qF "socksbalance.main.custom_yaml: cannot read /nonexistent.yaml" "$root/root/uci-test/err" || fail "no error naming custom_yaml"
    ok

    step="option source 'uci': the daemon runs on UCI alone"
    cp "$root/etc/config/socksbalance" "$work/uci.saved"
    cat > "$root/etc/config/socksbalance" <<'UCI'
config socksbalance 'main'
	option enabled '1'
	option source 'uci'
	option mode 'socks5'
	list listen '127.0.0.1:1090'

config backend 'here'
	option direct '1'

config web 'web'
	option enabled '1'
	option listen '127.0.0.1:8080'
UCI
    r '/etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running on UCI"
    until_ 10 download 127.0.0.1:1090 || fail "127.0.0.1:1090 (from UCI) does not serve"
    [ "$(r 'stat -c %a /var/etc/socksbalance.yaml')" = 600 ] || fail "/var/etc/socksbalance.yaml is not 0600"
    r 'cat /proc/$(pidof socksbalance)/cmdline' | tr '\0' ' ' | grep -qF -- "-c /var/etc/socksbalance.yaml" || fail "the daemon does not run on /var/etc/socksbalance.yaml"
    ok

    step="a bad UCI value: logged with its option, the daemon keeps running"
    first=$(pid)
    r 'uci set socksbalance.here.weight=heavy && uci commit socksbalance && reload_config'
    until_ 10 log_has 'socksbalance.here.weight: invalid type: string "heavy"' || fail "no log line naming socksbalance.here.weight"
    [ "$(pid)" = "$first" ] && running || fail "the daemon stopped or restarted (PID $first -> $(pid))"
    download 127.0.0.1:1090 || fail "it no longer serves"
    ok

    step="a good UCI change: applied by SIGHUP, no restart"
    r 'uci delete socksbalance.here.weight && uci add_list socksbalance.main.listen=127.0.0.1:1091 && uci commit socksbalance && reload_config'
    until_ 10 download 127.0.0.1:1091 || fail "the new listener from UCI does not serve"
    [ "$(pid)" = "$first" ] || fail "the daemon was restarted (PID $first -> $(pid)), not reloaded"
    ok

    cp "$work/uci.saved" "$root/etc/config/socksbalance"
    write_yaml < openwrt/socksbalance/files/config.yaml
    r '/etc/init.d/socksbalance restart'
    until_ 10 download 127.0.0.1:1080 || fail "not serving on the YAML again"
}

# Stand-ins for luci-base (and libc, which LuCI packages depend on):
# this userland has LuCI from source, but its package databases do not
# list it, so opkg and apk would refuse luci-app-socksbalance's Depends.
# Each stand-in installs one marker file and nothing else.
standins() {
    local d=$work/standin
    mkdir -p "$d/data/usr/share/socksbalance-test" "$d/control" "$d/ipk"
    echo "stand-in: LuCI is installed from source in this userland" > "$d/data/usr/share/socksbalance-test/luci-base"
    target/release/socksbalance-apk build --files "$d/data" --output "$work/luci-base-24.10.2-r1.apk" \
        --name luci-base --version 24.10.2-r1 --arch noarch --description "stand-in for the test" \
        --license MIT --origin test --url https://example.invalid --maintainer test >/dev/null
    printf 'Package: luci-base\nVersion: 24.10.2-r1\nDepends: libc\nArchitecture: all\nMaintainer: test\nDescription: stand-in\n' \
        > "$d/control/control"
    printf '2.0\n' > "$d/ipk/debian-binary"
    tar -C "$d/data" -czf "$d/ipk/data.tar.gz" .
    tar -C "$d/control" -czf "$d/ipk/control.tar.gz" .
    tar -C "$d/ipk" -czf "$work/luci-base_24.10.2-r1_all.ipk" ./debian-binary ./data.tar.gz ./control.tar.gz
    rm -rf "$d/data/usr/share/socksbalance-test/luci-base"
    echo "stand-in for libc" > "$d/data/usr/share/socksbalance-test/libc"
    printf 'Package: libc\nVersion: 1.2.5-r4\nArchitecture: x86_64\nMaintainer: test\nDescription: stand-in\n' \
        > "$d/control/control"
    tar -C "$d/data" -czf "$d/ipk/data.tar.gz" .
    tar -C "$d/control" -czf "$d/ipk/control.tar.gz" .
    tar -C "$d/ipk" -czf "$work/libc_1.2.5-r4_x86_64.ipk" ./debian-binary ./data.tar.gz ./control.tar.gz
}

# luci-app-socksbalance on the router: installed with its dependencies,
# its rpcd plugin answering ubus for root and refusing an unauthenticated
# session, and (once, with --luci) LuCI driven in headless Chromium by
# scripts/luci_test.py, with microsocks backends in the router's namespace.
luci_checks() {
    local luci_pkg sid body
    step="install luci-app-socksbalance and its stand-in dependencies"
    if [ "$kind" = ipk ]; then
        "$owrt" install "$root" "$work/libc_1.2.5-r4_x86_64.ipk" >/dev/null 2>&1 || fail "opkg refused the libc stand-in"
        "$owrt" install "$root" "$work/luci-base_24.10.2-r1_all.ipk" >/dev/null 2>&1 || fail "opkg refused the luci-base stand-in"
        luci_pkg=dist/openwrt/luci-app-socksbalance_${version}-1_all.ipk
    else
        "$owrt" install "$root" "$work/luci-base-24.10.2-r1.apk" >/dev/null 2>&1 || fail "apk refused the luci-base stand-in"
        luci_pkg=dist/openwrt/noarch/luci-app-socksbalance-${version}-r1.apk
    fi
    "$owrt" install "$root" "$luci_pkg" >/dev/null 2>&1 || fail "the package manager refused $luci_pkg"
    r '[ -x /usr/libexec/rpcd/luci.socksbalance ] && [ -f /www/luci-static/resources/view/socksbalance/settings.js ]' ||
        fail "files missing after install"
    ok

    step="ubus call luci.socksbalance status: the daemon's stats for root"
    until_ 10 eval "r 'ubus call luci.socksbalance status' | grep -q '\"healthy_backends\"'" || fail "no stats through ubus"
    ok

    step="the ACL: an unauthenticated session is refused, a logged-in one is served"
    rpc() { net curl -s --max-time 10 -H 'Content-Type: application/json' -d "$1" http://192.168.1.1/ubus; }
    body=$(rpc '{"jsonrpc":"2.0","id":1,"method":"call","params":["00000000000000000000000000000000","luci.socksbalance","status",{}]}')
    grep -q '"code":-32002' <<<"$body" || fail "not refused without a session: $body"
    sid=$(rpc '{"jsonrpc":"2.0","id":2,"method":"call","params":["00000000000000000000000000000000","session","login",{"username":"root","password":""}]}' |
        sed -n 's/.*"ubus_rpc_session":"\([0-9a-f]*\)".*/\1/p')
    [ -n "$sid" ] || fail "no session for root"
    body=$(rpc "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"call\",\"params\":[\"$sid\",\"luci.socksbalance\",\"status\",{}]}")
    grep -q '"healthy_backends"' <<<"$body" || fail "a logged-in session is not served: $body"
    ok

    if [ "$kind" = apk ] && [ "$with_luci" -eq 1 ]; then
        local helpers=()
        net microsocks -i 127.0.0.1 -p 21081 >/dev/null 2>&1 &
        helpers+=($!)
        net microsocks -i 127.0.0.1 -p 21082 >/dev/null 2>&1 &
        helpers+=($!)
        net python3 scripts/ports.py echo 127.0.0.1 21090 >/dev/null 2>&1 &
        helpers+=($!)
        until_ 10 net python3 scripts/ports.py accepts 127.0.0.1 21081 || { step="microsocks"; fail "did not start"; }
        until_ 10 net python3 scripts/ports.py accepts 127.0.0.1 21090 || { step="echo server"; fail "did not start"; }
        mkdir -p "$work/shots"
        net python3 scripts/luci_test.py --backend ms1=127.0.0.1:21081 --backend ms2=127.0.0.1:21082 \
            --dead gone=127.0.0.1:21089 --echo 127.0.0.1:21090 --shots "$work/shots" ||
            { step="LuCI in Chromium (scripts/luci_test.py)"; fail "see above"; }
        [ -z "${LUCI_SHOTS:-}" ] || cp "$work/shots/"*.png "$LUCI_SHOTS/"
        # They would keep the final `wait` waiting.
        kill "${helpers[@]}" 2>/dev/null || true
        wait "${helpers[@]}" 2>/dev/null || true
        # Back to the packaged configuration for the steps after this one.
        cp openwrt/socksbalance/files/socksbalance.config "$root/etc/config/socksbalance"
        r '/etc/init.d/socksbalance restart'
        until_ 10 download 127.0.0.1:1080 || { step="after the LuCI test"; fail "not serving on the YAML again"; }
    fi
}

# The router's nftables ruleset without the packet counters' values.
ruleset() { r 'nft list ruleset' | sed 's/counter packets [0-9]* bytes [0-9]*/counter/'; }

standins
for kind in "${kinds[@]}"; do
    if [ "$kind" = ipk ]; then pkg1=$ipk1; pkg2=$ipk2; else pkg1=$apk1; pkg2=$apk2; fi
    "$owrt" up "$root" >/dev/null
    # The firewall as fw4 makes it without socksbalance.
    until_ 10 r 'nft list table inet fw4 >/dev/null' || { step="boot"; fail "fw4 did not load"; }
    ruleset > "$work/ruleset.before"

    step="install $(basename "$pkg1")"
    "$owrt" install "$root" "$pkg1" >/dev/null 2>&1 || fail "the package manager refused it"
    until_ 10 running || fail "no running instance after install"
    [ "$(stat -c %a "$root/etc/socksbalance/config.yaml")" = 600 ] || fail "config.yaml is not 0600"
    [ "$(stat -c %a "$root/etc/config/socksbalance")" = 600 ] || fail "/etc/config/socksbalance is not 0600"
    ok

    step="ubus call service list: respawn, limits, --syslog"
    info=$(r "ubus call service list '{\"name\":\"socksbalance\"}'")
    for want in '"threshold": 3600' '"retry": 5' '"nofile": "16384 16384"' '"--syslog"' '"term_timeout": 10'; do
        grep -qF -- "$want" <<<"$info" || fail "no $want in: $info"
    done
    ok

    step="a real download through the daemon (127.0.0.1:1080 and 192.168.1.1:1080)"
    net python3 -m http.server 18080 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
    until_ 10 net curl -sf -o /dev/null http://127.0.0.1:18080/blob || fail "the test web server did not start"
    download 127.0.0.1:1080 || fail "download through 127.0.0.1:1080"
    download 192.168.1.1:1080 || fail "download through 192.168.1.1:1080"
    ok

    step="logread: info lines are daemon.info, not daemon.err"
    first=$(pid)
    log_has "daemon.info socksbalance[$first]: socksbalance $version listening on 127.0.0.1:1080" || fail "no daemon.info start line"
    ! r 'logread -e socksbalance' | grep -q 'daemon.err.*INFO' || fail "INFO lines filed as daemon.err"
    ok

    step="reload with an edited YAML: same process, new listener"
    write_yaml <<'YAML'
listen: ["127.0.0.1:1080", "127.0.0.1:1081", "192.168.1.1:1080"]
mode: socks5
backends:
  - direct: true
    name: direct
web:
  enabled: true
  listen: "127.0.0.1:8080"
YAML
    r '/etc/init.d/socksbalance reload'
    until_ 10 log_has "reloaded:" || fail "no 'reloaded:' line"
    [ "$(pid)" = "$first" ] || fail "the daemon was restarted (PID $first -> $(pid)), not reloaded"
    download 127.0.0.1:1081 || fail "the new listener does not serve"
    ok

    step="reload with a broken YAML: the daemon keeps running on what it has"
    printf 'listen: [127.0.0.1:1080\nbackends: {\n' | write_yaml
    r '/etc/init.d/socksbalance reload' || true
    until_ 10 log_has "socksbalance keeps running with the configuration it has" || fail "no line saying why"
    [ "$(pid)" = "$first" ] && running || fail "the daemon stopped or restarted (PID $first -> $(pid))"
    download 127.0.0.1:1081 || fail "it no longer serves"
    ok

    step="uci enabled 0 + reload_config stops it; enabled 1 starts it again"
    # reload_config sends config.change only for files whose checksum it
    # has seen before: a package's config file, new since boot, is seen by
    # the first run (as on a router, until the next reboot or run).
    r 'reload_config'
    r 'uci set socksbalance.main.enabled=0 && uci commit socksbalance && reload_config'
    until_ 15 stopped || fail "still running with enabled 0"
    # A valid YAML again: the one the package ships.
    write_yaml < openwrt/socksbalance/files/config.yaml
    r 'uci set socksbalance.main.enabled=1 && uci commit socksbalance && reload_config'
    until_ 15 running || fail "not running again with enabled 1"
    until_ 10 download 127.0.0.1:1080 || fail "not serving after enabled 1"
    ok

    step="kill -9: procd respawns it"
    before=$(pid)
    r "kill -9 $before"
    until_ 20 eval '[ -n "$(pid)" ] && [ "$(pid)" != "$before" ]' || fail "no new process after kill -9"
    until_ 10 download 127.0.0.1:1080 || fail "the respawned daemon does not serve"
    ok

    step="upgrade to $(basename "$pkg2"): the new binary runs"
    before=$(pid)
    if [ "$kind" = ipk ]; then
        "$owrt" install "$root" "$pkg2" >/dev/null 2>&1 || fail "opkg refused the upgrade"
    else
        "$owrt" install "$root" "$pkg2" >/dev/null 2>&1 || fail "apk refused the upgrade"
    fi
    until_ 20 eval '[ -n "$(pid)" ] && [ "$(pid)" != "$before" ]' || fail "the old process (PID $before) still runs"
    now=$(pid)
    exe=$(r "readlink /proc/$now/exe")
    [ "$exe" = /usr/bin/socksbalance ] || fail "PID $now runs $exe"
    [ "$(r "sha256sum /proc/$now/exe" | cut -d' ' -f1)" = "$sum2" ] || fail "PID $now does not run the r2 binary"
    until_ 10 download 127.0.0.1:1080 || fail "the upgraded daemon does not serve"
    ok

    step="the LAN address missing at start and added later"
    net ip addr del 192.168.1.1/24 dev br-lan
    r '/etc/init.d/socksbalance restart'
    until_ 10 running || fail "not running without the LAN address"
    until_ 10 download 127.0.0.1:1080 || fail "127.0.0.1:1080 not served while 192.168.1.1 is missing"
    late=$(pid)
    until_ 5 log_has "listen 192.168.1.1:1080: this host has no such address yet" || fail "the missing address is not logged"
    net ip addr add 192.168.1.1/24 dev br-lan
    r 'ACTION=ifup INTERFACE=lan /sbin/hotplug-call iface'
    until_ 10 download 192.168.1.1:1080 || fail "192.168.1.1:1080 not served once the address exists"
    [ "$(pid)" = "$late" ] || fail "the daemon restarted (PID $late -> $(pid)): a crash loop?"
    [ "$(log_count "no such address yet")" = 1 ] || fail "the missing address was logged more than once"
    ok

    step="the hotplug hook starts a stopped daemon when an interface comes up"
    r '/etc/init.d/socksbalance stop'
    until_ 15 stopped || fail "did not stop"
    r 'ACTION=ifup INTERFACE=lan /sbin/hotplug-call iface'
    until_ 15 running || fail "not started by ifup"
    until_ 10 download 192.168.1.1:1080 || fail "not serving after ifup"
    ok

    gateway_checks
    uci_checks
    luci_checks

    step="removal"
    if [ "$kind" = ipk ]; then
        r 'opkg remove luci-app-socksbalance socksbalance' >/dev/null
    else
        r 'apk del luci-app-socksbalance socksbalance' >/dev/null
    fi
    until_ 15 stopped || fail "still running after removal"
    for f in /usr/bin/socksbalance /etc/init.d/socksbalance /etc/hotplug.d/iface/30-socksbalance \
        /usr/libexec/rpcd/luci.socksbalance /www/luci-static/resources/view/socksbalance/status.js; do
        [ ! -e "$root$f" ] || fail "$f left behind"
    done
    r 'ls /etc/rc.d' | grep -q socksbalance && fail "an rc.d link left behind"
    ok

    kill %1 2>/dev/null || true
    wait 2>/dev/null || true
    "$owrt" down "$root" >/dev/null
done
echo "openwrt-test.sh: all checks passed (${kinds[*]})"
