"""The ledger: one small SQL schema for runs, steps, releases, locks, approvals and drills.

The default is SQLite in `<root>/.deploy/ledger.db`; `DEPLOY_LEDGER_URL` points every CI
runner at one Postgres so they share locks and history. Times are stored as UTC epoch
seconds (floats): comparable and portable across both databases.

SQLAlchemy is imported when a ledger is opened, never at start-up.

The schema is versioned (`deploy_schema`, one row) and migrated forward when a ledger is
opened, before anything else reads or writes it: ordered migrations in MIGRATIONS, each a
small DDL change. A ledger made before versioning (no `deploy_schema`) gets the columns it
lacks when they are nullable, or a clear error naming the table and column; a ledger newer
than this toolkit is refused. (Alembic would do the same with more machinery; this schema is
six tables and a handful of additive changes, and it must stay out of `invoke --list`.)

Run state is stored exactly (deploy/facts.py: no redaction, typed facts, no `Secret`);
the text fields (errors, step results) are messages and are redacted like any output.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from deploy import clock, dburl, facts, liveness
from deploy.dburl import mask as dburl_mask
from deploy.errors import DeployError, LedgerError, LockHeld
from deploy.private import create_private, make_private, private_dir
from deploy.redact import mask_url, redact

if TYPE_CHECKING:   # SQLAlchemy is imported when the ledger opens, never at start-up
    from sqlalchemy import ColumnElement, Connection, Engine, MetaData, Table

SCHEMA_VERSION = 3
# Ordered forward migrations: (version it makes, what it adds, [(table, column)]). Version 1
# is the schema as it was before versioning; its missing nullable columns are filled in too.
MIGRATIONS = [
    (2, "deploy_locks.heartbeat_at: the holder's last sign of life (the staleness bound of --break-lock)",
     [("deploy_locks", "heartbeat_at")]),
    (3, "deploy_locks: the holder's token and where it runs (boot id, pid namespace, pid start time), its "
        "heartbeat on CLOCK_BOOTTIME and that clock's id, and the tokens of the holders it took over "
        "(deploy/liveness.py); a lock without them (an older toolkit's) is judged by its heartbeat alone",
     [("deploy_locks", c) for c in ("token", "boot_id", "pid_ns", "pid_start", "clock_id", "beat_clock",
                                    "lineage")]),
]
HEARTBEAT_SECONDS = 10.0     # a running runner refreshes its lock this often
STALE_AFTER_SECONDS = 120.0  # a lock on another machine silent this long may be taken over with --break-lock



class RunStatus(StrEnum):
    """A run's status in the ledger."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"                     # and its undo did not finish, or nothing to undo
    ROLLED_BACK = "rolled_back"           # failed, and every completed step was undone
    ABORTED = "aborted"                   # a killed run undone with --abort
    FAILED_IN_PLACE = "failed_in_place"   # --no-rollback: left for diagnosis
    LOCK_LOST = "lock_lost"               # an outcome only, never stored: the lock's new holder owns the run


class StepStatus(StrEnum):
    """A step's status in the ledger."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class UndoStatus(StrEnum):
    """What became of a step's undo."""

    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"


class ReleaseStatus(StrEnum):
    """A release of an environment in the ledger."""

    LIVE = "live"
    SUPERSEDED = "superseded"             # a later release went live after it
    ROLLED_BACK = "rolled_back"


RUN_ACTIVE = (RunStatus.RUNNING,)
RUN_FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.ABORTED,
             RunStatus.FAILED_IN_PLACE)


def _schema() -> tuple[MetaData, dict[str, Table]]:
    from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text, UniqueConstraint

    md = MetaData()
    runs = Table(
        "deploy_runs", md,
        Column("id", String(32), primary_key=True),
        Column("env", String(64), nullable=False, index=True),
        Column("flow", String(32), nullable=False),
        Column("sha", String(64)),
        Column("release_id", String(100)),
        Column("artifact_sha256", String(64)),
        Column("status", String(24), nullable=False),
        Column("who", String(128), nullable=False),
        Column("hostname", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("started_at", Float, nullable=False),
        Column("finished_at", Float),
        Column("args", Text, nullable=False, default="{}"),
        Column("state", Text, nullable=False, default="{}"),
        Column("error", Text),
        Column("failed_step", String(64)),
    )
    steps = Table(
        "deploy_steps", md,
        Column("run_id", String(32), primary_key=True),
        Column("idx", Integer, primary_key=True),
        Column("name", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("started_at", Float),
        Column("finished_at", Float),
        Column("result", Text),
        Column("error", Text),
        Column("undo_status", String(16)),
        Column("undo_result", Text),
    )
    releases = Table(
        "deploy_releases", md,
        Column("env", String(64), primary_key=True),
        Column("release_id", String(100), primary_key=True),
        Column("sha", String(64), nullable=False),
        Column("artifact_sha256", String(64)),
        Column("run_id", String(32)),
        Column("created_at", Float, nullable=False),
        Column("status", String(16), nullable=False),
        Column("shopify_version", String(100)),
    )
    locks = Table(
        "deploy_locks", md,
        Column("env", String(64), primary_key=True),
        Column("run_id", String(32)),
        Column("who", String(128), nullable=False),
        Column("hostname", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("acquired_at", Float, nullable=False),
        Column("purpose", String(64), nullable=False),
        Column("heartbeat_at", Float),
        Column("token", String(64)),        # the holder (deploy/liveness.py); pid and hostname only describe it
        Column("boot_id", String(64)),
        Column("pid_ns", BigInteger),
        Column("pid_start", BigInteger),
        Column("clock_id", String(128)),    # which CLOCK_BOOTTIME beat_clock was read on
        Column("beat_clock", Float),        # the holder's CLOCK_BOOTTIME at its last sign of life
        Column("lineage", Text),            # tokens of the holders this one took over, newest first
    )
    schema = Table(
        "deploy_schema", md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("version", Integer, nullable=False),
        Column("migrated_at", Float, nullable=False),
    )
    approvals = Table(
        "deploy_approvals", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("env", String(64), nullable=False),
        Column("sha", String(64), nullable=False),
        Column("role", String(64), nullable=False),
        Column("by", String(128), nullable=False),
        Column("at", Float, nullable=False),
        Column("note", Text),
        UniqueConstraint("env", "sha", "role", "by"),
    )
    drills = Table(
        "deploy_drills", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("env", String(64), nullable=False),
        Column("procedure", String(32), nullable=False),
        Column("who", String(128), nullable=False),
        Column("started_at", Float, nullable=False),
        Column("finished_at", Float),
        Column("outcome", String(16), nullable=False),
        Column("durations", Text, nullable=False, default="{}"),
        Column("run_id", String(32)),
        Column("note", Text),
    )
    return md, dict(runs=runs, steps=steps, releases=releases, locks=locks, approvals=approvals, drills=drills,
                    schema=schema)


def _prepare_schema(engine: Engine, md: MetaData, tables: dict[str, Table], where: str) -> None:
    """Create a fresh ledger, or migrate an older one forward; LedgerError (before any
    change) for a newer or unrecognisable one."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(3):  # runners creating or migrating at once: the losers re-check
        try:
            insp = inspect(engine)
            existing = set(insp.get_table_names())
            ours = {t.name for t in tables.values()}
            if not existing & ours:
                md.create_all(engine)
                with engine.begin() as c:
                    c.execute(tables["schema"].insert().values(id=1, version=SCHEMA_VERSION, migrated_at=time.time()))
                return
            version = 1
            if "deploy_schema" in existing:
                with engine.connect() as c:
                    row = c.execute(text("SELECT max(version) FROM deploy_schema")).first()
                version = int(row[0]) if row and row[0] is not None else 1
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"The ledger at {where} has schema version {version}, newer than this toolkit knows "
                    f"({SCHEMA_VERSION}); nothing was changed.",
                    "Use the toolkit version that wrote it (pull the latest main), or point DEPLOY_LEDGER_URL "
                    "at another ledger.",
                )
            todo = []  # (table, Column) to add
            for name, t in tables.items():
                if t.name not in existing:
                    continue  # created below
                have = {c["name"] for c in insp.get_columns(t.name)}
                for col in t.columns:
                    if col.name in have:
                        continue
                    added_by = next((v for v, _, cols in MIGRATIONS if (t.name, col.name) in cols), None)
                    if added_by is not None and added_by <= version:
                        raise LedgerError(
                            f"The ledger at {where} says schema version {version} but its table {t.name} lacks "
                            f"column {col.name}; nothing was changed.",
                            "Someone altered it by hand: restore the ledger from a backup, or add the column back.")
                    if not col.nullable:
                        raise LedgerError(
                            f"The ledger at {where} is older than this toolkit and its table {t.name} lacks the "
                            f"required column {col.name}, which cannot be filled in; nothing was changed.",
                            "Move it aside (it keeps the old history) so a new ledger is created, or restore one "
                            "written by this toolkit.")
                    todo.append((t, col))
            if version == SCHEMA_VERSION and not todo and set(t.name for t in tables.values()) <= existing:
                return
            with engine.begin() as c:
                md.create_all(c, checkfirst=True)
                for t, col in todo:
                    ddl = col.type.compile(dialect=engine.dialect)
                    c.execute(text(f'ALTER TABLE {t.name} ADD COLUMN {col.name} {ddl}'))
                c.execute(tables["schema"].delete())
                c.execute(tables["schema"].insert().values(id=1, version=SCHEMA_VERSION, migrated_at=time.time()))
            return
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == 2:
                raise


@dataclass(frozen=True)
class RunRow:
    id: str
    env: str
    flow: str
    sha: str | None
    release_id: str | None
    artifact_sha256: str | None
    status: RunStatus
    who: str
    hostname: str
    pid: int
    started_at: float
    finished_at: float | None
    args: dict[str, Any]
    state: facts.State
    error: str | None
    failed_step: str | None

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True)
class StepRow:
    run_id: str
    idx: int
    name: str
    status: StepStatus
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    undo_status: UndoStatus | None
    undo_result: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "StepRow":
        d = dict(row)
        return cls(**{**d, "status": StepStatus(d["status"]),
                      "undo_status": UndoStatus(d["undo_status"]) if d.get("undo_status") else None})


@dataclass(frozen=True)
class ReleaseRow:
    """A release of an environment: which build, from which commit, and whether it is live."""

    env: str
    release_id: str
    sha: str
    artifact_sha256: str | None
    run_id: str | None
    status: ReleaseStatus
    created_at: float
    shopify_version: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "ReleaseRow":
        d = {k: row[k] for k in cls.__dataclass_fields__}
        return cls(**{**d, "status": ReleaseStatus(d["status"])})


@dataclass(frozen=True)
class ApprovalRow:
    """One person's approval of a commit for an environment, in one role."""

    env: str
    sha: str
    role: str
    by: str
    at: float
    note: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "ApprovalRow":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DrillRow:
    """A rehearsal of a procedure (hotfix, rollback, restore): when, by whom, how it went."""

    id: int
    env: str
    procedure: str
    who: str
    started_at: float
    finished_at: float | None
    outcome: str                          # "passed" | "failed"
    durations: dict[str, float]           # phase -> seconds
    run_id: str | None
    note: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "DrillRow":
        d = {k: row[k] for k in cls.__dataclass_fields__}
        return cls(**{**d, "durations": json.loads(d["durations"] or "{}")})


@dataclass(frozen=True)
class LockRow:
    env: str
    run_id: str | None
    who: str
    hostname: str
    pid: int
    acquired_at: float
    purpose: str
    heartbeat_at: float | None = None
    token: str | None = None
    boot_id: str | None = None
    pid_ns: int | None = None
    pid_start: int | None = None
    clock_id: str | None = None
    beat_clock: float | None = None
    lineage: str | None = None
    # How it was read (not part of the lock): the ledger's clock then, whether that clock is the
    # database's own (Postgres: every runner reads the same one), and this process's CLOCK_BOOTTIME.
    ledger_now: float | None = field(default=None, compare=False)
    shared_clock: bool = field(default=False, compare=False)
    read_boot: float | None = field(default=None, compare=False)

    @property
    def last_seen(self) -> float:
        """The holder's last sign of life on the ledger's clock: its heartbeat, else when it took the lock."""
        return max(self.acquired_at, self.heartbeat_at or 0.0)

    def silence(self) -> float | None:
        """Seconds since the holder's last sign of life, measured on one clock, or None when no
        clock it and this process share can measure it. Postgres: the database's clock wrote the
        heartbeat and read the row. SQLite: the holder's CLOCK_BOOTTIME, when it is ours (same boot
        and time namespace); never two wall clocks. A lock an older toolkit wrote (no token) is
        judged as that toolkit did, by wall time."""
        now = self.ledger_now if self.ledger_now is not None else time.time()
        if self.shared_clock or self.token is None:
            return max(0.0, now - self.last_seen)
        if self.beat_clock is None or self.clock_id is None or self.clock_id != liveness.clock_id():
            return None
        boot = self.read_boot if self.read_boot is not None else liveness.boottime()
        silent = boot - self.beat_clock
        return silent if silent >= 0 else None   # a beat "after" now is another clock's: unmeasurable

    def silent_for(self, now: float | None = None) -> float:
        """silence(), or (for display only) the wall-clock difference when it cannot be measured."""
        s = self.silence()
        return s if s is not None else (now or time.time()) - self.last_seen

    def holder_alive(self) -> bool | None:
        """True/False when this process can check the holder (same boot and pid namespace: its pid
        and that pid's start time); None when it cannot (another machine, container or namespace)."""
        if self.token is not None and self.token == liveness.token():
            return True
        verdict = liveness.gone(self.boot_id, self.pid_ns, self.pid, self.pid_start)
        return None if verdict is None else not verdict

    def describe(self, now: float | None = None) -> str:
        now = self.ledger_now if self.ledger_now is not None else (now or time.time())
        age = now - self.acquired_at
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.acquired_at))
        run = f", run {self.run_id}" if self.run_id else ""
        seen = ""
        if self.heartbeat_at:
            silent = self.silence()
            seen = (f", last seen {clock.age(silent)} ago" if silent is not None
                    else ", its heartbeat cannot be timed from here")
        return (f"{self.who}@{self.hostname} (pid {self.pid}{run}, {self.purpose}) since {since} "
                f"({clock.age(age)} ago{seen})")


def _where(held: "LockRow") -> str:
    return (f"on another machine ({held.hostname})" if held.boot_id and held.boot_id != liveness.boot_id()
            else f"by a process this one cannot check ({held.hostname}: another pid namespace, a container, or an "
                 "older toolkit's lock)")


def _refuse_while_showing_life(env: str, held: "LockRow", silent: float | None, what: str, see: str) -> None:
    """A holder this process cannot check is taken over or broken only once its heartbeat has
    been silent for the staleness bound, measured on one clock (LockHeld until then)."""
    if silent is not None and silent >= STALE_AFTER_SECONDS:
        return
    bound = clock.age(STALE_AFTER_SECONDS)
    life = (f"showed life {clock.age(silent)} ago: less than the {bound} staleness bound"
            if silent is not None else f"beat again while watched for up to the {bound} staleness bound")
    raise LockHeld(
        f"The {env} lock is held {_where(held)} by {held.describe()}, which {life}, so it may still be running. "
        "Nothing was changed.",
        f"Wait for it (see `{see}`); {what} a lock whose holder cannot be checked from here only once it has been "
        f"silent for {bound}.")


class _Now:
    """`finished_at=NOW` (or `started_at=NOW`): the time on the ledger's clock when it is written."""

    def __repr__(self) -> str:
        return "NOW"


NOW = _Now()


def _same_holder(t: Table, held: LockRow) -> ColumnElement[bool]:
    """SQL matching the row of `held`'s holder: its token (pid and hostname for an older toolkit's lock)."""
    if held.token is not None:
        return t.c.token == held.token
    return t.c.token.is_(None) & (t.c.pid == held.pid) & (t.c.hostname == held.hostname)


def whoami() -> str:
    for var in ("DEPLOY_WHO", "GITHUB_ACTOR"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid{os.getuid()}"


def default_url(root: Path, environ: Mapping[str, str] | None = None) -> str:
    """DEPLOY_LEDGER_URL of `environ` (default: this process's), else SQLite under `root`/.deploy/."""
    environ = os.environ if environ is None else environ
    return environ.get("DEPLOY_LEDGER_URL") or f"sqlite:///{(root / '.deploy' / 'ledger.db').as_posix()}"


def _private_ledger(path: Path, root: Path) -> None:
    """The SQLite ledger holds the deploy history: 0600 (with its -wal/-shm), set on every
    open so a file an older version left 0644 is fixed. Its folder is made 0700 when it is
    the project's `.deploy/` or did not exist; a folder someone chose for it is left alone."""
    folder = path.parent
    if not folder.exists() or folder.resolve() == (root / ".deploy").resolve():
        private_dir(folder)
    if not path.exists():
        create_private(path)    # SQLite then creates -wal/-shm with the database file's mode
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        make_private(p)


class Ledger:
    """Access to the ledger database. Open with `Ledger.open(root)`."""

    def __init__(self, engine: Engine, tables: dict[str, Table]):
        self.engine = engine
        self.t = tables
        # Postgres has one clock every runner reads (the server's): run, release, step and lock
        # times come from it. SQLite has none; times are this machine's wall clock, runs and
        # releases are kept in the order they were filed, and liveness uses CLOCK_BOOTTIME.
        self.shared_clock = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------ the ledger's clock
    def _clock(self) -> ColumnElement[float]:
        """SQL for "now" on the ledger's clock (epoch seconds)."""
        from sqlalchemy import Float, bindparam, cast, extract, func

        if self.shared_clock:
            return cast(extract("epoch", func.clock_timestamp()), Float)
        return bindparam(None, time.time(), type_=Float)

    def _filed(self, column: Any) -> ColumnElement[float]:
        """SQL for the time a new row is filed under `column`: the ledger's clock, and never before
        the latest row already filed (SQLite: a writer whose clock is behind still files after)."""
        from sqlalchemy import func, select

        if self.shared_clock:
            return self._clock()
        latest = select(func.coalesce(func.max(column), 0.0) + 0.001).scalar_subquery()
        return func.max(self._clock(), latest)

    def _stamped(self, table: Table, values: dict[str, Any]) -> dict[str, Any]:
        from sqlalchemy import func

        for k, v in values.items():
            if v is NOW:
                values[k] = self._clock()
                if k == "finished_at" and "started_at" in table.c:   # never before it started
                    began = func.coalesce(table.c.started_at, 0.0)
                    values[k] = (func.greatest if self.shared_clock else func.max)(values[k], began)
        return values

    def now(self) -> float:
        """The ledger's clock: the database server's for Postgres, this machine's for SQLite."""
        from sqlalchemy import select

        if not self.shared_clock:
            return time.time()
        with self._tx(read=True) as c:
            return float(c.execute(select(self._clock())).scalar_one())

    # ------------------------------------------------------------ opening
    @classmethod
    def open(cls, root: Path | None = None, url: str | None = None) -> "Ledger":
        from sqlalchemy import create_engine, event
        from sqlalchemy.exc import SQLAlchemyError

        root = root or Path.cwd()
        url = url or default_url(root)
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            try:
                _private_ledger(path, root)
                probe = path.parent / f".write-probe-{os.getpid()}"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                raise LedgerError(
                    f"The ledger folder {path.parent} is not writable ({e.strerror}).",
                    "Make it writable (or remove it so it can be created), or point DEPLOY_LEDGER_URL elsewhere.",
                ) from None
            kwargs["connect_args"] = {"timeout": 30}
        elif url.startswith("postgresql+psycopg://"):
            # libpq's reading of the URL: a raw '@' or '/' in the password is refused, masked.
            try:
                dburl.parse("postgresql://" + url[len("postgresql+psycopg://"):])
            except DeployError as e:
                raise LedgerError(f"DEPLOY_LEDGER_URL: {e.message}", e.hint) from None
            kwargs["connect_args"] = {"connect_timeout": 10}
            kwargs["pool_pre_ping"] = True
        else:
            raise LedgerError(
                f"DEPLOY_LEDGER_URL {dburl_mask(url)!r} is neither sqlite:/// nor postgresql://.",
                "Use sqlite:///path/ledger.db or postgresql://user:pass@host/db.",
            )
        try:
            engine = create_engine(url, future=True, **kwargs)
            if url.startswith("sqlite"):
                @event.listens_for(engine, "connect")
                def _pragmas(dbapi_conn: Any, _: Any) -> None:  # WAL lets readers run beside the one writer
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()
            md, tables = _schema()
            _prepare_schema(engine, md, tables, mask_url(url))
        except SQLAlchemyError as e:
            raise LedgerError(
                f"Cannot open the ledger at {dburl_mask(url)}: {redact(str(e.orig if hasattr(e, 'orig') else e)).strip().splitlines()[0]}",
                "Check DEPLOY_LEDGER_URL (host, credentials, database) or unset it to use the local SQLite ledger.",
            ) from None
        return cls(engine, tables)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, what: str = "be written", *, read: bool = False) -> Iterator[Connection]:
        """A transaction (or a read connection); a database failure (disk full, server gone)
        becomes one LedgerError saying what could not be done."""
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        try:
            with (self.engine.connect() if read else self.engine.begin()) as c:
                yield c
        except IntegrityError:
            raise
        except SQLAlchemyError as e:
            first = (redact(str(getattr(e, "orig", None) or e)).strip().splitlines() or [type(e).__name__])[0]
            full = "full" in first.lower() or "no space" in first.lower()
            raise LedgerError(
                f"The ledger could not {'be read' if read else what}: {first}",
                "The disk holding the ledger is full (.deploy/ by default): free space there." if full else
                "Check the ledger database (DEPLOY_LEDGER_URL, or .deploy/ledger.db) and try again.",
            ) from None

    # ------------------------------------------------------------ runs and steps
    def start_run(self, *, env: str, flow: str, sha: str | None, steps: list[str], args: dict[str, Any],
                  release_id: str | None = None, status: RunStatus = RunStatus.RUNNING) -> str:
        run_id = uuid.uuid4().hex[:12]
        args_json = facts.dumps(args)  # exact; a Secret in a run's arguments is refused
        with self._tx(f"record the start of a {flow} run") as c:
            c.execute(self.t["runs"].insert().values(
                id=run_id, env=env, flow=flow, sha=sha, release_id=release_id, status=str(status),
                who=whoami(), hostname=socket.gethostname(), pid=os.getpid(),
                started_at=self._filed(self.t["runs"].c.started_at),
                args=args_json, state="{}",
            ))
            if steps:
                c.execute(self.t["steps"].insert(), [
                    dict(run_id=run_id, idx=i, name=n, status=str(StepStatus.PENDING)) for i, n in enumerate(steps)
                ])
        return run_id

    def update_run(self, run_id: str, **values: Any) -> None:
        _plain(values)
        if "state" in values:
            values["state"] = facts.dumps_state(values["state"])  # facts only, exact; a Secret is refused
        if "error" in values and values["error"] is not None:
            values["error"] = redact(values["error"])
        self._stamped(self.t["runs"], values)
        with self._tx(f"record run {run_id}") as c:
            c.execute(self.t["runs"].update().where(self.t["runs"].c.id == run_id).values(**values))

    def adopt_run(self, run_id: str) -> None:
        """This process takes over a run (resume/abort)."""
        self.update_run(run_id, pid=os.getpid(), hostname=socket.gethostname())

    def update_step(self, run_id: str, idx: int, **values: Any) -> None:
        _plain(values)
        for k in ("result", "error", "undo_result"):
            if values.get(k) is not None:
                values[k] = redact(values[k])[:4000]
        t = self.t["steps"]
        self._stamped(t, values)
        with self._tx(f"record step {idx + 1} of run {run_id}") as c:
            c.execute(t.update().where((t.c.run_id == run_id) & (t.c.idx == idx)).values(**values))

    def run(self, run_id: str) -> RunRow:
        t = self.t["runs"]
        with self._tx(read=True) as c:
            row = c.execute(t.select().where(t.c.id == run_id)).mappings().first()
        if row is None:
            raise LedgerError(f"No run {run_id!r} in the ledger.", "List runs with `invoke status`.")
        return _run_row(row)

    def steps(self, run_id: str) -> list[StepRow]:
        t = self.t["steps"]
        with self._tx(read=True) as c:
            rows = c.execute(t.select().where(t.c.run_id == run_id).order_by(t.c.idx)).mappings().all()
        return [StepRow.of(r) for r in rows]

    def runs(self, env: str | None = None, *, flow: str | None = None, status: str | tuple[str, ...] | None = None,
             sha: str | None = None, since: float | None = None, limit: int = 50) -> list[RunRow]:
        t = self.t["runs"]
        q = t.select()
        if env:
            q = q.where(t.c.env == env)
        if flow:
            q = q.where(t.c.flow == flow)
        if status:
            q = q.where(t.c.status.in_((status,) if isinstance(status, str) else status))
        if sha:
            q = q.where(t.c.sha == sha)
        if since is not None:
            q = q.where(t.c.started_at >= since)
        q = q.order_by(t.c.started_at.desc()).limit(limit)
        with self._tx(read=True) as c:
            return [_run_row(r) for r in c.execute(q).mappings().all()]

    # ------------------------------------------------------------ releases
    def record_release(self, *, env: str, release_id: str, sha: str, artifact_sha256: str | None,
                       run_id: str | None, status: ReleaseStatus = ReleaseStatus.LIVE,
                       shopify_version: str | None = None) -> None:
        t = self.t["releases"]
        with self._tx() as c:
            if status == ReleaseStatus.LIVE:
                c.execute(t.update().where((t.c.env == env) & (t.c.status == str(ReleaseStatus.LIVE)))
                          .values(status=str(ReleaseStatus.SUPERSEDED)))
            existing = c.execute(t.select().where((t.c.env == env) & (t.c.release_id == release_id))).first()
            vals = dict(sha=sha, artifact_sha256=artifact_sha256, run_id=run_id, status=str(status),
                        shopify_version=shopify_version)
            if existing:
                c.execute(t.update().where((t.c.env == env) & (t.c.release_id == release_id)).values(**vals))
            else:
                c.execute(t.insert().values(env=env, release_id=release_id, created_at=self._filed(t.c.created_at),
                                            **vals))

    def set_release_status(self, env: str, release_id: str, status: ReleaseStatus) -> None:
        t = self.t["releases"]
        with self._tx() as c:
            if status == ReleaseStatus.LIVE:
                c.execute(t.update().where((t.c.env == env) & (t.c.status == str(ReleaseStatus.LIVE)))
                          .values(status=str(ReleaseStatus.SUPERSEDED)))
            c.execute(t.update().where((t.c.env == env) & (t.c.release_id == release_id)).values(status=str(status)))

    def releases(self, env: str, limit: int = 20) -> list[ReleaseRow]:
        t = self.t["releases"]
        with self._tx(read=True) as c:
            rows = c.execute(t.select().where(t.c.env == env).order_by(t.c.created_at.desc()).limit(limit)).mappings()
            return [ReleaseRow.of(r) for r in rows]

    def live_release(self, env: str) -> ReleaseRow | None:
        t = self.t["releases"]
        with self._tx(read=True) as c:
            r = c.execute(t.select().where((t.c.env == env) & (t.c.status == str(ReleaseStatus.LIVE)))).mappings().first()
        return ReleaseRow.of(r) if r else None

    # ------------------------------------------------------------ locks
    def _holder_row(self, **values: Any) -> dict[str, Any]:
        """The lock's columns naming this process as its holder (deploy/liveness.py)."""
        me = liveness.here()
        return dict(who=whoami(), hostname=socket.gethostname(), pid=me.pid, token=me.token, boot_id=me.boot_id,
                    pid_ns=me.pid_ns, pid_start=me.pid_start, clock_id=me.clock_id, beat_clock=liveness.boottime(),
                    acquired_at=self._clock(), heartbeat_at=self._clock(), **values)

    def acquire_lock(self, env: str, *, run_id: str | None, purpose: str, takeover_run: str | None = None,
                     break_lock: bool = False) -> LockRow | None:
        """Take the environment's lock, or raise LockHeld naming the holder.

        `takeover_run`: the lock may be taken over from that run (resume/abort of a killed run)
        when its holder is provably gone: same boot and pid namespace as this process, and its
        pid gone or reused (deploy/liveness.py). A holder this process cannot check (another
        machine, container or pid namespace) is taken over only with `break_lock` and only once
        its heartbeat has been silent for STALE_AFTER_SECONDS on one clock; a holder that is
        alive, or beats, is never taken over. Returns the lock row that was taken over, if any."""
        from sqlalchemy.exc import IntegrityError

        t = self.t["locks"]
        try:
            with self._tx(f"take the {env} lock") as c:
                c.execute(t.insert().values(**self._holder_row(env=env, run_id=run_id, purpose=purpose)))
            return None
        except IntegrityError:
            pass
        held = self.lock(env)
        if held is None:  # released between our insert and our read: try once more
            return self.acquire_lock(env, run_id=run_id, purpose=purpose, takeover_run=takeover_run,
                                     break_lock=break_lock)
        if takeover_run and held.run_id == takeover_run:
            alive = held.holder_alive()
            if alive is None and break_lock:
                _refuse_while_showing_life(env, held, self._silence(env, held), "--break-lock takes over",
                                           "invoke status")
            if alive is False or (alive is None and break_lock):
                lineage = " ".join([held.token or "", *(held.lineage or "").split()][:20]).strip() or None
                with self._tx(f"take over the {env} lock") as c:
                    res = c.execute(t.update().where((t.c.env == env) & (t.c.run_id == takeover_run) & _same_holder(t, held))
                                    .values(**self._holder_row(run_id=run_id, purpose=purpose, lineage=lineage)))
                    if res.rowcount == 1:
                        liveness.adopt([held.token, *(held.lineage or "").split()])
                        return held
                held = self.lock(env) or held
        raise LockHeld(
            f"The {env} environment is locked by {held.describe()}.",
            self._lock_hint(env, held),
        )

    def _silence(self, env: str, held: LockRow) -> float | None:
        """How long the holder has been silent, for a decision: measured on one clock when one is
        shared (see LockRow.silence). When none is (a SQLite ledger shared across boots or time
        namespaces), the heartbeat is watched on this process's monotonic clock for up to the
        staleness bound: None as soon as it beats (the holder lives), the bound if it never does."""
        silent = held.silence()
        if silent is not None:
            return silent
        t0 = time.monotonic()
        while time.monotonic() - t0 < STALE_AFTER_SECONDS:
            time.sleep(min(1.0, HEARTBEAT_SECONDS / 4))
            now = self.lock(env)
            if now is None or now.token != held.token or (now.beat_clock, now.heartbeat_at) != (
                    held.beat_clock, held.heartbeat_at):
                return None
        return time.monotonic() - t0

    def _mine(self, t: Table) -> ColumnElement[bool]:
        """The lock row this process holds (its token)."""
        return t.c.token == liveness.token()

    def heartbeat(self, env: str, run_id: str) -> bool:
        """This run is alive: refresh its lock's heartbeat (on the ledger's clock, and on this
        machine's CLOCK_BOOTTIME). False when this process no longer holds the lock (another
        runner took it over with --break-lock while this one was frozen)."""
        t = self.t["locks"]
        with self._tx(f"refresh the {env} lock") as c:
            res = c.execute(t.update().where((t.c.env == env) & (t.c.run_id == run_id) & self._mine(t))
                            .values(heartbeat_at=self._clock(), beat_clock=liveness.boottime()))
            return bool(res.rowcount > 0)

    def bind_lock(self, env: str, run_id: str) -> None:
        """The lock this process took before its run existed now names the run."""
        t = self.t["locks"]
        with self._tx(f"bind the {env} lock to run {run_id}") as c:
            c.execute(t.update().where((t.c.env == env) & self._mine(t)).values(run_id=run_id))

    def _flow_of(self, held: LockRow) -> str | None:
        if not held.run_id:
            return None
        try:
            return self.run(held.run_id).flow
        except LedgerError:
            return None

    def _lock_hint(self, env: str, held: LockRow) -> str:
        alive = held.holder_alive()
        flow = self._flow_of(held)
        resumable = flow == "promote"  # the one flow with --resume/--abort
        if alive is False and held.run_id and resumable:
            return (f"That process is gone. Finish its run with `invoke promote --to={env} --resume`, undo it with "
                    f"`invoke promote --to={env} --abort`, or break the lock with "
                    f"`invoke lock.release --env={env} --force`.")
        if alive is False and held.run_id:
            return (f"That process is gone and its {flow or 'run'} {held.run_id} did not finish. Break the lock with "
                    f"`invoke lock.release --env={env} --force`, check `invoke status`, then run the "
                    f"{flow or 'task'} again (it is safe to repeat).")
        if alive is False:
            return f"That process is gone; break the lock with `invoke lock.release --env={env} --force`."
        if alive is None:
            bound = clock.age(STALE_AFTER_SECONDS)
            how = (f"take it over with `invoke promote --to={env} --abort --break-lock` (or `--resume --break-lock`)"
                   if resumable else f"break it with `invoke lock.release --env={env} --force`")
            silent = held.silence()
            seen = (f"it showed life {clock.age(silent)} ago" if silent is not None
                    else "its heartbeat cannot be timed from here")
            return (f"The lock is held {_where(held)}, so this machine cannot tell whether its holder is alive; "
                    f"{seen}. Wait for it (see `invoke status`). "
                    f"Only if that run is really gone, {how}: refused while the holder showed life within "
                    f"the last {bound}.")
        return "Wait for it to finish (see `invoke status`), or ask its owner."

    def _read_locks(self, where: ColumnElement[bool] | None = None) -> list[LockRow]:
        """Lock rows, each with the ledger's clock read in the same query (see LockRow.silence)."""
        t = self.t["locks"]
        q = t.select().add_columns(self._clock().label("ledger_now"))
        if where is not None:
            q = q.where(where)
        with self._tx(read=True) as c:
            rows = c.execute(q).mappings().all()
        boot = liveness.boottime()
        return [LockRow(**{**dict(r), "ledger_now": float(r["ledger_now"])}, shared_clock=self.shared_clock,
                        read_boot=boot) for r in rows]

    def lock(self, env: str) -> LockRow | None:
        rows = self._read_locks(self.t["locks"].c.env == env)
        return rows[0] if rows else None

    def locks(self) -> list[LockRow]:
        return self._read_locks()

    def release_lock(self, env: str, *, run_id: str | None = None) -> bool:
        """Release the lock held by this run and this process (its token; any lock of this process
        when run_id is None); a lock another runner took over is left to it."""
        t = self.t["locks"]
        cond = (t.c.env == env) & self._mine(t)
        if run_id:
            cond = cond & (t.c.run_id == run_id)
        with self._tx() as c:
            return bool(c.execute(t.delete().where(cond)).rowcount > 0)

    def break_lock(self, env: str, *, max_age_seconds: float, force: bool) -> LockRow | None:
        """Remove a lock whose holder is provably gone, or one this process cannot check that is older
        than the limit and whose heartbeat has been silent for the staleness bound; refuse a live or
        beating one."""
        held = self.lock(env)
        if held is None:
            return None
        alive = held.holder_alive()
        if not force:
            raise LockHeld(f"The {env} environment is locked by {held.describe()}.",
                           f"Breaking a lock needs --force: `invoke lock.release --env={env} --force`.")
        old = (held.ledger_now or time.time()) - held.acquired_at > max_age_seconds
        if alive is True:
            raise LockHeld(f"The {env} lock is held by a live process on this machine: {held.describe()}.",
                           f"Wait for it, or stop that process (pid {held.pid}): a live holder is never broken, and "
                           "one that is gone can be taken over at once.")
        if alive is None and not old:
            raise LockHeld(
                f"The {env} lock is held by a live process, or one this machine cannot check, that is younger "
                f"than the limit: {held.describe()}.",
                f"Wait for it, stop it, or raise lock.max_age_minutes in env/{env}.toml "
                f"(now {int(max_age_seconds // 60)} minutes).",
            )
        if alive is None:
            _refuse_while_showing_life(env, held, self._silence(env, held), "--force breaks", "invoke lock.status")
        t = self.t["locks"]
        with self._tx() as c:
            c.execute(t.delete().where((t.c.env == env) & (t.c.acquired_at == held.acquired_at) & _same_holder(t, held)))
        if held.run_id:
            run = self.run(held.run_id)
            if run.status == "running":
                self.update_run(held.run_id, status="failed", finished_at=NOW,
                                error="lock broken by lock.release --force; the run did not finish")
        return held

    # ------------------------------------------------------------ approvals and drills
    def approve(self, *, env: str, sha: str, role: str, by: str, note: str | None = None) -> None:
        from sqlalchemy.exc import IntegrityError

        try:
            with self._tx() as c:
                c.execute(self.t["approvals"].insert().values(env=env, sha=sha, role=role, by=by, at=time.time(), note=note))
        except IntegrityError:
            pass  # the same person approving the same role twice is one approval

    def approvals(self, env: str, sha: str | None = None) -> list[ApprovalRow]:
        t = self.t["approvals"]
        q = t.select().where(t.c.env == env)
        if sha:
            q = q.where(t.c.sha == sha)
        with self._tx(read=True) as c:
            return [ApprovalRow.of(r) for r in c.execute(q.order_by(t.c.at)).mappings()]

    def record_drill(self, *, env: str, procedure: str, started_at: float, finished_at: float, outcome: str,
                     durations: dict[str, float], run_id: str | None = None, note: str | None = None) -> int:
        with self._tx() as c:
            res = c.execute(self.t["drills"].insert().values(
                env=env, procedure=procedure, who=whoami(), started_at=started_at, finished_at=finished_at,
                outcome=outcome, durations=json.dumps(durations), run_id=run_id, note=note))
            return int(res.inserted_primary_key[0])  # type: ignore[index]  # one key on an insert

    def drills(self, env: str | None = None, procedure: str | None = None, limit: int = 50) -> list[DrillRow]:
        t = self.t["drills"]
        q = t.select()
        if env:
            q = q.where(t.c.env == env)
        if procedure:
            q = q.where(t.c.procedure == procedure)
        with self._tx(read=True) as c:
            rows = c.execute(q.order_by(t.c.started_at.desc()).limit(limit)).mappings()
            return [DrillRow.of(r) for r in rows]


def _plain(values: dict[str, Any]) -> None:
    """Statuses are stored as their text (a database driver may adapt an enum by its name)."""
    for k, v in values.items():
        if isinstance(v, StrEnum):
            values[k] = str(v)


def _run_row(r: Mapping[Any, Any]) -> RunRow:
    d = dict(r)
    d["args"] = json.loads(d.get("args") or "{}")
    d["state"] = facts.loads(d.get("state"))
    d["status"] = RunStatus(d["status"])
    return RunRow(**d)
