"""Verified database backups: take, verify, restore, prune; and provisioning a database.

Postgres: `pg_dump --format=custom` to `<backup_dir>/<env>/<UTC timestamp>-<sha7>.dump`, with
a `.sha256` sidecar (`sha256sum` format) and a `.json` manifest holding the per-table row
counts. The counts are taken inside the very snapshot pg_dump dumps (`pg_export_snapshot()`
+ `pg_dump --snapshot`), so "verify" compares the restored copy with exactly what was
dumped, even while the app keeps writing.

- verify: checksum, then `pg_restore` into a scratch database on the same server, per-table
  row counts compared with the manifest, scratch database dropped.
- restore: `pg_restore` renders the dump as SQL; `psql --single-transaction` runs it after
  dropping and recreating the dumped schemas, so the database is either exactly the dump
  (objects created after the backup, such as a failed migration's tables, are gone) or,
  on any error, unchanged.
- SQLite: a consistent copy through SQLite's online backup API (`Connection.backup`),
  verified by `PRAGMA integrity_check` and row counts; restore copies it back the same way.

The password never reaches argv: the tools get the URL without it and `PGPASSWORD` in
their environment.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from deploy import dburl, proc
from deploy.config import DatabaseSection
from deploy.errors import BackupFailed, SettingsError, ToolMissing
from deploy.migrations import connection_error
from deploy.private import create_private, make_private, private_dir, write_private
from deploy.redact import Secret, mask_url, redact, reveal

STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<sha>[0-9a-zA-Z]{1,40}|nosha)\.(?P<ext>dump|sqlite)$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Backup:
    path: Path
    sha256: str
    created_at: datetime
    env: str
    sha: str
    tables: tuple[tuple[str, int], ...]       # (schema-qualified table, rows) at dump time
    # Postgres: the dump's snapshot (pg_current_snapshot() text, "xmin:xmax:xip,..."), so rows
    # written since can be told apart by their xmin (`written_since`); None: not recorded.
    snapshot: str | None = None


@dataclass(frozen=True)
class TableCount:
    table: str
    expected: int
    actual: int | None                        # None: the table is missing in the restored copy

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class VerifyResult:
    backup: Backup
    counts: tuple[TableCount, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.counts)

    @property
    def mismatches(self) -> tuple[TableCount, ...]:
        return tuple(c for c in self.counts if not c.ok)


@dataclass(frozen=True)
class RestoreResult:
    backup: Backup
    url: str                                  # masked
    tables: tuple[tuple[str, int], ...]       # row counts after the restore


@dataclass(frozen=True)
class ProvisionResult:
    role: str
    database: str
    url: Secret                               # includes the generated password; write it only where secrets go
    masked_url: str
    created_role: bool
    created_database: bool


# ---------------------------------------------------------------- pure parts

def backup_name(created_at: datetime, sha: str, ext: str = "dump") -> str:
    """`<UTC timestamp>-<sha7>.<ext>`; names sort by time."""
    stamp = created_at.astimezone(timezone.utc).strftime(STAMP)
    short = re.sub(r"[^0-9a-zA-Z]", "", sha)[:7] or "nosha"
    return f"{stamp}-{short}.{ext}"


def free_name(out_dir: Path, created_at: datetime, sha: str, ext: str) -> Path:
    """The backup's path: named by its second, or by the next free one when a backup of
    the same second exists (a retry, promote's backup then `db.backup`). Names stay unique
    and in time order; the sidecar keeps the exact time."""
    for n in range(3600):
        path = out_dir / backup_name(created_at + timedelta(seconds=n), sha, ext)
        if not path.exists() and not path.with_name(path.name + ".partial").exists():
            return path
    raise BackupFailed(f"{out_dir} holds a backup for every second of the next hour.",
                       "Prune old backups (database.backup_keep) and run again.")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_tool_major(version_output: str) -> int:
    """`pg_dump (PostgreSQL) 15.5 (Debian 15.5-1)` -> 15; `... 9.6.24` -> 9."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_output)
    if not m:
        raise BackupFailed(f"Cannot read the version from {version_output.strip()[:80]!r}.")
    return int(m.group(1))


def check_tool_version(tool: str, version_output: str, server_version_num: int) -> int:
    """BackupFailed when the client tool's major version is older than the server's."""
    tool_major = parse_tool_major(version_output)
    server_major = server_version_num // 10000 if server_version_num >= 100000 else server_version_num // 100
    if tool_major < server_major:
        raise BackupFailed(
            f"{tool} is version {tool_major} but the server runs PostgreSQL {server_major}; an older {tool} "
            f"cannot read a newer server.",
            f"Install postgresql-client-{server_major} (apt-get install -y postgresql-client-{server_major}) "
            f"or set the tools folder to /usr/lib/postgresql/{server_major}/bin.",
        )
    return tool_major


def select_to_prune(names: Sequence[str], keep: int) -> list[str]:
    """The backup file names beyond the newest `keep` (names sort by time)."""
    if keep < 1:
        raise SettingsError(f"database.backup_keep = {keep}: keep at least one backup.")
    ordered = sorted(n for n in names if _NAME.match(n))
    return ordered[:-keep] if len(ordered) > keep else []


# ---------------------------------------------------------------- tools

def find_tool(name: str, server_major: int | None = None, bin_dir: str | Path | None = None) -> str:
    """`name` from `bin_dir` if given; else the server's major version's Debian folder, the
    newest installed one, then PATH."""
    if bin_dir is not None:
        try:
            return proc.which(name, path=str(bin_dir))
        except ToolMissing as e:
            raise ToolMissing(f"`{name}` is not in {bin_dir} (database.bin_dir).",
                              f"Point database.bin_dir at the folder holding pg_dump, pg_restore and psql "
                              f"(e.g. /usr/lib/postgresql/<server major>/bin), or empty it to pick them by the "
                              f"server's version. {e.hint or ''}".strip()) from None
    if server_major is not None:
        cand = Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
        if cand.exists():
            return str(cand)
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return found[-1]
    return proc.which(name)


def _tool_url_and_env(u: dburl.DbUrl) -> tuple[str, dict[str, str]]:
    """The libpq conninfo without its password (for argv) and PGPASSWORD (for the environment)."""
    from psycopg.conninfo import make_conninfo

    params = u.params()
    env: dict[str, str] = {}
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = Secret(password)
    return make_conninfo("", **params), env


def lock_timeout_sql(seconds: float) -> str:
    """`SET lock_timeout` for a tool session (0: wait as long as it takes)."""
    return f"SET lock_timeout = '{int(max(seconds, 0) * 1000)}ms';\n"


# ---------------------------------------------------------------- Postgres helpers

def _connect(u: dburl.DbUrl, autocommit: bool = True):
    import psycopg

    try:
        return psycopg.connect(u.conninfo(), autocommit=autocommit)
    except psycopg.Error as e:
        err = connection_error(u, e)
        raise BackupFailed(err.message, err.hint) from None


_TABLES_SQL = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
)


def _pg_counts(conn) -> tuple[tuple[str, int], ...]:
    from psycopg import sql

    out = []
    for schema, table in conn.execute(_TABLES_SQL).fetchall():
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        out.append((f"{schema}.{table}", n.fetchone()[0]))
    return tuple(out)


def _snapshot_text(conn) -> str | None:
    """The transaction's snapshot as text (Postgres >= 13), or None where there is none to read."""
    try:
        return str(conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0])
    except Exception as e:
        if not type(e).__module__.startswith("psycopg"):
            raise
        return None


def _sqlite_counts(conn: sqlite3.Connection) -> tuple[tuple[str, int], ...]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return tuple((n, conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names
                 if not n.startswith("sqlite_"))


def _private_backup_dir(backup_dir: Path, env: str) -> Path:
    """`<backup_dir>/<env>/`, both 0700, and every file already in it 0600: fixed on every
    backup, so folders and dumps an older version left 0755/0644 do not stay readable."""
    private_dir(backup_dir)
    out_dir = private_dir(backup_dir / env)
    for p in out_dir.iterdir():
        if p.is_file() and not p.is_symlink():
            make_private(p)
    return out_dir


def _write_sidecars(b: Backup) -> None:
    write_private(b.path.with_name(b.path.name + ".sha256"), f"{b.sha256}  {b.path.name}\n")
    manifest = {
        "env": b.env, "sha": b.sha, "created_at": b.created_at.isoformat(), "sha256": b.sha256,
        "file": b.path.name, "tables": dict(b.tables), **({"snapshot": b.snapshot} if b.snapshot else {}),
    }
    write_private(b.path.with_name(b.path.name + ".json"), json.dumps(manifest, indent=2) + "\n")


def load_backup(path: str | Path) -> Backup:
    """A backup file and its sidecars; BackupFailed if they are missing or do not match."""
    p = Path(path)
    if not p.is_file():
        raise BackupFailed(f"Backup {p} does not exist.", f"Pass --file= one of the backup files in {p.parent}, "
                                                            "or take one with `invoke db.backup --env=<env>`.")
    side = p.with_name(p.name + ".sha256")
    if not side.is_file():
        raise BackupFailed(f"Backup {p} has no {side.name} sidecar; its integrity cannot be checked.")
    expected = side.read_text().split()[0] if side.read_text().split() else ""
    actual = sha256_file(p)
    if actual != expected:
        raise BackupFailed(f"Backup {p} is corrupt: SHA-256 {actual[:12]}... but the sidecar says {expected[:12]}...",
                           "Use another backup; this file was changed or truncated after it was written.")
    meta_path = p.with_name(p.name + ".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    m = _NAME.match(p.name)
    created = (datetime.fromisoformat(meta["created_at"]) if "created_at" in meta
               else datetime.strptime(m.group("stamp"), STAMP).replace(tzinfo=timezone.utc) if m
               else datetime.fromtimestamp(p.stat().st_mtime, timezone.utc))
    return Backup(p, actual, created, meta.get("env", p.parent.name), meta.get("sha", m.group("sha") if m else "") or "",
                  tuple(sorted((meta.get("tables") or {}).items())), meta.get("snapshot"))


def list_backups(backup_dir: str | Path, env: str) -> tuple[Path, ...]:
    """Backup files of `env`, oldest first."""
    d = Path(backup_dir) / env
    if not d.is_dir():
        return ()
    return tuple(sorted(p for p in d.iterdir() if _NAME.match(p.name)))


def latest(backup_dir: str | Path, env: str) -> Backup:
    found = list_backups(backup_dir, env)
    if not found:
        raise BackupFailed(f"No backups of {env!r} in {Path(backup_dir) / env}.",
                           f"Take one first: `invoke db.backup --env={env}`.")
    return load_backup(found[-1])


# ---------------------------------------------------------------- operations

def backup(
    url: str,
    backup_dir: str | Path,
    env: str,
    sha: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    bin_dir: str | Path | None = None,
    sqlite_base: str | Path | None = None,
    timeout: float = 3600,
    db: DatabaseSection | None = None,
) -> Backup:
    """Take a backup of the database at `url` into `<backup_dir>/<env>/`.

    `db` (the environment's settings) supplies `bin_dir` and `lock_timeout` (pg_dump's
    --lock-wait-timeout: a table locked by a migration or the app fails the dump, not hangs it)."""
    bin_dir, lock_timeout = _tool_settings(db, bin_dir)
    u = dburl.parse(url, sqlite_base=sqlite_base)
    out_dir = _private_backup_dir(Path(backup_dir), env)
    created = now().astimezone(timezone.utc)
    if u.provider == "sqlite":
        return _backup_sqlite(u, out_dir, env, sha, created)
    path = free_name(out_dir, created, sha, "dump")
    conn = _connect(u, autocommit=False)
    try:
        server = conn.info.server_version
        pg_dump = find_tool("pg_dump", server // 10000, bin_dir)
        ver = proc.run([pg_dump, "--version"], timeout=30)
        check_tool_version("pg_dump", ver.stdout, server)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if lock_timeout > 0:  # the row counts wait on a table a migration or the app holds locked
            conn.execute(lock_timeout_sql(lock_timeout).strip())
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        seen = _snapshot_text(conn)
        try:
            counts = _pg_counts(conn)
        except Exception as e:
            if not type(e).__module__.startswith("psycopg"):
                raise
            first = redact(str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackupFailed(f"Counting the rows of {u.masked} for the backup failed: {first}.",
                               "A lock timeout means another session holds a table locked (a migration, a console): "
                               "let it finish, or raise database.lock_timeout, then run again.") from None
        tool_url, env_vars = _tool_url_and_env(u)
        tmp = create_private(path.with_name(path.name + ".partial"))   # 0600 before pg_dump writes data
        res = proc.run(pg_dump_argv(pg_dump, snapshot, tmp, tool_url, lock_timeout), env=env_vars, timeout=timeout)
        if not res.ok:
            tmp.unlink(missing_ok=True)
            raise BackupFailed(f"pg_dump of {u.masked} failed (exit {res.returncode}):\n{res.explain()}",
                               "Check the role's permissions on every table, and disk space in the backup folder.")
        os.replace(tmp, path)
    finally:
        conn.close()
    b = Backup(path, sha256_file(path), created, env, sha, counts, seen)
    _write_sidecars(b)
    return b


def pg_dump_argv(pg_dump: str, snapshot: str, out: Path, conninfo: str, lock_timeout: float = 0) -> list[str]:
    """pg_dump of one exported snapshot into `out` (custom format); `conninfo` holds no password."""
    argv = [pg_dump, "--format=custom", "--no-password", f"--snapshot={snapshot}", f"--file={out}"]
    if lock_timeout > 0:
        argv.append(f"--lock-wait-timeout={int(lock_timeout * 1000)}ms")
    return argv + [f"--dbname={conninfo}"]


def _tool_settings(db: DatabaseSection | None, bin_dir) -> tuple[str | Path | None, float]:
    """(bin_dir, lock_timeout) from the environment's database settings, when given."""
    if db is None:
        return bin_dir, 0.0
    return (os.path.expanduser(db.bin_dir) if db.bin_dir else bin_dir), db.lock_timeout


def _backup_sqlite(u: dburl.DbUrl, out_dir: Path, env: str, sha: str, created: datetime) -> Backup:
    src_path = u.sqlite_path
    assert src_path is not None
    if not src_path.is_file():
        raise BackupFailed(f"SQLite database {src_path} does not exist; nothing to back up.")
    path = free_name(out_dir, created, sha, "sqlite")
    tmp = create_private(path.with_name(path.name + ".partial"))   # SQLite keeps an existing file's mode
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)                      # SQLite's online backup API: a consistent copy
        counts = _sqlite_counts(dst)
    except sqlite3.Error as e:
        tmp.unlink(missing_ok=True)
        raise BackupFailed(f"Backup of SQLite database {src_path} failed: {e}.") from None
    finally:
        dst.close()
        src.close()
    os.replace(tmp, path)
    b = Backup(path, sha256_file(path), created, env, sha, counts)
    _write_sidecars(b)
    return b


def verify(
    backup_path: str | Path,
    url: str | None = None,
    *,
    bin_dir: str | Path | None = None,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> VerifyResult:
    """Restore the backup into a scratch copy and compare per-table row counts with the manifest.

    For Postgres, `url` names the server (and credentials) on which the scratch database is
    created and dropped; the role needs CREATEDB."""
    b = load_backup(backup_path)
    if b.path.suffix == ".sqlite":
        try:
            with sqlite3.connect(f"file:{b.path}?mode=ro", uri=True) as c:
                check = c.execute("PRAGMA integrity_check").fetchone()[0]
                counts = dict(_sqlite_counts(c))
        except sqlite3.Error as e:
            raise BackupFailed(f"Backup {b.path} cannot be opened as SQLite: {e}.") from None
        if check != "ok":
            raise BackupFailed(f"Backup {b.path} fails SQLite's integrity check: {check}.")
        return VerifyResult(b, _compare(b.tables, counts))
    bin_dir, _ = _tool_settings(db, bin_dir)
    if url is None:
        raise SettingsError("Verifying a Postgres backup needs the server's URL (for the scratch database).")
    u = dburl.parse(url, sqlite_base=sqlite_base)
    scratch = f"occ_verify_{secrets.token_hex(4)}"
    admin = _connect(u)
    try:
        server = admin.info.server_version
        from psycopg import sql

        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        except Exception as e:
            raise BackupFailed(f"Cannot create the scratch database {scratch} on {u.masked}: {redact(e)}",
                               "The role needs CREATEDB to verify backups.") from None
        try:
            su = u.with_database(scratch)
            _pg_restore_into(b, su, server, bin_dir, clean=False)
            with _connect(su) as conn:
                counts = dict(_pg_counts(conn))
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    finally:
        admin.close()
    return VerifyResult(b, _compare(b.tables, counts))


def _compare(expected: Sequence[tuple[str, int]], actual: dict[str, int]) -> tuple[TableCount, ...]:
    names = sorted(set(dict(expected)) | set(actual))
    exp = dict(expected)
    return tuple(TableCount(n, exp.get(n, 0) if n in exp else -1, actual.get(n)) for n in names)


@dataclass(frozen=True)
class SchemaFacts:
    """One schema of the target database before a restore (what `\\dn+` shows, and more)."""

    name: str
    owner: str
    acl: str | None                               # nspacl as text; None: the default (owner only)
    grants: tuple[tuple[str, str, bool], ...] = ()  # (grantee or PUBLIC, privilege, grantable), in ACL order
    comment: str | None = None
    droppable: bool = True                        # the restoring role is a member of the owner
    extension: bool = False                       # created by an extension (pg_dump never dumps it)


_CREATE_SCHEMA = re.compile(r'^CREATE SCHEMA (?P<name>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*);$', re.M)
SYSTEM_SCHEMA = re.compile(r"^(pg_.*|information_schema)$")

_SCHEMAS_SQL = """
SELECT n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text, obj_description(n.oid, 'pg_namespace'),
       pg_has_role(n.nspowner, 'USAGE'),
       EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
               AND d.deptype = 'e'),
       coalesce((SELECT array_agg(ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                        a.privilege_type, a.is_grantable::text] ORDER BY a.ord)
                 FROM aclexplode(n.nspacl) WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, ord)),
                '{}')
FROM pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1
"""


def dump_schemas(script: str) -> tuple[str, ...]:
    """The schemas a rendered dump creates (pg_restore writes `CREATE SCHEMA name;` for each)."""
    out = []
    for m in _CREATE_SCHEMA.finditer(script):
        n = m.group("name")
        out.append(n[1:-1].replace('""', '"') if n.startswith('"') else n)
    return tuple(out)


def schema_facts(conn) -> tuple[SchemaFacts, ...]:
    """Every non-system schema of the database `conn` is connected to."""
    out = []
    for name, owner, acl, comment, member, ext, grants in conn.execute(_SCHEMAS_SQL).fetchall():
        out.append(SchemaFacts(name, owner, acl, tuple((g, p, v == "true") for g, p, v in grants), comment,
                               bool(member), bool(ext)))
    return tuple(out)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def restore_sql(created: Sequence[str], table_schemas: Sequence[str],
                existing: Sequence[SchemaFacts]) -> tuple[str, str]:
    """(before, after) the dump's SQL, so that the database ends up as the dump and nothing else.

    Before: drop every schema the dump holds and every schema created since (not the ones an
    extension owns, nor ones owned by roles the restoring role is no member of), then create
    the dumped schemas the dump itself does not create (`public`: pg_dump >= 15 never writes
    its CREATE). After: the owner, grants and comment of every schema the dump does not
    create, as they were (`public` keeps `pg_database_owner` and PUBLIC's USAGE); the dump does
    not create those schemas, so nothing else would bring them back. (The dump is rendered with
    --no-owner but with its privileges: the grants on its tables and sequences come back.)"""
    dumped = set(created) | set(table_schemas) | {"public"}
    before: list[str] = []
    after: list[str] = []
    by_name = {f.name: f for f in existing}
    for f in existing:
        if SYSTEM_SCHEMA.match(f.name) or f.extension:
            continue
        if f.name in dumped or f.droppable:
            before.append(f"DROP SCHEMA IF EXISTS {_ident(f.name)} CASCADE;")
    for name in sorted(dumped - set(created)):
        before.append(f"CREATE SCHEMA {_ident(name)};")
        found = by_name.get(name)
        if found is None:
            continue
        f = found
        if f.comment is not None:
            after.append(f"COMMENT ON SCHEMA {_ident(name)} IS {_literal(f.comment)};")
        after.append(f"ALTER SCHEMA {_ident(name)} OWNER TO {_ident(f.owner)};")
        if f.acl is not None:
            after.append(f"REVOKE ALL ON SCHEMA {_ident(name)} FROM PUBLIC;")
            after.append(f"REVOKE ALL ON SCHEMA {_ident(name)} FROM {_ident(f.owner)};")
            for grantee, privilege, grantable in f.grants:
                who = "PUBLIC" if grantee == "PUBLIC" else _ident(grantee)
                after.append(f"GRANT {privilege} ON SCHEMA {_ident(name)} TO {who}"
                             + (" WITH GRANT OPTION;" if grantable else ";"))
    return "".join(x + "\n" for x in before), "".join(x + "\n" for x in after)


def _pg_restore_into(b: Backup, target: dburl.DbUrl, server: int, bin_dir, *, clean: bool,
                     lock_timeout: float = 0) -> None:
    """Render the dump to SQL with pg_restore, run it with psql in ONE transaction."""
    pg_restore = find_tool("pg_restore", server // 10000, bin_dir)
    psql = find_tool("psql", server // 10000, bin_dir)
    check_tool_version("pg_restore", proc.run([pg_restore, "--version"], timeout=30).stdout, server)
    with tempfile.TemporaryDirectory(prefix="occ-restore-") as tmpd:
        script = Path(tmpd) / "restore.sql"
        # A restore (clean) keeps the dump's GRANTs on tables, sequences, routines and types: it targets
        # the server the dump came from, whose roles exist, and an app whose runtime role is not the
        # migration role needs them. A verify goes to a scratch database, maybe on another server.
        privileges = [] if clean else ["--no-privileges"]
        res = proc.run([pg_restore, "--no-owner", *privileges, f"--file={script}", str(b.path)], timeout=3600)
        if not res.ok:
            raise BackupFailed(f"pg_restore cannot read {b.path}:\n{res.explain()}")
        body = script.read_text()
        # pg_dump >= 15 emits no CREATE SCHEMA public; older dumps may: tolerate it.
        body = re.sub(r"^CREATE SCHEMA public;$", "CREATE SCHEMA IF NOT EXISTS public;", body, flags=re.M)
        before = after = ""
        if clean:
            with _connect(target) as conn:
                existing = schema_facts(conn)
            before, after = restore_sql(dump_schemas(body), [t.split(".", 1)[0] for t, _ in b.tables], existing)
        prefix = lock_timeout_sql(lock_timeout) if lock_timeout else ""
        fd = os.open(script, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as fh:
            fh.write(prefix + before + body + "\n" + after)
        tool_url, env_vars = _tool_url_and_env(target)
        res = proc.run([psql, "-X", "-q", "--no-password", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                        f"--file={script}", f"--dbname={tool_url}"], env=env_vars, timeout=3600)
        if not res.ok:
            raise BackupFailed(f"Restoring {b.path.name} into {target.masked} failed; the database is unchanged "
                               f"(one transaction):\n{res.explain()}",
                               "Read the psql error above (a lock timeout: stop what holds the tables and run "
                               "again; permission denied: restore as the role that owns the schemas).")


def restore(
    backup_path: str | Path,
    url: str,
    *,
    bin_dir: str | Path | None = None,
    sqlite_base: str | Path | None = None,
    db: DatabaseSection | None = None,
) -> RestoreResult:
    """Replace the database at `url` with the backup (after checking its SHA-256): afterwards it
    holds exactly the dump's schemas and objects (see `restore_sql`). `db` supplies `bin_dir`
    and `lock_timeout`. The caller asks for confirmation (`--yes`) on protected environments."""
    bin_dir, lock_timeout = _tool_settings(db, bin_dir)
    b = load_backup(backup_path)
    u = dburl.parse(url, sqlite_base=sqlite_base)
    if u.provider == "sqlite":
        if b.path.suffix != ".sqlite":
            raise BackupFailed(f"{b.path.name} is a Postgres dump; {u.masked} is SQLite.")
        assert u.sqlite_path is not None
        u.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{b.path}?mode=ro", uri=True)
        dst = sqlite3.connect(u.sqlite_path)
        try:
            src.backup(dst)
            counts = _sqlite_counts(dst)
        except sqlite3.Error as e:
            raise BackupFailed(f"Restoring {b.path.name} into {u.sqlite_path} failed: {e}.") from None
        finally:
            dst.close()
            src.close()
        return RestoreResult(b, u.masked, counts)
    if b.path.suffix != ".dump":
        raise BackupFailed(f"{b.path.name} is a SQLite copy; {u.masked} is Postgres.")
    with _connect(u) as conn:
        server = conn.info.server_version
    _pg_restore_into(b, u, server, bin_dir, clean=True, lock_timeout=lock_timeout)
    with _connect(u) as conn:
        counts = _pg_counts(conn)
    return RestoreResult(b, u.masked, counts)


# ---------------------------------------------------------------- what was written since a backup

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
                counts = _sqlite_counts(conn)
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise BackupFailed(f"Cannot count the rows of {u.sqlite_path}: {e}.") from None
    else:
        with _connect(u) as conn:
            if db is not None and db.lock_timeout > 0:
                conn.execute(lock_timeout_sql(db.lock_timeout).strip())
            counts = _pg_counts(conn)
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
    with _connect(u) as conn:
        if db is not None and db.lock_timeout > 0:
            conn.execute(lock_timeout_sql(db.lock_timeout).strip())
        for schema, table in conn.execute(_TABLES_SQL).fetchall():
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


def prune(backup_dir: str | Path, env: str, keep: int) -> tuple[Path, ...]:
    """Delete all but the newest `keep` backups of `env` (with their sidecars); returns what was removed."""
    files = list_backups(backup_dir, env)
    doomed = set(select_to_prune([p.name for p in files], keep))
    removed = []
    for p in files:
        if p.name in doomed:
            for f in (p, p.with_name(p.name + ".sha256"), p.with_name(p.name + ".json")):
                f.unlink(missing_ok=True)
            removed.append(p)
    return tuple(removed)


def provision(admin_url: str, db_name: str, role: str, *, schema: str = "public",
              reset_password: bool = False) -> ProvisionResult:
    """Create `role` (LOGIN, generated password) and `db_name` owned by it, if missing.

    An existing role keeps its password unless `reset_password`; then the URL returned holds
    the new one. The caller writes the URL only where secrets go and prints `masked_url`."""
    for what, name in (("database", db_name), ("role", role)):
        if not _IDENT.match(name or ""):
            raise SettingsError(f"{what} name {name!r} is not allowed.",
                                "Use lower-case letters, digits and underscores, starting with a letter.")
    u = dburl.parse(admin_url)
    if u.provider != "postgresql":
        raise SettingsError("db.provision needs a Postgres admin URL.", "SQLite files need no provisioning.")
    from psycopg import sql

    password = secrets.token_urlsafe(24)
    with _connect(u) as conn:
        has_role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
        has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchone() is not None
        if has_role and not reset_password:
            raise BackupFailed(
                f"Role {role!r} already exists on {u.masked}; its password is not known here.",
                "Run again with --reset-password to set a new one (the old URL stops working), or use another role.",
            )
        stmt = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if has_role else "CREATE ROLE {} WITH LOGIN PASSWORD {}"
        conn.execute(sql.SQL(stmt).format(sql.Identifier(role), sql.Literal(password)))
        if not has_db:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db_name), sql.Identifier(role)))
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db_name), sql.Identifier(role)))
    parts = urlsplit(reveal(admin_url))
    host = parts.netloc.rpartition("@")[2]
    plain = urlunsplit(("postgresql", f"{role}:{quote(password, safe='')}@{host}", f"/{db_name}",
                        f"schema={schema}", ""))
    secret = Secret(plain)
    return ProvisionResult(role, db_name, secret, mask_url(plain), not has_role, not has_db)


__all__ = [
    "Backup", "TableCount", "VerifyResult", "RestoreResult", "ProvisionResult", "backup_name", "sha256_file",
    "parse_tool_major", "check_tool_version", "select_to_prune", "find_tool", "load_backup", "list_backups",
    "latest", "backup", "verify", "restore", "prune", "provision", "SchemaFacts", "schema_facts", "dump_schemas",
    "restore_sql", "pg_dump_argv", "TableWrites", "Writes", "written_since", "app_rows",
]
