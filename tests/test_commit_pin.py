"""One commit per promotion, through the real CLI: `promote --sha=HEAD~1` where HEAD adds a
migration and changes the Shopify config applies neither; and when the app is its own git
repository, `gate`, `evidence.collect` and `promote` all name the app's commit."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import psycopg
import pytest

from deploy.testing.project import _git

NEW_MIGRATION = "20250401000000_shop_plan"


def applied_sqlite(db) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                        "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL")}


def applied_pg(url) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                        "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL")}


def head_adds_a_migration_and_changes_shopify(project, migrations: str, config: str) -> tuple[str, str]:
    """(HEAD~1, HEAD): HEAD adds NEW_MIGRATION under `migrations` and changes `config`'s scopes.
    Both stay in the working tree, as a developer's checkout would have them."""
    before = project.head
    mig = project.root / "examples/app" / migrations / NEW_MIGRATION
    mig.mkdir()
    (mig / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "head_only" TEXT;\n')
    cfg = project.root / "examples/app" / config
    cfg.write_text(cfg.read_text() + '\n# HEAD-only change\n[app_proxy]\nurl = "https://head-only.example.com"\n')
    return before, project.commit("HEAD: shop plan migration and an app proxy")


def test_local_promotion_of_head_1_applies_no_migration_of_head(project):
    older, head = head_adds_a_migration_and_changes_shopify(project, "prisma/migrations", "shopify.app.toml")
    r = project.invoke("promote", "--to=local", "--sha=HEAD~1")
    assert r.returncode == 0, r.stdout + r.stderr
    run = project.ledger().runs("local")[0]
    assert run.sha == older and run.status == "succeeded"
    db = project.root / "examples/app/prisma/dev.sqlite"
    names = applied_sqlite(db)
    assert len(names) == 3 and NEW_MIGRATION not in names
    # ... and HEAD, promoted next, applies it: the migration is read from each commit.
    r = project.invoke("promote", "--to=local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert NEW_MIGRATION in applied_sqlite(db)


def test_bootstrap_and_local_promotion_migrate_the_same_database(project):
    r = project.invoke("bootstrap", timeout=300)
    assert "migrations" in r.stdout, r.stdout + r.stderr
    db = project.root / "examples/app/prisma/dev.sqlite"
    assert len(applied_sqlite(db)) == 3
    r = project.invoke("promote", "--to=local")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = {s.name: s for s in project.ledger().steps(project.ledger().runs("local")[0].id)}
    assert steps["migrate"].result == "up to date"       # bootstrap already migrated this very file
    assert not list((project.root / "examples").rglob("app.db"))


@pytest.mark.postgres
@pytest.mark.sshd
def test_staging_promotion_of_head_1_uses_its_migrations_and_shopify_config(stage):
    project = stage.project
    config_before = (project.root / "examples/app/shopify.app.staging.toml").read_text()
    older, head = head_adds_a_migration_and_changes_shopify(project, "prisma/postgres/migrations",
                                                            "shopify.app.staging.toml")
    stage.collect_evidence(older)
    r = project.invoke("promote", "--to=staging", "--sha=HEAD~1")
    assert r.returncode == 0, r.stdout + r.stderr
    run = project.ledger().runs("staging")[0]
    assert run.sha == older
    names = applied_pg(stage.db_url)
    assert len(names) == 3 and NEW_MIGRATION not in names
    live = next(v for v in stage.shopify.versions() if v["status"] == "active")
    assert live["versionTag"] == run.release_id
    assert live["config"] == config_before and "head-only" not in live["config"]
    assert live["path"].startswith(str(project.root / ".deploy/src" / older))
    deploys = [c for c in stage.shopify.calls() if c["argv"][:2] == ["app", "deploy"]]
    argv = deploys[-1]["argv"]
    assert argv[argv.index("--path") + 1] == live["path"]


# ---------------------------------------------------------------- the app in its own repository

@pytest.fixture
def split(project, tmp_path):
    """The project (settings, toolkit records) and the app in two git repositories: the app's
    HEAD differs from the project's."""
    app = tmp_path / "app-repo"
    shutil.copytree(project.root / "examples/app", app)
    _git(app, "init", "-q", "-b", "main")
    _git(app, "add", "-A")
    _git(app, "commit", "-qm", "app: first")
    (app / "README.md").write_text("second commit of the app\n")
    _git(app, "add", "-A")
    _git(app, "commit", "-qm", "app: second")
    for env in ("local", "staging"):
        p = project.root / "env" / f"{env}.toml"
        p.write_text(p.read_text().replace('app_dir = "examples/app"', f'app_dir = "{app}"'))
    local = project.root / "env/local.toml"
    local.write_text(local.read_text().replace('evidence_dir = "examples/app/evidence"', 'evidence_dir = "evidence"')
                     .replace("bind_to_sha = false", "bind_to_sha = true"))
    project.commit("the app lives in its own repository")
    return project, app, _git(app, "rev-parse", "HEAD")


def test_gate_evidence_and_promote_name_the_app_repositorys_commit(split):
    from datetime import datetime, timedelta, timezone

    from deploy.testing.reports import write_passing

    project, app, app_head = split
    assert app_head != project.head
    folder = project.root / "evidence"
    folder.mkdir()
    files = write_passing(folder, datetime.now(timezone.utc) - timedelta(minutes=5))
    r = project.invoke("evidence.collect", "--sha=HEAD", "--env=local", *[f"--files={f}" for f in files])
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((folder / "manifest.json").read_text())["sha"] == app_head
    r = project.invoke("gate", "--env=local")
    assert r.returncode == 0, r.stdout + r.stderr
    r = project.invoke("promote", "--to=local", "--skip-shopify")
    assert r.returncode == 0, r.stdout + r.stderr
    run = project.ledger().runs("local")[0]
    assert run.sha == app_head
    assert [p.is_dir() for p in (project.root / ".deploy/src").glob(f"{app_head}-*")] == [True]


def test_rollback_db_down_runs_the_down_sql_of_the_rolled_back_commit(project):
    assert project.invoke("promote", "--to=local").returncode == 0
    mig = project.root / "examples/app/prisma/migrations" / NEW_MIGRATION
    mig.mkdir()
    (mig / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "head_only" TEXT;\n')
    (mig / "down.sql").write_text('ALTER TABLE "Shop" DROP COLUMN "head_only";\n')
    project.commit("B: a migration with its down.sql")
    assert project.invoke("promote", "--to=local").returncode == 0
    db = project.root / "examples/app/prisma/dev.sqlite"
    assert NEW_MIGRATION in applied_sqlite(db)
    shutil.rmtree(mig)                        # the working tree moved on: the folder is gone here
    project.commit("C: the migration folder removed")
    r = project.invoke("rollback", "--env=local", "--db=down", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert NEW_MIGRATION not in applied_sqlite(db)
    with sqlite3.connect(db) as c:
        assert "head_only" not in [row[1] for row in c.execute('PRAGMA table_info("Shop")')]
