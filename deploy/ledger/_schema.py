"""The ledger's SQL schema and its forward migrations, applied when a ledger is opened.

The schema is versioned (`deploy_schema`, one row) and migrated forward when a ledger is
opened, before anything else reads or writes it: ordered migrations in MIGRATIONS, each a
small DDL change. A ledger made before versioning (no `deploy_schema`) gets the columns it
lacks when they are nullable, or a clear error naming the table and column; a ledger newer
than this toolkit is refused. (Alembic would do the same with more machinery; this schema is
six tables and a handful of additive changes, and it must stay out of `invoke --list`.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from deploy.errors import LedgerError

if TYPE_CHECKING:   # SQLAlchemy is imported when the ledger opens, never at start-up
    from sqlalchemy import Engine, MetaData, Table


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


def define_schema() -> tuple[MetaData, dict[str, Table]]:
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


def prepare_schema(engine: Engine, md: MetaData, tables: dict[str, Table], where: str) -> None:
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
