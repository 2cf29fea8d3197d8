#!/usr/bin/env bash
# socksbalance against HAProxy, side by side, over real microsocks backends.
#
#   scripts/bench.sh            the full run (about 5 minutes)
#   scripts/bench.sh --quick    the CI run (under a minute)
#   scripts/bench.sh --rounds N --mib M    override rounds / MiB per bulk run
#
# Starts on 127.0.0.1 only: 4 microsocks backends, the target server of
# examples/loadgen.rs, HAProxy (mode tcp, balance roundrobin over the same
# backends) with its default threads (one per core) and with one, and
# socksbalance in transparent and in socks5 mode, with its default
# `threads` (1) and with `threads: auto` (a thread per core). DIRECT is
# one of the microsocks backends used on its own; FLOOR is
# examples/floorproxy.rs, the least a TCP proxy can do (a thread per CPU,
# like HAProxy), the connection rate and RTT any proxy could reach here.
# Every measurement runs each configuration once per round, in a rotated
# order, so that the noise of a shared 2-core machine falls on all of them
# alike; the report gives medians. The connection rate is measured with
# two load generators of different designs (loadgen: a blocking thread
# per connection; examples/epollgen.rs: one thread, one poller), and with
# each the proxy's CPU per connection. Then: socksbalance's footprint (idle
# RSS, idle tunnels) and the same daemon with 1,000 backends configured.
#
# The verdicts (PASS/FAIL against the targets of docs/performance.md) are
# in the report; the exit status says only whether the benchmark itself
# worked: 0 when it ran, 1 when something broke (a proxy failed to start,
# data arrived corrupted, a run failed).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
rounds=""
mib=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --rounds) rounds="$2"; shift ;;
        --mib) mib="$2"; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    : "${rounds:=2}" "${mib:=64}"
    rate_secs=1; rtt_count=2000; idle_window=5; scale_backends=1000
else
    : "${rounds:=5}" "${mib:=256}"
    rate_secs=3; rtt_count=20000; idle_window=30; scale_backends=1000
fi

# ------------------------------------------------------------ dependencies
need=()
command -v microsocks >/dev/null 2>&1 || need+=(microsocks)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v danted >/dev/null 2>&1 || need+=(dante-server)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq || echo "warning: apt-get update reported errors; continuing" >&2
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== building (release)"
cargo build --release --quiet --bin socksbalance --example loadgen --example floorproxy --example epollgen
SB=$PWD/target/release/socksbalance
LG=$PWD/target/release/examples/loadgen
EG=$PWD/target/release/examples/epollgen
FLOOR=$PWD/target/release/examples/floorproxy

# 10,000 idle tunnels need about 20,000 descriptors in the daemon and as
# many in the load generator; root may raise the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_tunnels=10000
if [ "$(ulimit -n)" -lt 25000 ]; then
    max_tunnels=$(( ($(ulimit -n) - 200) / 2 ))
    echo "warning: only $(ulimit -n) descriptors: the largest idle-tunnel run is $max_tunnels" >&2
fi

work=$(mktemp -d /tmp/socksbalance-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ "${redirecting:-0}" = 0 ] || nft delete table ip socksbalance_bench 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
die() { echo "bench.sh: $*" >&2; exit 1; }

# ------------------------------------------------------------ ports
# Children listen below 32768 (the ephemeral range starts there): one free
# block of 1,024 ports in 20000-31999, chosen at random, checked with ss.
used=" $(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u | tr '\n' ' ') "
base=""
for _ in $(seq 1 50); do
    b=$(( 20000 + (RANDOM % 11) * 1024 ))
    clash=0
    for p in $(seq "$b" $((b + 1023))); do
        case "$used" in *" $p "*) clash=1; break ;; esac
    done
    [ "$clash" = 0 ] && { base=$b; break; }
done
[ -n "$base" ] || die "no free block of 1,024 ports in 20000-31999"
backend_ports=("$base" $((base + 1)) $((base + 2)) $((base + 3)))
p_haproxy=$((base + 4)); p_sbt=$((base + 5)); p_sbs=$((base + 6))
p_mem=$((base + 7)); p_scale=$((base + 8)); p_floor=$((base + 9)); p_sbh=$((base + 10))
p_sbr=$((base + 11)); p_dante=$((base + 12)); p_sbu=$((base + 13))
p_haproxy1=$((base + 14)); p_sbta=$((base + 15)); p_sbsa=$((base + 16))
scale_first=$((base + 24)); scale_last=$((scale_first + scale_backends - 1))

listening() { ss -Htln "sport = :$1" | grep -q .; }
# Polls until port $1 listens (at most 10 s); $2 is the pid that should.
wait_port() {
    for _ in $(seq 1 200); do
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "process $2 for port $1 exited"
        sleep 0.05
    done
    die "nothing listens on port $1 after 10 s"
}
start() { # start NAME CMD...: runs in the background, logs to $work/NAME.log
    local name=$1; shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    last_pid=$!
}
# Each proxy's pid by name.
declare -A pid=()
serve() { # serve NAME PORT CMD...: start, and wait until it listens on PORT
    local name=$1 port=$2; shift 2
    start "$name" "$@"
    pid[$name]=$last_pid
    wait_port "$port" "$last_pid"
}
rss() { awk -v k="$2" '$1 == k {print $2}' "/proc/$1/status"; }

# ------------------------------------------------------------ processes
start target "$LG" serve "$work/target.ports"
for _ in $(seq 1 200); do [ -s "$work/target.ports" ] && break; sleep 0.05; done
read -r target hold < "$work/target.ports" || die "target server did not start"

for p in "${backend_ports[@]}"; do
    start "microsocks-$p" microsocks -i 127.0.0.1 -p "$p"
    wait_port "$p" "$last_pid"
done
pid[direct]=${pids[1]}

# The configurations come from scripts/testbed.py, which
# scripts/rate_profile.py uses too.
python3 scripts/testbed.py haproxy "$p_haproxy" "${backend_ports[@]}" > "$work/haproxy.cfg"
serve haproxy "$p_haproxy" haproxy -db -f "$work/haproxy.cfg"
python3 scripts/testbed.py haproxy "$p_haproxy1" "${backend_ports[@]}" --nbthread 1 > "$work/haproxy1.cfg"
serve haproxy1 "$p_haproxy1" haproxy -db -f "$work/haproxy1.cfg"

floor_backends=()
for p in "${backend_ports[@]}"; do floor_backends+=("127.0.0.1:$p"); done
serve floor "$p_floor" "$FLOOR" "127.0.0.1:$p_floor" "$(nproc)" "${floor_backends[@]}"

python3 scripts/testbed.py socksbalance "$p_sbt" transparent "${backend_ports[@]}" > "$work/sbt.yaml"
python3 scripts/testbed.py socksbalance "$p_sbs" socks5 "${backend_ports[@]}" > "$work/sbs.yaml"
# The socks5 daemon also serves HTTP CONNECT, for the rate row "sbh", and
# a gateway's redirect listener, for "sbr".
sed -i "s|^listen: .*|listen: [\"127.0.0.1:$p_sbs\", {address: \"127.0.0.1:$p_sbh\", protocol: http}, {address: \"127.0.0.1:$p_sbr\", protocol: redirect}]|" "$work/sbs.yaml"
grep -q "$p_sbh" "$work/sbs.yaml" || die "testbed.py's socksbalance config has no listen line to extend"
serve sbt "$p_sbt" "$SB" -c "$work/sbt.yaml"
serve sbs "$p_sbs" "$SB" -c "$work/sbs.yaml"
# The same two with `threads: auto` (sbt/sbs have the default, 1).
python3 scripts/testbed.py socksbalance "$p_sbta" transparent "${backend_ports[@]}" --threads auto > "$work/sbta.yaml"
python3 scripts/testbed.py socksbalance "$p_sbsa" socks5 "${backend_ports[@]}" --threads auto > "$work/sbsa.yaml"
serve sbta "$p_sbta" "$SB" -c "$work/sbta.yaml"
serve sbsa "$p_sbsa" "$SB" -c "$work/sbsa.yaml"

# UDP: Dante (UDP-capable, as microsocks is not) alone, and a socks5-mode
# daemon with Dante as its one backend ("sbu"), both to loadgen's UDP echo.
start udp_echo "$LG" udp-echo "$work/udp.port"
for _ in $(seq 1 200); do [ -s "$work/udp.port" ] && break; sleep 0.05; done
udp_target=$(cat "$work/udp.port")
cat > "$work/danted.conf" <<DANTE
logoutput: stderr
internal: 127.0.0.1 port = $p_dante
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate udpreply }
DANTE
udp_ok=0
if [ "$(id -u)" -eq 0 ]; then
    serve dante "$p_dante" danted -f "$work/danted.conf" -N 1
    printf 'listen: 127.0.0.1:%s\nmode: socks5\nlog: {level: warn}\nbackends:\n  - address: 127.0.0.1:%s\n' \
        "$p_sbu" "$p_dante" > "$work/sbu.yaml"
    serve sbu "$p_sbu" "$SB" -c "$work/sbu.yaml"
    udp_ok=1
else
    echo "== not root: Dante cannot start, the UDP rows are left out"
fi

# Idle RSS: after start, before any client (the first probes are done
# within a second: poll until one second has passed since start, bounded).
sleep 1
idle_rss_sbs=$(rss "${pid[sbs]}" VmRSS:)
idle_rss_sbt=$(rss "${pid[sbt]}" VmRSS:)
idle_rss_sbsa=$(rss "${pid[sbsa]}" VmRSS:)
idle_rss_sbta=$(rss "${pid[sbta]}" VmRSS:)
idle_rss_haproxy=$(rss "${pid[haproxy]}" VmRSS:)

# "sbr": loadgen connects from 127.0.0.3 straight to the target, and an
# nftables rule redirects those connections (only those: microsocks
# connects from 127.0.0.1) to the socks5 daemon's redirect listener. Root
# and nft only; without them the row is left out.
redirecting=0
if [ "$(id -u)" -eq 0 ] && command -v nft >/dev/null 2>&1; then
    nft -f - <<NFT && redirecting=1
table ip socksbalance_bench {
	chain out {
		type nat hook output priority -100; policy accept;
		ip saddr 127.0.0.3 tcp dport ${target##*:} redirect to :$p_sbr
	}
}
NFT
fi
[ "$redirecting" = 1 ] || echo "== no root or nft: the redirect row (sbr) is left out"

results="$work/results"
: > "$results"
# Bulk transfers go through these; the connection rate and the echo RTT
# also through HAProxy with one thread (haproxy1), for the CPU per
# connection at equal threads: haproxy1 against sbt/sbs, haproxy against
# sbta/sbsa.
names=(direct haproxy floor sbt sbs sbta sbsa)
rate_names=(direct haproxy haproxy1 floor sbt sbs sbta sbsa)
declare -A addr=([direct]="127.0.0.1:${backend_ports[0]}" [haproxy]="127.0.0.1:$p_haproxy"
                 [haproxy1]="127.0.0.1:$p_haproxy1" [floor]="127.0.0.1:$p_floor"
                 [sbt]="127.0.0.1:$p_sbt" [sbs]="127.0.0.1:$p_sbs"
                 [sbta]="127.0.0.1:$p_sbta" [sbsa]="127.0.0.1:$p_sbsa")
# The order of round $1 over the names after it: rotated, so no
# configuration always goes first.
order() { local r=$1 i; shift; local list=("$@") n=$#; for ((i = 0; i < n; i++)); do echo "${list[$(( (i + r) % n ))]}"; done; }
run() { # run TEST NAME loadgen-args...: one measurement line into $results
    local test=$1 name=$2 out; shift 2
    out=$("$LG" "$@") || die "$test through $name failed: $out"
    echo "$test $name $out" >> "$results"
}
# CPU ticks (user + system) of process $1 so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rate_run() { # rate_run TEST NAME PID GENERATOR PROXY: 32 clients for rate_secs, and the proxy's CPU
    local test=$1 name=$2 p=$3 gen=$4 proxy=$5 before out
    before=$(ticks "$p")
    out=$("$gen" rate "$proxy" "$target" 32 "$rate_secs") || die "$test through $name failed: $out"
    echo "$test $name $out cpu_ticks=$(( $(ticks "$p") - before ))" >> "$results"
}

echo "== bulk: $rounds round(s) x ${#names[@]} configurations, $mib MiB per run"
for r in $(seq 1 "$rounds"); do
    for streams in 1 4; do
        for dir in down up; do
            for n in $(order "$r" "${names[@]}"); do
                run "bulk_${dir}_$streams" "$n" bulk "${addr[$n]}" "$target" "$streams" "$dir" "$mib" "${pid[$n]}"
            done
        done
    done
done

# epollgen takes loadgen's command line for `rate`, without the word.
epollgen() { shift; "$EG" "$@"; }
echo "== connection rate: $rounds round(s) x ${rate_secs} s, 32 concurrent, loadgen and epollgen"
for r in $(seq 1 "$rounds"); do
    for n in $(order "$r" "${rate_names[@]}"); do
        rate_run rate "$n" "${pid[$n]}" "$LG" "${addr[$n]}"
        rate_run rate2 "$n" "${pid[$n]}" epollgen "${addr[$n]}"
    done
    # HTTP CONNECT on the socks5-mode daemon's HTTP port, in the same round.
    rate_run rate sbh "${pid[sbs]}" "$LG" "http://127.0.0.1:$p_sbh"
    rate_run rate2 sbh "${pid[sbs]}" epollgen "http://127.0.0.1:$p_sbh"
    # Redirected connections to the same daemon's gateway listener.
    [ "$redirecting" = 0 ] || rate_run rate sbr "${pid[sbs]}" "$LG" "redirect://127.0.0.3"
done

echo "== echo RTT: $rounds round(s) x $rtt_count round trips"
for r in $(seq 1 "$rounds"); do
    for n in $(order "$r" "${rate_names[@]}"); do run rtt "$n" rtt "${addr[$n]}" "$target" "$rtt_count"; done
done

if [ "$udp_ok" = 1 ]; then
    echo "== UDP: $rounds round(s) x $rtt_count datagram round trips"
    for r in $(seq 1 "$rounds"); do
        if [ $((r % 2)) = 1 ]; then udp_order="dante sbu"; else udp_order="sbu dante"; fi
        for n in $udp_order; do
            if [ "$n" = dante ]; then p=$p_dante; else p=$p_sbu; fi
            run udp "$n" udp "127.0.0.1:$p" "$udp_target" "$rtt_count"
        done
    done
fi

for n in haproxy sbt sbs sbta sbsa; do
    echo "peak $n kib=$(rss "${pid[$n]}" VmHWM:)" >> "$results"
done
echo "idle_rss sbs kib=$idle_rss_sbs" >> "$results"
echo "idle_rss sbt kib=$idle_rss_sbt" >> "$results"
echo "idle_rss sbsa kib=$idle_rss_sbsa" >> "$results"
echo "idle_rss sbta kib=$idle_rss_sbta" >> "$results"
echo "idle_rss haproxy kib=$idle_rss_haproxy" >> "$results"

# ------------------------------------------------------------ idle tunnels
# A fresh daemon per count (a tunnel whose client left stays half-open
# until its far end closes, which the hold port never does).
for count in 1000 "$max_tunnels"; do
    echo "== $count idle tunnels"
    {
        echo "listen: 127.0.0.1:$p_mem"
        echo "mode: socks5"
        echo "backends:"
        echo "  - direct: true"
        echo "limits: {max_connections: 30000}"
        echo "log: {level: warn}"
    } > "$work/mem.yaml"
    start "mem-$count" "$SB" -c "$work/mem.yaml"
    mem_pid=$last_pid
    wait_port "$p_mem" "$mem_pid"
    run "tunnels_$count" sbs idle "127.0.0.1:$p_mem" "$hold" "$count" "$mem_pid"
    kill "$mem_pid"
    wait "$mem_pid" 2>/dev/null || true
done

# ------------------------------------------------------------ 1,000 backends
echo "== $scale_backends backends configured"
for p in $(seq "$scale_first" "$scale_last"); do
    microsocks -i 127.0.0.1 -p "$p" >/dev/null 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 200); do
    up=$(ss -Htln | awk -v a="$scale_first" -v b="$scale_last" \
        '{n = $4; sub(/.*:/, "", n); if (n >= a && n <= b) c++} END {print c + 0}')
    [ "$up" -ge "$scale_backends" ] && break
    sleep 0.05
done
[ "$up" -ge "$scale_backends" ] || die "only $up of $scale_backends microsocks backends listen"
{
    echo "listen: 127.0.0.1:$p_scale"
    echo "mode: socks5"
    echo "backends:"
    echo "  - address: 127.0.0.1:$scale_first-$scale_last"
    echo "log: {level: warn}"
} > "$work/scale.yaml"
serve scale "$p_scale" "$SB" -c "$work/scale.yaml"
# CPU over an idle window from start: the first probe of every backend
# and the scheduling after it.
run idle_cpu scale cpu "${pid[scale]}" "$idle_window"
echo "idle_window scale secs=$idle_window" >> "$results"
echo "idle_rss scale kib=$(rss "${pid[scale]}" VmRSS:)" >> "$results"
echo "idle_rss sbs_now kib=$(rss "${pid[sbs]}" VmRSS:)" >> "$results"
for r in $(seq 1 "$rounds"); do
    for n in sbs scale; do
        [ $((r % 2)) = 0 ] && n=$([ "$n" = sbs ] && echo scale || echo sbs)
        a=${addr[sbs]}
        [ "$n" = scale ] && a=127.0.0.1:$p_scale
        run rate_scale "$n" rate "$a" "$target" 32 "$rate_secs"
    done
done

# ------------------------------------------------------------ report
echo
echo "socksbalance $("$SB" --version 2>&1 | head -1) | $(haproxy -v 2>&1 | head -1)"
echo "microsocks $(dpkg-query -W -f='${Version}' microsocks 2>/dev/null || echo '?') | $(rustc --version) | $(date -u '+%Y-%m-%d %H:%M UTC') | $(nproc) CPUs | rounds=$rounds mib=$mib"
# The raw lines, for a second look (target/ is not tracked).
mkdir -p target/bench
suffix=""
[ "$quick" = 1 ] && suffix=-quick
keep="target/bench/results-$(date -u +%Y%m%dT%H%M%SZ)$suffix.txt"
cp "$results" "$keep"
echo "raw results: $keep"
python3 scripts/bench_report.py "$results" "$scale_backends"
