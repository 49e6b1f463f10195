"""`migrations.footprint` / `migrations.empty_database`: the undo of a first promotion's
migrations, against a real SQLite file and a real Postgres database."""

from __future__ import annotations

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
