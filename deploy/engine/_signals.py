"""SIGINT/SIGTERM during a run: interrupt the step in progress, never the undo."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Literal

from deploy.redact import redact
from deploy.engine._console import Console


class Interrupted(BaseException):
    """A stop signal arrived during a step (raised from the signal handler)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class Signals:
    """SIGINT/SIGTERM while a run is applied or undone (main thread only; elsewhere a no-op).

    phase "step": the first signal interrupts the step (raises Interrupted); "book" (between
    steps): it is noted and the loop stops at the next boundary; "undo": ignored with a message."""

    def __init__(self, console: Console):
        self.console = console
        self.received: str | None = None
        self.phase = "book"
        self.abort_cmd: str | None = None
        self._prev: dict[int, Any] = {}

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)
        return False

    def _say(self, text: str) -> None:
        """Write from the signal handler: straight to fd 2, never through a buffered stream (a
        signal landing inside a print would make it reentrant: RuntimeError, in an undo too)."""
        if self.console.quiet:
            return
        try:
            os.write(2, (redact(text) + "\n").encode("utf-8", "replace"))
        except Exception:  # a closed stderr or anything else: the message is not worth a failed undo
            pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.phase == "undo" or self.received:
            after = f" (if this process is killed anyway, `{self.abort_cmd}` finishes it)" if self.abort_cmd else ""
            self._say(f"{name} received while undoing: ignored, the undo finishes first{after}.")
            return
        self.received = name
        self._say(f"{name} received: stopping the run and undoing what it did.")
        if self.phase == "step":
            raise Interrupted(name)
