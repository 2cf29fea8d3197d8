#!/usr/bin/env python3
"""The Windows service under Wine's Service Control Manager
(scripts/wine-service.sh sets up the prefix and runs this).

Installs the x86_64 exe as a service with `socksbalance service install`,
lets Wine's boot start it (it is an auto-start service), proxies a
download through it, stops it while a slow download runs (the stop must
wait for the drain and the download must arrive whole), starts and stops
it with our commands and with Wine's `net`, makes a start fail (its port
taken) and reads why from the exit code and the log, and uninstalls it;
and checks each command's exit code and message on the way, misuse
included. Everything listens on 127.0.0.1; children get free ports below
32768. Every wait is bounded.

Usage: wine_service_test.py EXE WORKDIR   (WINEPREFIX set, wineserver -p)
"""

import hashlib
import http.server
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import accepts, free_port, wait_for  # noqa: E402

CHUNK = 64 * 1024


def fail(msg, log=None):
    print(f"FAIL wine-service: {msg}", file=sys.stderr)
    if log and os.path.exists(log):
        print("---- service log", file=sys.stderr)
        print(open(log, encoding="utf-8", errors="replace").read(), file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"ok   wine-service: {msg}")


def until(what, check, seconds=30):
    if not wait_for(check, seconds, 0.1):
        fail(f"{what} (waited {seconds} s)")


class Origin(http.server.BaseHTTPRequestHandler):
    """/fast: the blob at once; /slow: the blob in 64 KiB pieces, one
    every 50 ms, so that a tunnel carrying it lasts about two seconds
    whatever the socket buffers hold."""

    blob = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob)))
        self.end_headers()
        for at in range(0, len(self.blob), CHUNK):
            self.wfile.write(self.blob[at : at + CHUNK])
            if self.path == "/slow":
                self.wfile.flush()
                time.sleep(0.05)

    def log_message(self, *args):
        pass


def download(proxy_port, origin_port, path, flowing=None):
    """GET through the proxy (SOCKS5, no auth) by hand; the body. Sets the
    event `flowing` once the body has begun to arrive."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=20)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        raise OSError("no SOCKS5 greeting")
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + origin_port.to_bytes(2, "big"))
    reply = b""
    while len(reply) < 10:
        part = s.recv(10 - len(reply))
        if not part:
            raise OSError("no SOCKS5 reply")
        reply += part
    if reply[1] != 0:
        raise OSError(f"SOCKS5 reply {reply[1]}")
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: origin\r\n\r\n".encode())
    data = b""
    while True:
        part = s.recv(65536)
        if not part:
            break
        data += part
        if flowing is not None and len(data) > CHUNK:
            flowing.set()
    s.close()
    return data.split(b"\r\n\r\n", 1)[1]


def main():
    exe, work = sys.argv[1], sys.argv[2]
    shutil.copy(exe, os.path.join(work, "socksbalance.exe"))
    log = os.path.join(work, "socksbalance.log")
    config = os.path.join(work, "config.yaml")
    windows_config = "Z:" + config.replace("/", "\\")

    def run(argv, timeout):
        # Output to a file, not a pipe: the Wine processes a command starts
        # (services.exe, the service) inherit it and outlive the command,
        # and a pipe would not end before they do.
        with tempfile.TemporaryFile(mode="w+") as out:
            r = subprocess.run(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=timeout, cwd=work)
            out.seek(0)
            return r.returncode, out.read().strip()

    def wine(*args, timeout=120):
        return run(["wine", os.path.join(work, "socksbalance.exe"), *args], timeout)

    def state():
        _, said = run(["wine", "sc", "query", "socksbalance"], 60)
        m = re.search(r"STATE\s*:\s*\d+\s+(\w+)", said)
        return m.group(1) if m else None

    def expect(what, got, code, *words):
        rc, out = got
        if rc != code or not all(w in out for w in words):
            fail(f"{what}: exit {rc} (want {code}), said: {out!r} (want {words})", log)
        ok(f"{what}: exit {rc}")

    backend_port, origin_port, listen_port = free_port(), free_port(), free_port()
    while len({backend_port, origin_port, listen_port}) < 3:
        listen_port = free_port()
    Origin.blob = os.urandom(2 * 1024 * 1024 + 12345)
    want = hashlib.sha256(Origin.blob).hexdigest()
    origin = socketserver.ThreadingTCPServer(("127.0.0.1", origin_port), Origin)
    origin.daemon_threads = True
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    micro = subprocess.Popen(
        ["microsocks", "-i", "127.0.0.1", "-p", str(backend_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        until("microsocks did not start", lambda: accepts(backend_port))
        with open(config, "w") as f:
            f.write(
                f"listen: 127.0.0.1:{listen_port}\n"
                f"backends:\n  - address: 127.0.0.1:{backend_port}\n"
                "shutdown_timeout: 20s\nweb:\n  enabled: false\n"
            )
        with open(os.path.join(work, "bad.yaml"), "w") as f:
            f.write("listen: 127.0.0.1:1\nbackends: 7\n")

        # Misuse first: nothing is installed yet.
        expect("service start before install", wine("service", "start"), 1, "not installed", "service install")
        expect("service stop before install", wine("service", "stop"), 1, "not installed")
        bad = "Z:" + os.path.join(work, "bad.yaml").replace("/", "\\")
        expect("service install with a bad config", wine("service", "install", "-c", bad), 2, "invalid config", "line 2")
        expect("service without an action", wine("service"), 2, "")

        expect(
            "service install",
            wine("service", "install", "-c", windows_config),
            0,
            "installed the socksbalance service",
            f'service run -c "{windows_config}"',
            "socksbalance.log",
        )
        expect("service install twice", wine("service", "install", "-c", windows_config), 1, "already installed")

        # An auto-start service: Wine's SCM starts it when the prefix boots.
        # A reboot: the wineserver ends (and everything in the prefix with
        # it), a new persistent one starts, and the next command boots.
        subprocess.run(["wineserver", "-k"], timeout=60)
        subprocess.run(["wineserver", "-w"], timeout=60)
        subprocess.run(["wineserver", "-p"], timeout=60, check=True)
        state()
        until("the auto-start service did not come up on its port after a boot", lambda: accepts(listen_port), 60)
        if state() != "RUNNING":
            fail(f"sc query says {state()}, not RUNNING", log)
        ok("Wine's boot started the auto-start service")
        expect("service start while it runs", wine("service", "start"), 0, "already running")
        # Wine's dispatcher waits 10 s for a control pipe nobody made
        # before it gives up; Windows refuses at once.
        expect("service run from a console", wine("service", "run", timeout=60), 2, "Service Control Manager")

        body = download(listen_port, origin_port, "/fast")
        if hashlib.sha256(body).hexdigest() != want:
            fail(f"download through the service: {len(body)} bytes, not the blob", log)
        ok(f"a download through the service ({len(body)} bytes, SHA-256 matches)")

        # Stop during a slow download: the stop returns once the tunnel is
        # drained, and the download arrives whole.
        result, flowing = {}, threading.Event()

        def slow():
            try:
                result["body"] = download(listen_port, origin_port, "/slow", flowing)
            except OSError as e:
                result["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        until("the slow download did not start", flowing.is_set)
        started = time.monotonic()
        expect("service stop during a download", wine("service", "stop"), 0, "stopped the socksbalance service")
        took = time.monotonic() - started
        t.join(30)
        if "error" in result or hashlib.sha256(result.get("body", b"")).hexdigest() != want:
            fail(f"the download during the stop broke: {result.get('error')} {len(result.get('body', b''))} bytes", log)
        # The body takes about 1.7 s; the stop came just after its start.
        if t.is_alive() or took < 1.0:
            fail(f"service stop returned after {took:.2f} s, before the download had drained", log)
        text = open(log, encoding="utf-8").read()
        for line in ("asks to stop; draining tunnels", "stopped"):
            if line not in text:
                fail(f"the log lacks {line!r}", log)
        if accepts(listen_port) or state() != "STOPPED":
            fail(f"after the stop the port still accepts, or sc says {state()}", log)
        ok(f"the stop drained the download ({took:.1f} s) and the log says so")
        expect("service stop while stopped", wine("service", "stop"), 0, "not running")

        expect("service start", wine("service", "start"), 0, "started the socksbalance service")
        until("the started service did not listen", lambda: accepts(listen_port))
        run(["wine", "net", "stop", "socksbalance"], 120)
        until("net stop left the port open", lambda: not accepts(listen_port))
        _, said = run(["wine", "net", "start", "socksbalance"], 120)
        until(f"net start did not start it ({said})", lambda: accepts(listen_port))
        ok("Wine's net start and net stop drive it too")
        expect("service stop", wine("service", "stop"), 0, "stopped")

        # A start that fails: the port is taken. The exit code and the log
        # say why.
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", listen_port))
            squatter.listen()
            expect("service start with its port taken", wine("service", "start"), 1, "exit code 1", "socksbalance.log")
        tail = open(log, encoding="utf-8").read().splitlines()[-3:]
        if not any("ERROR" in line and str(listen_port) in line for line in tail):
            fail(f"the log does not say why the start failed: {tail}", log)
        ok(f"the log says why: {next(line for line in tail if 'ERROR' in line)}")

        expect("service uninstall", wine("service", "uninstall"), 0, "removed the socksbalance service")
        if state() is not None:
            fail(f"sc still knows the service after uninstall ({state()})", log)
        expect("service uninstall twice", wine("service", "uninstall"), 1, "not installed")
        if not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARN|ERROR) ", open(log).readline()):
            fail("the log's lines carry no UTC timestamp", log)
        ok("the log file stays after uninstall, lines timestamped")
    finally:
        micro.kill()
        origin.shutdown()


if __name__ == "__main__":
    main()
