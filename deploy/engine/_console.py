"""The run's terminal output: one progress line per step, every line redacted."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from deploy.display import colour
from deploy.redact import redact


DETAIL_MAX = 160   # characters of a step's result shown on its progress line


class Console:
    """One progress line per step; everything printed goes through redaction."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet

    def line(self, text: str = "") -> None:
        if self.quiet:
            return
        try:
            print(redact(text), file=self.out, flush=True)
        except BrokenPipeError:
            # The reader went away (`| head`): a deploy does not stop half-way for that.
            self.quiet = True
            _silence(self.out)

    def step(self, i: int, n: int, name: str, status: str, elapsed: float | None, detail: str = "") -> None:
        t = f"{elapsed:6.2f}s" if elapsed is not None else " " * 7
        # One line per step: a long detail (a failure's table, a CLI's output) is shown once,
        # whole, by the final error message; here only its first line, cut short.
        lines = [ln for ln in str(detail or "").splitlines() if ln.strip()]
        detail = " ".join(lines[0].split()) if lines else ""
        if len(detail) > DETAIL_MAX or len(lines) > 1:
            detail = detail[:DETAIL_MAX].rstrip() + " [...]"
        self.line(f"[{i}/{n}] {name:<12} {colour(f'{status:<8}', status, self.out)} {t}  {detail}".rstrip())

    def note(self, text: str) -> None:
        self.line(f"        {text}")


def _silence(out: TextIO) -> None:
    """Point a closed output at /dev/null so the interpreter's last flush does not fail."""
    try:
        fd = out.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError):
        pass
