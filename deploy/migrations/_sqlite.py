"""The SQLite backend (stdlib sqlite3). Prisma's driver (quaint `connector/sqlite/conversion.rs`)
stores DateTime values as integer epoch milliseconds; so do we."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from typing import Iterable

from deploy import dburl
from deploy.errors import LockHeld, MigrationFailed
from deploy.migrations._backend import MIGRATIONS_TABLE, Db, Statement, Timeouts
from deploy.migrations._sql import without_transaction_control
from deploy.migrations._status import MigrationRecord

# flavour/sqlite.rs, create_migrations_table
SQLITE_TABLE_DDL = """\
CREATE TABLE "_prisma_migrations" (
    "id"                    TEXT PRIMARY KEY NOT NULL,
    "checksum"              TEXT NOT NULL,
    "finished_at"           DATETIME,
    "migration_name"        TEXT NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        DATETIME,
    "started_at"            DATETIME NOT NULL DEFAULT current_timestamp,
    "applied_steps_count"   INTEGER UNSIGNED NOT NULL DEFAULT 0
);
"""


def _millis(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def sqlite_time(v) -> datetime | None:
    """A stored time: epoch milliseconds (Prisma), or an ISO text (SQLite's current_timestamp)."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(v / 1000, timezone.utc)
    s = str(v).strip()
    if s.isdigit():
        return datetime.fromtimestamp(int(s) / 1000, timezone.utc)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _locked(path, e: Exception) -> LockHeld:
    return LockHeld(f"The SQLite database {path} is locked by another process ({e}).",
                    "Stop the other migration run (or the app holding the file), then run again.")


class SqliteDb(Db):
    """A sqlite3 connection without implicit transactions (isolation_level=None)."""

    provider = "sqlite"
    table_ddl = SQLITE_TABLE_DDL

    @classmethod
    def open(cls, url: dburl.DbUrl, *, create: bool = True, timeouts: Timeouts | None = None) -> "SqliteDb | None":
        """Connect; a missing file is created only when `create` (else None)."""
        path = url.sqlite_path
        assert path is not None
        if not path.exists():
            if not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as e:
            if "locked" in str(e):
                raise _locked(path, e) from None
            raise MigrationFailed(f"Cannot open SQLite database {path}: {e}.",
                                  "Check the path in the URL and the file's permissions.") from None
        return cls(url, conn, timeouts or Timeouts())

    def acquire_lock(self, timeout: float) -> None:
        """Prisma's `PRAGMA main.locking_mode=EXCLUSIVE`, taken at once by a write."""
        deadline = time.monotonic() + timeout
        self.conn.execute("PRAGMA main.locking_mode=EXCLUSIVE")
        while True:
            try:
                self.conn.execute("BEGIN EXCLUSIVE")
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise _locked(self.url.sqlite_path, e) from None
                time.sleep(0.05)

    def release_lock(self) -> None:
        pass  # the exclusive lock goes with the connection

    def ph(self, sql: str) -> str:
        return sql

    def ts(self, dt: datetime) -> int:
        return _millis(dt)

    def record(self, row: tuple) -> MigrationRecord:
        r = row
        return MigrationRecord(
            id=r[0], checksum=r[1], finished_at=sqlite_time(r[2]), migration_name=r[3], logs=r[4],
            rolled_back_at=sqlite_time(r[5]), started_at=sqlite_time(r[6]) or datetime.min.replace(
                tzinfo=timezone.utc), applied_steps_count=int(r[7] or 0),
        )

    def table_exists(self) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='_prisma_migrations'"))

    def user_tables(self) -> list[str]:
        rows = self.query("SELECT name FROM sqlite_master WHERE type='table' ORDER BY 1")
        return [r[0] for r in rows if r[0] != MIGRATIONS_TABLE and not r[0].startswith("sqlite_")]

    def objects(self) -> tuple[str, ...]:
        rows = self.query("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
                          "AND substr(name, 1, 7) <> 'sqlite_' ORDER BY 1, 2")
        return tuple(f"{kind}:{name}" for kind, name in rows)

    def create_table(self) -> None:
        self.conn.executescript(SQLITE_TABLE_DDL)

    def run_in_transaction(self, script: str, then: Iterable[Statement]) -> None:
        # A script's own plain BEGIN/COMMIT is left out: the whole script is one transaction here.
        script = without_transaction_control(script) or script
        try:
            # executescript() commits any open transaction first, so BEGIN goes inside the script.
            self.conn.executescript("BEGIN;\n" + script + "\n;")
            for sql, params in then:
                self.conn.execute(sql, params)
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def apply(self, script: str, rid: str) -> Exception | None:
        try:
            self.run_in_transaction(script, [self.finish_sql(rid)])
            return None
        except sqlite3.Error as e:
            return e

    @classmethod
    def empty(cls, url: dburl.DbUrl, before, timeouts: Timeouts) -> str:
        """Remove the file a run created, or drop the tables and views it did not hold before."""
        path = url.sqlite_path
        assert path is not None
        if not before.existed:
            gone = [f for f in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm")))
                    if f.exists()]
            for f in gone:
                f.unlink()
            return f"removed {path.name}, which this run created" if gone else f"{path.name} is already gone"
        db = cls.open(url, create=False, timeouts=timeouts)
        if db is None:
            return f"{path.name} is already gone"
        with db:
            kept = set(before.objects)
            tables = [(kind, name) for kind, name in db.query(
                "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'table') "
                "AND substr(name, 1, 7) <> 'sqlite_' ORDER BY type DESC") if f"{kind}:{name}" not in kept]
            for kind, name in tables:  # views first, then tables (their indexes and triggers go with them)
                db.query(f'DROP {kind.upper()} IF EXISTS "{name.replace(chr(34), chr(34) * 2)}"')
        return f"dropped {len(tables)} table(s) from {path.name}: empty again" if tables else f"{path.name} is empty"
