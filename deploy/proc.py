"""Run local commands in one place: argv lists (never a shell), secrets only in the
environment, output captured, exit codes checked by the caller."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from deploy.errors import ToolMissing
from deploy.redact import redact, reveal


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 12) -> str:
        """The last lines of stderr (or stdout), redacted: for error messages."""
        text = (self.stderr.strip() or self.stdout.strip())
        return redact("\n".join(text.splitlines()[-lines:]))

    @property
    def display(self) -> str:
        return redact(shlex.join(self.argv))


def which(tool: str, path: str | None = None) -> str:
    """The full path of `tool`, or ToolMissing naming it and how to get it."""
    found = shutil.which(tool, path=path)
    if not found:
        raise ToolMissing(f"`{tool}` was not found on PATH.", _INSTALL_HINTS.get(tool, f"Install {tool} and run again."))
    return found


_INSTALL_HINTS = {
    "node": "Install Node.js 20 (Debian: apt-get install -y nodejs npm).",
    "npm": "Install npm (Debian: apt-get install -y npm).",
    "pg_dump": "Install the PostgreSQL client matching the server's major version (apt-get install -y postgresql-client).",
    "pg_restore": "Install the PostgreSQL client matching the server's major version (apt-get install -y postgresql-client).",
    "shopify": "Install Shopify CLI 3.x: npm install -g @shopify/cli@3.",
    "git": "Install git (apt-get install -y git).",
}


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: str | None = None,
) -> CommandResult:
    """Run `argv` and return its result; never raises for a non-zero exit.

    `env` is added to the current environment; values may be `Secret`s, whose plain
    value goes to the child and nowhere else.
    """
    import time

    argv = [reveal(a) if not isinstance(a, Path) else str(a) for a in argv]
    full_env = dict(os.environ)
    if env:
        full_env.update({k: reveal(v) for k, v in env.items()})
    exe = shutil.which(argv[0], path=full_env.get("PATH")) if os.sep not in argv[0] else argv[0]
    if exe is None:
        which(argv[0], path=full_env.get("PATH"))
    start = time.monotonic()
    try:
        p = subprocess.run(
            argv, cwd=cwd, env=full_env, input=input, capture_output=True, text=True,
            timeout=timeout, errors="replace",
        )
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = f"timed out after {timeout}s"
    except FileNotFoundError:
        raise ToolMissing(f"`{argv[0]}` was not found.", _INSTALL_HINTS.get(argv[0])) from None
    return CommandResult(tuple(argv), rc, out, err, time.monotonic() - start)


def ensure_writable(path: Path, what: str, hint: str) -> Path:
    """Create `path` if needed and prove a file can be written in it; SettingsError if not."""
    import tempfile

    from deploy.errors import SettingsError

    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SettingsError(f"{path}: {what} cannot be written ({e.strerror or e}).", hint) from None
    return path


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed child not yet reaped is not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
