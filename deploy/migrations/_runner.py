"""Running migrations: the backend picked from the URL (BACKENDS), one session per change (parse,
provider check, open, lock), and migrate, rollback, resolve, status, footprint and
empty_database over it (the package docstring says how each follows Prisma and where it differs)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from deploy import dburl, proc
from deploy.config import DatabaseSection
from deploy.errors import MigrationFailed, SettingsError
from deploy.migrations._backend import (DEFAULT_LOCK_TIMEOUT, PARTIAL_NOTE, TIMEOUT_HINT, Db, Timeouts, db_error_text,
                                        is_db_error, timeout_note)
from deploy.migrations._files import (DOWN_SCRIPT, SCRIPT, LocalMigration, check_provider, checksum, load_migrations,
                                      refuse_invalid)
from deploy.migrations._postgres import PostgresDb
from deploy.migrations._sqlite import SqliteDb
from deploy.migrations._status import (MigrationRecord, StatusReport, compute_status, pending_migrations,
                                       refuse_failed)
from deploy.redact import redact

# The one place a provider picks its backend.
BACKENDS: dict[str, type[Db]] = {b.provider: b for b in (PostgresDb, SqliteDb)}

# user-facing-errors (schema_engine.rs, ApplyMigrationError / P3018): the text Prisma writes to `logs`.
_P3018 = (
    "A migration failed to apply. New migrations cannot be applied before the error is recovered from. "
    "Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve"
    "\n\nMigration name: {name}\n\nDatabase error code: {code}\n\nDatabase error:\n{error}"
)


# ---------------------------------------------------------------- results

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
class Footprint:
    """What a database held before a run, for taking it back to nothing: whether it existed
    (a SQLite file), the objects of the target schema (`Db.objects()`: Postgres relations,
    types and routines, not an extension's members; SQLite tables and views), whether it was
    empty (no such object, `_prisma_migrations` included: a function, enum or sequence alone
    makes it non-empty, so its undo is down.sql or the backup, never "empty it again"), and
    (Postgres) the schemas there were. The empty-again undo drops only what is in neither."""

    existed: bool
    empty: bool
    schemas: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()


def prisma_deploy_argv(migrations_dir: str | Path, npx: str = "npx") -> list[str]:
    """`npx prisma migrate deploy` for the schema beside the migrations folder."""
    schema = Path(migrations_dir).parent / "schema.prisma"
    argv = [npx, "--no", "prisma", "migrate", "deploy"]
    if schema.is_file():
        argv += ["--schema", str(schema)]
    return argv


# ---------------------------------------------------------------- one session

def backend_for(url: dburl.DbUrl) -> type[Db]:
    """The backend class for a parsed URL's provider."""
    return BACKENDS[url.provider]


def open_db(url: dburl.DbUrl, *, create: bool, timeouts: Timeouts | None = None) -> Db | None:
    """Open the URL's database with its backend; None for a SQLite file that does not exist
    when `create` is false."""
    return backend_for(url).open(url, create=create, timeouts=timeouts)


class _Session:
    """parse the URL -> check migration_lock.toml's provider (P3019), at construction; then, as
    a context manager, open -> take the migrate lock, and release the lock and close on the way
    out, whatever happened. `missing`: the error for a SQLite file that is not there (with
    `{path}`); without it such a session yields None (nothing to read)."""

    def __init__(self, url: str, migrations_dir: str | Path, *, sqlite_base: str | Path | None,
                 timeouts: Timeouts, create: bool = False, lock: bool = True, missing: str | None = None):
        self.url = dburl.parse(url, sqlite_base=sqlite_base if sqlite_base is not None else Path(migrations_dir).parent)
        check_provider(migrations_dir, self.url.provider)
        self.timeouts, self.create, self.lock, self.missing = timeouts, create, lock, missing
        self.db: Db | None = None

    def __enter__(self) -> Db | None:
        self.db = open_db(self.url, create=self.create, timeouts=self.timeouts)
        if self.db is None:
            if self.missing is not None:
                raise MigrationFailed(self.missing.replace("{path}", str(self.url.sqlite_path)))
            return None
        if self.lock:
            try:
                self.db.acquire_lock(self.timeouts.lock)
            except BaseException:
                self.db.close()
                raise
        return self.db

    def __exit__(self, *exc) -> None:
        if self.db is None:
            return
        try:
            if self.lock:
                self.db.release_lock()
        finally:
            self.db.close()


# ---------------------------------------------------------------- public operations

def status(url: str, migrations_dir: str | Path, *, sqlite_base: str | Path | None = None,
           db: DatabaseSection | None = None) -> StatusReport:
    """Applied, pending, failed and drifted migrations of the database at `url`."""
    local = load_migrations(migrations_dir)
    session = _Session(url, migrations_dir, sqlite_base=sqlite_base, timeouts=Timeouts.of(db), lock=False)
    with session as conn:
        exists = conn is not None and conn.table_exists()
        rows = conn.rows() if conn is not None and exists else []
    return StatusReport(session.url.masked, session.url.provider, compute_status(local, rows), exists)


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
    session = _Session(url, migrations_dir, sqlite_base=sqlite_base, timeouts=Timeouts.of(db, lock_timeout),
                       create=True)
    applied: list[str] = []
    current: str | None = None
    try:
        with session as conn:
            assert conn is not None
            conn.initialize()
            rows = conn.rows()
            refuse_failed(rows, session.url.masked)
            todo = pending_migrations(local, rows)
            refuse_invalid(todo)
            warnings = tuple(f"{s.name}: {s.detail}" for s in compute_status(local, rows) if s.is_drift)
            for m in todo:
                current = m.name
                _apply_one(conn, m)
                applied.append(m.name)
            current = None
    except MigrationFailed:
        raise
    except Exception as e:
        if not is_db_error(e):
            raise
        where = f" while applying {current}" if current else ""
        raise MigrationFailed(
            f"The connection to {session.url.masked} failed{where}: "
            f"{redact(str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__}."
            + (f" Applied before it: {', '.join(applied)}." if applied else ""),
            (f"The server rolled back {current}'s transaction. Check the database is up, then "
             f"`invoke db.status --env=<env>`; a row left unfinished is cleared with "
             f"`invoke db.resolve --env=<env> --rolled-back {current}`.") if current else
            "Check the database is up and reachable, then run again.",
            migration=current or None,
        ) from None
    return MigrateResult(session.url.masked, "builtin", tuple(applied), warnings, time.monotonic() - start)


def _apply_one(db: Db, m: LocalMigration) -> None:
    assert m.script is not None and m.checksum is not None
    rid = db.record_started(m.name, m.checksum)
    error = db.apply(m.script, rid)
    if error is None:
        return
    code, text = db_error_text(error, m.script)
    partial = getattr(db, "partial", False)
    try:
        db.record_failed(rid, _P3018.format(name=m.name, code=code, error=text) + (f"\n\n{PARTIAL_NOTE}" if partial else ""))
    except Exception as e:
        if not is_db_error(e):
            raise
        raise MigrationFailed(
            f"Migration {m.name} was cut off on {db.url.masked} (database error {code}): {redact(text)}",
            f"The connection was lost, so the server rolled the migration back and its row is left unfinished. "
            f"When the database is back: `invoke db.resolve --env=<env> --rolled-back {m.name}`, then migrate again.",
            migration=m.name,
        ) from None
    hint = (
        f"Nothing of it was applied. Fix {m.path / SCRIPT}, then run "
        f"`invoke db.resolve --env=<env> --rolled-back {m.name}` and migrate again."
    )
    if partial:
        raise MigrationFailed(
            f"Migration {m.name} failed on {db.url.masked} (P3018, database error code {code}) after part of it "
            f"was committed: it carries its own transaction control that cannot run inside one transaction, so it "
            f"ran as written. It is recorded as failed, not applied:\n{redact(text)}",
            f"See what of it is in the database (`invoke db.status --env=<env>`). Finish it by hand and run "
            f"`invoke db.resolve --env=<env> --applied {m.name}`, or take back what it committed and run "
            f"`invoke db.resolve --env=<env> --rolled-back {m.name}`; or restore the backup taken before it.",
            migration=m.name,
        )
    waited = timeout_note(code, db.timeouts)
    if waited:
        raise MigrationFailed(
            f"Migration {m.name} failed on {db.url.masked}{waited} (P3018, database error code {code}):\n{redact(text)}",
            TIMEOUT_HINT + f" Then `invoke db.resolve --env=<env> --rolled-back {m.name}` and migrate again.",
            migration=m.name,
        )
    if code == "55P04":
        hint = ("Postgres cannot use an enum value added by ALTER TYPE ... ADD VALUE in the same transaction. "
                "Move the ADD VALUE into its own, earlier migration (as `prisma migrate dev` does), then "
                f"`invoke db.resolve --env=<env> --rolled-back {m.name}` and migrate again.")
    raise MigrationFailed(
        f"Migration {m.name} failed on {db.url.masked} (P3018, database error code {code}):\n{redact(text)}",
        hint,
        migration=m.name,
    )


def _migrate_with_prisma(url: str, migrations_dir, *, url_var: str, npx: str, start: float,
                         extra_env: dict | None = None) -> MigrateResult:
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
            f"`{res.display}` failed with exit code {res.returncode} on {parsed.masked}:\n{res.explain()}",
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
    names: Sequence[str] | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> RollbackResult:
    """Undo the last `steps` applied migrations (by name) with their down.sql, newest first, each
    in a transaction with its row's `rolled_back_at`. Refuses, before touching anything, when one
    of them has no down.sql.

    `names` (instead of `steps`): undo exactly these migrations, e.g. the ones a run applied.
    They are undone in the reverse of the order they were APPLIED (`started_at`), not of their
    names: a deploy also applies an older pending migration merged from a branch, so the names
    of a run's migrations need not be the newest names. Refused (MigrationFailed, nothing
    changed) unless they are the last migrations applied: undoing one that a later-applied
    migration was written against could break that one, so a migration applied after them (and
    not among them) is never skipped over, nor rolled back in their stead."""
    if names is not None:
        names = list(dict.fromkeys(names))
        if not names:
            raise SettingsError("Name at least one migration to roll back.")
    elif steps < 1:
        raise SettingsError(f"--steps={steps}: roll back at least one migration.", "Use --steps=1 or more.")
    local = {m.name: m for m in load_migrations(migrations_dir)}
    timeouts = Timeouts.of(db, lock_timeout)
    session = _Session(url, migrations_dir, sqlite_base=sqlite_base, timeouts=timeouts,
                       missing="The SQLite database {path} does not exist: nothing to roll back.")
    masked = session.url.masked
    done: list[str] = []
    with session as conn:
        assert conn is not None
        rows = conn.rows()
        refuse_failed(rows, masked)
        applied: dict[str, MigrationRecord] = {}
        for r in rows:
            if r.is_active and r.finished_at is not None:
                applied[r.migration_name] = r
        if names is not None:
            targets = _named_targets(names, applied, masked)
        else:
            newest = sorted(applied, reverse=True)
            if len(newest) < steps:
                raise MigrationFailed(
                    f"Cannot roll back {steps} migration(s) on {masked}: only {len(newest)} applied.",
                    "Check `invoke db.status --env=<env>` and use a smaller --steps.",
                )
            targets = newest[:steps]
        missing = [n for n in targets if n not in local or not local[n].has_down]
        if missing:
            detail = "; ".join(
                f"{n}: {'no folder' if n not in local else 'no ' + DOWN_SCRIPT + ' in ' + str(local[n].path)}"
                for n in missing
            )
            raise MigrationFailed(
                f"Cannot roll back {', '.join(targets)} on {masked}: {detail}. Nothing was rolled back.",
                "Write the down.sql (`prisma migrate diff --from-schema-datamodel <new> --to-schema-datamodel "
                "<old> --script > down.sql`), or restore the backup taken before the deploy: "
                "`invoke db.restore --env=<env> --yes`.",
            )
        for n in targets:
            m = local[n]
            down = (m.path / DOWN_SCRIPT).read_text(encoding="utf-8")
            if not down.strip():
                raise MigrationFailed(f"{m.path / DOWN_SCRIPT} is empty; rolled back so far: {done or 'none'}.")
            try:
                conn.run_in_transaction(down, [conn.rolled_back_sql(applied[n].id)])
            except Exception as e:
                if not is_db_error(e):
                    raise
                code, text = db_error_text(e, down)
                waited = timeout_note(code, timeouts)
                raise MigrationFailed(
                    f"down.sql of {n} failed on {masked} ({code}){waited}; that migration is unchanged. "
                    f"Rolled back before it: {', '.join(done) or 'none'}.\n{redact(text)}",
                    TIMEOUT_HINT if waited else
                    f"Fix {m.path / DOWN_SCRIPT} and run the rollback again, or restore the backup.",
                ) from None
            done.append(n)
    return RollbackResult(masked, tuple(done))


def _named_targets(names: list[str], applied: dict[str, MigrationRecord], masked: str) -> list[str]:
    """`names` in the reverse of the order they were applied; refused unless they are the last
    ones applied (see `rollback`)."""
    missing = [n for n in names if n not in applied]
    if missing:
        raise MigrationFailed(
            f"Cannot roll back {', '.join(missing)} on {masked}: not applied there. Nothing was rolled back.",
            "Check `invoke db.status --env=<env>`.",
        )
    order = sorted(applied, key=lambda n: (applied[n].started_at, applied[n].finished_at, n), reverse=True)
    last = order[:len(names)]
    if set(last) != set(names):
        later = [n for n in last if n not in names]
        raise MigrationFailed(
            f"Cannot roll back {', '.join(sorted(names))} on {masked}: {', '.join(later)} was applied after "
            f"them and is not to be rolled back, and its SQL may depend on theirs. Nothing was rolled back.",
            "Roll back the later migration(s) first (`invoke db.rollback --env=<env> --steps=N`), "
            "or restore the backup taken before the deploy: `invoke db.restore --env=<env> --yes`.",
        )
    return last


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
    session = _Session(url, migrations_dir, sqlite_base=sqlite_base, timeouts=Timeouts.of(db, lock_timeout),
                       create=applied is not None,
                       missing=f"Migration {name} cannot be rolled back: " + "{path} does not exist (P3011).")
    masked = session.url.masked
    with session as conn:
        assert conn is not None
        if applied is not None:
            m = local.get(name)
            if m is None or m.script is None:
                raise MigrationFailed(
                    f"Migration {name} cannot be marked applied: no folder with a migration.sql "
                    f"in {migrations_dir} (P3017).",
                    "Check the name with `invoke db.status --env=<env>`.",
                )
            if not conn.table_exists():
                conn.create_table()  # baseline_initialize: no emptiness check, that is the point
            rows = [r for r in conn.rows() if r.migration_name == name]
            if any(r.finished_at is not None for r in rows):
                raise MigrationFailed(f"Migration {name} is already recorded as applied in {masked} (P3008).")
            for r in rows:
                if r.is_failed:
                    conn.mark_rolled_back(r.id)
            conn.mark_applied(name, checksum(m.script))
            return ResolveResult(masked, name, "applied")
        rows = [r for r in conn.rows() if r.migration_name == name]
        if not rows:
            raise MigrationFailed(
                f"Migration {name} cannot be rolled back because it was never applied to {masked} (P3011).")
        failed = [r for r in rows if r.is_failed]
        if not failed:
            raise MigrationFailed(
                f"Migration {name} cannot be rolled back because it is not in a failed state (P3012).",
                "To undo an applied migration use `invoke db.rollback --env=<env> --steps=N`.",
            )
        for r in failed:
            conn.mark_rolled_back(r.id)
        return ResolveResult(masked, name, "rolled_back")




# ---------------------------------------------------------------- first promotion: back to empty

def footprint(url: str, *, sqlite_base: str | Path | None = None, db: DatabaseSection | None = None) -> Footprint:
    """The database's footprint now (read-only; a missing SQLite file is not created)."""
    conn = open_db(dburl.parse(url, sqlite_base=sqlite_base), create=False, timeouts=Timeouts.of(db))
    if conn is None:
        return Footprint(existed=False, empty=True)
    with conn:
        objects = conn.objects()
        schemas = conn.schemas()
    return Footprint(existed=True, empty=not objects, schemas=schemas, objects=objects)


def empty_database(url: str, before: Footprint, *, sqlite_base: str | Path | None = None,
                   db: DatabaseSection | None = None) -> str:
    """Take a database that was empty before a run back to empty: remove the SQLite file the
    run created (or drop its tables and views), or drop what the run created in Postgres: the
    schemas that did not exist, and the objects of the target schema, never one recorded in
    `before.objects` nor an extension's member. Says what it did.
    Only for a database whose `before.empty` is true."""
    timeouts = Timeouts.of(db)
    if not before.empty:
        raise MigrationFailed("The database was not empty before this run: refusing to empty it.",
                              "Restore its backup instead (invoke db.restore).")
    parsed = dburl.parse(url, sqlite_base=sqlite_base)
    return backend_for(parsed).empty(parsed, before, timeouts)
