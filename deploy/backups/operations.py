"""Take, verify and restore an environment's backup: the settings read, the URL parsed, and the
work handed to the engine's module (`postgres` or `sqlite`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from deploy import dburl
from deploy.backups import postgres, sqlite
from deploy.backups.store import Backup, load_backup, private_backup_dir
from deploy.backups.tools import tool_settings
from deploy.config import DatabaseSection
from deploy.errors import SettingsError


@dataclass(frozen=True)
class TableCount:
    table: str
    expected: int
    actual: int | None                        # None: the table is missing in the restored copy

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class VerifyResult:
    backup: Backup
    counts: tuple[TableCount, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.counts)

    @property
    def mismatches(self) -> tuple[TableCount, ...]:
        return tuple(c for c in self.counts if not c.ok)


@dataclass(frozen=True)
class RestoreResult:
    backup: Backup
    url: str                                  # masked
    tables: tuple[tuple[str, int], ...]       # row counts after the restore


def backup(
    url: str,
    backup_dir: str | Path,
    env: str,
    sha: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    bin_dir: str | Path | None = None,
    sqlite_base: str | Path | None = None,
    timeout: float = 3600,
    db: DatabaseSection | None = None,
) -> Backup:
    """Take a backup of the database at `url` into `<backup_dir>/<env>/`.

    `db` (the environment's settings) supplies `bin_dir` and `lock_timeout` (pg_dump's
    --lock-wait-timeout: a table locked by a migration or the app fails the dump, not hangs it)."""
    bin_dir, lock_timeout = tool_settings(db, bin_dir)
    u = dburl.parse(url, sqlite_base=sqlite_base)
    out_dir = private_backup_dir(Path(backup_dir), env)
    created = now().astimezone(timezone.utc)
    if u.provider == "sqlite":
        return sqlite.dump(u, out_dir, env, sha, created)
    return postgres.dump(u, out_dir, env, sha, created, bin_dir=bin_dir, lock_timeout=lock_timeout, timeout=timeout)


def verify(
    backup_path: str | Path,
    url: str | None = None,
    *,
    bin_dir: str | Path | None = None,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> VerifyResult:
    """Restore the backup into a scratch copy and compare per-table row counts with the manifest.

    For Postgres, `url` names the server (and credentials) on which the scratch database is
    created and dropped; the role needs CREATEDB."""
    b = load_backup(backup_path)
    if b.path.suffix == ".sqlite":
        return VerifyResult(b, _compare(b.tables, sqlite.copy_counts(b)))
    bin_dir, _ = tool_settings(db, bin_dir)
    if url is None:
        raise SettingsError("Verifying a Postgres backup needs the server's URL (for the scratch database).")
    u = dburl.parse(url, sqlite_base=sqlite_base)
    return VerifyResult(b, _compare(b.tables, postgres.scratch_counts(b, u, bin_dir)))


def _compare(expected: Sequence[tuple[str, int]], actual: dict[str, int]) -> tuple[TableCount, ...]:
    names = sorted(set(dict(expected)) | set(actual))
    exp = dict(expected)
    return tuple(TableCount(n, exp.get(n, 0) if n in exp else -1, actual.get(n)) for n in names)


def restore(
    backup_path: str | Path,
    url: str,
    *,
    bin_dir: str | Path | None = None,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> RestoreResult:
    """Replace the database at `url` with the backup (after checking its SHA-256): afterwards it
    holds exactly the dump's schemas and objects (see `restore_sql`). `db` supplies `bin_dir`
    and `lock_timeout`. The caller asks for confirmation (`--yes`) on protected environments."""
    bin_dir, lock_timeout = tool_settings(db, bin_dir)
    b = load_backup(backup_path)
    u = dburl.parse(url, sqlite_base=sqlite_base)
    if u.provider == "sqlite":
        return RestoreResult(b, u.masked, sqlite.restore(b, u))
    return RestoreResult(b, u.masked, postgres.restore(b, u, bin_dir, lock_timeout))
