"""Attacks on the database side of a promotion, through the CLI against the real Postgres
fixture (issue 13: #6 restore, #7 unbounded migration waits, #9 gates over reports where
nothing ran, #11 URLs with raw '@' or '/'; issue 15: Supabase's direct URL and Postgres URLs
read as libpq reads them)."""

from __future__ import annotations

import secrets
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from deploy.testing.postgres import TableLock, schemas

FIX = Path(__file__).parent / "fixtures" / "evidence"
MIGRATIONS = "examples/app/prisma/postgres/migrations"

TEST_ENV = '''
[environment]
kind = "remote"
app_dir = "examples/app"
app_url = "http://127.0.0.1:9/"

[database]
provider = "postgresql"
migrations_dir = "prisma/postgres/migrations"
backup_dir = ".deploy/backups"
{extra}
'''


def use_env(project, extra: str = "") -> None:
    project.write_env("test", TEST_ENV.format(extra=extra))
    project.commit("test env")


def q(url, sql):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def failed_clearly(r, *needles):
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "Traceback" not in text, text
    for n in needles:
        assert n in text, f"{n!r} not in:\n{text}"
    return text


def add_migration(root: Path, name: str, sql: str, down: str | None = None) -> None:
    d = root / MIGRATIONS / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "migration.sql").write_text(sql)
    if down is not None:
        (d / "down.sql").write_text(down)


# ---------------------------------------------------------------- #6 restore returns the database exactly

def test_db_restore_drops_later_schemas_keeps_function_only_ones_and_public_as_it_was(project, pg_url):
    use_env(project)
    env = {"DATABASE_URL": pg_url}
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    # Supabase keeps extension functions in a schema that holds no table.
    q(pg_url, "CREATE SCHEMA extensions; CREATE FUNCTION extensions.uuid_v4() RETURNS text LANGUAGE sql "
              "AS $$ SELECT gen_random_uuid()::text $$")
    q(pg_url, """INSERT INTO "Shop" (id, domain, name) VALUES ('s1', 'a.myshopify.com', 'A')""")
    at_backup = schemas(pg_url)
    assert ("public", "pg_database_owner", "pg_database_owner=UC/pg_database_owner\n=U/pg_database_owner",
            "standard public schema") in at_backup
    ok(project.invoke("db.backup", "--env=test", extra_env=env))
    # A failed deploy left a schema of its own and lost a row.
    q(pg_url, 'CREATE SCHEMA audit; CREATE TABLE audit.events (id int); DELETE FROM "Shop"')
    ok(project.invoke("db.restore", "--env=test", "--yes", extra_env=env))
    assert schemas(pg_url) == at_backup
    assert q(pg_url, 'SELECT count(*) FROM "Shop"') == [(1,)]
    assert len(q(pg_url, "SELECT extensions.uuid_v4()")[0][0]) == 36
    # the schema a migration creates can be created again (no 42P06)
    q(pg_url, "CREATE SCHEMA audit")
    ok(project.invoke("db.restore", "--env=test", "--yes", extra_env=env))
    assert schemas(pg_url) == at_backup


def test_failed_db_restore_says_why_changes_nothing_and_releases_the_lock(project, pg_cluster):
    use_env(project)
    url = pg_cluster.create_database()
    env = {"DATABASE_URL": url}
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    ok(project.invoke("db.backup", "--env=test", extra_env=env))
    q(url, """INSERT INTO "Shop" (id, domain, name) VALUES ('s2', 'b.myshopify.com', 'B')""")
    dbname = url.rsplit("/", 1)[1]
    q(pg_cluster.url, f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    r = project.invoke("db.restore", "--env=test", "--yes", extra_env=env)
    text = failed_clearly(r, "the database is unchanged", "read-only transaction")
    assert pg_cluster.password not in text
    q(pg_cluster.url, f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
    assert q(url, 'SELECT count(*) FROM "Shop"') == [(1,)]
    assert "No environment is locked" in ok(project.invoke("lock.status", "--env=test")).stdout
    assert project.ledger().runs("test")[0].status in ("failed", "rolled_back")
    # nothing is left held: the next restore runs at once
    ok(project.invoke("db.restore", "--env=test", "--yes", extra_env=env))
    assert q(url, 'SELECT count(*) FROM "Shop"') == [(0,)]


def test_promotion_after_a_failed_migration_that_created_a_schema_succeeds(stage):
    project = stage.project
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))
    before = schemas(stage.db_url)
    add_migration(project.root, "20990101000000_audit", "CREATE SCHEMA audit;\nCREATE TABLE audit.events (id int);\n")
    add_migration(project.root, "20990101000001_broken", 'ALTER TABLE "NoSuchTable" ADD COLUMN x int;\n')
    project.commit("audit schema, and a broken migration")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging")
    # The undo keeps the additive `audit` migration (a new schema and table: no row lost, the
    # previous release runs on it), says so, restores nothing and marks the broken one rolled back.
    failed_clearly(r, "20990101000001_broken", "marked 20990101000001_broken rolled back",
                   "kept: 1 additive migration(s) stay applied (20990101000000_audit), no rows lost")
    assert "restored" not in r.stdout + r.stderr
    after = schemas(stage.db_url)
    assert [x for x in after if x[0] != "audit"] == before and "audit" in [x[0] for x in after]
    assert q(stage.db_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'audit'") == [("events",)]
    (project.root / MIGRATIONS / "20990101000001_broken/migration.sql").write_text("CREATE TABLE audit.more (id int);\n")
    project.commit("fix the broken migration")
    stage.collect_evidence()
    r = ok(project.invoke("promote", "--to=staging"))
    assert "42P06" not in r.stdout + r.stderr
    assert q(stage.db_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'audit'") == [(2,)]


# ---------------------------------------------------------------- #7 bounded waits, settings on every path

def test_db_migrate_behind_a_table_lock_fails_within_lock_timeout(project, pg_url):
    # No backup first (db.migrate on a shared environment takes one), so the migration itself meets the lock.
    use_env(project, "lock_timeout = 1.0\nbackup = false")
    env = {"DATABASE_URL": pg_url}
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    add_migration(project.root, "20990101000000_shop_billing_note", 'ALTER TABLE "Shop" ADD COLUMN "billing_note" TEXT;\n',
                  'ALTER TABLE "Shop" DROP COLUMN "billing_note";\n')
    project.commit("billing note")   # only committed migrations reach a shared database
    with TableLock(pg_url, "Shop") as app_session:
        r = project.invoke("db.migrate", "--env=test", extra_env=env)
        assert not app_session.released.is_set()
    failed_clearly(r, "20990101000000_shop_billing_note", "database.lock_timeout (1 s)", "55P03")
    # The migrate step's undo marked the failed migration rolled back (no db.resolve needed): it applies again.
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    with TableLock(pg_url, "Shop") as app_session:
        r = project.invoke("db.rollback", "--env=test", "--steps=1", "--yes", extra_env=env)
        assert not app_session.released.is_set()
    failed_clearly(r, "20990101000000_shop_billing_note", "database.lock_timeout (1 s)")


@pytest.mark.parametrize("task", ["db.backup", "db.restore"], ids=["backup", "restore"])
def test_backup_and_restore_behind_a_table_lock_fail_within_lock_timeout(project, pg_url, task):
    use_env(project, "lock_timeout = 1.0")
    env = {"DATABASE_URL": pg_url}
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    ok(project.invoke("db.backup", "--env=test", extra_env=env))
    with TableLock(pg_url, "Shop") as app_session:
        r = project.invoke(task, "--env=test", *(["--yes"] if task == "db.restore" else []), extra_env=env)
        assert not app_session.released.is_set()
    failed_clearly(r, "lock timeout")


@pytest.mark.parametrize("args, tool", [
    (("db.backup",), "pg_dump"),
    (("db.restore", "--yes"), "pg_restore"),
    (("db.verify-backup",), "pg_restore"),
], ids=["db.backup", "db.restore", "db.verify-backup"])
def test_database_bin_dir_is_honoured_by_every_db_task(project, pg_url, tmp_path, args, tool):
    use_env(project)
    env = {"DATABASE_URL": pg_url}
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    ok(project.invoke("db.backup", "--env=test", extra_env=env))
    empty = tmp_path / "no-tools"
    empty.mkdir()
    use_env(project, f'bin_dir = "{empty}"')
    failed_clearly(project.invoke(*args, "--env=test", extra_env=env), tool, str(empty))


def test_promote_backup_uses_database_bin_dir(stage, tmp_path):
    project = stage.project
    empty = tmp_path / "no-tools"
    empty.mkdir()
    text = (project.root / "env/staging.toml").read_text()
    project.write_env("staging", text.replace('backup_dir = ".deploy/backups"',
                                              f'backup_dir = ".deploy/backups"\nbin_dir = "{empty}"'))
    project.commit("tools from a folder without them")
    stage.collect_evidence()
    failed_clearly(project.invoke("promote", "--to=staging"), "pg_dump", str(empty))


def test_promote_migration_behind_a_table_lock_fails_within_lock_timeout_and_undoes(stage):
    project = stage.project
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))
    text = (project.root / "env/staging.toml").read_text()
    project.write_env("staging", text.replace('backup_dir = ".deploy/backups"',
                                              'backup_dir = ".deploy/backups"\nlock_timeout = 1.0'))
    add_migration(project.root, "20990101000000_shop_billing_note", 'ALTER TABLE "Shop" ADD COLUMN "billing_note" TEXT;\n',
                  'ALTER TABLE "Shop" DROP COLUMN "billing_note";\n')
    project.commit("a migration on a busy table")
    stage.collect_evidence()
    # A console session holding the table: already the backup's row count gives up within the bound.
    with TableLock(stage.db_url, "Shop") as app_session:
        r = project.invoke("promote", "--to=staging")
        assert not app_session.released.is_set()
    failed_clearly(r, "backup", "lock timeout")
    # An app transaction reading the table (ACCESS SHARE): the backup reads beside it, the
    # migration's ALTER TABLE must not queue every later query of the app behind it.
    with TableLock(stage.db_url, "Shop", mode="ACCESS SHARE") as app_session:
        r = project.invoke("promote", "--to=staging")
        assert not app_session.released.is_set()
    failed_clearly(r, "20990101000000_shop_billing_note", "database.lock_timeout (1 s)")
    assert "billing_note" not in {c for (c,) in q(stage.db_url, "SELECT column_name FROM information_schema.columns "
                                                        "WHERE table_name = 'Shop'")}
    # the undo marked it rolled back: the next promotion applies it
    ok(project.invoke("promote", "--to=staging"))


def _set_database(project, env: str, lines: str) -> None:
    """Add `lines` to [database] of env/<env>.toml and commit (a shared environment deploys
    committed settings only)."""
    path = project.root / "env" / f"{env}.toml"
    text = path.read_text()
    path.write_text(text.replace('backup_dir = ".deploy/backups"', f'backup_dir = ".deploy/backups"\n{lines}', 1))
    project.commit(f"{env}: {lines}")


def _columns(url, table="Shop") -> set[str]:
    return {c for (c,) in q(url, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")}


def test_promote_undo_restores_with_the_tools_of_database_bin_dir(stage, pg_cluster, tmp_path):
    """A folder holding pg_dump only: the backup step takes it from there, and the undo that
    must restore (an accepted destructive migration without down.sql) looks there for
    pg_restore too and says it is missing."""
    project = stage.project
    tools = tmp_path / "only-pg-dump"
    tools.mkdir()
    (tools / "pg_dump").symlink_to(pg_cluster.tool("pg_dump"))
    _set_database(project, "staging", f'bin_dir = "{tools}"\naccept_destructive = ["20990101000000_billing"]')
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))          # the database has data from here on
    add_migration(project.root, "20990101000000_billing", 'ALTER TABLE "Shop" DROP COLUMN "uninstalled";\n')
    add_migration(project.root, "20990101000001_broken", 'ALTER TABLE "NoSuchTable" ADD COLUMN x int;\n')
    project.commit("a migration without down.sql, then a broken one")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging")
    failed_clearly(r, "20990101000001_broken", "pg_restore", str(tools), "Undo")
    assert list((project.root / ".deploy/backups/staging").glob("*.dump"))   # pg_dump came from bin_dir


def test_rollback_flow_honours_bin_dir_and_lock_timeout(stage, tmp_path):
    project = stage.project
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))
    add_migration(project.root, "20990101000000_billing", 'ALTER TABLE "Shop" ADD COLUMN "billing_note" TEXT;\n',
                  'ALTER TABLE "Shop" DROP COLUMN "billing_note";\n')
    project.commit("billing note")
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))
    assert "billing_note" in _columns(stage.db_url)
    empty = tmp_path / "no-tools"
    empty.mkdir()
    _set_database(project, "staging", f'bin_dir = "{empty}"\nlock_timeout = 1.0')
    r = project.invoke("rollback", "--env=staging", "--db=restore", "--yes")
    failed_clearly(r, "pg_restore", str(empty))
    assert "billing_note" in _columns(stage.db_url)
    with TableLock(stage.db_url, "Shop", mode="ACCESS SHARE") as app_session:
        r = project.invoke("rollback", "--env=staging", "--db=down", "--yes")
        assert not app_session.released.is_set()
    failed_clearly(r, "20990101000000_billing", "database.lock_timeout (1 s)")
    assert "billing_note" in _columns(stage.db_url)
    ok(project.invoke("rollback", "--env=staging", "--db=down", "--yes"))
    assert "billing_note" not in _columns(stage.db_url)


def test_promote_undo_down_migration_behind_a_table_lock_fails_within_lock_timeout(stage):
    """Killed after its migration, the run is aborted while the app holds the table: the undo's
    down.sql gives up within the bound (the abort says so and can be run again), instead of
    queueing the app behind it."""
    project = stage.project
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))
    _set_database(project, "staging", "lock_timeout = 1.0")
    # Destructive with a down.sql: its undo is the down.sql (an additive one would be kept).
    add_migration(project.root, "20990101000000_billing", 'ALTER TABLE "Shop" DROP COLUMN "uninstalled";\n',
                  'ALTER TABLE "Shop" ADD COLUMN "uninstalled" BOOLEAN NOT NULL DEFAULT false;\n')
    project.commit("drop uninstalled")
    stage.collect_evidence()
    killed = project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:release"})
    assert killed.returncode == -9
    assert "uninstalled" not in _columns(stage.db_url)
    with TableLock(stage.db_url, "Shop", mode="ACCESS SHARE") as app_session:
        r = project.invoke("promote", "--to=staging", "--abort")
        assert not app_session.released.is_set()
    failed_clearly(r, "20990101000000_billing", "database.lock_timeout (1 s)")
    assert "uninstalled" not in _columns(stage.db_url)
    ok(project.invoke("promote", "--to=staging", "--abort"))
    assert "uninstalled" in _columns(stage.db_url)


# ---------------------------------------------------------------- #9 gates over reports where nothing ran

@pytest.mark.parametrize("kind, fixture", [
    ("playwright", "playwright/all_skipped.json"),
    ("vitest", "vitest/all_skipped.json"),
    ("playwright", "junit/playwright_all_skipped.xml"),
], ids=["playwright-json-test-skip", "vitest-json-all-skipped", "playwright-junit-all-skipped"])
def test_gate_closes_on_staging_and_production_when_no_test_ran(project, kind, fixture):
    from deploy.testing.reports import write_passing

    folder = project.root / "evidence"
    folder.mkdir()
    files = write_passing(folder, datetime.now(timezone.utc) - timedelta(minutes=10))
    files = [f for f in files if not f.name.startswith(kind)]
    target = folder / Path(fixture).name
    shutil.copy(FIX / fixture, target)
    _fresh_timestamps(target)
    args = [f"--files={f}" for f in [*files, target]]
    ok(project.invoke("evidence.collect", f"--sha={project.head}", "--env=staging", *args))
    for env in ("staging", "production"):
        r = project.invoke("gate", f"--env={env}")
        failed_clearly(r, "no tests ran", "CLOSED")


def _fresh_timestamps(path: Path) -> None:
    """The fixtures were made at T0; move their start times to ten minutes ago."""
    from deploy.testing.reports import T0

    now = datetime.now(timezone.utc) - timedelta(minutes=10)
    text = path.read_text()
    text = text.replace(T0.strftime("%Y-%m-%dT%H:%M:%S"), now.strftime("%Y-%m-%dT%H:%M:%S"))
    text = text.replace(str(int(T0.timestamp() * 1000))[:-3], str(int(now.timestamp() * 1000))[:-3])
    path.write_text(text)


# ---------------------------------------------------------------- #11 and issue 15: URLs

@pytest.mark.parametrize("password", ["Zq9@top", "Zq9/top"], ids=["raw-at", "raw-slash"])
def test_password_with_raw_at_or_slash_is_refused_masked(project, pg_cluster, password):
    use_env(project)
    url = f"postgresql://app:{password}-secret@127.0.0.1:{pg_cluster.port}/occ"
    r = project.invoke("db.status", "--env=test", extra_env={"DATABASE_URL": url})
    text = failed_clearly(r, "Percent-encode", "postgresql://app:***@")
    assert "Zq9" not in text and "top-secret" not in text
    project.env["DEPLOY_LEDGER_URL"] = url     # a shared ledger whose URL has the same mistake
    r = project.invoke("status")
    del project.env["DEPLOY_LEDGER_URL"]
    text = failed_clearly(r, "DEPLOY_LEDGER_URL", "postgresql://app:***@", "Percent-encode")
    assert "Zq9" not in text and "top-secret" not in text


def test_prisma_schema_keeps_its_case_and_multi_host_urls_connect(project, pg_cluster):
    use_env(project)
    url = pg_cluster.create_database()
    rest = url.split("@", 1)[1].split("/", 1)[1]
    creds = url.split("://", 1)[1].split("@", 1)[0]
    # libpq tries 127.0.0.1:1 (refused), then the fixture: psycopg's multi-host URL.
    multi = f"postgresql://{creds}@127.0.0.1:1,127.0.0.1:{pg_cluster.port}/{rest}?schema=MySchema&connect_timeout=3"
    ok(project.invoke("db.migrate", "--env=test", extra_env={"DATABASE_URL": multi}))
    assert q(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'MySchema'") == [(4,)]
    assert q(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'myschema'") == [(0,)]


def test_a_users_libpq_options_reach_the_server(project, pg_url):
    use_env(project)
    # options=-c default_transaction_read_only=on: if it is kept, the migration cannot write.
    url = pg_url + "?schema=public&options=-c%20default_transaction_read_only%3Don"
    r = project.invoke("db.migrate", "--env=test", extra_env={"DATABASE_URL": url})
    failed_clearly(r, "read-only transaction")
    r = ok(project.invoke("db.status", "--env=test",
                          extra_env={"DATABASE_URL": pg_url + "?schema=public&connection_limit=5&pool_timeout=20"}))
    # Prisma-only parameters are taken out for libpq, and said so
    assert "note: connection_limit=5: Prisma Client's pool size; not passed to libpq" in r.stdout
    assert "note: pool_timeout=20" in r.stdout
    ok(project.invoke("db.migrate", "--env=test", extra_env={"DATABASE_URL": pg_url + "?schema=public"}))


def test_session_work_uses_direct_url_and_refuses_a_transaction_pooler(project, pg_url):
    use_env(project)
    pooled = "postgresql://app:pool-pw-7731@127.0.0.1:6543/occ?pgbouncer=true&connection_limit=1"
    r = project.invoke("db.migrate", "--env=test", extra_env={"DATABASE_URL": pooled, "DIRECT_URL": ""})
    text = failed_clearly(r, "DATABASE_URL", "transaction pooler", "DIRECT_URL")
    assert "pool-pw-7731" not in text
    # DIRECT_URL (Prisma's directUrl) is what migrations, backups and restores use.
    env = {"DATABASE_URL": pooled, "DIRECT_URL": pg_url}
    ok(project.invoke("db.migrate", "--env=test", extra_env=env))
    assert q(pg_url, "SELECT count(*) FROM _prisma_migrations") == [(3,)]
    ok(project.invoke("db.backup", "--env=test", extra_env=env))
    ok(project.invoke("db.restore", "--env=test", "--yes", extra_env=env))
    # a direct URL that is itself the transaction pooler is refused too
    r = project.invoke("db.backup", "--env=test", extra_env={"DATABASE_URL": pg_url, "DIRECT_URL": pooled})
    failed_clearly(r, "DIRECT_URL", "transaction pooler")
