"""No write is discarded without a person saying so (issue 21, cases 1 and 16), through the CLI
against the real Postgres fixture, sshd hosts and the Shopify stand-in.

A promotion's migrations are judged before anything changes (squawk): additive ones are kept by
an undo, with every row written during the run; a destructive one needs a down.sql or an
acceptance by name, or the promotion is refused up front; an undo that could only restore the
backup over rows written since keeps the database unless a person confirms. A migration's own
BEGIN/COMMIT no longer ends the runner's transaction early."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

MIGRATIONS = "examples/app/prisma/postgres/migrations"


def q(url, sql):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def refused(r, code, *needles):
    text = r.stdout + r.stderr
    assert r.returncode == code, text
    assert "Traceback" not in text, text
    for n in needles:
        assert n in text, f"{n!r} not in:\n{text}"
    return text


def add_migration(project, name: str, sql: str, down: str | None = None) -> None:
    d = project.root / MIGRATIONS / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "migration.sql").write_text(sql)
    if down is not None:
        (d / "down.sql").write_text(down)


def columns(url, table="Shop") -> set[str]:
    return {c for (c,) in q(url, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")}


def applied(url) -> set[str]:
    return {r[0] for r in q(url, "SELECT migration_name FROM _prisma_migrations "
                                 "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL")}


def unhealthy_when_flagged(project) -> None:
    """The release answers /healthz 503 while <deploy_to>/shared/unhealthy exists: a watch
    failure the test triggers at the moment it chooses."""
    server = project.root / "examples/app/server.mjs"
    text = server.read_text().replace('import { readFileSync } from "node:fs";',
                                      'import { existsSync, readFileSync } from "node:fs";')
    text = text.replace('send(res, 200, { ok: true });',
                        'send(res, existsSync(join(process.cwd(), "../../shared/unhealthy")) ? 503 : 200, '
                        '{ ok: true });')
    server.write_text(text)


def break_version(project) -> None:
    server = project.root / "examples/app/server.mjs"
    server.write_text(server.read_text().replace("/version", "/version-moved"))


def first_release(stage):
    """Staging on release A with shops in it (the data a later undo must not lose)."""
    stage.collect_evidence()
    ok(stage.project.invoke("promote", "--to=staging"))
    q(stage.db_url, """INSERT INTO "Shop" (id, domain, name) VALUES ('s0', 'zero.myshopify.com', 'Zero')""")
    return stage.project.ledger().runs("staging")[0]


@pytest.fixture
def released(stage_snapshot):
    """(stage, run of A) as `first_release` leaves them: made once per module, put back in
    place for each test (deploy/testing/snapshots.py)."""
    return stage_snapshot(first_release)


def shops(url) -> set[str]:
    return {r[0] for r in q(url, 'SELECT id FROM "Shop"')}


# ---------------------------------------------------------------- additive: kept, rows and all

ADDITIVE = {
    # The "done when": a table and a column added, rows written into both during the run.
    "table-and-column": (
        'CREATE TABLE "Order" ("id" TEXT NOT NULL, "shopId" TEXT NOT NULL, "total" INTEGER NOT NULL DEFAULT 0,\n'
        '    CONSTRAINT "Order_pkey" PRIMARY KEY ("id"));\n'
        'CREATE INDEX "Order_shopId_idx" ON "Order"("shopId");\n'
        'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n',
        ["""INSERT INTO "Order" (id, "shopId", total) VALUES ('o1', 's0', 12), ('o2', 's0', 30)""",
         """INSERT INTO "Shop" (id, domain, name, note) VALUES ('s1', 'one.myshopify.com', 'One', 'vip')""",
         """UPDATE "Shop" SET note = 'written during the run' WHERE id = 's0'"""],
        {"Order": 2}),
    "defaulted-columns-and-unique-index": (
        'ALTER TABLE "Shop" ADD COLUMN "tier" TEXT NOT NULL DEFAULT \'free\',\n'
        'ADD COLUMN "seats" INTEGER NOT NULL DEFAULT 1;\n'
        'CREATE UNIQUE INDEX "Shop_name_key" ON "Shop"("name");\n',
        ["""INSERT INTO "Shop" (id, domain, name, tier, seats) VALUES ('s2', 'two.myshopify.com', 'Two', 'pro', 5)""",
         """INSERT INTO "OperatorSession" (id, "shopId", operator, scope, "accessToken")
            VALUES ('sess1', 's0', 'pat', 'read', 'tok')"""],
        {"OperatorSession": 1}),
}


@pytest.mark.postgres
@pytest.mark.sshd
@pytest.mark.parametrize("shape", list(ADDITIVE))
def test_watch_failure_after_additive_migrations_keeps_the_rows_written_during_the_run(released, shape):
    stage, a = released
    project = stage.project
    sql, writes, counts = ADDITIVE[shape]
    add_migration(project, "20990101000000_grow", sql)          # no down.sql: Prisma writes none
    unhealthy_when_flagged(project)
    project.commit(f"B: {shape}, and a release that can be made unhealthy")
    stage.collect_evidence()
    killed = project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:watch"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    for sql_write in writes:                                   # the app keeps serving and writing
        q(stage.db_url, sql_write)
    before = shops(stage.db_url)
    for d in stage.host_dirs():
        (d / "shared/unhealthy").write_text("")
    r = project.invoke("promote", "--to=staging", "--resume")
    text = refused(r, 1, "watch", "kept: 1 additive migration(s) stay applied", "no rows lost")
    assert "restored" not in text
    run = project.ledger().runs("staging")[0]
    assert run.status == "rolled_back" and run.failed_step == "watch"
    assert stage.currents() == [a.release_id] * 2                # the code went back
    assert "20990101000000_grow" in applied(stage.db_url)        # the schema stayed forward
    assert shops(stage.db_url) == before
    for table, n in counts.items():
        assert q(stage.db_url, f'SELECT count(*) FROM "{table}"') == [(n,)]
    assert project.ledger().lock("staging") is None


@pytest.mark.postgres
@pytest.mark.sshd
def test_abort_after_a_kill_keeps_an_additive_migration_and_the_rows_inserted_meanwhile(released):
    """Case 1 as reported: killed before watch, rows inserted, then `--abort`: exit 0, and the
    rows are still there (they were restored away before)."""
    stage, _ = released
    project = stage.project
    add_migration(project, "20990101000000_shop_note", 'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n')
    project.commit("B: a nullable column")
    stage.collect_evidence()
    killed = project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:watch"})
    assert killed.returncode == -9
    for i in range(3):
        q(stage.db_url, f"""INSERT INTO "Shop" (id, domain, name, note) VALUES ('n{i}', 'n{i}.myshopify.com',
                            'N{i}', 'order {i}')""")
    r = ok(project.invoke("promote", "--to=staging", "--abort"))
    assert "kept: 1 additive migration(s) stay applied" in r.stdout and "restored" not in r.stdout
    assert {"n0", "n1", "n2", "s0"} <= shops(stage.db_url)
    assert "note" in columns(stage.db_url)
    assert project.ledger().lock("staging") is None


# ---------------------------------------------------------------- destructive: refused up front

DESTRUCTIVE = {
    "drop-column": ('ALTER TABLE "Shop" DROP COLUMN "name";\n', "ban-drop-column"),
    "rename-column": ('ALTER TABLE "Shop" RENAME COLUMN "domain" TO "shopDomain";\n', "renaming-column"),
    "type-change": ('ALTER TABLE "Shop" ALTER COLUMN "plan" SET DATA TYPE VARCHAR(8);\n', "changing-column-type"),
    "set-not-null": ('ALTER TABLE "OperatorSession" ALTER COLUMN "expiresAt" SET NOT NULL;\n',
                     "adding-not-nullable-field"),
    "drop-table": ('DROP TABLE "decision_log";\n', "ban-drop-table"),
    "update-rewrite": ('UPDATE "Shop" SET "plan" = \'pro\' WHERE "plan" = \'basic\';\n', "data rewrite (UPDATE)"),
}


@pytest.mark.postgres
@pytest.mark.sshd
@pytest.mark.parametrize("shape", list(DESTRUCTIVE))
def test_destructive_migration_without_down_sql_is_refused_before_anything_changes(released, shape):
    stage, a = released
    project = stage.project
    sql, rule = DESTRUCTIVE[shape]
    name = f"20990101000000_{shape.replace('-', '_')}"
    add_migration(project, name, sql)
    project.commit(f"B: {shape} without down.sql")
    stage.collect_evidence()
    cols = columns(stage.db_url)
    dumps = set((project.root / ".deploy/backups/staging").glob("*.dump"))
    r = project.invoke("promote", "--to=staging")
    refused(r, 2, name, rule, "no down.sql", "Refused before anything changed", "--accept-destructive=" + name,
            "accept_destructive")
    run = project.ledger().runs("staging")[0]
    assert run.failed_step == "preflight"
    assert stage.currents() == [a.release_id] * 2
    assert name not in applied(stage.db_url) and columns(stage.db_url) == cols
    assert set((project.root / ".deploy/backups/staging").glob("*.dump")) == dumps   # not even a backup
    assert project.ledger().lock("staging") is None


@pytest.mark.postgres
@pytest.mark.sshd
def test_dry_run_shows_squawks_verdict_and_findings(released):
    stage, _ = released
    project = stage.project
    add_migration(project, "20990101000000_note", 'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n')
    add_migration(project, "20990101000001_drop_name", 'ALTER TABLE "Shop" DROP COLUMN "name";\n')
    project.commit("B: additive and destructive")
    r = ok(project.invoke("promote", "--to=staging", "--dry-run"))
    assert "2 migration(s) judged by squawk" in r.stdout
    assert "20990101000000_note: additive" in r.stdout
    assert "20990101000001_drop_name: destructive, REFUSED (no down.sql): line 1: ban-drop-column" in r.stdout
    assert "require-statement-timeout" in r.stdout                 # squawk's other findings are shown too


# ---------------------------------------------------------------- accepted destructive: the undo asks

def accept_in_settings(project, name: str) -> None:
    path = project.root / "env/staging.toml"
    path.write_text(path.read_text().replace('backup_dir = ".deploy/backups"',
                                             f'backup_dir = ".deploy/backups"\naccept_destructive = ["{name}"]'))


@pytest.mark.postgres
@pytest.mark.sshd
def test_smoke_failure_after_an_accepted_drop_keeps_the_database_until_a_person_confirms(released):
    stage, a = released
    project = stage.project
    name = "20990101000000_drop_uninstalled"
    add_migration(project, name, 'ALTER TABLE "Shop" DROP COLUMN "uninstalled";\n')
    accept_in_settings(project, name)
    break_version(project)
    project.commit("B: an accepted drop, and a release smoke rejects")
    stage.collect_evidence()
    killed = project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:smoke"})
    assert killed.returncode == -9
    q(stage.db_url, """INSERT INTO "Shop" (id, domain, name) VALUES ('late', 'late.myshopify.com', 'Late')""")
    r = project.invoke("promote", "--to=staging", "--resume")
    text = refused(r, 1, "Kept the database", "public.Shop 1 written", "Nobody was asked",
                   "invoke promote --to=staging --abort")
    assert "late" in shops(stage.db_url) and "uninstalled" not in columns(stage.db_url)
    assert stage.currents() == [a.release_id] * 2                  # the code went back all the same
    assert project.ledger().runs("staging")[0].status == "failed"
    # No terminal, no --yes: still kept.
    refused(project.invoke("promote", "--to=staging", "--abort"), 1, "needs confirmation")
    assert "late" in shops(stage.db_url)
    # A person says yes: the backup comes back, the late row goes, and the run is aborted.
    r = ok(project.invoke("promote", "--to=staging", "--abort", "--yes"))
    assert "a person confirmed discarding" in r.stdout
    assert "late" not in shops(stage.db_url) and "uninstalled" in columns(stage.db_url)
    assert name not in applied(stage.db_url)
    assert project.ledger().runs("staging")[0].status == "aborted"
    assert project.ledger().lock("staging") is None
    assert "Traceback" not in text


@pytest.mark.postgres
@pytest.mark.sshd
def test_accepted_drop_with_nothing_written_since_is_restored_by_the_automatic_undo(released):
    stage, _ = released
    project = stage.project
    name = "20990101000000_drop_plan"
    add_migration(project, name, 'ALTER TABLE "Shop" DROP COLUMN "plan";\n')
    break_version(project)
    project.commit("B: a drop accepted by flag, and a release smoke rejects")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging", f"--accept-destructive={name}")
    refused(r, 1, "smoke", "restored", f"no down.sql for {name}", "nothing written since")
    assert "plan" in columns(stage.db_url) and name not in applied(stage.db_url)
    run = project.ledger().runs("staging")[0]
    assert run.status == "rolled_back" and run.args.get("accept_destructive") == [name]


@pytest.mark.postgres
@pytest.mark.sshd
def test_destructive_migration_with_down_sql_is_down_migrated_and_earlier_additive_ones_kept(released):
    stage, _ = released
    project = stage.project
    add_migration(project, "20990101000000_note", 'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n')
    add_migration(project, "20990101000001_rename", 'ALTER TABLE "Shop" RENAME COLUMN "domain" TO "host";\n',
                  'ALTER TABLE "Shop" RENAME COLUMN "host" TO "domain";\n')
    break_version(project)
    project.commit("B: a column, then a reviewed rename")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging")
    refused(r, 1, "kept: 1 additive migration(s) stay applied (20990101000000_note)",
            "down-migrated 20990101000001_rename")
    assert {"note", "domain"} <= columns(stage.db_url) and "host" not in columns(stage.db_url)


# ---------------------------------------------------------------- restores show what they would discard

def test_db_restore_shows_the_rows_written_since_and_asks_even_on_local(project):
    assert project.invoke("promote", "--to=local").returncode == 0
    db = project.root / "examples/app/prisma/dev.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("""INSERT INTO "Shop" ("id", "domain", "name") VALUES ('a', 'a.myshopify.com', 'A')""")
    ok(project.invoke("db.backup", "--env=local"))
    with sqlite3.connect(db) as c:
        c.execute("""INSERT INTO "Shop" ("id", "domain", "name") VALUES ('b', 'b.myshopify.com', 'B')""")
        c.execute("""UPDATE "Shop" SET "name" = 'A2' WHERE "id" = 'a'""")
    r = project.invoke("db.restore", "--env=local")
    refused(r, 7, "Shop", "written since", "needs confirmation")
    with sqlite3.connect(db) as c:
        assert c.execute('SELECT count(*) FROM "Shop"').fetchone() == (2,)
    r = ok(project.invoke("db.restore", "--env=local", "--yes"))
    assert "2 row(s) written since" in r.stdout
    with sqlite3.connect(db) as c:
        assert c.execute('SELECT "id", "name" FROM "Shop"').fetchall() == [("a", "A")]
    # nothing written since: no question on local
    ok(project.invoke("db.restore", "--env=local"))


@pytest.mark.postgres
@pytest.mark.sshd
def test_rollback_db_restore_plan_says_what_it_would_discard(released):
    stage, _ = released
    project = stage.project
    add_migration(project, "20990101000000_note", 'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n')
    project.commit("B")
    stage.collect_evidence()
    ok(project.invoke("promote", "--to=staging"))
    q(stage.db_url, """INSERT INTO "Shop" (id, domain, name) VALUES ('w1', 'w1.myshopify.com', 'W1'),
                                                               ('w2', 'w2.myshopify.com', 'W2')""")
    r = ok(project.invoke("rollback", "--env=staging", "--db=restore", "--dry-run"))
    assert "public.Shop 2 written" in r.stdout
    refused(project.invoke("rollback", "--env=staging", "--db=restore"), 7, "public.Shop 2 written")
    assert {"w1", "w2"} <= shops(stage.db_url)


# ---------------------------------------------------------------- case 16: a migration's own BEGIN/COMMIT

@pytest.mark.postgres
@pytest.mark.sshd
@pytest.mark.parametrize("after_commit", [
    'ALTER TABLE "NoSuchTable" ADD COLUMN "x" INTEGER;',
    'INSERT INTO "Shop" (id, domain, name) VALUES (\'s0\', \'dup.myshopify.com\', \'Dup\');',
], ids=["missing-table", "duplicate-key"])
def test_failure_after_a_migrations_own_commit_leaves_nothing_half_applied(released, after_commit):
    stage, a = released
    project = stage.project
    name = "20990101000000_plan_tiers"
    add_migration(project, name, '-- AlterEnum, the way Prisma writes it\nBEGIN;\n'
                                 'CREATE TYPE "PlanTier" AS ENUM (\'free\', \'pro\');\n'
                                 'ALTER TABLE "Shop" ADD COLUMN "tier" "PlanTier";\nCOMMIT;\n' + after_commit + "\n")
    project.commit("B: an enum change with its own transaction, then a failing statement")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging")
    refused(r, 1, name, "marked " + name + " rolled back")
    # Before: the inner COMMIT had committed the type and the column.
    assert q(stage.db_url, "SELECT count(*) FROM pg_type WHERE typname = 'PlanTier'") == [(0,)]
    assert "tier" not in columns(stage.db_url)
    rows = q(stage.db_url, f"SELECT finished_at IS NULL, rolled_back_at IS NOT NULL FROM _prisma_migrations "
                           f"WHERE migration_name = '{name}'")
    assert rows == [(True, True)]                                   # failed, then marked rolled back
    assert stage.currents() == [a.release_id] * 2
    # Fixed: the same shape applies whole, in one transaction, and is recorded applied.
    (project.root / MIGRATIONS / name / "migration.sql").write_text(
        'BEGIN;\nCREATE TYPE "PlanTier" AS ENUM (\'free\', \'pro\');\n'
        'ALTER TABLE "Shop" ADD COLUMN "tier" "PlanTier";\nCOMMIT;\n')
    project.commit("fix it")
    stage.collect_evidence()
    r = ok(project.invoke("promote", "--to=staging"))
    assert name in applied(stage.db_url) and "tier" in columns(stage.db_url)
