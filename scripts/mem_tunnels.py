#!/usr/bin/env python3
"""Memory per idle tunnel: starts the release daemon (one `direct`
backend, no dashboard), opens N SOCKS5 tunnels to a local sink that holds
them open, and reports the daemon's RSS before and after. With --udp, N
UDP associations instead, each of which has relayed one datagram to a
local echo and back (so its upstream socket exists) and is then idle.

Usage: mem_tunnels.py BINARY N [--udp]   (N up to the fd limit / 3, bounded)
Everything stays on 127.0.0.1. Standard library only.
"""
import os, resource, socket, subprocess, sys, tempfile, threading, time

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def main():
    binary, n = sys.argv[1], min(int(sys.argv[2]), 20000)
    udp = "--udp" in sys.argv[3:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sink = socket.socket(); sink.bind(("127.0.0.1", 0)); sink.listen(4096)
    held = []
    def accept():
        while True:
            c, _ = sink.accept(); held.append(c)
    threading.Thread(target=accept, daemon=True).start()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f"listen: 127.0.0.1:0\nmode: socks5\nlimits:\n  max_connections: {n + 100}\n"
              f"  max_udp_associations: {n + 100}\nbackends:\n  - direct: true\n")
    cfg.close()
    proc = subprocess.Popen([binary, "-c", cfg.name], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    while "listening on" not in line:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("daemon did not start")
    host, port = line.split("listening on ")[1].split()[0].rsplit(":", 1)
    time.sleep(0.5)
    before = rss_kb(proc.pid)
    port_bytes = sink.getsockname()[1].to_bytes(2, "big")
    clients = []
    if udp:
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); echo.bind(("127.0.0.1", 0))
        def serve_echo():
            while True:
                d, a = echo.recvfrom(65535); echo.sendto(d, a)
        threading.Thread(target=serve_echo, daemon=True).start()
        header = b"\x00\x00\x00\x01\x7f\x00\x00\x01" + echo.getsockname()[1].to_bytes(2, "big")
        for _ in range(n):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); u.settimeout(5)
            s = socket.create_connection((host, int(port)))
            s.sendall(b"\x05\x01\x00\x05\x03\x00\x01\x7f\x00\x00\x01" + u.getsockname()[1].to_bytes(2, "big"))
            got = b""
            while len(got) < 12:
                got += s.recv(12 - len(got))
            # The method choice (2 bytes), then the reply: REP, ATYP 1, BND.
            assert got[1] == 0 and got[3] == 0 and got[5] == 1, got
            relay = (socket.inet_ntoa(got[6:10]), int.from_bytes(got[10:12], "big"))
            u.sendto(header + b"ping", relay)
            assert u.recvfrom(100)[0] == header + b"ping"
            clients.append((s, u))
        time.sleep(1.0)
        after = rss_kb(proc.pid)
        print(f"udp_associations={n} rss_before_kb={before} rss_after_kb={after} "
              f"per_association_bytes={(after - before) * 1024 // max(n, 1)}")
        proc.terminate(); proc.wait(10); os.unlink(cfg.name)
        return
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01" + port_bytes)
        got = b""
        while len(got) < 12:
            got += s.recv(12 - len(got))
        assert got[3] == 0, got
        clients.append(s)
    time.sleep(1.0)
    after = rss_kb(proc.pid)
    print(f"tunnels={n} rss_before_kb={before} rss_after_kb={after} per_tunnel_bytes={(after - before) * 1024 // max(n, 1)}")
    proc.terminate(); proc.wait(10); os.unlink(cfg.name)

if __name__ == "__main__":
    main()
