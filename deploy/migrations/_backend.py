"""What every database backend offers the migration operations, and the bookkeeping they share.

A backend is one open connection to the target database. The operations in
`deploy.migrations` speak only this interface; `_postgres.PostgresDb` and `_sqlite.SqliteDb`
implement it, and `deploy.migrations.BACKENDS` picks one from the URL's provider, once.

Rows are read and written as Prisma's `sql_migration_persistence.rs` does; the SQL here is
written with `?` placeholders and each backend's `ph()` turns them into its driver's.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from deploy import dburl
from deploy.config import DatabaseSection
from deploy.errors import MigrationFailed
from deploy.migrations._status import MigrationRecord
from deploy.redact import redact

MIGRATIONS_TABLE = "_prisma_migrations"
DEFAULT_LOCK_TIMEOUT = 10.0          # flavour/postgres.rs: ADVISORY_LOCK_TIMEOUT
DEFAULT_STATEMENT_TIMEOUT = DatabaseSection.statement_timeout

SELECT_ROWS = (
    "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, "
    "applied_steps_count FROM _prisma_migrations ORDER BY started_at ASC"
)

Statement = tuple[str, tuple]


@dataclass(frozen=True)
class Timeouts:
    """How long a migration session waits, in seconds: for the migrate lock and any table lock
    (`lock_timeout`), and for one statement (`statement_timeout`, 0: no limit)."""

    lock: float = DEFAULT_LOCK_TIMEOUT
    statement: float = DEFAULT_STATEMENT_TIMEOUT

    @classmethod
    def of(cls, db: DatabaseSection | None, lock: float | None = None) -> "Timeouts":
        """From the environment's database settings (when given), else the defaults."""
        if db is not None:
            return cls(db.lock_timeout, db.statement_timeout)
        return cls(DEFAULT_LOCK_TIMEOUT if lock is None else lock)


def now() -> datetime:
    return datetime.now(timezone.utc)


class Db(ABC):
    """One open connection to the target database."""

    provider: ClassVar[str]
    table_ddl: ClassVar[str]

    def __init__(self, url: dburl.DbUrl, conn: Any, timeouts: Timeouts | None = None):
        self.url = url
        self.conn = conn
        self.timeouts = timeouts or Timeouts()
        self.partial = False     # the last `apply` failed after part of the script was committed

    # -- connection

    @classmethod
    @abstractmethod
    def open(cls, url: dburl.DbUrl, *, create: bool = True, timeouts: Timeouts | None = None) -> "Db | None":
        """Connect; None when there is no database to open and `create` is false (a SQLite file)."""

    @classmethod
    @abstractmethod
    def empty(cls, url: dburl.DbUrl, before: Any, timeouts: Timeouts) -> str:
        """Take a database that was empty before a run back to empty (the Footprint `before`
        says what it held); what was removed, in a sentence."""

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing a broken connection must not hide the real error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @abstractmethod
    def acquire_lock(self, timeout: float) -> None:
        """Take Prisma's migrate lock, or raise LockHeld after `timeout` seconds."""

    @abstractmethod
    def release_lock(self) -> None:
        """Give the lock back; never raises (a lost session has freed it already)."""

    # -- queries

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
        cur = self.conn.execute(sql, params) if params else self.conn.execute(sql)
        return cur.fetchall() if cur.description else []

    @abstractmethod
    def ph(self, sql: str) -> str:
        """The statement with `?` placeholders written the driver's way."""

    @abstractmethod
    def ts(self, dt: datetime) -> Any:
        """A time as this backend stores it in `_prisma_migrations`."""

    @abstractmethod
    def record(self, row: tuple) -> MigrationRecord:
        """One row of SELECT_ROWS as a MigrationRecord."""

    @abstractmethod
    def table_exists(self) -> bool:
        """Whether `_prisma_migrations` exists in the target schema."""

    @abstractmethod
    def user_tables(self) -> list[str]:
        """Tables in the target schema other than _prisma_migrations (for Prisma's P3005)."""

    @abstractmethod
    def objects(self) -> tuple[str, ...]:
        """The objects of the target schema, `_prisma_migrations` included, as "kind:name"
        strings (a Footprint's `objects`; none: the database is empty)."""

    def schemas(self) -> tuple[str, ...]:
        """The schemas there are (Postgres), for taking a database back to empty."""
        return ()

    def prepare_schema(self) -> None:
        """Create the target schema when the URL names one that may not exist yet."""

    # -- applying scripts

    @abstractmethod
    def run_in_transaction(self, script: str, then: Iterable[Statement]) -> None:
        """Run `script`, then the bookkeeping statements, in one transaction; raise the driver's error."""

    @abstractmethod
    def apply(self, script: str, rid: str) -> Exception | None:
        """Run a migration script and record row `rid` finished; the driver's error, or None."""

    # -- bookkeeping (sql_migration_persistence.rs)

    def rows(self) -> list[MigrationRecord]:
        if not self.table_exists():
            return []
        return [self.record(r) for r in self.query(SELECT_ROWS)]

    def create_table(self) -> None:
        self.conn.execute(self.table_ddl)

    def initialize(self) -> None:
        """`initialize`: create the table, refusing a non-empty schema without one (P3005)."""
        self.prepare_schema()
        if self.table_exists():
            return
        tables = self.user_tables()
        if tables:
            shown = ", ".join(tables[:5]) + (" ..." if len(tables) > 5 else "")
            raise MigrationFailed(
                f"The database {self.url.masked} is not empty ({shown}) and has no _prisma_migrations table (P3005).",
                "Baseline it: for each migration already reflected in the schema run "
                "`invoke db.resolve --env=<env> --applied <name>`, then migrate.",
            )
        self.create_table()

    def record_started(self, name: str, checksum_: str) -> str:
        rid = str(uuid.uuid4())
        self.conn.execute(
            self.ph("INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES (?, ?, ?, ?)"),
            (rid, checksum_, self.ts(now()), name),
        )
        return rid

    def finish_sql(self, rid: str) -> Statement:
        return (self.ph("UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, "
                        "finished_at = ? WHERE id = ?"), (self.ts(now()), rid))

    def rolled_back_sql(self, rid: str) -> Statement:
        return self.ph("UPDATE _prisma_migrations SET rolled_back_at = ? WHERE id = ?"), (self.ts(now()), rid)

    def record_failed(self, rid: str, logs: str) -> None:
        self.conn.execute(self.ph("UPDATE _prisma_migrations SET logs = ? WHERE id = ?"), (logs, rid))

    def mark_rolled_back(self, rid: str) -> None:
        self.conn.execute(*self.rolled_back_sql(rid))

    def mark_applied(self, name: str, checksum_: str) -> None:
        stamp = self.ts(now())
        self.conn.execute(
            self.ph("INSERT INTO _prisma_migrations (id, checksum, logs, started_at, finished_at, migration_name) "
                    "VALUES (?, ?, ?, ?, ?, ?)"),
            (str(uuid.uuid4()), checksum_, "", stamp, stamp, name),
        )


# ---------------------------------------------------------------- driver errors, for either backend

def is_db_error(e: Exception) -> bool:
    import sqlite3

    mod = type(e).__module__
    return isinstance(e, sqlite3.Error) or mod.startswith("psycopg")


def connection_error(url: dburl.DbUrl, e: Exception) -> MigrationFailed:
    """A connection failure as one clear error; the password never appears."""
    text = redact(str(e)).strip().splitlines()
    first = next((t for t in text if t.strip()), "connection failed")
    first = re.sub(r"^connection failed: ", "", first)
    low = " ".join(text).lower()
    if "password authentication failed" in low or "authentication failed" in low:
        hint = "Check the user and password in the URL (the environment's DATABASE_URL secret)."
    elif "does not exist" in low and "database" in low:
        hint = "Create the database first (invoke db.provision), or fix the database name in the URL."
    else:
        hint = "Check that the server is running and reachable from here (host, port, firewall, sslmode)."
    return MigrationFailed(f"Cannot connect to {url.masked}: {first}", hint)


def db_error_text(e: Exception, script: str) -> tuple[str, str]:
    """(SQLSTATE or SQLite code, error text) for the `logs` column, shaped like Prisma's."""
    diag = getattr(e, "diag", None)
    if diag is not None and getattr(diag, "message_primary", None):
        code = diag.sqlstate or "none"
        text = f"{diag.severity or 'ERROR'}: {diag.message_primary}"
        if diag.message_detail:
            text += f"\nDETAIL: {diag.message_detail}"
        if diag.message_hint:
            text += f"\nHINT: {diag.message_hint}"
        if diag.statement_position:
            text += _position(script, int(diag.statement_position))
        return code, text
    code = str(getattr(e, "sqlite_errorcode", "none"))
    return code, str(e)


# Written into `logs` (and shown by status) when a script that carries its own transaction control
# failed after part of it was committed: it is recorded failed, and nothing treats it as undone.
PARTIAL_NOTE = ("Partially applied: it ran as written, outside one transaction (it carries its own "
                "transaction control), so statements committed before the failing one stay applied.")

TIMEOUT_HINT = ("Nothing of it was applied (its transaction rolled back). Find what holds the lock "
                "(pg_stat_activity, pg_locks: a long transaction of the app or a console session), let it finish "
                "or stop it, or raise database.lock_timeout / database.statement_timeout in env/<env>.toml.")


def timeout_note(code: str, t: Timeouts) -> str:
    """Why a statement was cancelled, when it was one of our bounds (SQLSTATE 55P03 / 57014)."""
    if code == "55P03":
        return (f": it waited for a table lock held by another session longer than database.lock_timeout "
                f"({t.lock:g} s)")
    if code == "57014" and t.statement > 0:
        return f": a statement ran longer than database.statement_timeout ({t.statement:g} s)"
    return ""


def _position(script: str, pos: int) -> str:
    """Like Prisma's "Position:" block (without the ANSI colours): the failing line and 5 before it."""
    # The position is in characters of the script as sent.
    upto = script[:pos]
    line_no = upto.count("\n") + 1
    lines = script.splitlines()
    start = max(0, line_no - 6)
    shown = "\n".join(f"{i + 1:>3} {lines[i]}" for i in range(start, min(line_no, len(lines))))
    return f"\n\nPosition:\n{shown}"
