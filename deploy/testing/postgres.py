"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl in a temp
dir, listening on a free 127.0.0.1 port, password auth over TCP.

`initdb` refuses to run as root, so when the euid is 0 every server binary runs as the
`postgres` OS user (`runuser -u postgres --`) and the cluster directory is owned by it.

Fixtures (loaded as a pytest plugin by tests/conftest.py):
- `pg_cluster`: one cluster per test session; fails (does not skip) when the server
  binaries are missing, because a skipped database suite would look green.
- `pg_url`: a fresh, empty database on that cluster for each test.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SUPERUSER = "postgres"
_SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")


class PostgresMissing(RuntimeError):
    pass


def find_bin(tool: str) -> str:
    """The newest installed server's `tool` (Debian keeps them off PATH), else PATH's."""
    def major(path: str) -> float:
        try:
            return float(Path(path).parts[-3])
        except (ValueError, IndexError):
            return 0.0

    for cand in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=major, reverse=True):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(tool)
    if found:
        return found
    raise PostgresMissing(
        f"PostgreSQL server binary `{tool}` was not found in /usr/lib/postgresql/*/bin or on PATH. "
        "The database tests need a real server: apt-get install -y postgresql (Debian/Ubuntu)."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """One running cluster. `url` is the superuser's URL (password auth on 127.0.0.1)."""

    def __init__(self, base_dir: str | Path | None = None, *, user: str = SUPERUSER):
        self.bindir = Path(find_bin("initdb")).parent
        for tool in _SERVER_TOOLS:
            if not (self.bindir / tool).exists():
                find_bin(tool)  # raises with the install hint
        self.as_root = os.geteuid() == 0
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="occ-pg-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self._running = False
        self._counter = itertools.count(1)
        self._init()
        self.start()
        atexit.register(self.stop)

    # ------------------------------------------------------------ plumbing

    def _argv(self, tool: str, *args: str) -> list[str]:
        exe = str(self.bindir / tool)
        if self.as_root:
            return ["runuser", "-u", "postgres", "--", exe, *args]
        return [exe, *args]

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run(self._argv(tool, *args), capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if p.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}\n"
                f"server log: {self.log}"
            )
        return p

    def _init(self) -> None:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
            timeout=120,
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start the server on a free loopback port (retries if the port was taken meanwhile)."""
        last = None
        for _ in range(5):
            self.port = _free_port()
            # Durability is pointless for a throwaway cluster; these make tests several times faster.
            opts = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            try:
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", opts)
                self._running = True
                return
            except RuntimeError as e:
                last = e
                time.sleep(0.2)
        raise RuntimeError(f"could not start PostgreSQL: {last}")

    def stop(self, remove: bool = True) -> None:
        """Stop the server (fast) and, by default, delete its directory."""
        if self._running:
            try:
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                subprocess.run(self._argv("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate"),
                               capture_output=True)
            self._running = False
        if remove and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Restart the server on the same port (pg_ctl reuses postmaster.opts); `fast`
        terminates every open session, as a database failover or a crash recovery would."""
        self._run("pg_ctl", "restart", "-w", "-t", "60", "-D", str(self.data), "-m", mode, "-l", str(self.log))
        self._running = True

    # ------------------------------------------------------------ public

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def major_version(self) -> int:
        return int((self.data / "PG_VERSION").read_text().strip().split(".")[0])

    def url_for(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        user = user or self.user
        password = self.password if password is None else password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        """The superuser's URL to the `postgres` database."""
        return self.url_for("postgres")

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        import psycopg

        return psycopg.connect(self.url_for(dbname), autocommit=autocommit)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser and return its rows (if any)."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return the superuser's URL to it."""
        name = name or f"t{next(self._counter)}_{secrets.token_hex(3)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def tool(self, name: str) -> str:
        """The path of a client tool (pg_dump, psql, ...) of this server's version."""
        p = self.bindir / name
        return str(p) if p.exists() else find_bin(name)

    def __repr__(self) -> str:
        return f"PostgresCluster(port={self.port}, dir={self.dir})"


# What psql's `\\dn+` shows (describe.c, listSchemas): name, owner, access privileges, description.
DN_PLUS_SQL = (
    "SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), "
    "pg_catalog.array_to_string(n.nspacl, E'\\n'), pg_catalog.obj_description(n.oid, 'pg_namespace') "
    "FROM pg_catalog.pg_namespace n WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1"
)


def schemas(url: str) -> list[tuple]:
    """`\\dn+` of the database at `url`, as rows (name, owner, access privileges, description)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(DN_PLUS_SQL).fetchall()


class TableLock:
    """Another session holding `LOCK TABLE ... IN <mode> MODE` in an open transaction, as an app
    transaction or a console session would. It gives the lock up after `release_after` seconds
    at the latest, so code that waits unbounded makes its test fail (the wait then succeeds)
    instead of hanging the suite."""

    def __init__(self, url: str, table: str, mode: str = "ACCESS EXCLUSIVE", release_after: float = 60.0):
        import threading

        import psycopg
        from psycopg import sql

        self.conn = psycopg.connect(url)
        self.conn.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.Identifier(table)))
        self.pid = self.conn.info.backend_pid
        self.released = threading.Event()
        self._timer = threading.Timer(release_after, self.release)
        self._timer.daemon = True
        self._timer.start()

    def release(self) -> None:
        if not self.released.is_set():
            self.released.set()
            try:
                self.conn.rollback()
                self.conn.close()
            except Exception:
                pass

    def __enter__(self) -> "TableLock":
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.release()


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def pg_cluster():
    """A running cluster for the whole session; fails loudly if Postgres is not installed."""
    try:
        cluster = PostgresCluster()
    except PostgresMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """The superuser's URL to a fresh, empty database."""
    return pg_cluster.create_database()


# ---------------------------------------------------------------- Prisma migration folders

PRISMA_LOCK = (
    "# Please do not edit this file manually\n"
    "# It should be added in your version-control system (e.g., Git)\n"
    'provider = "{provider}"\n'
)


def write_migrations(root: str | Path, migrations: dict, provider: str = "postgresql") -> Path:
    """A `prisma/migrations` folder under `root` as Prisma lays it out.

    `migrations` maps a folder name to its migration.sql text, or to (migration.sql, down.sql),
    or to None for a folder without migration.sql. Returns the migrations folder.
    """
    d = Path(root) / "prisma" / "migrations"
    d.mkdir(parents=True, exist_ok=True)
    (d / "migration_lock.toml").write_text(PRISMA_LOCK.format(provider=provider))
    for name, body in migrations.items():
        m = d / name
        m.mkdir(exist_ok=True)
        if body is None:
            continue
        up, down = body if isinstance(body, tuple) else (body, None)
        (m / "migration.sql").write_text(up)
        if down is not None:
            (m / "down.sql").write_text(down)
    return d
