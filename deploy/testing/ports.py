"""Free loopback ports for the app servers a test starts."""

from __future__ import annotations

import os
import random
import socket


def free_port() -> int:
    """A free loopback port for an app server the test starts later. Picked below the
    kernel's ephemeral range (32768+), so no `bind(0)` elsewhere in the run (sshd, Postgres,
    clients) can take it between now and then. Under pytest-xdist each worker picks from
    its own slice of 20000-32000, so two workers never hand out the same port."""
    lo, hi = 20000, 32000
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        size = (hi - lo) // int(count)
        lo += size * (int(worker[2:]) % int(count))
        hi = lo + size
    for _ in range(200):
        port = random.randrange(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {lo}-{hi}")
