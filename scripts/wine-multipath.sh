#!/usr/bin/env bash
# `interfaces: auto` on Windows, run under Wine: the x86_64 Windows build in
# a network namespace with two veth "WANs", each with a default route, and
# an "internet" namespace behind both with a web server. Checks that the
# daemon finds both WANs by their adapter names, that it balances downloads
# over both, and that when one WAN goes down it leaves the pool while
# downloads keep succeeding. Addresses in 198.18.0.0/15 only.
#
# Wine answers GetAdaptersAddresses and GetIpForwardTable2 from the
# namespace's interfaces, but never calls the NotifyIpInterfaceChange /
# NotifyRouteChange2 callbacks, so the link leaves through the daemon's
# poll of the tables (docs/building.md, "Windows under Wine").
#
# Usage: scripts/wine-multipath.sh [EXE]  (root; default: the dist/ build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
exe=$(windows_exe wine-multipath.sh "${1:-}")

c=sbwc$$ i=sbwi$$
work=$(mktemp -d /tmp/sb-wine-mp.XXXXXX)
export WINEDEBUG=-all WINEPREFIX=$work/prefix
cleanup() {
    set +e
    [ -z "${daemon:-}" ] || kill "$daemon" 2>/dev/null
    ip netns exec "$c" env WINEPREFIX="$WINEPREFIX" wineserver -k 2>/dev/null
    [ -z "${origin:-}" ] || kill "$origin" 2>/dev/null
    ip netns del "$c" 2>/dev/null
    ip netns del "$i" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL wine-multipath: $*" >&2; echo "---- daemon log" >&2; cat "$work/daemon.log" >&2 || true; exit 1; }
ok() { echo "ok   wine-multipath: $*"; }

# The client ("the Windows PC") and the internet behind both of its WANs.
ip netns add "$c"
ip netns add "$i"
ip -n "$c" link set lo up
ip -n "$i" link set lo up
ip -n "$i" addr add 198.19.0.1/32 dev lo
for n in 0 1; do
    wan=wan$([ $n = 0 ] && echo A || echo B)
    ip -n "$c" link add "$wan" type veth peer name "isp$n" netns "$i"
    ip -n "$c" addr add "198.18.4$n.2/24" dev "$wan"
    ip -n "$i" addr add "198.18.4$n.1/24" dev "isp$n"
    ip -n "$c" link set "$wan" up
    ip -n "$i" link set "isp$n" up
    ip -n "$c" route add default via "198.18.4$n.1" dev "$wan" metric "$((10 + n * 10))"
done
head -c 1000000 /dev/urandom > "$work/blob"
sum=$(sha256sum < "$work/blob" | cut -d' ' -f1)
ip netns exec "$i" python3 -m http.server 8000 --bind 198.19.0.1 --directory "$work" > "$work/origin.log" 2>&1 &
origin=$!
until_ 10 ip netns exec "$i" curl -sf -o /dev/null http://198.19.0.1:8000/blob || fail "the origin did not start"

# A prefix of its own, so that its wineserver (and Wine's network driver)
# start inside the client's namespace.
wine_prefix ip netns exec "$c"
cp "$exe" "$work/socksbalance.exe"
cat > "$work/config.yaml" <<'YAML'
listen: 127.0.0.1:1080
mode: socks5
web: {enabled: true, listen: "127.0.0.1:8080"}
health: {check_interval: 2s}
backends:
  - interfaces: auto
YAML
ip netns exec "$c" wine "$work/socksbalance.exe" -c "Z:${work//\//\\}\\config.yaml" > "$work/daemon.log" 2>&1 &
daemon=$!

stats() { ip netns exec "$c" curl -sf --max-time 5 http://127.0.0.1:8080/api/stats; }
names() { stats | python3 -c 'import json,sys; print(" ".join(sorted(b["name"] for b in json.load(sys.stdin)["backends"])))'; }
down() { # download N: N downloads through the daemon, each checked
    local n
    for n in $(seq "$1"); do
        [ "$(ip netns exec "$c" curl -sf --max-time 10 --socks5 127.0.0.1:1080 http://198.19.0.1:8000/blob | sha256sum | cut -d' ' -f1)" = "$sum" ] ||
            return 1
    done
}

until_ 60 eval '[ "$(names)" = "wanA wanB" ]' || fail "the daemon did not find wanA and wanB (found: $(names 2>&1))"
ok "interfaces: auto finds both WANs by adapter name"

down 20 || fail "a download through the daemon failed"
# Both uplinks carried connections (the daemon's own counts: Wine does
# not honour IP_UNICAST_IF, so under Wine the packets themselves leave as
# the namespace's routes say, whichever uplink the daemon picked).
per=$(stats | python3 -c 'import json,sys; print(" ".join("%s=%d" % (b["name"], b["total_connections"]) for b in json.load(sys.stdin)["backends"]))')
for wan in wanA wanB; do
    [[ " $per " =~ \ $wan=([1-9][0-9]*)\  ]] || fail "no connection went to $wan ($per)"
done
ok "20 downloads, checked, balanced over both WANs ($per)"

ip -n "$c" link set wanB down
# Downloads go on while the link leaves: none may fail.
down 10 || fail "a download failed while wanB went down"
until_ 30 eval '[ "$(names)" = "wanA" ]' || fail "wanB did not leave (backends: $(names 2>&1))"
down 10 || fail "a download failed after wanB left"
ok "wanB down: it leaves the pool, no download fails"
echo "wine-multipath.sh: all checks passed"
