"""Steady traffic through a proxy for tests and benchmarks: a GET every `interval` seconds (10 ms
by default) on a fresh connection each, from a background thread, every answer recorded. A
request fails when it gets no answer within `timeout`, or a status other than 2xx/3xx."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Traffic:
    host: str
    port: int
    path: str = "/"
    interval: float = 0.01
    timeout: float = 5.0
    sent: int = 0
    failures: list[str] = field(default_factory=list)   # "<time> <what>", for the message
    bodies: Counter = field(default_factory=Counter)    # body (stripped, <= 100 chars) -> how many answered it
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _one(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            r = conn.getresponse()
            body = r.read()
            if not 200 <= r.status < 400:
                self.failures.append(f"{time.monotonic():.3f} HTTP {r.status}: {body[:80]!r}")
            else:
                self.bodies[body.decode("utf-8", "replace").strip()[:100]] += 1
        except (OSError, http.client.HTTPException) as e:
            self.failures.append(f"{time.monotonic():.3f} {type(e).__name__}: {e}")
        finally:
            conn.close()

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.sent += 1
            self._one()
            nxt += self.interval
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()   # a slow answer delays the next GET; never a burst to catch up

    def start(self) -> "Traffic":
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "Traffic":
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        return self

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> str:
        return (f"{self.sent} GETs, {len(self.failures)} failed" + (f" (first: {self.failures[:3]})"
                                                                    if self.failures else ""))
