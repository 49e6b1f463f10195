"""`feedback/deployment.md`: the deployment owner's log of readiness, blockers,
approvals, promotions, rollbacks and drills. Append-only, newest at the bottom.

Each entry is one line written with a single `write()` on a file opened with O_APPEND
and held under an exclusive `flock`, so two writers never interleave a line.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.redact import redact

HEADER = """# Deployment log

Readiness, blockers, approvals, promotions, rollbacks and drills, one line each, newest at
the bottom. Written by the `invoke` tasks (`promote`, `rollback`, `hotfix.drill`, `approve`,
`log.blocker`, `log.readiness`); do not edit past entries. Each `run` is a ledger run id
(`invoke status`).

"""

KINDS = ("promote", "rollback", "drill", "approval", "blocker", "readiness", "golive")


@dataclass(frozen=True)
class Entry:
    kind: str
    env: str
    outcome: str
    who: str
    sha: str | None = None
    release_id: str | None = None
    duration: float | None = None
    run_id: str | None = None
    text: str | None = None
    at: float | None = None

    def line(self) -> str:
        at = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.at or time.time()))
        parts = [at, self.kind, self.env, self.outcome]
        if self.sha:
            parts.append(f"sha {self.sha[:12]}")
        if self.release_id:
            parts.append(f"release {self.release_id}")
        if self.duration is not None:
            parts.append(f"{self.duration:.1f}s")
        parts.append(f"by {self.who}")
        if self.run_id:
            parts.append(f"run {self.run_id}")
        if self.text:
            parts.append(" ".join(self.text.split()))
        # One physical line whatever the text held; '|' separates fields.
        return "- " + " | ".join(p.replace("|", "/") for p in parts) + "\n"


def log_path(root: Path) -> Path:
    return root / "feedback" / "deployment.md"


def append(root: Path, entry: Entry) -> Path:
    """Append one entry (redacted) to the log; create the log with its header if new."""
    if entry.kind not in KINDS:
        raise ValueError(f"unknown log kind {entry.kind}")
    path = log_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = redact(entry.line()).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size == 0:
            os.write(fd, HEADER.encode())
        os.write(fd, data)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return path


def entries(root: Path) -> list[str]:
    path = log_path(root)
    if not path.exists():
        return []
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("- ")]
