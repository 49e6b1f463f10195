"""`migrations.footprint` / `migrations.empty_database`: the undo of a first promotion's
migrations, against a real SQLite file and a real Postgres database."""

from __future__ import annotations

import dataclasses
import sqlite3

import psycopg
import pytest

from deploy import migrations as M
from deploy.errors import MigrationFailed
from deploy.testing.postgres import write_migrations

PG_HISTORY = {
    "20240101000000_init": 'CREATE TYPE "Plan" AS ENUM (\'basic\', \'plus\');\n'
                           'CREATE TABLE "Shop" ("id" SERIAL PRIMARY KEY, "plan" "Plan" NOT NULL);\n'
                           'CREATE VIEW "ShopView" AS SELECT * FROM "Shop";\n'
                           'CREATE SCHEMA "audit";\nCREATE TABLE "audit"."log" ("id" INT);\n'
                           'CREATE FUNCTION "touch"() RETURNS INT LANGUAGE sql AS $$ SELECT 1 $$;\n'
                           'CREATE SEQUENCE "standalone_seq";\n',
}


def test_sqlite_file_created_by_the_run_is_removed(tmp_path):
    mdir = write_migrations(tmp_path / "app", {"20240101000000_init": 'CREATE TABLE "Shop" ("id" TEXT);\n'},
                            provider="sqlite")
    url = "file:./dev.sqlite"
    before = M.footprint(url, sqlite_base=mdir.parent)
    assert before == M.Footprint(existed=False, empty=True)
    assert not (mdir.parent / "dev.sqlite").exists()           # looking never creates the file
    M.migrate(url, mdir, sqlite_base=mdir.parent)
    assert M.empty_database(url, before, sqlite_base=mdir.parent) == "removed dev.sqlite, which this run created"
    assert not (mdir.parent / "dev.sqlite").exists()


def test_sqlite_file_that_existed_empty_keeps_existing_and_loses_every_table(tmp_path):
    mdir = write_migrations(tmp_path / "app", {"20240101000000_init": 'CREATE TABLE "Shop" ("id" TEXT);\n'
                                               'CREATE VIEW "V" AS SELECT * FROM "Shop";\n'}, provider="sqlite")
    db = mdir.parent / "dev.sqlite"
    sqlite3.connect(db).close()
    url = "file:./dev.sqlite"
    before = M.footprint(url, sqlite_base=mdir.parent)
    assert before == M.Footprint(existed=True, empty=True)
    M.migrate(url, mdir, sqlite_base=mdir.parent)
    assert "dropped 3 table(s)" in M.empty_database(url, before, sqlite_base=mdir.parent)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_a_database_with_tables_is_never_emptied(tmp_path):
    mdir = write_migrations(tmp_path / "app", {"20240101000000_init": 'CREATE TABLE "Shop" ("id" TEXT);\n'},
                            provider="sqlite")
    url = "file:./dev.sqlite"
    M.migrate(url, mdir, sqlite_base=mdir.parent)
    before = M.footprint(url, sqlite_base=mdir.parent)
    assert before.existed and not before.empty
    with pytest.raises(MigrationFailed, match="not empty before"):
        M.empty_database(url, before, sqlite_base=mdir.parent)
    assert (mdir.parent / "dev.sqlite").exists()


@pytest.mark.postgres
def test_postgres_objects_and_schemas_the_run_created_are_dropped(tmp_path, pg_cluster):
    url = pg_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute('CREATE SCHEMA "kept"; CREATE TABLE "kept"."t" ("id" INT)')   # another team's schema
    mdir = write_migrations(tmp_path / "app", PG_HISTORY)
    before = M.footprint(url)
    assert before.existed and before.empty and "kept" in before.schemas and "audit" not in before.schemas
    M.migrate(url, mdir)
    said = M.empty_database(url, before)
    assert "schema(s) audit" in said and "empty again" in said
    with psycopg.connect(url) as c:
        left = c.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname IN ('public', 'audit')").fetchall()
        assert left == []
        assert c.execute("SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                         "WHERE n.nspname = 'public' AND t.typtype = 'e'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                         "WHERE n.nspname = 'public'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM \"kept\".\"t\"").fetchone()[0] == 0   # untouched
    assert M.footprint(url).empty
    M.migrate(url, mdir)                                             # and the next promotion starts afresh
    assert M.status(url, mdir).up_to_date


@pytest.mark.postgres
def test_postgres_objects_there_before_the_run_are_never_dropped(tmp_path, pg_cluster):
    """A function, an enum and a sequence in `public` before a first promotion make the database
    non-empty (its undo is down.sql or the backup, not "empty it again"); and the empty-again
    drop itself keeps every object its footprint recorded, dropping only the run's."""
    url = pg_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE FUNCTION \"ours\"() RETURNS INT LANGUAGE sql AS $$ SELECT 42 $$;"
                  "CREATE TYPE \"Mood\" AS ENUM ('ok'); CREATE SEQUENCE \"ticket_seq\"")
    mdir = write_migrations(tmp_path / "app", PG_HISTORY)
    before = M.footprint(url)
    assert before.existed and not before.empty
    assert {"routine:ours()", "type:Mood", "relation:ticket_seq"} <= set(before.objects)
    M.migrate(url, mdir)
    with pytest.raises(MigrationFailed, match="not empty before"):
        M.empty_database(url, before)
    said = M.empty_database(url, dataclasses.replace(before, empty=True))
    assert "kept the 3 object(s) there before" in said
    with psycopg.connect(url) as c:
        assert c.execute('SELECT "ours"(), nextval(\'"ticket_seq"\'), enum_range(NULL::"Mood")::text').fetchone() \
            == (42, 1, "{ok}")
    assert M.footprint(url).objects == before.objects                 # the run's objects are all gone


@pytest.mark.postgres
def test_postgres_extension_members_neither_count_nor_break_the_drop(tmp_path, pg_cluster):
    """Extensions in `public` (citext's type and functions, pg_stat_statements' views, as
    PostGIS's tables): the database is still empty, and emptying it again leaves them alone."""
    url = pg_cluster.create_database()
    available = {r[0] for r in pg_cluster.execute("SELECT name FROM pg_available_extensions")}
    if not {"citext", "pg_stat_statements"} <= available:
        pytest.skip("contrib's citext and pg_stat_statements are not installed in this Postgres")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION citext; CREATE EXTENSION pg_stat_statements")
    mdir = write_migrations(tmp_path / "app", {
        "20240101000000_init": 'CREATE TABLE "Shop" ("id" SERIAL PRIMARY KEY, "email" CITEXT NOT NULL);\n'})
    before = M.footprint(url)
    assert before.empty
    M.migrate(url, mdir)
    assert "dropped 2 relation(s)" in M.empty_database(url, before)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1").fetchall() == [
            ("citext",), ("pg_stat_statements",)]
        assert c.execute("SELECT 'A'::citext = 'a'").fetchone() == (True,)
    assert M.footprint(url).empty and before.objects == ()
