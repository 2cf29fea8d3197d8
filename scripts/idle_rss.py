#!/usr/bin/env python3
"""Idle RSS against the router budget (2 MiB, docs/performance.md): starts
the daemon with a small config (one `direct` backend), once without and
once with the dashboard, waits until every port it should listen on
accepts (polling, no fixed sleep), then samples VmRSS from /proc for a
second of idleness and reports the highest figure against the budget.

Usage: idle_rss.py [BINARY] [--threads N|auto] [--check]
  BINARY     default: the static x86_64 musl build in dist/ (scripts/build.sh
             --local x86_64-unknown-linux-musl makes it)
  --threads  the config's `threads:` (default: not set, so the daemon's
             default)
  --check    exit 1 if a configuration is over budget

Everything listens on 127.0.0.1, on free ports below 32768 (above that is
the ephemeral range here). Standard library only.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from ports import accepts, free_port

BUDGET_KB = 2048
READY_LIMIT = 10.0  # seconds for the daemon's ports to accept
SAMPLE_FOR = 1.0  # seconds of idleness sampled after readiness


def default_binary():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "Cargo.toml")) as f:
        version = re.search(r'^version = "(.*)"', f.read(), re.M).group(1)
    return os.path.join(root, "dist", f"socksbalance-{version}-x86_64-unknown-linux-musl")


def status(pid):
    """VmRSS (kB) and thread count from /proc/PID/status."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def run(binary, dashboard, threads_setting):
    """Returns (peak VmRSS kB, threads) once idle, or raises."""
    for _attempt in range(5):
        ports = [free_port()] + ([free_port()] if dashboard else [])
        config = f'listen: "127.0.0.1:{ports[0]}"\nmode: socks5\nbackends:\n  - direct: true\n'
        if threads_setting:
            config += f"threads: {threads_setting}\n"
        if dashboard:
            config += f'web:\n  enabled: true\n  listen: "127.0.0.1:{ports[1]}"\n'
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as cfg:
            cfg.write(config)
        proc = subprocess.Popen([binary, "-q", "-c", cfg.name], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + READY_LIMIT
            waiting = list(ports)
            while waiting and proc.poll() is None and time.monotonic() < deadline:
                waiting = [p for p in waiting if not accepts(p)]
                if waiting:
                    time.sleep(0.02)  # poll interval, not a readiness guess
            if proc.poll() is not None:
                err = proc.stderr.read().strip()
                if "in use" in err:
                    continue  # lost a port to a race: new ports
                raise RuntimeError(f"daemon exited with {proc.returncode}: {err}")
            if waiting:
                raise RuntimeError(f"ports {waiting} did not accept within {READY_LIMIT} s")
            peak, threads = 0, 0
            end = time.monotonic() + SAMPLE_FOR
            while time.monotonic() < end:
                rss, threads = status(proc.pid)
                peak = max(peak, rss)
                time.sleep(0.05)
            return peak, threads
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
            os.unlink(cfg.name)
    raise RuntimeError("could not get free ports for the daemon")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", nargs="?", default=default_binary())
    ap.add_argument("--threads", help="the config's threads: (a count or auto)")
    ap.add_argument("--check", action="store_true", help="exit 1 if over budget")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found; build it: scripts/build.sh --local x86_64-unknown-linux-musl")

    print(f"binary: {args.binary} ({os.path.getsize(args.binary):,} bytes)"
          f"{f', threads: {args.threads}' if args.threads else ''}")
    print(f"{'config':<36} {'VmRSS kB':>9} {'threads':>8}  vs {BUDGET_KB} kB")
    over = False
    for label, dashboard in (("one direct backend, no dashboard", False),
                             ("the same with the dashboard", True)):
        rss, threads = run(args.binary, dashboard, args.threads)
        over |= rss > BUDGET_KB
        print(f"{label:<36} {rss:>9} {threads:>8}  {rss - BUDGET_KB:+d}"
              f"{'  OVER' if rss > BUDGET_KB else ''}")
    return 1 if over and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
