"""Ports for child processes started by the scripts in this folder, and a
bounded wait for them (or anything else) to be ready."""

import random
import socket
import time


def free_port():
    """A port below 32768 that is free now (children such as microsocks need
    a fixed one; the range above collides with ephemeral ports here). A
    child may still lose it to a race; callers retry with another."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below 32768")


def accepts(port, timeout=0.5):
    """Whether something accepts TCP connections on 127.0.0.1:`port` now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


def wait_for(cond, seconds, step=0.05):
    """Whether `cond()` came true within `seconds`, asked every `step`
    seconds (a bounded wait for readiness, not a sleep)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def echo_server(host, port):
    """Serves TCP echo on host:port until killed (each client its thread)."""
    import socketserver

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    Server((host, port), Echo).serve_forever()


if __name__ == "__main__":
    # For shell scripts: `ports.py echo HOST PORT` serves echo;
    # `ports.py accepts HOST PORT` exits 0 if something accepts there.
    import sys

    what, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if what == "echo":
        echo_server(host, port)
    elif what == "accepts":
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            sys.exit(1)
    else:
        sys.exit(f"ports.py: unknown command {what}")
