"""Opening the ledger (SQLite by default, Postgres through DEPLOY_LEDGER_URL), its clock, and its
transactions: a database failure becomes one LedgerError saying what could not be done."""

from __future__ import annotations

import getpass
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Self

from deploy import dburl
from deploy.dburl import mask as dburl_mask
from deploy.errors import DeployError, LedgerError
from deploy.private import create_private, make_private, private_dir
from deploy.redact import mask_url, redact
from deploy.ledger._schema import define_schema, prepare_schema

if TYPE_CHECKING:   # SQLAlchemy is imported when the ledger opens, never at start-up
    from sqlalchemy import ColumnElement, Connection, Engine, Table


class _Now:
    """`finished_at=NOW` (or `started_at=NOW`): the time on the ledger's clock when it is written."""

    def __repr__(self) -> str:
        return "NOW"


NOW = _Now()


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


class LedgerStore:
    """The ledger database opened: its engine and tables, its clock, and one transaction at a time."""

    def __init__(self, engine: Engine, tables: dict[str, Table]):
        self.engine = engine
        self.t = tables
        # Postgres has one clock every runner reads (the server's): run, release, step and lock
        # times come from it. SQLite has none; times are this machine's wall clock, runs and
        # releases are kept in the order they were filed, and liveness uses CLOCK_BOOTTIME.
        self.shared_clock = engine.dialect.name == "postgresql"

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

    @classmethod
    def open(cls, root: Path | None = None, url: str | None = None) -> Self:
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
            md, tables = define_schema()
            prepare_schema(engine, md, tables, mask_url(url))
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
