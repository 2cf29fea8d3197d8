#!/usr/bin/env python3
"""The learning benchmark: does `learned` find out which backends a site
blocks, from real traffic alone?

    scripts/bench_learned.py BINARY [--connections N] [--algorithms a,b]

Four backends: two microsocks that go anywhere, and two Dante servers
(Debian's danted) with a `socks block` rule for one destination, X
(127.0.0.2). One client connects N times, one connection at a time,
alternating between X and four other destinations (127.0.0.3-6), each
time an echo. For every connection the daemon's /api/stats is read before
and after: a connection to X whose first try was a Dante shows up as an
attempt on that Dante. The client must never see a failure (failover).

Prints, per algorithm: first tries to X that succeeded, overall and after
the first 50 connections to X; how the other connections spread over the
four backends; and the learned table's size. docs/performance.md
("Routing") records a run. Talks to 127.0.0.0/8 only; every loop is
bounded in count and time. Needs microsocks and danted; standard library
only.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import accepts, free_port, wait_for  # noqa: E402

X = "127.0.0.2"
OTHERS = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]


def echo_server(host):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)

    def serve(conn):
        with conn:
            conn.settimeout(10)
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def loop():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def wait_until(what, cond, limit=10.0):
    if not wait_for(cond, limit, 0.02):
        raise SystemExit(f"timed out waiting for {what}")


def recv_exact(s, n):
    """n bytes from socket s, or None if it closes first."""
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            return None
        got += chunk
    return got


def socks_echo(proxy_port, host, port):
    """One SOCKS5 CONNECT and a 16-byte echo: True if it worked."""
    try:
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
            s.sendall(b"\x05\x01\x00")
            if s.recv(2) != b"\x05\x00":
                return False
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
            reply = recv_exact(s, 10)
            if reply is None or reply[1] != 0:
                return False
            s.sendall(b"0123456789abcdef")
            return recv_exact(s, 16) == b"0123456789abcdef"
    except OSError:
        return False


def start_dante(tmp, port, x_port):
    conf = os.path.join(tmp, f"danted-{port}.conf")
    with open(conf, "w") as f:
        f.write(
            f"logoutput: /dev/null\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n"
            "clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n"
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
            f"socks block {{ from: 0.0.0.0/0 to: {X}/32 port = {x_port} }}\n"
            "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }\n"
        )
    child = subprocess.Popen(["danted", "-f", conf, "-N", "1"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until("danted", lambda: accepts(port))
    return child


def stats(web_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/stats", timeout=5) as r:
        return json.load(r)


def attempts(snapshot):
    return {b["name"]: b["attempts"] for b in snapshot["backends"]}


def run(binary, algorithm, connections, tmp, backends, x_port, other_ports):
    port, web = free_port(), free_port()
    lines = [f"listen: 127.0.0.1:{port}", "mode: socks5", f"balancer: {{algorithm: {algorithm}}}",
             "health: {check_interval: 1h}", f"web: {{enabled: true, listen: 127.0.0.1:{web}}}",
             "log: {level: warn}", "backends:"]
    lines += [f"  - {{name: {name}, address: '127.0.0.1:{p}'}}" for name, p in backends]
    path = os.path.join(tmp, f"{algorithm}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    daemon = subprocess.Popen([binary, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("the daemon", lambda: accepts(port) and accepts(web))
        wait_until("the first probes", lambda: stats(web)["healthy_backends"] == len(backends))
        dantes = [name for name, _ in backends if name.startswith("dante")]
        first_ok, client_failures = [], 0
        spread = {name: 0 for name, _ in backends}
        before = attempts(stats(web))
        deadline = time.monotonic() + 300
        for k in range(connections):
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark took over 5 minutes")
            to_x = k % 2 == 0
            host, dport = (X, x_port) if to_x else (OTHERS[(k // 2) % 4], other_ports[(k // 2) % 4])
            if not socks_echo(port, host, dport):
                client_failures += 1
            after = attempts(stats(web))
            delta = {n: after[n] - before[n] for n in after}
            before = after
            if to_x:
                first_ok.append(all(delta[d] == 0 for d in dantes))
            else:
                for n, v in delta.items():
                    spread[n] += v
        learned = stats(web).get("learned")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
    late = first_ok[50:]
    print(f"{algorithm}: first tries to X that succeeded: {sum(first_ok)}/{len(first_ok)} "
          f"({100 * sum(first_ok) / len(first_ok):.1f} %); after the first 50: "
          f"{sum(late)}/{len(late)} ({100 * sum(late) / max(1, len(late)):.1f} %); "
          f"client failures: {client_failures}")
    print(f"{algorithm}: other destinations per backend: "
          + ", ".join(f"{n} {v}" for n, v in spread.items()))
    if learned:
        top = learned["top"][:3]
        print(f"{algorithm}: learned table: {learned['sites']} sites, {learned['bytes']} bytes; top: "
              + "; ".join(f"{t['site']} prefers {t['preferred']}, avoids {', '.join(t['avoided']) or '-'}"
                          for t in top))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--algorithms", default="roundrobin,learned")
    args = ap.parse_args()
    for program in ("microsocks", "danted"):
        if not shutil.which(program):
            raise SystemExit(f"{program} is needed (apt-get install microsocks dante-server)")
    x_port = echo_server(X)
    other_ports = [echo_server(h) for h in OTHERS]
    children = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            backends = []
            for n in (1, 2):
                p = free_port()
                children.append(subprocess.Popen(["microsocks", "-i", "127.0.0.1", "-p", str(p)],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_until("microsocks", lambda p=p: accepts(p))
                backends.append((f"microsocks{n}", p))
            for n in (1, 2):
                p = free_port()
                children.append(start_dante(tmp, p, x_port))
                backends.append((f"dante{n}", p))
            for algorithm in args.algorithms.split(","):
                run(args.binary, algorithm, args.connections, tmp, backends, x_port, other_ports)
        finally:
            for c in children:
                try:
                    os.killpg(c.pid, signal.SIGTERM) if c.args[0] == "danted" else c.terminate()
                except OSError:
                    pass
                c.wait(timeout=10)


if __name__ == "__main__":
    main()
