"""The migration runner on SQLite files, with Prisma's SQLite table and timestamp format."""

import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest

from deploy import migrations as M
from deploy.errors import LockHeld, MigrationFailed
from deploy.testing.postgres import write_migrations

FIXTURE = Path(__file__).parent / "fixtures" / "migrations" / "sqlite_app"
EXAMPLE = Path(__file__).parent.parent / "examples" / "app" / "prisma" / "migrations"
HISTORIES = [FIXTURE] + ([EXAMPLE] if EXAMPLE.is_dir() and any(p.is_dir() for p in EXAMPLE.iterdir()) else [])


@pytest.fixture
def app(tmp_path):
    """A copy of the app's prisma/ folder, so `file:./dev.db` lands beside it."""
    def make(history: Path) -> Path:
        dest = tmp_path / "prisma" / "migrations"
        shutil.copytree(history, dest)
        return dest
    return make


def db_rows(path):
    with sqlite3.connect(path) as c:
        return c.execute("select id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, "
                         "applied_steps_count from _prisma_migrations order by started_at, migration_name").fetchall()


def tables(path):
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("select name from sqlite_master where type = 'table'")}


@pytest.mark.parametrize("history", HISTORIES, ids=[p.parent.parent.name for p in HISTORIES])
def test_app_history_applies_to_file_url_relative_to_prisma_dir(app, history):
    d = app(history)
    names = [p.name for p in sorted(d.iterdir()) if p.is_dir()]
    result = M.migrate("file:./dev.db", d)
    db = d.parent / "dev.db"
    assert result.applied == tuple(names) and db.is_file()
    with sqlite3.connect(db) as c:
        ddl = c.execute("select sql from sqlite_master where name = '_prisma_migrations'").fetchone()[0]
    assert ddl.strip() == M.SQLITE_TABLE_DDL.strip().rstrip(";")
    for rid, chk, finished, name, logs, rolled, started, steps in db_rows(db):
        assert uuid.UUID(rid).version == 4 and chk == M.checksum((d / name / "migration.sql").read_text())
        # quaint stores DateTime as epoch milliseconds on SQLite
        assert isinstance(started, int) and isinstance(finished, int) and started <= finished
        assert started > 1_600_000_000_000 and rolled is None and logs is None and steps == 1
    assert M.status("file:./dev.db", d).up_to_date


def test_status_of_a_database_not_created_yet_is_all_pending_and_creates_nothing(app):
    d = app(FIXTURE)
    report = M.status("file:./dev.db", d)
    assert len(report.pending) == 4 and not report.table_exists
    assert not (d.parent / "dev.db").exists()


def test_rows_written_by_prisma_are_read(app):
    d = app(FIXTURE)
    db = d.parent / "dev.db"
    first = sorted(p.name for p in d.iterdir() if p.is_dir())[0]
    with sqlite3.connect(db) as c:
        c.executescript(M.SQLITE_TABLE_DDL)
        c.executescript((d / first / "migration.sql").read_text())
        c.execute("insert into _prisma_migrations (id, checksum, finished_at, migration_name, started_at, "
                  "applied_steps_count) values (?, ?, ?, ?, ?, 1)",
                  (str(uuid.uuid4()), M.checksum((d / first / "migration.sql").read_text()), 1717104000123, first,
                   1717104000000))
    report = M.status("file:./dev.db", d)
    assert report.applied == (first,) and len(report.pending) == 3
    assert report.migrations[0].applied_at.year == 2024
    assert len(M.migrate("file:./dev.db", d).applied) == 3


def test_failed_sqlite_migration_leaves_the_file_untouched_and_is_recorded(tmp_path):
    d = write_migrations(tmp_path, {
        "20240101000000_a": 'CREATE TABLE "A" ("id" TEXT NOT NULL PRIMARY KEY);\n',
        "20240102000000_b": 'CREATE TABLE "B" ("id" TEXT);\nINSERT INTO "Nope" VALUES (1);\n',
    }, provider="sqlite")
    with pytest.raises(MigrationFailed) as e:
        M.migrate("file:./dev.db", d)
    assert "20240102000000_b" in str(e.value) and "no such table: Nope" in str(e.value)
    db = d.parent / "dev.db"
    assert tables(db) == {"A", "_prisma_migrations"}
    (ok, bad) = db_rows(db)
    assert ok[2] is not None and bad[2] is None and "Migration name: 20240102000000_b" in bad[4]
    with pytest.raises(MigrationFailed, match="P3009"):
        M.migrate("file:./dev.db", d)


def test_sqlite_rollback_with_down_sql_and_reapply(app):
    d = app(FIXTURE)
    M.migrate("file:./dev.db", d)
    db = d.parent / "dev.db"
    with sqlite3.connect(db) as c:
        c.execute("insert into Operator (id, shop, name) values ('o1', 's', 'n')")
        c.execute("insert into Task (id, operatorId, title) values ('t1', 'o1', 'x')")
    rolled = M.rollback("file:./dev.db", d, steps=2)
    assert [n.split("_", 1)[1] for n in rolled.rolled_back] == ["task_due_at_not_null", "operator_and_tasks"]
    assert "Task" not in tables(db) and "Session" in tables(db)
    assert len(M.status("file:./dev.db", d).pending) == 2
    assert len(M.migrate("file:./dev.db", d).applied) == 2


def test_redefine_table_migration_keeps_child_rows(app):
    """Prisma's RedefineTables pattern drops and renames a table; inside our transaction
    foreign keys stay off, so ON DELETE CASCADE must not fire."""
    d = app(FIXTURE)
    last = sorted(p.name for p in d.iterdir() if p.is_dir())[-1]
    hidden = d.parent / "hold"
    shutil.move(d / last, hidden)
    M.migrate("file:./dev.db", d)
    db = d.parent / "dev.db"
    with sqlite3.connect(db) as c:
        c.execute("insert into Operator (id, shop, name) values ('o1', 's', 'n')")
        c.execute("insert into Task (id, operatorId, title) values ('t1', 'o1', 'x')")
    shutil.move(hidden, d / last)
    M.migrate("file:./dev.db", d)
    with sqlite3.connect(db) as c:
        assert c.execute("select id, dueAt is not null from Task").fetchall() == [("t1", 1)]


def test_second_runner_on_a_locked_sqlite_file_is_refused(tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": 'CREATE TABLE "A" ("id" TEXT);\n'}, provider="sqlite")
    db = d.parent / "dev.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LockHeld, match="locked"):
            M.migrate("file:./dev.db", d, lock_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert M.migrate("file:./dev.db", d).applied == ("20240101000000_a",)


def test_postgres_migrations_are_refused_for_a_sqlite_url(tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": "SELECT 1;"}, provider="postgresql")
    with pytest.raises(MigrationFailed, match="P3019"):
        M.migrate("file:./dev.db", d)


def test_sqlite_rollback_by_names_undoes_an_older_migration_applied_last_and_nothing_else(tmp_path):
    """A and C applied; B (older name, merged from a branch) applied later. Undoing B by name
    runs B's down.sql, in application order, and refuses a name that is not among the last applied."""
    d = write_migrations(tmp_path, {
        "20240101000000_a": ('CREATE TABLE "A" ("id" TEXT);\n', 'DROP TABLE "A";\n'),
        "20240103000000_c": ('CREATE TABLE "C" ("id" TEXT);\n', 'DROP TABLE "C";\n'),
    }, provider="sqlite")
    M.migrate("file:./dev.db", d)
    write_migrations(tmp_path, {"20240102000000_b": ('CREATE TABLE "B" ("id" TEXT);\n', 'DROP TABLE "B";\n')},
                     provider="sqlite")
    assert M.migrate("file:./dev.db", d).applied == ("20240102000000_b",)
    db = d.parent / "dev.db"
    with pytest.raises(MigrationFailed, match="20240102000000_b was applied after"):
        M.rollback("file:./dev.db", d, names=["20240101000000_a"])
    assert tables(db) == {"A", "B", "C", "_prisma_migrations"}
    rolled = M.rollback("file:./dev.db", d, names=["20240103000000_c", "20240102000000_b"])
    assert rolled.rolled_back == ("20240102000000_b", "20240103000000_c")
    assert tables(db) == {"A", "_prisma_migrations"}
