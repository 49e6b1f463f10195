"""Forward-only migrations (Prisma writes no down.sql), through the real CLI: a first-ever
promotion that fails after the database was migrated leaves the database as it was (none,
or empty), no app running and the lock free; a SIGKILL there followed by `--abort` too. A
later promotion's additive migrations are kept by its undo, with the data written meanwhile
(tests/test_reliability_trust_data.py has the destructive side)."""

from __future__ import annotations

import sqlite3
import urllib.request

import psycopg
import pytest

from deploy.facts import Serving, get


def forward_only(project, migrations: str) -> None:
    """Prisma's shape: no down.sql beside any migration.sql."""
    for down in (project.root / "examples/app" / migrations).glob("*/down.sql"):
        down.unlink()
    project.commit("forward-only migrations, as Prisma writes them")


def break_version(project) -> None:
    """A release whose /version is gone: the smoke step fails after the switch."""
    server = project.root / "examples/app/server.mjs"
    server.write_text(server.read_text().replace("/version", "/version-moved"))
    project.commit("break /version")


def pg_tables(url) -> list[str]:
    with psycopg.connect(url) as c:
        return [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def test_failed_first_local_promotion_removes_the_database_it_created(project):
    forward_only(project, "prisma/migrations")
    break_version(project)
    db = project.root / "examples/app/prisma/dev.sqlite"
    assert not db.exists()
    r = project.invoke("promote", "--to=local")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    led = project.ledger()
    run = led.runs("local")[0]
    assert run.status == "rolled_back" and run.failed_step == "smoke"
    undo = {s.name: s for s in led.steps(run.id)}["migrate"]
    assert undo.undo_status == "undone"
    assert "empty before this run" in r.stdout and "removed dev.sqlite" in r.stdout
    assert not db.exists()
    assert led.lock("local") is None
    assert not (project.local_root() / "current").exists()
    assert not answers(get(run.state, Serving).url + "/healthz")


def test_failed_local_promotion_over_existing_data_keeps_its_additive_migration_and_the_data(project):
    """A nullable column without down.sql (Prisma's shape): the undo keeps it (the previous release
    runs on it) instead of restoring the backup over what was written since."""
    forward_only(project, "prisma/migrations")
    assert project.invoke("promote", "--to=local").returncode == 0
    db = project.root / "examples/app/prisma/dev.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("""INSERT INTO "Shop" ("id", "domain", "name") VALUES ('s1', 'kept.myshopify.com', 'Kept')""")
    mig = project.root / "examples/app/prisma/migrations/20250501000000_shop_note"
    mig.mkdir()
    (mig / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n')
    break_version(project)
    r = project.invoke("promote", "--to=local")
    assert r.returncode != 0
    assert "kept: 1 additive migration(s) stay applied (20250501000000_shop_note), no rows lost" in r.stdout
    assert "restored" not in r.stdout
    with sqlite3.connect(db) as c:
        cols = [row[1] for row in c.execute('PRAGMA table_info("Shop")')]
        assert "note" in cols
        assert c.execute('SELECT "domain" FROM "Shop"').fetchall() == [("kept.myshopify.com",)]
    assert project.ledger().lock("local") is None


def test_local_first_promotion_killed_after_release_then_aborted_is_clean(project):
    forward_only(project, "prisma/migrations")
    killed = project.invoke("promote", "--to=local", extra_env={"DEPLOY_FAULT": "after:release"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    r = project.invoke("promote", "--to=local", "--abort")
    assert r.returncode == 0, r.stdout + r.stderr
    led = project.ledger()
    assert led.runs("local")[0].status == "aborted"
    assert not (project.root / "examples/app/prisma/dev.sqlite").exists()
    assert led.lock("local") is None


@pytest.mark.postgres
@pytest.mark.sshd
def test_staging_first_promotion_killed_after_release_then_aborted_leaves_postgres_empty(stage):
    forward_only(stage.project, "prisma/postgres/migrations")
    stage.collect_evidence()
    assert pg_tables(stage.db_url) == []
    killed = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "after:release"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert "_prisma_migrations" in pg_tables(stage.db_url)
    r = stage.project.invoke("promote", "--to=staging", "--abort")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "empty before this run" in r.stdout
    led = stage.project.ledger()
    assert led.runs("staging")[0].status == "aborted"
    assert pg_tables(stage.db_url) == []
    with psycopg.connect(stage.db_url) as c:
        assert c.execute("SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                         "WHERE n.nspname = 'public' AND t.typtype = 'e'").fetchone()[0] == 0
    assert stage.currents() == [None, None]
    assert led.lock("staging") is None


@pytest.mark.postgres
@pytest.mark.sshd
def test_staging_first_promotion_failing_at_smoke_leaves_postgres_empty(stage):
    forward_only(stage.project, "prisma/postgres/migrations")
    break_version(stage.project)
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    led = stage.project.ledger()
    run = led.runs("staging")[0]
    assert run.status == "rolled_back" and run.failed_step == "smoke", r.stdout
    assert pg_tables(stage.db_url) == []
    assert led.lock("staging") is None


@pytest.mark.postgres
@pytest.mark.sshd
def test_staging_first_promotion_failing_at_smoke_keeps_objects_that_were_there_before(stage):
    """A function, an enum and a sequence in `public` before the first promotion: the database
    is not empty, so the undo does not empty it; the migrations are additive (new tables), so
    they stay applied, and what was there before survives."""
    with psycopg.connect(stage.db_url, autocommit=True) as c:
        c.execute("CREATE FUNCTION ours() RETURNS INT LANGUAGE sql AS $$ SELECT 42 $$;"
                  "CREATE TYPE mood AS ENUM ('ok'); CREATE SEQUENCE ticket_seq")
    forward_only(stage.project, "prisma/postgres/migrations")
    break_version(stage.project)
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    run = stage.project.ledger().runs("staging")[0]
    assert run.status == "rolled_back" and run.failed_step == "smoke", r.stdout
    assert "empty before this run" not in r.stdout and "restored" not in r.stdout
    assert "kept: 3 additive migration(s) stay applied" in r.stdout
    assert {"Shop", "OperatorSession", "decision_log"} <= set(pg_tables(stage.db_url))
    with psycopg.connect(stage.db_url) as c:
        assert c.execute("SELECT ours(), nextval('ticket_seq'), enum_range(NULL::mood)::text").fetchone() == (
            42, 1, "{ok}")
