#!/usr/bin/env python3
"""The proxy configurations the benchmarks compare, written in one place so
that scripts/bench.sh and scripts/rate_profile.py measure the same ones.

    testbed.py haproxy PORT BACKEND_PORT... [--nbthread N]
    testbed.py socksbalance PORT MODE BACKEND_PORT... [--threads N|auto]

print HAProxy's configuration (mode tcp, balance roundrobin, no health
checks; without --nbthread, HAProxy's default of a thread per CPU) or
socksbalance's (the given mode, default settings, warnings only in the
log) for a proxy on 127.0.0.1:PORT over microsocks backends on
127.0.0.1:BACKEND_PORT. rate_profile.py imports the two functions.
Standard library only.
"""

import argparse


def haproxy_config(port, backends, nbthread=None):
    lines = ["global", "    maxconn 4000"]
    if nbthread:
        lines.append(f"    nbthread {nbthread}")
    lines += ["defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 10m",
              "    timeout server 10m", "listen socks", f"    bind 127.0.0.1:{port}", "    balance roundrobin"]
    lines += [f"    server b{p} 127.0.0.1:{p}" for p in backends]
    return "\n".join(lines) + "\n"


def socksbalance_config(port, mode, backends, threads=None):
    lines = [f"listen: 127.0.0.1:{port}", f"mode: {mode}", "backends:"]
    lines += [f"  - address: 127.0.0.1:{p}" for p in backends]
    lines.append("log: {level: warn}")
    if threads:
        lines.append(f"threads: {threads}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="proxy", required=True)
    ha = sub.add_parser("haproxy")
    ha.add_argument("port", type=int)
    ha.add_argument("backends", type=int, nargs="+")
    ha.add_argument("--nbthread", type=int)
    sb = sub.add_parser("socksbalance")
    sb.add_argument("port", type=int)
    sb.add_argument("mode", choices=("transparent", "socks5"))
    sb.add_argument("backends", type=int, nargs="+")
    sb.add_argument("--threads", help="a number, or auto")
    args = ap.parse_args()
    if args.proxy == "haproxy":
        print(haproxy_config(args.port, args.backends, args.nbthread), end="")
    else:
        print(socksbalance_config(args.port, args.mode, args.backends, args.threads), end="")


if __name__ == "__main__":
    main()
