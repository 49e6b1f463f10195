"""Backups on the real cluster and on SQLite files: take, verify, restore, prune, provision."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from deploy import backups as B
from deploy import dburl
from deploy import migrations as M
from deploy.errors import BackupFailed, SettingsError, ToolMissing

HISTORY = Path(__file__).parent / "fixtures" / "migrations" / "postgres_history"
SQLITE_APP = Path(__file__).parent / "fixtures" / "migrations" / "sqlite_app"
T0 = datetime(2026, 3, 1, 8, 30, 0, tzinfo=timezone.utc)


def q(url, sql):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def app_db(pg_url):
    M.migrate(pg_url, HISTORY)
    q(pg_url, 'INSERT INTO "Session" (id, shop, state, "accessToken") '
              "SELECT g::text, 'shop', 's', 't' FROM generate_series(1, 250) g")
    return pg_url


# ---------------------------------------------------------------- pure

def test_two_backups_of_the_same_second_get_two_names_in_time_order(tmp_path):
    (tmp_path / B.backup_name(T0, "abc1234")).write_bytes(b"first")
    (tmp_path / (B.backup_name(T0 + timedelta(seconds=1), "abc1234") + ".partial")).write_bytes(b"being written")
    second = B.free_name(tmp_path, T0, "abc1234", "dump")
    assert second.name == "20260301T083002Z-abc1234.dump"
    assert B.select_to_prune([B.backup_name(T0, "abc1234"), second.name], keep=1) == [B.backup_name(T0, "abc1234")]


def test_backup_name_is_utc_stamp_and_short_sha():
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    assert B.backup_name(local, "0123456789abcdef") == "20260301T083000Z-0123456.dump"
    assert B.backup_name(T0, "", "sqlite") == "20260301T083000Z-nosha.sqlite"


@pytest.mark.parametrize("output, server, ok", [
    ("pg_dump (PostgreSQL) 15.5 (Debian 15.5-0+deb12u1)", 150005, True),
    ("pg_dump (PostgreSQL) 16.2", 150005, True),
    ("pg_dump (PostgreSQL) 14.11 (Ubuntu 14.11-0ubuntu0.22.04.1)", 150005, False),
    ("pg_dump (PostgreSQL) 9.6.24", 100023, False),
], ids=["same-major", "newer-client", "older-client", "9.x-client-vs-10"])
def test_pg_dump_older_than_the_server_is_refused(output, server, ok):
    if ok:
        B.check_tool_version("pg_dump", output, server)
    else:
        with pytest.raises(BackupFailed, match="older pg_dump cannot read a newer server") as e:
            B.check_tool_version("pg_dump", output, server)
        assert "postgresql-client-" in e.value.hint


def test_retention_keeps_the_newest():
    names = [B.backup_name(T0 + timedelta(days=i), "abc1234") for i in range(7)] + ["notes.txt"]
    assert B.select_to_prune(names, 5) == names[:2]
    assert B.select_to_prune(names[:3], 5) == []
    with pytest.raises(SettingsError):
        B.select_to_prune(names, 0)


# ---------------------------------------------------------------- Postgres

def test_backup_writes_dump_sidecar_and_counts_then_verifies(app_db, tmp_path, pg_cluster):
    b = B.backup(app_db, tmp_path, "staging", "0123456789abcdef", now=lambda: T0)
    assert b.path == tmp_path / "staging" / "20260301T083000Z-0123456.dump"
    assert b.path.read_bytes()[:5] == b"PGDMP"                         # pg_dump's custom format
    assert (tmp_path / "staging" / (b.path.name + ".sha256")).read_text() == f"{b.sha256}  {b.path.name}\n"
    counts = dict(b.tables)
    assert counts["public.Session"] == 250 and counts["public._prisma_migrations"] == len(
        [p for p in HISTORY.iterdir() if p.is_dir()])
    assert B.load_backup(b.path) == b
    result = B.verify(b.path, app_db)
    assert result.ok and len(result.counts) == len(b.tables)
    assert not any(n.startswith("occ_verify_") for (n,) in q(pg_cluster.url, "select datname from pg_database"))


def test_verify_catches_a_corrupt_file(app_db, tmp_path):
    b = B.backup(app_db, tmp_path, "staging", "abc1234", now=lambda: T0)
    data = bytearray(b.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    b.path.write_bytes(bytes(data))
    with pytest.raises(BackupFailed, match="corrupt"):
        B.verify(b.path, app_db)


def test_restore_brings_back_data_and_removes_later_objects(app_db, tmp_path):
    b = B.backup(app_db, tmp_path, "staging", "abc1234", now=lambda: T0)
    q(app_db, 'DELETE FROM "Session"')
    # What a later, failed deploy would leave behind: a new table.
    q(app_db, 'CREATE TABLE "Later" ("id" TEXT)')
    r = B.restore(b.path, app_db)
    counts = dict(r.tables)
    assert counts["public.Session"] == 250 and "public.Later" not in counts
    assert M.status(app_db, HISTORY).up_to_date


PG15_PUBLIC = B.SchemaFacts("public", "pg_database_owner",
                            "{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}",
                            (("pg_database_owner", "USAGE", False), ("pg_database_owner", "CREATE", False),
                             ("PUBLIC", "USAGE", False)), "standard public schema")


@pytest.mark.parametrize("created, tables, existing, before, after", [
    ((), ("public",), (PG15_PUBLIC,),
     ['DROP SCHEMA IF EXISTS "public" CASCADE;', 'CREATE SCHEMA "public";'],
     ["COMMENT ON SCHEMA \"public\" IS 'standard public schema';",
      'ALTER SCHEMA "public" OWNER TO "pg_database_owner";',
      'REVOKE ALL ON SCHEMA "public" FROM PUBLIC;', 'REVOKE ALL ON SCHEMA "public" FROM "pg_database_owner";',
      'GRANT USAGE ON SCHEMA "public" TO "pg_database_owner";',
      'GRANT CREATE ON SCHEMA "public" TO "pg_database_owner";', 'GRANT USAGE ON SCHEMA "public" TO PUBLIC;']),
    (("extensions",), ("public",), (B.SchemaFacts("extensions", "app", None), B.SchemaFacts("public", "app", None)),
     ['DROP SCHEMA IF EXISTS "extensions" CASCADE;', 'DROP SCHEMA IF EXISTS "public" CASCADE;',
      'CREATE SCHEMA "public";'],
     ['ALTER SCHEMA "public" OWNER TO "app";']),
    ((), ("public",), (B.SchemaFacts("audit", "app", None), B.SchemaFacts("public", "app", None),
                       B.SchemaFacts("postgis_topology", "app", None, extension=True),
                       B.SchemaFacts("vault", "supabase_admin", None, droppable=False)),
     ['DROP SCHEMA IF EXISTS "audit" CASCADE;', 'DROP SCHEMA IF EXISTS "public" CASCADE;',
      'CREATE SCHEMA "public";'],
     ['ALTER SCHEMA "public" OWNER TO "app";']),
    (("MySchema",), ("MySchema",), (), ['CREATE SCHEMA "public";'], []),
], ids=["pg15-public-kept-as-it-was", "function-only-schema-dropped-then-created-by-the-dump",
        "later-schema-dropped-extension-and-foreign-kept", "empty-target"])
def test_restore_sql_drops_what_the_dump_does_not_hold_and_keeps_public_as_it_was(
        created, tables, existing, before, after):
    pre, post = B.restore_sql(created, tables, existing)
    assert pre.splitlines() == before
    assert post.splitlines() == after


def test_dump_schemas_reads_quoted_and_plain_names():
    body = 'CREATE SCHEMA extensions;\nCREATE SCHEMA "My""Schema";\nCREATE TABLE public.x (id int);\n'
    assert B.dump_schemas(body) == ("extensions", 'My"Schema')


def test_restore_returns_schemas_owner_and_grants_exactly(app_db, tmp_path):
    from deploy.testing.postgres import schemas

    # Supabase keeps functions in their own schema: one that holds no table at all.
    q(app_db, "CREATE SCHEMA extensions; CREATE FUNCTION extensions.gen_id() RETURNS text LANGUAGE sql "
              "AS $$ SELECT md5(random()::text) $$")
    at_backup = schemas(app_db)
    assert ("public", "pg_database_owner", "pg_database_owner=UC/pg_database_owner\n=U/pg_database_owner",
            "standard public schema") in at_backup
    b = B.backup(app_db, tmp_path, "staging", "abc1234", now=lambda: T0)
    # What a failed deploy leaves: a new schema with a table, changed rows.
    q(app_db, 'CREATE SCHEMA audit; CREATE TABLE audit.events (id int); DELETE FROM "Session"')
    r = B.restore(b.path, app_db)
    assert schemas(app_db) == at_backup
    assert dict(r.tables)["public.Session"] == 250 and "audit.events" not in dict(r.tables)
    assert len(q(app_db, "SELECT extensions.gen_id()")[0][0]) == 32
    # and again: a restore over a restored database is no special case
    B.restore(b.path, app_db)
    assert schemas(app_db) == at_backup


def test_restore_as_the_database_owner_keeps_public_as_postgres_15_made_it(pg_cluster, tmp_path):
    from deploy.testing.postgres import schemas

    name = "own_" + __import__("secrets").token_hex(3)
    q(pg_cluster.url, f"DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN PASSWORD 'ownerpw'")
    q(pg_cluster.url, f'CREATE DATABASE "{name}" OWNER {name}')
    url = pg_cluster.url_for(name, user=name, password="ownerpw")
    M.migrate(url, HISTORY)
    q(url, "CREATE SCHEMA extensions; CREATE FUNCTION extensions.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$")
    at_backup = schemas(url)
    b = B.backup(url, tmp_path, "staging", "abc1234", now=lambda: T0)
    q(url, "CREATE SCHEMA later")
    B.restore(b.path, url)
    assert schemas(url) == at_backup


def test_failed_restore_leaves_the_database_unchanged(app_db, tmp_path, pg_cluster):
    b = B.backup(app_db, tmp_path, "staging", "abc1234", now=lambda: T0)
    q(app_db, 'DELETE FROM "Session" WHERE id::int > 100')
    dbname = app_db.rsplit("/", 1)[1]
    # A role that may read and drop nothing: the restore fails part-way, inside its transaction.
    q(pg_cluster.url, "DROP ROLE IF EXISTS weak; CREATE ROLE weak LOGIN PASSWORD 'weakpw'")
    q(app_db, "GRANT CONNECT ON DATABASE \"%s\" TO weak" % dbname)
    weak = pg_cluster.url_for(dbname, user="weak", password="weakpw")
    with pytest.raises(BackupFailed, match="unchanged") as e:
        B.restore(b.path, weak)
    assert "weakpw" not in str(e.value)
    assert q(app_db, 'SELECT count(*) FROM "Session"') == [(100,)]


def test_pg_dump_missing_is_a_clear_error(app_db, tmp_path):
    empty = tmp_path / "nobin"
    empty.mkdir()
    with pytest.raises(ToolMissing, match="pg_dump") as e:
        B.backup(app_db, tmp_path / "b", "staging", "abc1234", bin_dir=empty)
    assert "postgresql-client" in e.value.hint
    assert list((tmp_path / "b" / "staging").iterdir()) == []


def test_backup_of_unreachable_database_masks_the_password(tmp_path):
    with pytest.raises(BackupFailed) as e:
        B.backup("postgresql://app:Zq9-secret@127.0.0.1:1/occ", tmp_path, "staging", "abc1234")
    assert "Zq9-secret" not in str(e.value) and "postgresql://app:***@127.0.0.1:1/occ" in str(e.value)


def test_prune_removes_oldest_with_sidecars(app_db, tmp_path):
    made = [B.backup(app_db, tmp_path, "staging", "abc1234", now=lambda i=i: T0 + timedelta(minutes=i)).path
            for i in range(3)]
    removed = B.prune(tmp_path, "staging", keep=2)
    assert removed == (made[0],)
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == sorted(
        n for p in made[1:] for n in (p.name, p.name + ".sha256", p.name + ".json"))
    assert B.latest(tmp_path, "staging").path == made[2]


def test_provision_creates_role_and_database_and_returns_a_secret_url(pg_cluster):
    r = B.provision(pg_cluster.url, "occ_prov_test", "occ_prov_app")
    assert r.created_role and r.created_database
    assert str(r.url) == "***" and "***" in r.masked_url and r.url.reveal() not in r.masked_url
    info = dburl.parse(r.url).conninfo()
    with psycopg.connect(info) as c:
        assert c.execute("select current_user, current_database()").fetchone() == ("occ_prov_app", "occ_prov_test")
    with pytest.raises(BackupFailed, match="already exists") as e:
        B.provision(pg_cluster.url, "occ_prov_test", "occ_prov_app")
    assert "--reset-password" in e.value.hint
    again = B.provision(pg_cluster.url, "occ_prov_test", "occ_prov_app", reset_password=True)
    assert not again.created_role and not again.created_database and again.url.reveal() != r.url.reveal()
    with pytest.raises(SettingsError):
        B.provision(pg_cluster.url, "bad-name;drop", "x")


# ---------------------------------------------------------------- SQLite

def test_sqlite_backup_verify_restore(tmp_path):
    import shutil
    import sqlite3

    d = tmp_path / "prisma" / "migrations"
    shutil.copytree(SQLITE_APP, d)
    M.migrate("file:./dev.db", d)
    db = d.parent / "dev.db"
    with sqlite3.connect(db) as c:
        c.execute("insert into Operator (id, shop, name) values ('o1', 's', 'n')")
    b = B.backup("file:./dev.db", tmp_path / "bk", "local", "abc1234", now=lambda: T0, sqlite_base=d.parent)
    assert b.path.name == "20260301T083000Z-abc1234.sqlite" and dict(b.tables)["Operator"] == 1
    assert B.verify(b.path).ok
    with sqlite3.connect(db) as c:
        c.execute("delete from Operator")
    r = B.restore(b.path, "file:./dev.db", sqlite_base=d.parent)
    assert dict(r.tables)["Operator"] == 1
    b.path.write_bytes(b.path.read_bytes()[:-10])
    with pytest.raises(BackupFailed, match="corrupt"):
        B.verify(b.path)


@pytest.mark.parametrize("lock_timeout, tail", [
    (0, []), (2.5, ["--lock-wait-timeout=2500ms"]),
], ids=["no-bound", "lock-timeout-from-settings"])
def test_pg_dump_argv_dumps_the_snapshot_without_a_password(lock_timeout, tail):
    argv = B.pg_dump_argv("/usr/lib/postgresql/15/bin/pg_dump", "00000003-0000001B-1", Path("/b/x.dump.partial"),
                          "user=app dbname=occ host=db port=5432", lock_timeout)
    assert argv == ["/usr/lib/postgresql/15/bin/pg_dump", "--format=custom", "--no-password",
                    "--snapshot=00000003-0000001B-1", "--file=/b/x.dump.partial", *tail,
                    "--dbname=user=app dbname=occ host=db port=5432"]
