"""Files that hold secrets or data: mode 0600, in folders of mode 0700.

The modes are set on every write, not only when a file is created: `open(..., O_CREAT,
0o600)` leaves an existing 0644 file as it was, and a folder made by an older version
keeps its 0755. Each helper here therefore (re)applies the mode itself.

Used for: `env/<env>.local.env` (a database URL with its password; `env/` itself keeps
the repository's mode, as it holds the committed settings), database backups and their
sidecars and folders, the SQLite ledger and `.deploy/`. Artifacts are not among them: an
artifact holds no secret by design (the build gets no deploy secret; the leak suite scans
every artifact's bytes) and is the app's code that the hosts' app user must read; on this
machine it lives under `.deploy/`, which is 0700.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | Path) -> Path:
    """Create `path` (and parents) if needed and make it 0700; returns it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(p, DIR_MODE)
    return p


def make_private(path: str | Path) -> None:
    """Make an existing file 0600 (nothing if it does not exist)."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass
    except PermissionError:
        pass    # another user's file (a shared ledger): theirs to fix, still usable


def create_private(path: str | Path) -> Path:
    """An empty file at `path` with mode 0600 (truncated if it existed), for a tool to
    write into: pg_dump's --file and SQLite keep the mode of a file that exists, so the
    data is never readable by others, not even while it is being written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return Path(path)


def write_private(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, then rename), mode 0600."""
    p = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)   # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
