"""What a restore would discard: the rows written since a backup, per table (Postgres: rows
whose xmin the dump's snapshot does not see; SQLite: the live file compared with the copy
row by row), and the app's rows an emptied database would lose. Read-only."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from deploy import dburl
from deploy.backups.postgres import TABLES_SQL, connect, pg_counts
from deploy.backups.sqlite import sqlite_counts
from deploy.backups.store import Backup, load_backup
from deploy.backups.tools import lock_timeout_sql
from deploy.config import DatabaseSection
from deploy.errors import BackupFailed
from deploy.redact import redact


@dataclass(frozen=True)
class TableWrites:
    """One table now: its rows at the backup (None: the table is not in the backup, every row of
    it is new), rows now, rows written since (inserted or updated), and rows of the backup
    changed or deleted since. A restore would discard all of those."""

    table: str
    at_backup: int | None
    now: int
    written: int
    gone: int

    @property
    def any(self) -> bool:
        return bool(self.written or self.gone)


@dataclass(frozen=True)
class Writes:
    """What a restore of `backup` would discard. `known` false: it could not be measured (a backup
    taken before snapshots were recorded), which counts as written."""

    backup: str
    tables: tuple[TableWrites, ...]
    known: bool = True
    note: str = ""

    @property
    def any(self) -> bool:
        return not self.known or any(t.any for t in self.tables)

    def summary(self) -> str:
        """One line, e.g. `3 row(s) written since 20250101T...dump: public.Shop 2 written, 1 gone`."""
        if not self.known:
            return f"writes since {self.backup} cannot be measured ({self.note}): counted as written"
        hit = [t for t in self.tables if t.any]
        if not hit:
            return f"nothing written since {self.backup}"
        parts = [f"{t.table} {t.written} written" + (f", {t.gone} gone" if t.gone else "")
                 + (" (a table created since)" if t.at_backup is None else "") for t in hit]
        written, gone = sum(t.written for t in hit), sum(t.gone for t in hit)
        return (f"{written} row(s) written since {self.backup}" + (f" ({gone} of its rows changed or deleted)"
                                                                   if gone else "") + ": " + "; ".join(parts))

    def rows(self) -> list[tuple]:
        """(table, rows at backup, rows now, written since, gone since) for a table display."""
        return [(t.table, "-" if t.at_backup is None else t.at_backup, t.now, t.written, t.gone) for t in self.tables]


# The toolkit's own bookkeeping: its rows come back with the backup and are not the app's data.
_NOT_APP_DATA = re.compile(r"(^|\.)_prisma_migrations$")


# Rows whose xmin is not visible in the backup's snapshot were inserted or updated after it. A
# row's xmin is a 32-bit xid; pg_visible_in_snapshot takes a 64-bit xid8, so the epoch is taken
# from the current snapshot's xmax (valid within 2^31 xids, which wraparound protection keeps).
# xmin below 3 is frozen or bootstrap: old.
_CHANGED_SQL = """
WITH ref AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x)
SELECT count(*), count(*) FILTER (WHERE t.xmin::text::bigint >= 3 AND NOT pg_visible_in_snapshot(
    (ref.x - mod(mod(ref.x - t.xmin::text::bigint, 4294967296) + 4294967296, 4294967296))::text::xid8,
    %s::pg_snapshot))
FROM {} t, ref
"""


def app_rows(url: str, *, sqlite_base: str | Path | None = None,
             db: DatabaseSection | None = None) -> tuple[tuple[str, int], ...]:
    """(table, rows) of every table holding rows, `_prisma_migrations` aside (read-only; a
    missing SQLite file holds none): what emptying the database would discard."""
    u = dburl.parse(url, sqlite_base=sqlite_base)
    if u.provider == "sqlite":
        assert u.sqlite_path is not None
        if not u.sqlite_path.exists():
            return ()
        try:
            conn = sqlite3.connect(f"file:{u.sqlite_path}?mode=ro", uri=True)
            try:
                counts = sqlite_counts(conn)
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise BackupFailed(f"Cannot count the rows of {u.sqlite_path}: {e}.") from None
    else:
        with connect(u) as conn:
            if db is not None and db.lock_timeout > 0:
                conn.execute(lock_timeout_sql(db.lock_timeout).strip())
            counts = pg_counts(conn)
    return tuple((t, n) for t, n in counts if n and not _NOT_APP_DATA.search(t))


def written_since(backup_path: str | Path, url: str, *, sqlite_base: str | Path | None = None,
                  db: DatabaseSection | None = None) -> Writes:
    """How much a restore of the backup into the database at `url` would discard, per table
    (read-only). Postgres: rows whose xmin the dump's snapshot does not see, and rows of the
    dump no longer there untouched. SQLite: the live file compared with the copy, row by row."""
    b = load_backup(backup_path)
    u = dburl.parse(url, sqlite_base=sqlite_base)
    if u.provider == "sqlite":
        return _sqlite_writes(b, u)
    if not b.snapshot:
        return Writes(b.path.name, (), known=False, note="the backup has no recorded snapshot")
    from psycopg import sql

    at = dict(b.tables)
    out: list[TableWrites] = []
    with connect(u) as conn:
        if db is not None and db.lock_timeout > 0:
            conn.execute(lock_timeout_sql(db.lock_timeout).strip())
        for schema, table in conn.execute(TABLES_SQL).fetchall():
            name = f"{schema}.{table}"
            if _NOT_APP_DATA.search(name):
                continue
            try:
                now, written = conn.execute(
                    sql.SQL(_CHANGED_SQL).format(sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))),
                    (b.snapshot,)).fetchone()
            except Exception as e:
                if not type(e).__module__.startswith("psycopg"):
                    raise
                first = redact(str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                return Writes(b.path.name, tuple(out), known=False, note=f"reading {name} failed: {first}")
            before = at.get(name)
            if before is None:
                out.append(TableWrites(name, None, now, now, 0))
            else:
                out.append(TableWrites(name, before, now, written, max(0, before - (now - written))))
    return Writes(b.path.name, tuple(out))


def _sqlite_writes(b: Backup, u: dburl.DbUrl) -> Writes:
    if b.path.suffix != ".sqlite":
        raise BackupFailed(f"{b.path.name} is a Postgres dump; {u.masked} is SQLite.")
    assert u.sqlite_path is not None
    if not u.sqlite_path.exists():
        return Writes(b.path.name, ())
    q = lambda n: '"' + n.replace('"', '""') + '"'  # noqa: E731
    out = []
    try:
        conn = sqlite3.connect(f"file:{u.sqlite_path}?mode=ro", uri=True)
        try:
            conn.execute("ATTACH DATABASE ? AS bak", (f"file:{b.path}?mode=ro",))
            old = {r[0] for r in conn.execute("SELECT name FROM bak.sqlite_master WHERE type = 'table'")}
            for (name,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
                if name.startswith("sqlite_") or _NOT_APP_DATA.search(name):
                    continue
                now = conn.execute(f"SELECT count(*) FROM main.{q(name)}").fetchone()[0]
                if name not in old:
                    out.append(TableWrites(name, None, now, now, 0))
                    continue
                cols_now = [r[1] for r in conn.execute(f"PRAGMA main.table_info({q(name)})")]
                cols_then = {r[1] for r in conn.execute(f"PRAGMA bak.table_info({q(name)})")}
                common = ", ".join(q(c) for c in cols_now if c in cols_then) or "1"
                added = [c for c in cols_now if c not in cols_then]
                before = conn.execute(f"SELECT count(*) FROM bak.{q(name)}").fetchone()[0]
                written = conn.execute(f"SELECT count(*) FROM (SELECT {common} FROM main.{q(name)} EXCEPT "
                                       f"SELECT {common} FROM bak.{q(name)})").fetchone()[0]
                if added:  # a value in a column the backup does not have is a write too
                    written += conn.execute(f"SELECT count(*) FROM main.{q(name)} WHERE "
                                            + " OR ".join(f"{q(c)} IS NOT NULL" for c in added)).fetchone()[0]
                gone = conn.execute(f"SELECT count(*) FROM (SELECT {common} FROM bak.{q(name)} EXCEPT "
                                    f"SELECT {common} FROM main.{q(name)})").fetchone()[0]
                out.append(TableWrites(name, before, now, written, gone))
        finally:
            conn.close()
    except sqlite3.Error as e:
        return Writes(b.path.name, tuple(out), known=False, note=f"comparing with {b.path.name} failed: {e}")
    return Writes(b.path.name, tuple(out))
