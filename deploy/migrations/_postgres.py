"""The Postgres backend (psycopg 3, imported only when a Postgres URL is opened)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Iterable

from deploy import dburl
from deploy.errors import LockHeld
from deploy.migrations._backend import MIGRATIONS_TABLE, Db, Statement, Timeouts, connection_error
from deploy.migrations._sql import transaction_control, without_transaction_control
from deploy.migrations._status import MigrationRecord

ADVISORY_LOCK_ID = 72707369          # flavour/postgres.rs: "a unique number we chose to identify Migrate"

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

SCHEMAS_SQL = ("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
               "AND nspname <> 'information_schema' ORDER BY 1")

# The objects of a schema a migration can create, as (kind, DROP keyword, name or signature,
# owned sequence): relations, types and routines. Not an extension's members (pg_depend
# deptype 'e': PostGIS's tables, pgcrypto's functions, citext's type), nor what exists only as
# part of another object (deptype 'i': a table's row type, an array type, a range's functions),
# nor PostGIS's tables (Prisma ignores them too).
OBJECTS_SQL = """\
SELECT 'relation', CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
       WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.relname::text,
       c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                   AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND c.relname !~* '^(spatial_ref_sys|geometry_columns)$'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
UNION ALL
SELECT 'type', 'TYPE', t.typname::text, false
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = %(s)s AND t.typtype IN ('b', 'c', 'd', 'e', 'r', 'm')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                  AND d.deptype IN ('e', 'i'))
UNION ALL
SELECT 'routine', 'ROUTINE', p.oid::regprocedure::text, false
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(s)s
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype IN ('e', 'i'))
"""


def _key(row: tuple) -> str:
    """A Footprint's name for one OBJECTS_SQL row: "relation:Shop", "type:Plan", "routine:touch()"."""
    return f"{row[0]}:{row[2]}"


# sql-schema-connector/src/sql_schema_differ_flavour/postgres.rs, table_should_be_ignored: PostGIS's
# tables, which Prisma never counts as the user's (so PostGIS in `public` is no P3005).
_IGNORED_TABLES = re.compile(r"^(spatial_ref_sys|geometry_columns)$", re.I)


def table_should_be_ignored(name: str) -> bool:
    """Prisma's rule for Postgres tables that are not the app's (PostGIS's)."""
    return bool(_IGNORED_TABLES.match(name))


def session_settings_sql(t: Timeouts) -> list[str]:
    """`SET` statements for a Postgres migration session: a statement waiting on a table lock
    (an app transaction, a long SELECT) fails after `lock_timeout` instead of queueing every
    later query of the app behind it (Postgres' lock queue)."""
    return [f"SET lock_timeout = '{int(t.lock * 1000)}ms'",
            f"SET statement_timeout = '{int(t.statement * 1000)}ms'"]


class PostgresDb(Db):
    """A psycopg connection in autocommit, with the session's lock and statement timeouts."""

    provider = "postgresql"
    table_ddl = POSTGRES_TABLE_DDL

    @classmethod
    def open(cls, url: dburl.DbUrl, *, create: bool = True, timeouts: Timeouts | None = None) -> "PostgresDb":
        """Connect (the database must exist: `create` is for SQLite files); the session gets the
        timeouts' lock_timeout and statement_timeout."""
        import psycopg

        timeouts = timeouts or Timeouts()
        try:
            conn = psycopg.connect(url.conninfo(), autocommit=True)
            for stmt in session_settings_sql(timeouts):
                conn.execute(stmt)
        except psycopg.Error as e:
            raise connection_error(url, e) from None
        return cls(url, conn, timeouts)

    def acquire_lock(self, timeout: float) -> None:
        """pg_advisory_lock(72707369), polled, so we can time out and say who holds it."""
        deadline = time.monotonic() + timeout
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

    def release_lock(self) -> None:
        try:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
        except Exception:  # the session ends right after; the server frees the lock then
            pass

    def ph(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def ts(self, dt: datetime) -> datetime:
        return dt

    def record(self, row: tuple) -> MigrationRecord:
        return MigrationRecord(*row)

    def table_exists(self) -> bool:
        # current_schema() is NULL while the URL's ?schema= does not exist yet (status read before
        # the first migrate creates it): no table then, where format('%I', NULL) would raise.
        return self.query("SELECT to_regclass(quote_ident(current_schema()) || '._prisma_migrations') "
                          "IS NOT NULL")[0][0]

    def user_tables(self) -> list[str]:
        # Tables an extension created (pg_depend deptype 'e') are not the app's.
        rows = self.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() AND NOT EXISTS ("
            "SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
            "AND d.deptype = 'e') ORDER BY 1"
        )
        return [r[0] for r in rows if r[0] != MIGRATIONS_TABLE and not table_should_be_ignored(r[0])]

    def schemas(self) -> tuple[str, ...]:
        return tuple(r[0] for r in self.query(SCHEMAS_SQL))

    def objects(self) -> tuple[str, ...]:
        return tuple(sorted(_key(r) for r in self.query(OBJECTS_SQL, {"s": self.url.schema})))

    def prepare_schema(self) -> None:
        if self.url.schema != "public":
            self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.url.schema}"')

    def run_in_transaction(self, script: str, then: Iterable[Statement]) -> None:
        script = without_transaction_control(script) or script   # a down.sql's own BEGIN/COMMIT, too
        with self.conn.transaction():
            self.conn.execute(script)          # no params: simple protocol, many statements
            for sql, params in then:
                self.conn.execute(sql, params)

    def apply(self, script: str, rid: str) -> Exception | None:
        import psycopg

        self.partial = False
        # A script with its own plain BEGIN; ... COMMIT; (Prisma writes these for enum changes)
        # runs with them left out, inside our one transaction: its inner COMMIT would otherwise end
        # our transaction early, and a failure after it would leave part of it committed.
        body = without_transaction_control(script)
        if body is not None:
            try:
                self.run_in_transaction(body, [self.finish_sql(rid)])
                return None
            except psycopg.errors.ActiveSqlTransaction:
                # 25001: the script holds a statement that refuses a transaction block (CREATE INDEX
                # CONCURRENTLY; ADD VALUE before Postgres 12). Our transaction rolled back; run it the
                # way Prisma does, then record success separately, as Prisma does.
                pass
            except psycopg.errors.UnsafeNewEnumValueUsage as e:
                # 55P04 from a script whose own COMMIT made a new enum value usable: as written, then.
                if body == script:
                    return e
            except psycopg.Error as e:
                return e
        try:
            self.conn.execute(script)          # one simple-query execution, autocommit (as Prisma)
        except psycopg.Error as e:
            # With its own COMMIT, what ran before the failing statement's transaction stays committed.
            self.partial = bool(transaction_control(script))
            return e
        self.conn.execute(*self.finish_sql(rid))
        return None

    @classmethod
    def empty(cls, url: dburl.DbUrl, before, timeouts: Timeouts) -> str:
        """Drop what a run created in a database that was empty: the schemas that did not exist,
        and the objects of the target schema that are not in `before.objects` (an extension's
        members never are objects: DROP EXTENSION is not ours to do)."""
        from psycopg import sql

        kept = set(getattr(before, "objects", ()) or ())
        db = cls.open(url, create=False, timeouts=timeouts)
        with db:
            new = [n for n in db.schemas() if n not in before.schemas]
            with db.conn.transaction():
                for n in new:
                    db.conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(n)))
                # Tables (with their sequences, indexes and constraints), views, then the types and
                # routines a migration made. A sequence a column owns goes with its table.
                found = [r for r in db.query(OBJECTS_SQL, {"s": url.schema}) if _key(r) not in kept]
                rels = [r for r in found if r[0] == "relation" and not r[3]]
                types = [r for r in found if r[0] == "type"]
                funcs = [r for r in found if r[0] == "routine"]
                for _, kind, name, _ in rels + types:
                    db.conn.execute(sql.SQL(f"DROP {kind} IF EXISTS {{}}.{{}} CASCADE").format(
                        sql.Identifier(url.schema), sql.Identifier(name)))
                for _, _, sig, _ in funcs:
                    db.conn.execute(f"DROP ROUTINE IF EXISTS {sig} CASCADE")
        what = [f"{len(rels)} relation(s)"] + ([f"{len(types)} type(s)"] if types else []) + \
            ([f"{len(funcs)} routine(s)"] if funcs else []) + ([f"schema(s) {', '.join(new)}"] if new else [])
        kept_note = f"; kept the {len(kept)} object(s) there before" if kept else ""
        return f"dropped {', '.join(what)} this run created in {url.masked}{kept_note}: empty again"
