#!/usr/bin/env python3
"""Proves that one built artifact works: runs it (under qemu-user or wine,
via --runner) with real SOCKS5 backends (microsocks) and pushes real
traffic through it.

Checks, each printed as PASS or FAIL:
  1. socks5 mode: curl downloads a 2 MiB file through it, checked by SHA-256,
     several times so both backends serve.
  2. transparent mode: the same.
  3. a timer fires: with a blackholed backend (accepts, never answers) and
     connect_timeout 1s, a client gets a SOCKS5 error reply in time. On
     32-bit MIPS without --cfg fix_y2038 it never would.
  4. SIGTERM (Linux) or Ctrl-C (Windows: Wine delivers SIGINT as the
     console's CTRL_C_EVENT) stops it gracefully with exit status 0.
  5. a listen address this host does not have (10.254.253.252) does not
     stop it: it serves its other address (Linux: IP_FREEBIND; Windows:
     it retries the missing one).

Everything listens on 127.0.0.1; every wait is bounded. Standard library only.
Usage: foreign_test.py --binary FILE [--runner CMD] [--windows]
"""

import argparse
import hashlib
import http.server
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ports import accepts, free_port

START_LIMIT = 120  # seconds for the daemon to start (wine's first start is slow)
failures = []


def check(name, ok, detail=""):
    print(("PASS  " if ok else "FAIL  ") + name + (f"  ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def wait_listening(port, limit=10):
    deadline = time.time() + limit
    while time.time() < deadline:
        if accepts(port, timeout=1):
            return True
        time.sleep(0.05)
    return False


def start_http(payload):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def start_blackhole():
    """Accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []

    def loop():
        while True:
            conn, _ = listener.accept()
            held.append(conn)

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


class Daemon:
    def __init__(self, runner, binary, config_text, workdir, windows):
        self.config = os.path.join(workdir, f"config-{random.randint(0, 1 << 30)}.yaml")
        with open(self.config, "w") as f:
            f.write(config_text)
        config_arg = self.config
        if windows:
            config_arg = "Z:" + self.config.replace("/", "\\")
        cmd = shlex.split(runner) + [binary, "-c", config_arg]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines = []
        self.addr = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                if self.addr is None and "listening on " in line:
                    rest = line.split("listening on ", 1)[1].split()[0].strip('"')
                    host, port = rest.rsplit(":", 1)
                    self.addr = (host, int(port))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_LIMIT) or self.addr is None:
            self.stop()
            raise RuntimeError("daemon did not start:\n" + "\n".join(self.lines[-20:]))

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def curl_download(addr, url):
    proxy = f"socks5h://{addr[0]}:{addr[1]}"
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "60", "--proxy", proxy, url],
        capture_output=True,
        timeout=90,
    )
    return out.returncode, out.stdout, out.stderr.decode(errors="replace").strip()


def socks_connect_reply(addr, host, port, limit):
    """Greeting + CONNECT by hand; returns (reply code or None, seconds)."""
    start = time.time()
    s = socket.create_connection(addr, timeout=limit)
    try:
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return None, time.time() - start
        name = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        reply = b""
        while len(reply) < 2:
            chunk = s.recv(10 - len(reply))
            if not chunk:
                break
            reply += chunk
        return (reply[1] if len(reply) >= 2 else None), time.time() - start
    except socket.timeout:
        return None, time.time() - start
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runner", default="")
    ap.add_argument("--windows", action="store_true")
    args = ap.parse_args()

    payload = os.urandom(2 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    web = start_http(payload)
    url = f"http://localhost:{web}/file.bin"

    backends = []
    procs = []
    for _ in range(2):
        port = free_port()
        procs.append(subprocess.Popen(["microsocks", "-i", "127.0.0.1", "-p", str(port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not wait_listening(port):
            raise RuntimeError(f"microsocks did not start on {port}")
        backends.append(port)
    blackhole = start_blackhole()

    workdir = tempfile.mkdtemp(prefix="socksbalance-foreign-")
    backend_yaml = "".join(f"  - address: \"127.0.0.1:{p}\"\n    name: microsocks-{i}\n" for i, p in enumerate(backends))
    try:
        for mode in ("socks5", "transparent"):
            # Debug logs on Windows show the console handler being installed.
            log = "log:\n  level: debug\n" if args.windows else ""
            d = Daemon(args.runner, args.binary,
                       f"listen: \"127.0.0.1:0\"\nmode: {mode}\nhealth:\n  connect_timeout: 5s\n{log}backends:\n{backend_yaml}",
                       workdir, args.windows)
            try:
                ok = 0
                for _ in range(4):
                    rc, body, err = curl_download(d.addr, url)
                    if rc == 0 and hashlib.sha256(body).hexdigest() == digest:
                        ok += 1
                    else:
                        print(f"      curl rc={rc} bytes={len(body)} {err}", flush=True)
                check(f"{mode} mode: 4 downloads of 2 MiB through microsocks, SHA-256 verified", ok == 4, f"{ok}/4")
            finally:
                # Wine turns SIGINT into the console's CTRL_C_EVENT: the
                # Windows Ctrl-C path. Linux gets SIGTERM.
                rc = d.stop(signal.SIGINT if args.windows else signal.SIGTERM)
            if args.windows:
                hooked = any("console close, logoff and shutdown will drain" in line for line in d.lines)
                check(f"{mode} mode: the console close/logoff/shutdown handler is registered", hooked,
                      "" if hooked else "SetConsoleCtrlHandler failed or was not called")
                stopped = any("stopped" in line for line in d.lines)
                check(f"{mode} mode: Ctrl-C drains and exits with status 0", rc == 0 and stopped,
                      f"status {rc}, {'stopped' if stopped else 'no stop logged'}")
            else:
                check(f"{mode} mode: SIGTERM exits with status 0", rc == 0, f"status {rc}")

        # An uplink: the socket bound before it connects (rustix on every
        # target; SO_BINDTODEVICE too on Linux, which needs root there).
        uplink = "  - bind: 127.0.0.1\n"
        if not args.windows and os.geteuid() == 0:
            uplink = "  - bind: 127.0.0.1\n    interface: lo\n"
        d = Daemon(args.runner, args.binary,
                   f"listen: \"127.0.0.1:0\"\nmode: socks5\nbackends:\n{uplink}", workdir, args.windows)
        try:
            rc, body, err = curl_download(d.addr, url)
            ok = rc == 0 and hashlib.sha256(body).hexdigest() == digest
            label = " ".join(uplink.replace("-", "").split())
            check(f"uplink ({label}): a 2 MiB download, SHA-256 verified", ok,
                  "" if ok else f"curl rc={rc} bytes={len(body)} {err}")
        finally:
            d.stop()

        d = Daemon(args.runner, args.binary,
                   "listen: [\"127.0.0.1:0\", \"10.254.253.252:1080\"]\nmode: socks5\nbackends:\n  - direct: true\n",
                   workdir, args.windows)
        try:
            rc, body, err = curl_download(d.addr, url)
            ok = rc == 0 and hashlib.sha256(body).hexdigest() == digest
            told = any("10.254.253.252:1080" in line and "no such address yet" in line for line in d.lines)
            check("a missing listen address: the other one serves, and the missing one is logged", ok and told,
                  "" if ok and told else f"curl rc={rc} {err}; logged: {told}")
        finally:
            d.stop()

        d = Daemon(args.runner, args.binary,
                   "listen: \"127.0.0.1:0\"\nmode: socks5\nhealth:\n  connect_timeout: 1s\n"
                   f"backends:\n  - address: \"127.0.0.1:{blackhole}\"\n    name: blackhole\n",
                   workdir, args.windows)
        try:
            code, secs = socks_connect_reply(d.addr, "localhost", web, limit=15)
            check("timer fires: a blackholed backend gives an error reply after connect_timeout (1 s)",
                  code == 0x01 and 0.9 <= secs <= 8, f"reply={code}, {secs:.2f} s")
        finally:
            d.stop()
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)

    print(f"{'FAILED' if failures else 'OK'}: {args.binary}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
