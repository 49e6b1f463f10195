"""The run's lock kept alive while it runs: a heartbeat thread, and LockLost when another runner
took the lock over."""

from __future__ import annotations

import threading
from typing import Literal

from deploy.errors import LockHeld
from deploy.ledger import HEARTBEAT_SECONDS, Ledger


class LockLost(LockHeld):
    """This runner no longer holds its environment's lock: another runner took it over (with
    --break-lock, after this one was frozen or cut off past the staleness bound)."""


class Heartbeat:
    """Refreshes the run's lock every HEARTBEAT_SECONDS, so a runner on another machine can
    tell a live holder from a dead one (the staleness bound of --break-lock)."""

    def __init__(self, ledger: Ledger, env: str, run_id: str):
        self.ledger, self.env, self.run_id = ledger, env, run_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        heartbeat = getattr(self.ledger, "heartbeat", None)
        if heartbeat is None:
            return self

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    if heartbeat(self.env, self.run_id) is False:
                        return  # taken over: the runner stops at its next step boundary
                except Exception:  # the next step's bookkeeping reports a broken ledger
                    pass

        self._thread = threading.Thread(target=beat, name=f"heartbeat-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return False
