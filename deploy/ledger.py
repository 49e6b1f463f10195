"""The ledger: one small SQL schema for runs, steps, releases, locks, approvals and drills.

The default is SQLite in `<root>/.deploy/ledger.db`; `DEPLOY_LEDGER_URL` points every CI
runner at one Postgres so they share locks and history. Times are stored as UTC epoch
seconds (floats): comparable and portable across both databases.

SQLAlchemy is imported when a ledger is opened, never at start-up.
"""

from __future__ import annotations

from deploy import clock

import getpass
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.errors import DeployError, LedgerError, LockHeld
from deploy.dburl import mask as dburl_mask
from deploy.redact import redact

RUN_ACTIVE = ("running",)
RUN_FINAL = ("succeeded", "failed", "rolled_back", "aborted", "failed_in_place")


def _schema():
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, UniqueConstraint

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
    return md, dict(runs=runs, steps=steps, releases=releases, locks=locks, approvals=approvals, drills=drills)


@dataclass(frozen=True)
class RunRow:
    id: str
    env: str
    flow: str
    sha: str | None
    release_id: str | None
    artifact_sha256: str | None
    status: str
    who: str
    hostname: str
    pid: int
    started_at: float
    finished_at: float | None
    args: dict
    state: dict
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
    status: str
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    undo_status: str | None
    undo_result: str | None


@dataclass(frozen=True)
class LockRow:
    env: str
    run_id: str | None
    who: str
    hostname: str
    pid: int
    acquired_at: float
    purpose: str

    def holder_alive(self) -> bool | None:
        """True/False when the holder runs on this host; None when it is elsewhere."""
        if self.hostname != socket.gethostname():
            return None
        return pid_alive(self.pid)

    def describe(self, now: float | None = None) -> str:
        age = (now or time.time()) - self.acquired_at
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.acquired_at))
        run = f", run {self.run_id}" if self.run_id else ""
        return f"{self.who}@{self.hostname} (pid {self.pid}{run}, {self.purpose}) since {since} ({clock.age(age)} ago)"




def pid_alive(pid: int) -> bool:
    from deploy.proc import pid_alive as alive

    return alive(pid)


def whoami() -> str:
    for var in ("DEPLOY_WHO", "GITHUB_ACTOR"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid{os.getuid()}"


def default_url(root: Path) -> str:
    return os.environ.get("DEPLOY_LEDGER_URL") or f"sqlite:///{(root / '.deploy' / 'ledger.db').as_posix()}"


def _private_ledger(path: Path, root: Path) -> None:
    """The SQLite ledger holds the deploy history: 0600 (with its -wal/-shm), set on every
    open so a file an older version left 0644 is fixed. Its folder is made 0700 when it is
    the project's `.deploy/` or did not exist; a folder someone chose for it is left alone."""
    from deploy.private import create_private, make_private, private_dir

    folder = path.parent
    if not folder.exists() or folder.resolve() == (root / ".deploy").resolve():
        private_dir(folder)
    if not path.exists():
        create_private(path)    # SQLite then creates -wal/-shm with the database file's mode
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        make_private(p)


class Ledger:
    """Access to the ledger database. Open with `Ledger.open(root)`."""

    def __init__(self, engine, tables):
        self.engine = engine
        self.t = tables

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
            from deploy import dburl

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
                def _pragmas(dbapi_conn, _):  # WAL lets readers run beside the one writer
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()
            md, tables = _schema()
            md.create_all(engine)
        except SQLAlchemyError as e:
            raise LedgerError(
                f"Cannot open the ledger at {dburl_mask(url)}: {redact(str(e.orig if hasattr(e, 'orig') else e)).strip().splitlines()[0]}",
                "Check DEPLOY_LEDGER_URL (host, credentials, database) or unset it to use the local SQLite ledger.",
            ) from None
        return cls(engine, tables)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ runs and steps
    def start_run(self, *, env: str, flow: str, sha: str | None, steps: list[str], args: dict,
                  release_id: str | None = None, status: str = "running") -> str:
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self.engine.begin() as c:
            c.execute(self.t["runs"].insert().values(
                id=run_id, env=env, flow=flow, sha=sha, release_id=release_id, status=status,
                who=whoami(), hostname=socket.gethostname(), pid=os.getpid(), started_at=now,
                args=json.dumps(args, default=str), state="{}",
            ))
            if steps:
                c.execute(self.t["steps"].insert(), [
                    dict(run_id=run_id, idx=i, name=n, status="pending") for i, n in enumerate(steps)
                ])
        return run_id

    def update_run(self, run_id: str, **values) -> None:
        if "state" in values:
            values["state"] = redact(json.dumps(values["state"], default=str))
        if "error" in values and values["error"] is not None:
            values["error"] = redact(values["error"])
        with self.engine.begin() as c:
            c.execute(self.t["runs"].update().where(self.t["runs"].c.id == run_id).values(**values))

    def adopt_run(self, run_id: str) -> None:
        """This process takes over a run (resume/abort)."""
        self.update_run(run_id, pid=os.getpid(), hostname=socket.gethostname())

    def update_step(self, run_id: str, idx: int, **values) -> None:
        for k in ("result", "error", "undo_result"):
            if values.get(k) is not None:
                values[k] = redact(values[k])[:4000]
        t = self.t["steps"]
        with self.engine.begin() as c:
            c.execute(t.update().where((t.c.run_id == run_id) & (t.c.idx == idx)).values(**values))

    def run(self, run_id: str) -> RunRow:
        t = self.t["runs"]
        with self.engine.connect() as c:
            row = c.execute(t.select().where(t.c.id == run_id)).mappings().first()
        if row is None:
            raise LedgerError(f"No run {run_id!r} in the ledger.", "List runs with `invoke status`.")
        return _run_row(row)

    def steps(self, run_id: str) -> list[StepRow]:
        t = self.t["steps"]
        with self.engine.connect() as c:
            rows = c.execute(t.select().where(t.c.run_id == run_id).order_by(t.c.idx)).mappings().all()
        return [StepRow(**dict(r)) for r in rows]

    def runs(self, env: str | None = None, *, flow: str | None = None, status: str | tuple | None = None,
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
        with self.engine.connect() as c:
            return [_run_row(r) for r in c.execute(q).mappings().all()]

    # ------------------------------------------------------------ releases
    def record_release(self, *, env: str, release_id: str, sha: str, artifact_sha256: str | None,
                       run_id: str | None, status: str = "live", shopify_version: str | None = None) -> None:
        t = self.t["releases"]
        with self.engine.begin() as c:
            if status == "live":
                c.execute(t.update().where((t.c.env == env) & (t.c.status == "live")).values(status="superseded"))
            existing = c.execute(t.select().where((t.c.env == env) & (t.c.release_id == release_id))).first()
            vals = dict(sha=sha, artifact_sha256=artifact_sha256, run_id=run_id, status=status,
                        shopify_version=shopify_version)
            if existing:
                c.execute(t.update().where((t.c.env == env) & (t.c.release_id == release_id)).values(**vals))
            else:
                c.execute(t.insert().values(env=env, release_id=release_id, created_at=time.time(), **vals))

    def set_release_status(self, env: str, release_id: str, status: str) -> None:
        t = self.t["releases"]
        with self.engine.begin() as c:
            if status == "live":
                c.execute(t.update().where((t.c.env == env) & (t.c.status == "live")).values(status="superseded"))
            c.execute(t.update().where((t.c.env == env) & (t.c.release_id == release_id)).values(status=status))

    def releases(self, env: str, limit: int = 20) -> list[dict]:
        t = self.t["releases"]
        with self.engine.connect() as c:
            rows = c.execute(t.select().where(t.c.env == env).order_by(t.c.created_at.desc()).limit(limit)).mappings()
            return [dict(r) for r in rows]

    def live_release(self, env: str) -> dict | None:
        t = self.t["releases"]
        with self.engine.connect() as c:
            r = c.execute(t.select().where((t.c.env == env) & (t.c.status == "live"))).mappings().first()
        return dict(r) if r else None

    # ------------------------------------------------------------ locks
    def acquire_lock(self, env: str, *, run_id: str | None, purpose: str, takeover_run: str | None = None) -> None:
        """Take the environment's lock, or raise LockHeld naming the holder.

        `takeover_run`: the lock may be taken over from that run when its holder is dead
        (resume/abort of a killed run)."""
        from sqlalchemy.exc import IntegrityError

        t = self.t["locks"]
        row = dict(env=env, run_id=run_id, who=whoami(), hostname=socket.gethostname(), pid=os.getpid(),
                   acquired_at=time.time(), purpose=purpose)
        try:
            with self.engine.begin() as c:
                c.execute(t.insert().values(**row))
            return
        except IntegrityError:
            pass
        held = self.lock(env)
        if held is None:  # released between our insert and our read: try once more
            return self.acquire_lock(env, run_id=run_id, purpose=purpose, takeover_run=takeover_run)
        if takeover_run and held.run_id == takeover_run and held.holder_alive() is not True:
            with self.engine.begin() as c:
                res = c.execute(t.update().where((t.c.env == env) & (t.c.pid == held.pid) & (t.c.run_id == takeover_run))
                                .values(**row))
                if res.rowcount == 1:
                    return
            held = self.lock(env) or held
        raise LockHeld(
            f"The {env} environment is locked by {held.describe()}.",
            self._lock_hint(env, held),
        )

    def _lock_hint(self, env: str, held: LockRow) -> str:
        alive = held.holder_alive()
        if alive is False and held.run_id:
            return (f"That process is gone. Finish its run with `invoke promote --to={env} --resume`, undo it with "
                    f"`--abort`, or break the lock with `invoke lock.release --env={env} --force`.")
        if alive is False:
            return f"That process is gone; break the lock with `invoke lock.release --env={env} --force`."
        return "Wait for it to finish (see `invoke status`), or ask its owner."

    def lock(self, env: str) -> LockRow | None:
        t = self.t["locks"]
        with self.engine.connect() as c:
            r = c.execute(t.select().where(t.c.env == env)).mappings().first()
        return LockRow(**dict(r)) if r else None

    def locks(self) -> list[LockRow]:
        with self.engine.connect() as c:
            return [LockRow(**dict(r)) for r in c.execute(self.t["locks"].select()).mappings()]

    def release_lock(self, env: str, *, run_id: str | None = None) -> bool:
        """Release the lock held by this run (or by this process when run_id is None)."""
        t = self.t["locks"]
        cond = t.c.env == env
        cond = cond & ((t.c.run_id == run_id) if run_id else (t.c.pid == os.getpid()))
        with self.engine.begin() as c:
            return c.execute(t.delete().where(cond)).rowcount > 0

    def break_lock(self, env: str, *, max_age_seconds: float, force: bool, now: float | None = None) -> LockRow | None:
        """Remove a lock whose holder is dead or older than the limit; refuse a live, fresh one."""
        held = self.lock(env)
        if held is None:
            return None
        now = now or time.time()
        alive = held.holder_alive()
        stale = alive is False or (now - held.acquired_at) > max_age_seconds
        if not force:
            raise LockHeld(f"The {env} environment is locked by {held.describe(now)}.",
                           f"Breaking a lock needs --force: `invoke lock.release --env={env} --force`.")
        if not stale:
            raise LockHeld(
                f"The {env} lock is held by a live process that is younger than the limit: {held.describe(now)}.",
                f"Wait for it, stop it, or raise lock.max_age_minutes in env/{env}.toml "
                f"(now {int(max_age_seconds // 60)} minutes).",
            )
        t = self.t["locks"]
        with self.engine.begin() as c:
            c.execute(t.delete().where((t.c.env == env) & (t.c.acquired_at == held.acquired_at)))
        if held.run_id:
            run = self.run(held.run_id)
            if run.status == "running":
                self.update_run(held.run_id, status="failed", finished_at=now,
                                error="lock broken by lock.release --force; the run did not finish")
        return held

    # ------------------------------------------------------------ approvals and drills
    def approve(self, *, env: str, sha: str, role: str, by: str, note: str | None = None) -> None:
        from sqlalchemy.exc import IntegrityError

        try:
            with self.engine.begin() as c:
                c.execute(self.t["approvals"].insert().values(env=env, sha=sha, role=role, by=by, at=time.time(), note=note))
        except IntegrityError:
            pass  # the same person approving the same role twice is one approval

    def approvals(self, env: str, sha: str | None = None) -> list[dict]:
        t = self.t["approvals"]
        q = t.select().where(t.c.env == env)
        if sha:
            q = q.where(t.c.sha == sha)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.order_by(t.c.at)).mappings()]

    def record_drill(self, *, env: str, procedure: str, started_at: float, finished_at: float, outcome: str,
                     durations: dict, run_id: str | None = None, note: str | None = None) -> int:
        with self.engine.begin() as c:
            res = c.execute(self.t["drills"].insert().values(
                env=env, procedure=procedure, who=whoami(), started_at=started_at, finished_at=finished_at,
                outcome=outcome, durations=json.dumps(durations), run_id=run_id, note=note))
            return int(res.inserted_primary_key[0])

    def drills(self, env: str | None = None, procedure: str | None = None, limit: int = 50) -> list[dict]:
        t = self.t["drills"]
        q = t.select()
        if env:
            q = q.where(t.c.env == env)
        if procedure:
            q = q.where(t.c.procedure == procedure)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(t.c.started_at.desc()).limit(limit)).mappings()
            return [dict(r, durations=json.loads(r["durations"] or "{}")) for r in rows]


def _run_row(r) -> RunRow:
    d = dict(r)
    d["args"] = json.loads(d.get("args") or "{}")
    d["state"] = json.loads(d.get("state") or "{}")
    return RunRow(**d)
