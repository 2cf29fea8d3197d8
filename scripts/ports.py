"""Ports for child processes started by the scripts in this folder."""

import random
import socket


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
