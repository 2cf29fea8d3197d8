#!/usr/bin/env python3
"""Where a proxied connection's CPU goes: HAProxy against socksbalance on
the connection-rate test of scripts/bench.sh (32 concurrent clients, each
a full SOCKS5 handshake plus a 32-byte echo, through 4 microsocks
backends to the loadgen target).

For each proxy, alternated over ROUNDS rounds, it measures during the
rate test:
  - connections per second and the proxy's CPU per connection
    (utime + stime from /proc/PID/stat),
  - how much of the machine stayed idle (/proc/stat),
  - TCP segments sent per connection on the whole machine
    (/proc/net/snmp OutSegs; the same for every proxy means the kernel's
    TCP work is the same), and how many of them were ACKs held back
    until the delayed-ACK timer ran out (/proc/net/netstat DelayedACKs),
  - the proxy's context switches per connection (all its threads),
then, in the same round, the echo RTT p50 through one tunnel (4,000 round
trips) and the proxy's CPU per GiB of a 128 MiB download; and, once per
proxy after the rounds, for a fixed number of connections:
  - system calls per connection, by name (`strace -c -f`, when strace is
    installed; strace slows the proxy, the counts are exact),
  - the share of the proxy's CPU in each system call, in the rest of the
    kernel and in user space (`perf record -g`, when perf is installed
    and allowed).

Usage: rate_profile.py [--rounds N] [--seconds S] [--modes transparent,socks5]
                       [--threads N[,N...]] [--haproxy-threads N[,N...]]
                       [--floor N[,N...]] [--baseline BINARY] [--quick]

--quick (what .ci/run runs, so that the script keeps working) is one
round of one second, 200 connections under strace, no perf.
--threads sets socksbalance's `threads:`; a list gives a column per
value. --haproxy-threads does the same for HAProxy's `nbthread` (without
it, one HAProxy with its default: a thread per CPU). --floor adds a
column per thread count for examples/floorproxy, the least a TCP proxy
can do (edge-triggered epoll per thread, no re-arming, nothing else): the
ceiling any proxy could reach on this machine. --baseline adds
columns for another socksbalance binary (an older build, say). Every
column is alternated with the rest.

Needs microsocks and haproxy (scripts/bench.sh installs both) and the
release builds of socksbalance and examples/loadgen (built here with
cargo). Everything listens on 127.0.0.1, children on free ports below
32768. Every run is bounded in time and count. Standard library only.
"""

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ports import accepts, free_port
from testbed import haproxy_config, socksbalance_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONCURRENCY = 32
STRACE_CONNS = 1500
RTT_COUNT = 4000
BULK_MIB = 128
PERF_SECONDS = 2
READY_LIMIT = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def die(msg):
    print(f"rate_profile.py: {msg}", file=sys.stderr)
    sys.exit(1)


def wait_listening(port, proc):
    deadline = time.monotonic() + READY_LIMIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{proc.args[0]} exited before listening on {port}")
        if accepts(port):
            return
        time.sleep(0.02)
    die(f"nothing listens on {port} after {READY_LIMIT:.0f} s")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def machine():
    """(busy, idle) jiffies of all CPUs."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals[:8]) - idle, idle


def out_segs():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def delayed_acks():
    """ACKs the kernel sent alone when its delayed-ACK timer ran out."""
    with open("/proc/net/netstat") as f:
        lines = [l.split() for l in f if l.startswith("TcpExt:")]
    return int(lines[1][lines[0].index("DelayedACKs")])


def ctx_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread ended meanwhile
    return total


def loadgen(lg, *args, timeout=120):
    out = subprocess.run([lg, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        die(f"loadgen {' '.join(map(str, args))} failed: {out.stderr.strip() or out.stdout.strip()}")
    return dict(kv.split("=", 1) for kv in out.stdout.split())


def children_cpu():
    """CPU seconds of the children waited for so far (the loadgen runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rate_round(lg, proxy, target, seconds, others):
    pid = proxy["pid"]
    o0 = {k: sum(cpu_ticks(p) for p in pids) for k, pids in others.items()}
    c0, (b0, i0), s0, x0, l0 = cpu_ticks(pid), machine(), out_segs(), ctx_switches(pid), children_cpu()
    d0 = delayed_acks()
    res = loadgen(lg, "rate", f"127.0.0.1:{proxy['port']}", target, CONCURRENCY, seconds)
    c1, (b1, i1), s1, x1, l1 = cpu_ticks(pid), machine(), out_segs(), ctx_switches(pid), children_cpu()
    d1 = delayed_acks()
    o1 = {k: sum(cpu_ticks(p) for p in pids) for k, pids in others.items()}
    conns = int(res["conns"])
    return {
        "conns_s": float(res["conns_s"]),
        "cpu_us": (c1 - c0) / CLK_TCK * 1e6 / conns,
        "machine_us": (b1 - b0) / CLK_TCK * 1e6 / conns,
        "client_us": (l1 - l0) * 1e6 / conns,
        **{f"{k}_us": (o1[k] - o0[k]) / CLK_TCK * 1e6 / conns for k in others},
        "idle_pct": 100.0 * (i1 - i0) / max(1, (b1 - b0) + (i1 - i0)),
        "segs": (s1 - s0) / conns,
        "dacks": (d1 - d0) / conns,
        "ctx": (x1 - x0) / conns,
        "rtt_us": float(loadgen(lg, "rtt", f"127.0.0.1:{proxy['port']}", target, RTT_COUNT)["p50_us"]),
        "cpu_gib": (lambda b: int(b["cpu_ticks"]) / CLK_TCK / (int(b["bytes"]) / 2**30))(
            loadgen(lg, "bulk", f"127.0.0.1:{proxy['port']}", target, 1, "down", BULK_MIB, pid)),
    }


def strace_counts(lg, proxy, target, work, conns):
    """System calls per connection by name, all threads of the proxy."""
    out = os.path.join(work, f"strace-{proxy['name']}.txt")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(proxy["pid"])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # strace attaches to every thread; no readiness signal to wait on
    res = loadgen(lg, "rate", f"127.0.0.1:{proxy['port']}", target, CONCURRENCY, 60, conns)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    conns = int(res["conns"])
    counts = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1)) / conns
    return counts


def perf_shares(proxy, lg, target, work):
    """Share of the proxy's samples: user space, each system call, the rest."""
    data = os.path.join(work, f"perf-{proxy['name']}.data")
    rec = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-g", "-o", data, "-p", str(proxy["pid"]),
                            "--", "sleep", str(PERF_SECONDS + 0.5)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    loadgen(lg, "rate", f"127.0.0.1:{proxy['port']}", target, CONCURRENCY, PERF_SECONDS)
    if rec.wait(timeout=60) != 0:
        return None
    rep = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "sym", "-g", "none",
                          "--stdio"], capture_output=True, text=True, timeout=120)
    shares = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+[\d.]+%\s+\[k\]\s+__(?:x64|arm64)_sys_(\w+)", line)
        if m:
            shares[m.group(2)] = float(m.group(1))
    dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "-g", "none",
                          "--stdio"], capture_output=True, text=True, timeout=120)
    kernel = sum(float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)%\s+\[kernel", dso.stdout, re.M))
    tcp = sum(v for k, v in shares.items() if k in TCP_CALLS)
    loop = sum(v for k, v in shares.items() if k in LOOP_CALLS)
    return {"kernel": kernel, "tcp": tcp, "loop": loop, "other": kernel - tcp - loop}


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# The system calls that move a TCP connection's bytes and state; any
# proxy makes them, and on loopback the sender also pays for the
# receiver's side of each segment. The rest is event-loop overhead.
TCP_CALLS = ("accept4", "accept", "socket", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg",
             "splice", "shutdown", "close", "setsockopt", "getsockopt")
LOOP_CALLS = ("epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "timerfd_settime", "clock_gettime", "read", "write")


def thread_counts(value, option):
    """A comma-separated list of thread counts, each 1 to 64."""
    counts = [int(t) for t in value.split(",") if t]
    if any(not 1 <= t <= 64 for t in counts):
        die(f"{option} takes 1 to 64")
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--modes", default="transparent")
    ap.add_argument("--threads", default="", help="socksbalance's `threads:`, or a list (1,2): a column each")
    ap.add_argument("--baseline", help="another socksbalance binary to compare, alternated")
    ap.add_argument("--haproxy-threads", default="",
                    help="HAProxy's nbthread, or a list (1,2): a column each (default: its own, one per CPU)")
    ap.add_argument("--floor", default="",
                    help="thread counts (1,2) for examples/floorproxy columns, the yardstick")
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s, a short strace pass, no perf")
    args = ap.parse_args()
    rounds = 1 if args.quick else max(1, min(args.rounds, 20))
    seconds = 1 if args.quick else max(1, min(args.seconds, 30))
    strace_conns = 200 if args.quick else STRACE_CONNS
    modes = [m for m in args.modes.split(",") if m]
    ha_threads = thread_counts(args.haproxy_threads, "--haproxy-threads") or [None]
    floor_threads = thread_counts(args.floor, "--floor")
    sb_threads = thread_counts(args.threads, "--threads") or [None]
    if any(m not in ("transparent", "socks5") for m in modes):
        die("--modes takes transparent and/or socks5")
    for tool in ("microsocks", "haproxy"):
        if not shutil.which(tool):
            die(f"{tool} is not installed (scripts/bench.sh installs it)")

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "socksbalance", "--example", "loadgen",
                    "--example", "floorproxy"], cwd=ROOT, check=True)
    sb = os.path.join(ROOT, "target/release/socksbalance")
    lg = os.path.join(ROOT, "target/release/examples/loadgen")
    floor = os.path.join(ROOT, "target/release/examples/floorproxy")

    procs = []
    work = tempfile.mkdtemp(prefix="socksbalance-profile.")

    def start(cmd, port=None):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "stderr.log"), "a"))
        procs.append(p)
        if port:
            wait_listening(port, p)
        return p

    try:
        portfile = os.path.join(work, "target.ports")
        server = start([lg, "serve", portfile])
        deadline = time.monotonic() + READY_LIMIT
        while not (os.path.exists(portfile) and os.path.getsize(portfile)):
            if time.monotonic() > deadline:
                die("the target server did not start")
            time.sleep(0.02)
        with open(portfile) as f:
            target = f.read().split()[0]

        backends, socks = [], []
        for _ in range(4):
            port = free_port()
            socks.append(start(["microsocks", "-i", "127.0.0.1", "-p", str(port)], port).pid)
            backends.append(port)

        proxies = []
        for nbthread in ha_threads:
            port = free_port()
            cfg = os.path.join(work, f"haproxy-{nbthread}.cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_config(port, backends, nbthread))
            name = f"HAProxy t{nbthread}" if nbthread else "HAProxy"
            proxies.append({"name": name, "pid": start(["haproxy", "-db", "-f", cfg], port).pid, "port": port})
        for t in floor_threads:
            port = free_port()
            cmd = [floor, f"127.0.0.1:{port}", str(t)] + [f"127.0.0.1:{b}" for b in backends]
            proxies.append({"name": f"floor t{t}", "pid": start(cmd, port).pid, "port": port})
        builds = [("sb", sb)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
        for label, binary in builds:
            for mode, threads in ((m, t) for m in modes for t in sb_threads):
                port = free_port()
                cfg = os.path.join(work, f"{label}-{mode}.yaml")
                with open(cfg, "w") as f:
                    f.write(socksbalance_config(port, mode, backends, threads))
                name = f"{label} {mode}" + (f" t{threads}" if threads else "")
                proxies.append({"name": name, "pid": start([binary, "-c", cfg], port).pid, "port": port})

        others = {"microsocks": socks, "target": [server.pid]}
        rows = {p["name"]: [] for p in proxies}
        for r in range(rounds):
            for i in range(len(proxies)):
                p = proxies[(i + r) % len(proxies)]
                rows[p["name"]].append(rate_round(lg, p, target, seconds, others))

        have_strace = shutil.which("strace") is not None
        have_perf = shutil.which("perf") is not None
        calls = {p["name"]: strace_counts(lg, p, target, work, strace_conns) for p in proxies} if have_strace else {}
        perf = {p["name"]: perf_shares(p, lg, target, work) for p in proxies} if have_perf and not args.quick else {}

        names = [p["name"] for p in proxies]
        w = max(16, 2 + max(len(n) for n in names))
        print(f"\nrate test, {CONCURRENCY} concurrent, {rounds} round(s) x {seconds} s, medians")
        print(f"{'':34}" + "".join(f"{n:>{w}}" for n in names))
        for key, label, fmt in (("conns_s", "connections/s", "{:.0f}"),
                                ("cpu_us", "proxy CPU per connection (µs)", "{:.0f}"),
                                ("machine_us", "machine CPU per connection (µs)", "{:.0f}"),
                                ("client_us", "  load generator (µs)", "{:.0f}"),
                                ("microsocks_us", "  4 microsocks (µs)", "{:.0f}"),
                                ("target_us", "  target server (µs)", "{:.0f}"),
                                ("idle_pct", "machine idle (%)", "{:.1f}"),
                                ("segs", "TCP segments per connection", "{:.1f}"),
                                ("dacks", "  of them ACKs the timer sent", "{:.2f}"),
                                ("ctx", "proxy context switches / conn", "{:.2f}"),
                                ("rtt_us", "echo RTT p50 (µs)", "{:.1f}"),
                                ("cpu_gib", "CPU s per GiB, 1 stream down", "{:.2f}")):
            print(f"{label:34}" + "".join(f"{fmt.format(median([x[key] for x in rows[n]])):>{w}}"
                                          for n in names))
        if calls:
            print(f"\nsystem calls per connection (strace -c -f, {strace_conns} connections)")
            every = sorted({c for n in names for c in calls[n]},
                           key=lambda c: -max(calls[n].get(c, 0) for n in names))
            print(f"{'':34}" + "".join(f"{n:>{w}}" for n in names))
            for c in every:
                print(f"{c:34}" + "".join(f"{calls[n].get(c, 0):>{w}.2f}" for n in names))
            print(f"{'all':34}" + "".join(f"{sum(calls[n].values()):>{w}.2f}" for n in names))
        if perf and all(perf.values()):
            print("\nshare of the proxy's CPU samples (perf record -g), %")
            print(f"{'':34}" + "".join(f"{n:>{w}}" for n in names))
            print(f"{'user space':34}" + "".join(f"{100 - perf[n]['kernel']:>{w}.1f}" for n in names))
            for key, label in (("kernel", "kernel"), ("tcp", "  TCP system calls"),
                               ("loop", "  event-loop system calls"), ("other", "  other (scheduling, interrupts)")):
                print(f"{label:34}" + "".join(f"{perf[n][key]:>{w}.1f}" for n in names))
            cpu = {n: median([x["cpu_us"] for x in rows[n]]) for n in names}
            print(f"{'TCP system calls, µs per conn':34}" + "".join(
                f"{cpu[n] * perf[n]['tcp'] / 100:>{w}.0f}" for n in names))
        elif have_perf and not args.quick:
            print("\nperf record failed (perf_event_paranoid?): no CPU breakdown")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
