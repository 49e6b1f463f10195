"""Postgres backups: `pg_dump --format=custom` of one exported snapshot, with the per-table
row counts taken inside that very snapshot (`pg_export_snapshot()` + `pg_dump --snapshot`),
so a verify compares the restored copy with exactly what was dumped while the app keeps
writing; a verify restores into a scratch database on the same server and drops it; a
restore renders the dump as SQL with `pg_restore` and runs it with `psql
--single-transaction` after dropping and recreating the dumped schemas, so the database is
either exactly the dump (objects created after the backup are gone) or, on any error,
unchanged."""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from deploy import dburl, proc
from deploy.backups.store import Backup, free_name, sha256_file, write_sidecars
from deploy.backups.tools import check_tool_version, find_tool, lock_timeout_sql, tool_url_and_env
from deploy.errors import BackupFailed
from deploy.migrations import connection_error
from deploy.private import create_private
from deploy.redact import redact


def connect(u: dburl.DbUrl, autocommit: bool = True):
    import psycopg

    try:
        return psycopg.connect(u.conninfo(), autocommit=autocommit)
    except psycopg.Error as e:
        err = connection_error(u, e)
        raise BackupFailed(err.message, err.hint) from None


TABLES_SQL = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
)


def pg_counts(conn) -> tuple[tuple[str, int], ...]:
    from psycopg import sql

    out = []
    for schema, table in conn.execute(TABLES_SQL).fetchall():
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        out.append((f"{schema}.{table}", n.fetchone()[0]))
    return tuple(out)


def snapshot_text(conn) -> str | None:
    """The transaction's snapshot as text (Postgres >= 13), or None where there is none to read."""
    try:
        return str(conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0])
    except Exception as e:
        if not type(e).__module__.startswith("psycopg"):
            raise
        return None


def dump(u: dburl.DbUrl, out_dir: Path, env: str, sha: str, created: datetime, *, bin_dir: str | Path | None,
         lock_timeout: float, timeout: float) -> Backup:
    """pg_dump of the database at `u` into `out_dir`, counted inside the dump's snapshot."""
    path = free_name(out_dir, created, sha, "dump")
    conn = connect(u, autocommit=False)
    try:
        server = conn.info.server_version
        pg_dump = find_tool("pg_dump", server // 10000, bin_dir)
        ver = proc.run([pg_dump, "--version"], timeout=30)
        check_tool_version("pg_dump", ver.stdout, server)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if lock_timeout > 0:  # the row counts wait on a table a migration or the app holds locked
            conn.execute(lock_timeout_sql(lock_timeout).strip())
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        seen = snapshot_text(conn)
        try:
            counts = pg_counts(conn)
        except Exception as e:
            if not type(e).__module__.startswith("psycopg"):
                raise
            first = redact(str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackupFailed(f"Counting the rows of {u.masked} for the backup failed: {first}.",
                               "A lock timeout means another session holds a table locked (a migration, a console): "
                               "let it finish, or raise database.lock_timeout, then run again.") from None
        tool_url, env_vars = tool_url_and_env(u)
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
    write_sidecars(b)
    return b


def pg_dump_argv(pg_dump: str, snapshot: str, out: Path, conninfo: str, lock_timeout: float = 0) -> list[str]:
    """pg_dump of one exported snapshot into `out` (custom format); `conninfo` holds no password."""
    argv = [pg_dump, "--format=custom", "--no-password", f"--snapshot={snapshot}", f"--file={out}"]
    if lock_timeout > 0:
        argv.append(f"--lock-wait-timeout={int(lock_timeout * 1000)}ms")
    return argv + [f"--dbname={conninfo}"]


def scratch_counts(b: Backup, u: dburl.DbUrl, bin_dir: str | Path | None) -> dict[str, int]:
    """The per-table row counts of the dump restored into a scratch database on the server
    of `u` (created and dropped here; the role needs CREATEDB)."""
    scratch = f"occ_verify_{secrets.token_hex(4)}"
    admin = connect(u)
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
            restore_into(b, su, server, bin_dir, clean=False)
            with connect(su) as conn:
                counts = dict(pg_counts(conn))
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    finally:
        admin.close()
    return counts


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


SYSTEM_SCHEMA = re.compile(r"^(pg_.*|information_schema)\Z")


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


def restore_into(b: Backup, target: dburl.DbUrl, server: int, bin_dir, *, clean: bool,
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
            with connect(target) as conn:
                existing = schema_facts(conn)
            before, after = restore_sql(dump_schemas(body), [t.split(".", 1)[0] for t, _ in b.tables], existing)
        prefix = lock_timeout_sql(lock_timeout) if lock_timeout else ""
        fd = os.open(script, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as fh:
            fh.write(prefix + before + body + "\n" + after)
        tool_url, env_vars = tool_url_and_env(target)
        res = proc.run([psql, "-X", "-q", "--no-password", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                        f"--file={script}", f"--dbname={tool_url}"], env=env_vars, timeout=3600)
        if not res.ok:
            raise BackupFailed(f"Restoring {b.path.name} into {target.masked} failed; the database is unchanged "
                               f"(one transaction):\n{res.explain()}",
                               "Read the psql error above (a lock timeout: stop what holds the tables and run "
                               "again; permission denied: restore as the role that owns the schemas).")


def restore(b: Backup, u: dburl.DbUrl, bin_dir: str | Path | None, lock_timeout: float) -> tuple[tuple[str, int], ...]:
    """Replace the database at `u` with the dump `b`; the row counts afterwards."""
    if b.path.suffix != ".dump":
        raise BackupFailed(f"{b.path.name} is a SQLite copy; {u.masked} is Postgres.")
    with connect(u) as conn:
        server = conn.info.server_version
    restore_into(b, u, server, bin_dir, clean=True, lock_timeout=lock_timeout)
    with connect(u) as conn:
        counts = pg_counts(conn)
    return counts
