"""Prisma-compatible migrations for Postgres (psycopg 3) and SQLite (stdlib sqlite3).

The Prisma CLI needs a separately downloaded schema engine, so deploy runners carry this
runner, which reads `prisma/migrations/<timestamp>_<name>/migration.sql` and reads and
writes `_prisma_migrations` exactly as Prisma's schema engine does (prisma/prisma-engines):

- table DDL: `schema-engine/connectors/sql-schema-connector/src/flavour/postgres.rs` and
  `.../flavour/sqlite.rs` (`create_migrations_table`), copied column for column;
- rows: `.../sql-schema-connector/src/sql_migration_persistence.rs`: a UUID v4 `id`, the
  checksum, `started_at` from the client clock at start, `applied_steps_count += 1` and
  `finished_at` on success, the error text in `logs` on failure. `resolve --applied`
  inserts `started_at = finished_at = now`, `logs = ''` and leaves `applied_steps_count`
  at its default 0. On SQLite, Prisma's driver (quaint `connector/sqlite/conversion.rs`)
  stores DateTime values as integer epoch milliseconds; so do we.
- checksum: `schema-connector/src/checksum.rs`: SHA-256 hex of `migration.sql`; a stored
  checksum also matches the script with CRLF turned to LF or LF to CRLF, and old
  non-zero-padded hex is accepted.
- `migrate deploy`: `schema-engine/core/src/commands/apply_migrations.rs`: provider check
  against `migration_lock.toml` (P3019), `pg_advisory_lock(72707369)` with a 10 s timeout,
  non-empty schema without the table refused (P3005), any unfinished, not-rolled-back row
  stops everything (P3009), then every folder without a not-rolled-back row is applied in
  name order, stopping at the first failure (P3018). `deploy` never compares checksums.
- `resolve`: `schema-engine/core/src/commands/mark_migration_applied.rs` and
  `mark_migration_rolled_back.rs` (P3017, P3008, P3011, P3012).

Where we differ, deliberately:

- Transactions. Prisma sends the whole script in one simple-query message
  (`flavour/postgres/connection.rs`, `apply_migration_script`), which Postgres runs as one
  implicit transaction, but records the row's success in a separate statement. We run the
  script (still one simple-query execution: psycopg uses the simple protocol when there
  are no parameters) and the row's `finished_at` update in ONE explicit transaction, so a
  migration is either applied and recorded, or not applied at all (and then recorded as
  failed with the database error in `logs`, in Prisma's P3018 wording). The started row is
  inserted before, in its own statement, as Prisma does, so a killed runner leaves the
  same "failed" trace Prisma would.
- `ALTER TYPE ... ADD VALUE` and other statements that refuse a transaction block. On
  Postgres >= 12 ADD VALUE runs inside a transaction; only *using* the new value in the
  same transaction fails (SQLSTATE 55P04) - Prisma's migrations fail there too, which is
  why `prisma migrate dev` writes enum additions as their own migration. On Postgres < 12
  (ADD VALUE) and for `CREATE INDEX CONCURRENTLY` the server answers SQLSTATE 25001 inside
  a transaction block. Then our transaction has rolled back (schema untouched) and we run
  the script exactly as Prisma does: one simple-query execution outside any explicit
  transaction (a single statement then runs on its own, several share an implicit one).
  So every script that `prisma migrate deploy` can apply, we can apply.
- SQLite. Prisma runs `execute_batch(script)` with no transaction. We wrap the script and
  the bookkeeping in `BEGIN ... COMMIT` (SQLite DDL is transactional), so a failing script
  leaves the file untouched. `PRAGMA foreign_keys=OFF` (in Prisma's redefine-table
  migrations) is a no-op inside a transaction, but foreign keys are off by default on a
  fresh sqlite3 connection, so the effect is the same. A script with its own
  BEGIN/COMMIT is not supported (Prisma never writes one). The SQLite "lock" is Prisma's
  `PRAGMA main.locking_mode=EXCLUSIVE` plus an immediate write transaction.
- Empty migration.sql (only whitespace) is refused: it is nearly always a half-written
  migration. Prisma's own intentionally-empty migrations carry a comment
  (`-- This is an empty migration.`) and are accepted.
- `rollback` (Prisma has none): runs `down.sql` (Prisma's documented down-migration file)
  and sets `rolled_back_at` on the applied row in the same transaction; a later `deploy`,
  ours or Prisma's, applies the migration again, because deploy skips only names that
  have a row with `rolled_back_at IS NULL`.

Public functions take the database URL (a `str` or `Secret`) and the migrations folder;
they never read the process environment. Results are frozen dataclasses.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Literal, Sequence

from deploy import dburl
from deploy.config import DatabaseSection
from deploy.errors import LockHeld, MigrationFailed, SettingsError
from deploy.redact import redact

MIGRATIONS_TABLE = "_prisma_migrations"
ADVISORY_LOCK_ID = 72707369          # flavour/postgres.rs: "a unique number we chose to identify Migrate"
DEFAULT_LOCK_TIMEOUT = 10.0          # flavour/postgres.rs: ADVISORY_LOCK_TIMEOUT
DEFAULT_STATEMENT_TIMEOUT = DatabaseSection.statement_timeout
LOCK_FILE = "migration_lock.toml"
SCRIPT = "migration.sql"
DOWN_SCRIPT = "down.sql"

# flavour/postgres.rs, create_migrations_table
POSTGRES_TABLE_DDL = """\
CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);
"""

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

_SELECT_ROWS = (
    "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, "
    "applied_steps_count FROM _prisma_migrations ORDER BY started_at ASC"
)

# user-facing-errors (schema_engine.rs, ApplyMigrationError / P3018): the text Prisma writes to `logs`.
_P3018 = (
    "A migration failed to apply. New migrations cannot be applied before the error is recovered from. "
    "Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve"
    "\n\nMigration name: {name}\n\nDatabase error code: {code}\n\nDatabase error:\n{error}"
)

State = Literal["applied", "pending", "failed", "checksum_changed", "missing_folder", "invalid"]


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class LocalMigration:
    """One folder under prisma/migrations."""

    name: str
    path: Path
    script: str | None          # None: migration.sql missing or unreadable
    checksum: str | None
    has_down: bool
    problem: str = ""           # why it cannot be applied ("" when fine)


@dataclass(frozen=True)
class MigrationRecord:
    """One `_prisma_migrations` row, as Prisma's `MigrationRecord`."""

    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int

    @property
    def is_failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def is_active(self) -> bool:
        return self.rolled_back_at is None


@dataclass(frozen=True)
class MigrationStatus:
    name: str
    state: State
    applied_at: datetime | None = None
    detail: str = ""

    @property
    def is_drift(self) -> bool:
        return self.state in ("checksum_changed", "missing_folder")


@dataclass(frozen=True)
class StatusReport:
    url: str                             # masked
    provider: str
    migrations: tuple[MigrationStatus, ...]
    table_exists: bool

    def _named(self, *states: str) -> tuple[str, ...]:
        return tuple(m.name for m in self.migrations if m.state in states)

    @property
    def applied(self) -> tuple[str, ...]:
        return self._named("applied", "checksum_changed")

    @property
    def pending(self) -> tuple[str, ...]:
        return self._named("pending")

    @property
    def failed(self) -> tuple[str, ...]:
        return self._named("failed")

    @property
    def drift(self) -> tuple[MigrationStatus, ...]:
        return tuple(m for m in self.migrations if m.is_drift)

    @property
    def invalid(self) -> tuple[str, ...]:
        return self._named("invalid")

    @property
    def up_to_date(self) -> bool:
        return not (self.pending or self.failed or self.drift or self.invalid)


@dataclass(frozen=True)
class MigrateResult:
    url: str
    runner: Literal["builtin", "prisma"]
    applied: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    duration: float = 0.0
    output: str = ""                     # the prisma runner's redacted output


@dataclass(frozen=True)
class RollbackResult:
    url: str
    rolled_back: tuple[str, ...]         # newest first, in the order undone


@dataclass(frozen=True)
class ResolveResult:
    url: str
    name: str
    action: Literal["applied", "rolled_back"]


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


def session_settings_sql(t: Timeouts) -> list[str]:
    """`SET` statements for a Postgres migration session: a statement waiting on a table lock
    (an app transaction, a long SELECT) fails after `lock_timeout` instead of queueing every
    later query of the app behind it (Postgres' lock queue)."""
    return [f"SET lock_timeout = '{int(t.lock * 1000)}ms'",
            f"SET statement_timeout = '{int(t.statement * 1000)}ms'"]


# ---------------------------------------------------------------- pure parts

def checksum(script: str) -> str:
    """Prisma's checksum: SHA-256 of the script's UTF-8 bytes, 64 lower-case hex digits."""
    return hashlib.sha256(script.encode("utf-8")).hexdigest()


def checksum_matches(script: str, stored: str) -> bool:
    """Prisma's `script_matches_checksum`: tolerant of CRLF/LF and of the old unpadded hex."""
    for variant in (script, script.replace("\r\n", "\n"), script.replace("\n", "\r\n")):
        digest = hashlib.sha256(variant.encode("utf-8")).digest()
        if stored and len(stored) != 64:
            rendered = "".join(f"{b:x}" for b in digest)  # prisma-engines#1887
        else:
            rendered = digest.hex()
        if rendered == stored:
            return True
    return False


def parse_lock_provider(text: str) -> str:
    """The provider in migration_lock.toml, read the way Prisma reads it (first `provider` line)."""
    for line in text.splitlines():
        if line.startswith("provider"):
            return line.removeprefix("provider = ").strip().strip('"')
    return "<PROVIDER NOT FOUND>"


_ONLY_COMMENTS = re.compile(r"^(\s*(--[^\n]*)?\n?)*\s*$")


def _problem(script: str | None, has_sql: bool) -> str:
    if not has_sql:
        return f"{SCRIPT} is missing"
    if script is None:
        return f"{SCRIPT} cannot be read"
    if script.strip() == "":
        return f"{SCRIPT} is empty"
    return ""


def load_migrations(migrations_dir: str | Path) -> tuple[LocalMigration, ...]:
    """The migration folders in name order (Prisma's order); problems are recorded, not raised."""
    d = Path(migrations_dir)
    if not d.is_dir():
        raise MigrationFailed(
            f"Migrations folder {d} does not exist.",
            "Set database.migrations_dir in env/<name>.toml to the folder that holds prisma/migrations.",
        )
    out = []
    for p in sorted((c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")), key=lambda c: c.name):
        sql = p / SCRIPT
        script = None
        if sql.is_file():
            try:
                # newline="" keeps CRLF as written: the checksum is over the file's bytes.
                with open(sql, encoding="utf-8", newline="") as fh:
                    script = fh.read()
            except (OSError, UnicodeDecodeError):
                script = None
        problem = _problem(script, sql.is_file())
        out.append(LocalMigration(
            name=p.name, path=p, script=script, checksum=checksum(script) if script is not None else None,
            has_down=(p / DOWN_SCRIPT).is_file(), problem=problem,
        ))
    return tuple(out)


def lock_provider(migrations_dir: str | Path) -> str | None:
    """The provider named in migration_lock.toml, or None when there is no lock file."""
    f = Path(migrations_dir) / LOCK_FILE
    if not f.is_file():
        return None
    return parse_lock_provider(f.read_text(encoding="utf-8"))


def check_provider(migrations_dir: str | Path, provider: str) -> None:
    """P3019: refuse when migration_lock.toml names another provider than the target database."""
    found = lock_provider(migrations_dir)
    if found is not None and found != provider:
        raise MigrationFailed(
            f"The migrations in {migrations_dir} were written for {found!r} (migration_lock.toml), "
            f"but the target database is {provider!r} (P3019).",
            "Point database.migrations_dir at the migration folder generated for this provider "
            "(see docs/runbooks/prisma_staging_postgres.md), or fix the URL.",
        )


def compute_status(
    local: Sequence[LocalMigration], rows: Sequence[MigrationRecord]
) -> tuple[MigrationStatus, ...]:
    """Each migration's state from the folders and the table's rows (pure)."""
    by_name: dict[str, list[MigrationRecord]] = {}
    for r in rows:
        by_name.setdefault(r.migration_name, []).append(r)
    local_names = {m.name for m in local}
    out: list[MigrationStatus] = []
    for m in local:
        active = [r for r in by_name.get(m.name, []) if r.is_active]
        failed = [r for r in active if r.is_failed]
        finished = [r for r in active if r.finished_at is not None]
        if failed:
            r = failed[-1]
            first = (r.logs or "").strip().splitlines()
            out.append(MigrationStatus(m.name, "failed", None, _failure_summary(r.logs) or (first[0] if first else "")))
        elif finished:
            r = finished[-1]
            if m.script is not None and not checksum_matches(m.script, r.checksum):
                out.append(MigrationStatus(m.name, "checksum_changed", r.finished_at,
                                           f"{SCRIPT} was edited after it was applied"))
            else:
                out.append(MigrationStatus(m.name, "applied", r.finished_at))
        elif m.problem:
            out.append(MigrationStatus(m.name, "invalid", None, m.problem))
        else:
            rolled = [r for r in by_name.get(m.name, []) if not r.is_active]
            detail = "rolled back, will be applied again" if rolled else ""
            out.append(MigrationStatus(m.name, "pending", None, detail))
    for name, rs in by_name.items():
        if name in local_names:
            continue
        active = [r for r in rs if r.is_active]
        if active:
            r = active[-1]
            out.append(MigrationStatus(name, "missing_folder", r.finished_at,
                                       "recorded in the database but has no folder"))
    out.sort(key=lambda s: s.name)
    return tuple(out)


# sql-schema-connector/src/sql_schema_differ_flavour/postgres.rs, table_should_be_ignored: PostGIS's
# tables, which Prisma never counts as the user's (so PostGIS in `public` is no P3005).
_IGNORED_TABLES = re.compile(r"^(spatial_ref_sys|geometry_columns)$", re.I)


def table_should_be_ignored(name: str) -> bool:
    """Prisma's rule for Postgres tables that are not the app's (PostGIS's)."""
    return bool(_IGNORED_TABLES.match(name))


def _failure_summary(logs: str | None) -> str:
    if not logs:
        return ""
    m = re.search(r"Database error:\n(.+)", logs)
    return (m.group(1) if m else logs.strip().splitlines()[0]).strip()[:200]


def pending_migrations(local: Sequence[LocalMigration], rows: Sequence[MigrationRecord]) -> list[LocalMigration]:
    """apply_migrations.rs: every folder without a row whose rolled_back_at is NULL, in order."""
    active = {r.migration_name for r in rows if r.is_active}
    return [m for m in local if m.name not in active]


def render_status(report: StatusReport, width: int | None = None) -> str:
    """The status as a table (for the task's output), no wider than `width`."""
    from deploy.display import fit

    rows = [
        (m.name, m.state.replace("_", " "), m.applied_at.strftime("%Y-%m-%d %H:%M:%S") if m.applied_at else "", m.detail)
        for m in report.migrations
    ]
    head = (f"{report.url} ({report.provider}): {len(report.applied)} applied, {len(report.pending)} pending, "
            f"{len(report.failed)} failed, {len(report.drift)} drift")
    return head + "\n" + fit(rows, ["migration", "state", "applied at (UTC)", "detail"], width,
                             optional=("applied at (UTC)",))


def prisma_deploy_argv(migrations_dir: str | Path, npx: str = "npx") -> list[str]:
    """`npx prisma migrate deploy` for the schema beside the migrations folder."""
    schema = Path(migrations_dir).parent / "schema.prisma"
    argv = [npx, "--no", "prisma", "migrate", "deploy"]
    if schema.is_file():
        argv += ["--schema", str(schema)]
    return argv


# ---------------------------------------------------------------- database access

def _now() -> datetime:
    return datetime.now(timezone.utc)


def _millis(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _sqlite_time(v) -> datetime | None:
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


class _Db:
    """One open connection to the target database, Postgres or SQLite."""

    def __init__(self, url: dburl.DbUrl, conn, timeouts: Timeouts | None = None):
        self.url = url
        self.conn = conn
        self.timeouts = timeouts or Timeouts()
        self.pg = url.provider == "postgresql"
        self.server_major = conn.info.server_version // 10000 if self.pg else None

    # -- connection

    @classmethod
    def open(cls, url: dburl.DbUrl, *, create: bool = True, timeouts: Timeouts | None = None) -> "_Db | None":
        """Connect; for SQLite a missing file is created only when `create` (else None).
        A Postgres session gets the timeouts' lock_timeout and statement_timeout."""
        timeouts = timeouts or Timeouts()
        if url.provider == "postgresql":
            import psycopg

            try:
                conn = psycopg.connect(url.conninfo(), autocommit=True)
                for stmt in session_settings_sql(timeouts):
                    conn.execute(stmt)
            except psycopg.Error as e:
                raise connection_error(url, e) from None
            return cls(url, conn, timeouts)
        import sqlite3

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
                raise LockHeld(f"The SQLite database {path} is locked by another process ({e}).",
                               "Stop the other migration run (or the app holding the file), then run again.") from None
            raise MigrationFailed(f"Cannot open SQLite database {path}: {e}.",
                                  "Check the path in the URL and the file's permissions.") from None
        return cls(url, conn, timeouts)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing a broken connection must not hide the real error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- queries

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        cur = self.conn.execute(sql, params) if params else self.conn.execute(sql)
        return cur.fetchall() if cur.description else []

    def ph(self, sql: str) -> str:
        """Write placeholders as `?`; psycopg wants `%s`."""
        return sql.replace("?", "%s") if self.pg else sql

    def table_exists(self) -> bool:
        if self.pg:
            return self.query("SELECT to_regclass(format('%I._prisma_migrations', current_schema())) IS NOT NULL")[0][0]
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='_prisma_migrations'"))

    def user_tables(self) -> list[str]:
        """Tables in the target schema other than _prisma_migrations (for Prisma's P3005)."""
        if self.pg:
            # Tables an extension created (pg_depend deptype 'e') are not the app's.
            rows = self.query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() AND NOT EXISTS ("
                "SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
                "AND d.deptype = 'e') ORDER BY 1"
            )
            return [r[0] for r in rows if r[0] != MIGRATIONS_TABLE and not table_should_be_ignored(r[0])]
        rows = self.query("SELECT name FROM sqlite_master WHERE type='table' ORDER BY 1")
        return [r[0] for r in rows if r[0] != MIGRATIONS_TABLE and not r[0].startswith("sqlite_")]

    def rows(self) -> list[MigrationRecord]:
        if not self.table_exists():
            return []
        out = []
        for r in self.query(_SELECT_ROWS):
            if self.pg:
                out.append(MigrationRecord(*r))
            else:
                out.append(MigrationRecord(
                    id=r[0], checksum=r[1], finished_at=_sqlite_time(r[2]), migration_name=r[3], logs=r[4],
                    rolled_back_at=_sqlite_time(r[5]), started_at=_sqlite_time(r[6]) or datetime.min.replace(
                        tzinfo=timezone.utc), applied_steps_count=int(r[7] or 0),
                ))
        return out

    def ts(self, dt: datetime):
        return dt if self.pg else _millis(dt)

    # -- bookkeeping (sql_migration_persistence.rs)

    def create_table(self) -> None:
        if self.pg:
            self.conn.execute(POSTGRES_TABLE_DDL)
        else:
            self.conn.executescript(SQLITE_TABLE_DDL)

    def initialize(self) -> None:
        """`initialize`: create the table, refusing a non-empty schema without one (P3005)."""
        if self.pg and self.url.schema != "public":
            self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.url.schema}"')
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
            (rid, checksum_, self.ts(_now()), name),
        )
        return rid

    def finish_sql(self, rid: str) -> tuple[str, tuple]:
        return (self.ph("UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, "
                        "finished_at = ? WHERE id = ?"), (self.ts(_now()), rid))

    def record_failed(self, rid: str, logs: str) -> None:
        self.conn.execute(self.ph("UPDATE _prisma_migrations SET logs = ? WHERE id = ?"), (logs, rid))

    def mark_rolled_back(self, rid: str) -> None:
        self.conn.execute(self.ph("UPDATE _prisma_migrations SET rolled_back_at = ? WHERE id = ?"),
                          (self.ts(_now()), rid))

    def mark_applied(self, name: str, checksum_: str) -> None:
        now = self.ts(_now())
        self.conn.execute(
            self.ph("INSERT INTO _prisma_migrations (id, checksum, logs, started_at, finished_at, migration_name) "
                    "VALUES (?, ?, ?, ?, ?, ?)"),
            (str(uuid.uuid4()), checksum_, "", now, now, name),
        )

    # -- locking

    def acquire_lock(self, timeout: float) -> None:
        """Postgres: pg_advisory_lock(72707369) (polled, so we can time out and say who holds it).
        SQLite: Prisma's `PRAGMA main.locking_mode=EXCLUSIVE`, taken at once by a write."""
        deadline = time.monotonic() + timeout
        if self.pg:
            while True:
                if self.query("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_ID,))[0][0]:
                    return
                if time.monotonic() >= deadline:
                    holder = self.query(
                        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'), "
                        "a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.objid = %s AND l.granted LIMIT 1",
                        (ADVISORY_LOCK_ID,),
                    )
                    who = (f" by backend pid {holder[0][0]} ({holder[0][1] or 'no application name'}, "
                           f"from {holder[0][2]}, connected {holder[0][3]:%Y-%m-%d %H:%M:%S})") if holder else ""
                    raise LockHeld(
                        f"Another migration run holds the Prisma migrate lock (pg_advisory_lock({ADVISORY_LOCK_ID})) "
                        f"on {self.url.masked}{who}; waited {timeout:g} s.",
                        "Wait for the other `db.migrate` / `prisma migrate deploy` to finish, then run again.",
                    )
                time.sleep(0.05)
        import sqlite3

        self.conn.execute("PRAGMA main.locking_mode=EXCLUSIVE")
        while True:
            try:
                self.conn.execute("BEGIN EXCLUSIVE")
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise LockHeld(
                        f"The SQLite database {self.url.sqlite_path} is locked by another process ({e}).",
                        "Stop the other migration run (or the app holding the file), then run again.",
                    ) from None
                time.sleep(0.05)

    def release_lock(self) -> None:
        if self.pg:
            try:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
            except Exception:  # the session ends right after; the server frees the lock then
                pass

    # -- applying scripts

    def run_in_transaction(self, script: str, then: Iterable[tuple[str, tuple]]) -> None:
        """Run `script`, then the bookkeeping statements, in one transaction; raise the driver's error."""
        if self.pg:
            with self.conn.transaction():
                self.conn.execute(script)          # no params: simple protocol, many statements
                for sql, params in then:
                    self.conn.execute(sql, params)
            return
        import sqlite3

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

    def run_like_prisma(self, script: str) -> None:
        """Postgres only: the whole script as one simple-query execution, autocommit (as Prisma)."""
        self.conn.execute(script)


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


def _db_error_text(e: Exception, script: str) -> tuple[str, str]:
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


_TIMEOUT_HINT = ("Nothing of it was applied (its transaction rolled back). Find what holds the lock "
                 "(pg_stat_activity, pg_locks: a long transaction of the app or a console session), let it finish "
                 "or stop it, or raise database.lock_timeout / database.statement_timeout in env/<env>.toml.")


def _timeout_note(code: str, t: Timeouts) -> str:
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


def _open(url: str, migrations_dir: str | Path, sqlite_base: str | Path | None, *, create: bool,
          timeouts: Timeouts | None = None):
    parsed = dburl.parse(url, sqlite_base=sqlite_base if sqlite_base is not None else Path(migrations_dir).parent)
    return parsed, _Db.open(parsed, create=create, timeouts=timeouts)


def _refuse_invalid(local: Sequence[LocalMigration], names: Iterable[str] | None = None) -> None:
    wanted = set(names) if names is not None else None
    bad = [m for m in local if m.problem and (wanted is None or m.name in wanted)]
    if bad:
        lines = "; ".join(f"{m.name}: {m.problem}" for m in bad)
        raise MigrationFailed(
            f"Cannot use the migration folder(s) {lines} (in {bad[0].path.parent}). Nothing was applied.",
            "Each folder needs a non-empty migration.sql (an intentionally empty migration holds a comment, "
            "as Prisma writes: `-- This is an empty migration.`). Add it or remove the folder.",
        )


def _refuse_failed(rows: Sequence[MigrationRecord], masked: str) -> None:
    failed = [r for r in rows if r.is_failed]
    if not failed:
        return
    lines = "\n".join(
        f"  The `{r.migration_name}` migration started at {r.started_at} failed"
        + (f": {_failure_summary(r.logs)}" if r.logs else "")
        for r in failed
    )
    name = failed[0].migration_name
    raise MigrationFailed(
        f"Found failed migrations in {masked}; new migrations will not be applied (P3009).\n{lines}",
        f"Fix the cause, then mark it with `invoke db.resolve --env=<env> --rolled-back {name}` (it will be "
        f"applied again) or `--applied {name}` (if you finished it by hand), and migrate again.",
    )


# ---------------------------------------------------------------- public operations

def status(url: str, migrations_dir: str | Path, *, sqlite_base: str | Path | None = None,
           db: DatabaseSection | None = None) -> StatusReport:
    """Applied, pending, failed and drifted migrations of the database at `url`."""
    local = load_migrations(migrations_dir)
    parsed, db = _open(url, migrations_dir, sqlite_base, create=False, timeouts=Timeouts.of(db))
    check_provider(migrations_dir, parsed.provider)
    if db is None:  # SQLite file not created yet: everything is pending
        return StatusReport(parsed.masked, parsed.provider, compute_status(local, []), False)
    with db:
        exists = db.table_exists()
        rows = db.rows() if exists else []
    return StatusReport(parsed.masked, parsed.provider, compute_status(local, rows), exists)


def migrate(
    url: str,
    migrations_dir: str | Path,
    *,
    runner: Literal["builtin", "prisma"] = "builtin",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    sqlite_base: str | Path | None = None,
    url_var: str = "DATABASE_URL",
    npx: str = "npx",
    db: DatabaseSection | None = None,
) -> MigrateResult:
    """Apply pending migrations in order, as `prisma migrate deploy` does (see the module doc).
    `db` (the environment's settings) supplies the lock and statement timeouts."""
    start = time.monotonic()
    if runner == "prisma":
        extra = {db.direct_url_var: url} if db is not None and db.direct_url_var else {}
        return _migrate_with_prisma(url, migrations_dir, url_var=url_var, npx=npx, start=start, extra_env=extra)
    local = load_migrations(migrations_dir)
    timeouts = Timeouts.of(db, lock_timeout)
    parsed = dburl.parse(url, sqlite_base=sqlite_base if sqlite_base is not None else Path(migrations_dir).parent)
    check_provider(migrations_dir, parsed.provider)
    db = _Db.open(parsed, create=True, timeouts=timeouts)
    assert db is not None
    applied: list[str] = []
    current: str | None = None
    try:
        with db:
            db.acquire_lock(timeouts.lock)
            try:
                db.initialize()
                rows = db.rows()
                _refuse_failed(rows, parsed.masked)
                todo = pending_migrations(local, rows)
                _refuse_invalid(todo)
                warnings = tuple(
                    f"{s.name}: {s.detail}" for s in compute_status(local, rows) if s.is_drift
                )
                for m in todo:
                    current = m.name
                    _apply_one(db, m)
                    applied.append(m.name)
                current = None
            finally:
                try:
                    db.release_lock()
                except Exception:  # a lost connection: the server freed the session's advisory lock
                    pass
    except MigrationFailed:
        raise
    except Exception as e:
        if not _is_db_error(e):
            raise
        where = f" while applying {current}" if current else ""
        raise MigrationFailed(
            f"The connection to {parsed.masked} failed{where}: {redact(str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__}."
            + (f" Applied before it: {', '.join(applied)}." if applied else ""),
            (f"The server rolled back {current}'s transaction. Check the database is up, then "
             f"`invoke db.status --env=<env>`; a row left unfinished is cleared with "
             f"`invoke db.resolve --env=<env> --rolled-back {current}`.") if current else
            "Check the database is up and reachable, then run again.",
        ) from None
    return MigrateResult(parsed.masked, "builtin", tuple(applied), warnings, time.monotonic() - start)



def _apply_one(db: _Db, m: LocalMigration) -> None:
    assert m.script is not None and m.checksum is not None
    rid = db.record_started(m.name, m.checksum)
    error = _try_script(db, m.script, rid)
    if error is None:
        return
    code, text = _db_error_text(error, m.script)
    try:
        db.record_failed(rid, _P3018.format(name=m.name, code=code, error=text))
    except Exception as e:
        if not _is_db_error(e):
            raise
        raise MigrationFailed(
            f"Migration {m.name} was cut off on {db.url.masked} (database error {code}): {redact(text)}",
            f"The connection was lost, so the server rolled the migration back and its row is left unfinished. "
            f"When the database is back: `invoke db.resolve --env=<env> --rolled-back {m.name}`, then migrate again.",
        ) from None
    hint = (
        f"Nothing of it was applied. Fix {m.path / SCRIPT}, then run "
        f"`invoke db.resolve --env=<env> --rolled-back {m.name}` and migrate again."
    )
    waited = _timeout_note(code, db.timeouts)
    if waited:
        raise MigrationFailed(
            f"Migration {m.name} failed on {db.url.masked}{waited} (P3018, database error code {code}):\n{redact(text)}",
            _TIMEOUT_HINT + f" Then `invoke db.resolve --env=<env> --rolled-back {m.name}` and migrate again.",
        )
    if code == "55P04":
        hint = ("Postgres cannot use an enum value added by ALTER TYPE ... ADD VALUE in the same transaction. "
                "Move the ADD VALUE into its own, earlier migration (as `prisma migrate dev` does), then "
                f"`invoke db.resolve --env=<env> --rolled-back {m.name}` and migrate again.")
    raise MigrationFailed(
        f"Migration {m.name} failed on {db.url.masked} (P3018, database error code {code}):\n{redact(text)}",
        hint,
    )


def _try_script(db: _Db, script: str, rid: str) -> Exception | None:
    if not db.pg:
        import sqlite3

        try:
            db.run_in_transaction(script, [db.finish_sql(rid)])
            return None
        except sqlite3.Error as e:
            return e
    import psycopg

    try:
        db.run_in_transaction(script, [db.finish_sql(rid)])
        return None
    except psycopg.errors.ActiveSqlTransaction:
        # 25001: the script holds a statement that refuses a transaction block (CREATE INDEX
        # CONCURRENTLY; ADD VALUE before Postgres 12). Our transaction rolled back; run it the
        # way Prisma does, then record success separately, as Prisma does.
        pass
    except psycopg.Error as e:
        return e
    try:
        db.run_like_prisma(script)
    except psycopg.Error as e:
        return e
    sql, params = db.finish_sql(rid)
    db.conn.execute(sql, params)
    return None


def _migrate_with_prisma(url: str, migrations_dir, *, url_var: str, npx: str, start: float,
                         extra_env: dict | None = None) -> MigrateResult:
    from deploy import proc

    parsed = dburl.parse(url, sqlite_base=Path(migrations_dir).parent)
    check_provider(migrations_dir, parsed.provider)
    argv = prisma_deploy_argv(migrations_dir, npx=npx)
    # cwd: the project that holds prisma/, so npx finds the project's own prisma package.
    project = Path(migrations_dir).resolve().parent.parent
    # The session URL under both names: a schema.prisma with `directUrl = env("DIRECT_URL")` needs it set.
    res = proc.run(argv, cwd=project, env={**(extra_env or {}), url_var: url}, timeout=1800)
    out = redact(res.stdout + res.stderr)
    if not res.ok:
        raise MigrationFailed(
            f"`{res.display}` failed with exit code {res.returncode} on {parsed.masked}:\n{res.tail()}",
            "Read Prisma's error above (P3009: resolve the failed migration; P3018: fix the SQL), "
            "then run `invoke db.status --env=<env>`.",
        )
    applied = tuple(re.findall(r"^\s*└─\s*(\S+)/$", out, flags=re.M)) or tuple(
        re.findall(r"Applying migration `([^`]+)`", out))
    return MigrateResult(parsed.masked, "prisma", applied, (), time.monotonic() - start, out)


def rollback(
    url: str,
    migrations_dir: str | Path,
    steps: int = 1,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> RollbackResult:
    """Undo the last `steps` applied migrations with their down.sql, newest first, each in a
    transaction with its row's `rolled_back_at`. Refuses, before touching anything, when one of
    them has no down.sql."""
    if steps < 1:
        raise SettingsError(f"--steps={steps}: roll back at least one migration.", "Use --steps=1 or more.")
    local = {m.name: m for m in load_migrations(migrations_dir)}
    timeouts = Timeouts.of(db, lock_timeout)
    parsed = dburl.parse(url, sqlite_base=sqlite_base if sqlite_base is not None else Path(migrations_dir).parent)
    check_provider(migrations_dir, parsed.provider)
    db = _Db.open(parsed, create=False, timeouts=timeouts)
    if db is None:
        raise MigrationFailed(f"The SQLite database {parsed.sqlite_path} does not exist: nothing to roll back.")
    done: list[str] = []
    with db:
        db.acquire_lock(timeouts.lock)
        try:
            rows = db.rows()
            _refuse_failed(rows, parsed.masked)
            applied: dict[str, MigrationRecord] = {}
            for r in rows:
                if r.is_active and r.finished_at is not None:
                    applied[r.migration_name] = r
            names = sorted(applied, reverse=True)
            if len(names) < steps:
                raise MigrationFailed(
                    f"Cannot roll back {steps} migration(s) on {parsed.masked}: only {len(names)} applied.",
                    "Check `invoke db.status --env=<env>` and use a smaller --steps.",
                )
            targets = names[:steps]
            missing = [n for n in targets if n not in local or not local[n].has_down]
            if missing:
                detail = "; ".join(
                    f"{n}: {'no folder' if n not in local else 'no ' + DOWN_SCRIPT + ' in ' + str(local[n].path)}"
                    for n in missing
                )
                raise MigrationFailed(
                    f"Cannot roll back {', '.join(targets)} on {parsed.masked}: {detail}. Nothing was rolled back.",
                    "Write the down.sql (`prisma migrate diff --from-schema-datamodel <new> --to-schema-datamodel "
                    "<old> --script > down.sql`), or restore the backup taken before the deploy: "
                    "`invoke db.restore --env=<env> --yes`.",
                )
            for n in targets:
                m = local[n]
                down = (m.path / DOWN_SCRIPT).read_text(encoding="utf-8")
                if not down.strip():
                    raise MigrationFailed(f"{m.path / DOWN_SCRIPT} is empty; rolled back so far: {done or 'none'}.")
                rid = applied[n].id
                stmt = (db.ph("UPDATE _prisma_migrations SET rolled_back_at = ? WHERE id = ?"), (db.ts(_now()), rid))
                try:
                    db.run_in_transaction(down, [stmt])
                except Exception as e:
                    if not _is_db_error(e):
                        raise
                    code, text = _db_error_text(e, down)
                    waited = _timeout_note(code, timeouts)
                    raise MigrationFailed(
                        f"down.sql of {n} failed on {parsed.masked} ({code}){waited}; that migration is unchanged. "
                        f"Rolled back before it: {', '.join(done) or 'none'}.\n{redact(text)}",
                        _TIMEOUT_HINT if waited else
                        f"Fix {m.path / DOWN_SCRIPT} and run the rollback again, or restore the backup.",
                    ) from None
                done.append(n)
        finally:
            db.release_lock()
    return RollbackResult(parsed.masked, tuple(done))


def _is_db_error(e: Exception) -> bool:
    import sqlite3

    mod = type(e).__module__
    return isinstance(e, sqlite3.Error) or mod.startswith("psycopg")


def resolve(
    url: str,
    migrations_dir: str | Path,
    *,
    applied: str | None = None,
    rolled_back: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> ResolveResult:
    """`prisma migrate resolve --applied NAME` or `--rolled-back NAME`."""
    if (applied is None) == (rolled_back is None):
        raise SettingsError("Give exactly one of --applied NAME or --rolled-back NAME.")
    name = applied or rolled_back
    assert name is not None
    local = {m.name: m for m in load_migrations(migrations_dir)}
    timeouts = Timeouts.of(db, lock_timeout)
    parsed = dburl.parse(url, sqlite_base=sqlite_base if sqlite_base is not None else Path(migrations_dir).parent)
    check_provider(migrations_dir, parsed.provider)
    db = _Db.open(parsed, create=applied is not None, timeouts=timeouts)
    if db is None:
        raise MigrationFailed(f"Migration {name} cannot be rolled back: {parsed.sqlite_path} does not exist (P3011).")
    with db:
        db.acquire_lock(timeouts.lock)
        try:
            if applied is not None:
                m = local.get(name)
                if m is None or m.script is None:
                    raise MigrationFailed(
                        f"Migration {name} cannot be marked applied: no folder with a migration.sql "
                        f"in {migrations_dir} (P3017).",
                        "Check the name with `invoke db.status --env=<env>`.",
                    )
                if not db.table_exists():
                    db.create_table()  # baseline_initialize: no emptiness check, that is the point
                rows = [r for r in db.rows() if r.migration_name == name]
                if any(r.finished_at is not None for r in rows):
                    raise MigrationFailed(f"Migration {name} is already recorded as applied in {parsed.masked} (P3008).")
                for r in rows:
                    if r.is_failed:
                        db.mark_rolled_back(r.id)
                db.mark_applied(name, checksum(m.script))
                return ResolveResult(parsed.masked, name, "applied")
            rows = [r for r in db.rows() if r.migration_name == name]
            if not rows:
                raise MigrationFailed(
                    f"Migration {name} cannot be rolled back because it was never applied to {parsed.masked} (P3011).")
            failed = [r for r in rows if r.is_failed]
            if not failed:
                raise MigrationFailed(
                    f"Migration {name} cannot be rolled back because it is not in a failed state (P3012).",
                    f"To undo an applied migration use `invoke db.rollback --env=<env> --steps=N`.",
                )
            for r in failed:
                db.mark_rolled_back(r.id)
            return ResolveResult(parsed.masked, name, "rolled_back")
        finally:
            db.release_lock()


# ---------------------------------------------------------------- first promotion: back to empty

@dataclass(frozen=True)
class Footprint:
    """What a database held before a run, for taking it back to nothing: whether it existed
    (a SQLite file), whether it was empty (no table, `_prisma_migrations` included, in the
    target schema), and (Postgres) the schemas there were."""

    existed: bool
    empty: bool
    schemas: tuple[str, ...] = ()


_PG_SCHEMAS = ("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
               "AND nspname <> 'information_schema' ORDER BY 1")


def footprint(url: str, *, sqlite_base: str | Path | None = None, db: DatabaseSection | None = None) -> Footprint:
    """The database's footprint now (read-only; a missing SQLite file is not created)."""
    parsed = dburl.parse(url, sqlite_base=sqlite_base)
    db = _Db.open(parsed, create=False, timeouts=Timeouts.of(db))
    if db is None:
        return Footprint(existed=False, empty=True)
    with db:
        empty = not db.user_tables() and not db.table_exists()
        schemas = tuple(r[0] for r in db.query(_PG_SCHEMAS)) if db.pg else ()
    return Footprint(existed=True, empty=empty, schemas=schemas)


def empty_database(url: str, before: Footprint, *, sqlite_base: str | Path | None = None,
                   db: DatabaseSection | None = None) -> str:
    """Take a database that was empty before a run back to empty: remove the SQLite file the
    run created (or drop every table in it), or drop what the run created in Postgres: the
    schemas that did not exist, and every object of the target schema. Says what it did.
    Only for a database whose `before.empty` is true: anything there now came from the run."""
    timeouts = Timeouts.of(db)
    if not before.empty:
        raise MigrationFailed("The database was not empty before this run: refusing to empty it.",
                              "Restore its backup instead (invoke db.restore).")
    parsed = dburl.parse(url, sqlite_base=sqlite_base)
    if parsed.provider == "sqlite":
        path = parsed.sqlite_path
        assert path is not None
        if not before.existed:
            gone = [f for f in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm")))
                    if f.exists()]
            for f in gone:
                f.unlink()
            return f"removed {path.name}, which this run created" if gone else f"{path.name} is already gone"
        db = _Db.open(parsed, create=False, timeouts=timeouts)
        if db is None:
            return f"{path.name} is already gone"
        with db:
            tables = db.query("SELECT type, name FROM sqlite_master WHERE type IN ('view', 'table') "
                              "AND name NOT LIKE 'sqlite_%' ORDER BY type DESC")
            for kind, name in tables:  # views first, then tables (their indexes and triggers go with them)
                db.query(f'DROP {kind.upper()} IF EXISTS "{name.replace(chr(34), chr(34) * 2)}"')
        return f"dropped {len(tables)} table(s) from {path.name}: empty again" if tables else f"{path.name} is empty"
    from psycopg import sql

    db = _Db.open(parsed, create=False, timeouts=timeouts)
    assert db is not None
    with db:
        new = [n for (n,) in db.query(_PG_SCHEMAS) if n not in before.schemas]
        with db.conn.transaction():
            for n in new:
                db.conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(n)))
            # Tables (with their sequences, indexes and constraints), views, then the types and
            # functions a migration made: everything in the target schema, which was empty.
            objs = db.query(
                "SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
                "WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.relname "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
                "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
                "AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND c.relkind = 'S')", (parsed.schema,))
            for kind, name in objs:
                db.conn.execute(sql.SQL(f"DROP {kind} IF EXISTS {{}}.{{}} CASCADE").format(
                    sql.Identifier(parsed.schema), sql.Identifier(name)))
            types = db.query(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = %s AND t.typtype IN ('e', 'd', 'r', 'm') "
                "OR (n.nspname = %s AND t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class c "
                "WHERE c.oid = t.typrelid AND c.relkind = 'c'))", (parsed.schema, parsed.schema))
            for (name,) in types:
                db.conn.execute(sql.SQL("DROP TYPE IF EXISTS {}.{} CASCADE").format(
                    sql.Identifier(parsed.schema), sql.Identifier(name)))
            funcs = db.query(
                "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = %s AND NOT EXISTS (SELECT 1 FROM pg_depend d "
                "WHERE d.objid = p.oid AND d.deptype = 'e')", (parsed.schema,))
            for (sig,) in funcs:
                db.conn.execute(f"DROP ROUTINE IF EXISTS {sig} CASCADE")
    what = [f"{len(objs)} relation(s)"] + ([f"{len(types)} type(s)"] if types else []) + \
        ([f"{len(funcs)} routine(s)"] if funcs else []) + ([f"schema(s) {', '.join(new)}"] if new else [])
    return f"dropped {', '.join(what)} this run created in {parsed.masked}: empty again"


__all__ = [
    "ADVISORY_LOCK_ID", "Footprint", "footprint", "empty_database", "LocalMigration", "MigrationRecord", "MigrationStatus", "StatusReport", "MigrateResult",
    "RollbackResult", "ResolveResult", "checksum", "checksum_matches", "parse_lock_provider", "load_migrations",
    "lock_provider", "check_provider", "compute_status", "pending_migrations", "render_status",
    "prisma_deploy_argv", "status", "migrate", "rollback", "resolve", "POSTGRES_TABLE_DDL", "SQLITE_TABLE_DDL",
    "Timeouts", "session_settings_sql",
]
