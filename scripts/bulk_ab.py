#!/usr/bin/env python3
"""Bulk throughput of socksbalance builds against HAProxy, alternated.

    scripts/bulk_ab.py NAME=BINARY... [--rounds 4] [--mib 256]
                       [--cases up1,up4,down1,down4] [--mode transparent]

Starts, on 127.0.0.1 only, 4 microsocks backends, the loadgen target
(examples/loadgen.rs, built by `cargo build --release --example
loadgen`), HAProxy (scripts/testbed.py's configuration) and one
socksbalance per NAME=BINARY, all over the same backends; then runs
`loadgen bulk` through each, every round in a rotated order, and prints
per case and proxy the MiB/s of every round and the proxy's CPU ticks
(user + system, 1/100 s) per run. For comparing relay variants, e.g. a
build that copies instead of splicing (docs/performance.md, "What is
left between us and HAProxy"). Every transfer is checked byte for byte
by loadgen; a failed one exits 1.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testbed import haproxy_config, socksbalance_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "target/release/examples/loadgen")


def free_ports(count):
    """`count` ports below 32768 (children need fixed ones) that nothing
    listens on now, from a random start."""
    ports, p = [], 20000 + int.from_bytes(os.urandom(2), "big") % 10000
    while len(ports) < count:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                ports.append(p)
            except OSError:
                pass
        p += 1
    return ports


def wait_listening(port, proc, what):
    """Polls until `port` accepts (at most 10 s) or `proc` exits."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bulk_ab: {what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    sys.exit(f"bulk_ab: {what} does not listen on {port}")


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", help="NAME=BINARY")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--cases", default="up1,up4,down1,down4")
    ap.add_argument("--mode", default="transparent", choices=("transparent", "socks5"))
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    if any(len(b) != 2 for b in builds):
        sys.exit("bulk_ab: give builds as NAME=BINARY")
    cases = [(c.rstrip("0123456789"), int(c.lstrip("updown"))) for c in args.cases.split(",")]
    if any(d not in ("up", "down") or not 1 <= n <= 64 for d, n in cases):
        sys.exit("bulk_ab: cases are up1, down4 and the like")

    procs = []
    work = tempfile.mkdtemp(prefix="socksbalance-bulk-ab.")
    try:
        ports = free_ports(5 + len(builds))
        backends, ha_port, sb_ports = ports[:4], ports[4], ports[5:]
        for p in backends:
            procs.append(subprocess.Popen(["microsocks", "-i", "127.0.0.1", "-p", str(p)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_listening(p, procs[-1], "microsocks")
        portfile = os.path.join(work, "target.ports")
        procs.append(subprocess.Popen([LOADGEN, "serve", portfile]))
        deadline = time.monotonic() + 10
        while not (os.path.exists(portfile) and open(portfile).read().strip()):
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                sys.exit("bulk_ab: the loadgen target did not start")
            time.sleep(0.02)
        target = open(portfile).read().split()[0]

        proxies = {}
        cfg = os.path.join(work, "haproxy.cfg")
        open(cfg, "w").write(haproxy_config(ha_port, backends))
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", cfg],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(ha_port, procs[-1], "haproxy")
        proxies["HAProxy"] = (ha_port, procs[-1].pid)
        for (name, binary), port in zip(builds, sb_ports):
            cfg = os.path.join(work, f"{name}.yaml")
            open(cfg, "w").write(socksbalance_config(port, args.mode, backends))
            procs.append(subprocess.Popen([binary, "-c", cfg],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_listening(port, procs[-1], name)
            proxies[name] = (port, procs[-1].pid)

        names = list(proxies)
        results = {(c, n): [] for c in cases for n in names}
        for r in range(args.rounds):
            for case in cases:
                for i in range(len(names)):
                    name = names[(i + r) % len(names)]
                    port, pid = proxies[name]
                    before = ticks(pid)
                    out = subprocess.run([LOADGEN, "bulk", f"127.0.0.1:{port}", target, str(case[1]),
                                          case[0], str(args.mib)], capture_output=True, text=True)
                    if out.returncode != 0:
                        sys.exit(f"bulk_ab: {case} through {name} failed: {out.stdout}{out.stderr}")
                    mib_s = float(dict(kv.split("=") for kv in out.stdout.split())["mib_s"])
                    results[(case, name)].append((mib_s, ticks(pid) - before))

        print(f"bulk, {args.mode} mode, {args.rounds} round(s) x {args.mib} MiB: MiB/s (CPU ticks)")
        for case in cases:
            print(f"{case[0]}, {case[1]} stream(s)")
            for name in names:
                runs = sorted(results[(case, name)])
                print(f"  {name:<12}" + "  ".join(f"{m:6.1f} ({t})" for m, t in runs))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
