"""SQLite backups: a consistent copy through SQLite's online backup API (`Connection.backup`),
verified by `PRAGMA integrity_check` and row counts, restored by copying it back the same way."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

from deploy import dburl
from deploy.backups.store import Backup, free_name, sha256_file, write_sidecars
from deploy.errors import BackupFailed
from deploy.private import create_private


def sqlite_counts(conn: sqlite3.Connection) -> tuple[tuple[str, int], ...]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return tuple((n, conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names
                 if not n.startswith("sqlite_"))


def dump(u: dburl.DbUrl, out_dir: Path, env: str, sha: str, created: datetime) -> Backup:
    """A copy of the SQLite file of `u` into `out_dir`."""
    src_path = u.sqlite_path
    assert src_path is not None
    if not src_path.is_file():
        raise BackupFailed(f"SQLite database {src_path} does not exist; nothing to back up.")
    path = free_name(out_dir, created, sha, "sqlite")
    tmp = create_private(path.with_name(path.name + ".partial"))   # SQLite keeps an existing file's mode
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)                      # SQLite's online backup API: a consistent copy
        counts = sqlite_counts(dst)
    except sqlite3.Error as e:
        tmp.unlink(missing_ok=True)
        raise BackupFailed(f"Backup of SQLite database {src_path} failed: {e}.") from None
    finally:
        dst.close()
        src.close()
    os.replace(tmp, path)
    b = Backup(path, sha256_file(path), created, env, sha, counts)
    write_sidecars(b)
    return b


def copy_counts(b: Backup) -> dict[str, int]:
    """The per-table row counts of the copy `b`, after SQLite's integrity check passes."""
    try:
        with sqlite3.connect(f"file:{b.path}?mode=ro", uri=True) as c:
            check = c.execute("PRAGMA integrity_check").fetchone()[0]
            counts = dict(sqlite_counts(c))
    except sqlite3.Error as e:
        raise BackupFailed(f"Backup {b.path} cannot be opened as SQLite: {e}.") from None
    if check != "ok":
        raise BackupFailed(f"Backup {b.path} fails SQLite's integrity check: {check}.")
    return counts


def restore(b: Backup, u: dburl.DbUrl) -> tuple[tuple[str, int], ...]:
    """Copy the backup `b` over the SQLite file of `u`; the row counts afterwards."""
    if b.path.suffix != ".sqlite":
        raise BackupFailed(f"{b.path.name} is a Postgres dump; {u.masked} is SQLite.")
    assert u.sqlite_path is not None
    u.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{b.path}?mode=ro", uri=True)
    dst = sqlite3.connect(u.sqlite_path)
    try:
        src.backup(dst)
        counts = sqlite_counts(dst)
    except sqlite3.Error as e:
        raise BackupFailed(f"Restoring {b.path.name} into {u.sqlite_path} failed: {e}.") from None
    finally:
        dst.close()
        src.close()
    return counts
