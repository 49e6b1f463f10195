"""`invoke promote --to=local` end to end: the real CLI, the real example app, real HTTP."""

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from deploy.facts import Serving, get


def version(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/version", timeout=5) as r:
        return json.loads(r.read())


def last_run(project, env="local"):
    led = project.ledger()
    run = led.runs(env)[0]
    return led, run


def assert_clean_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_promote_serves_the_new_release_and_keeps_the_previous_one(project):
    first = project.invoke("promote", "--to=local")
    assert first.returncode == 0, first.stdout + first.stderr
    led, run1 = last_run(project)
    assert run1.status == "succeeded"
    assert version(get(run1.state, Serving).url)["release"] == run1.release_id

    second = project.invoke("promote", "--to=local")
    assert second.returncode == 0, second.stdout + second.stderr
    led, run2 = last_run(project)
    assert run2.release_id != run1.release_id
    assert version(get(run2.state, Serving).url)["release"] == run2.release_id
    releases = sorted(p.name for p in (project.local_root() / "releases").iterdir())
    assert releases == sorted([run1.release_id, run2.release_id])
    assert os.readlink(project.local_root() / "current").endswith(run2.release_id)
    steps = {s.name: s for s in led.steps(run2.id)}
    assert steps["shopify"].status == "skipped" and "no Shopify" in steps["shopify"].result
    assert steps["build"].result.startswith("reused")  # same commit: never built twice
    assert all(s.status in ("done", "skipped") for s in steps.values())
    for line in ("[1/10] preflight", "gate", "migrate", "release", "smoke", "succeeded"):
        assert line in second.stdout
    smoke = project.invoke("smoke", "--env=local")  # finds the running app the way the smoke step does
    assert smoke.returncode == 0 and get(run2.state, Serving).url in smoke.stdout, smoke.stdout + smoke.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(project):
    r = project.invoke("promote", "--to=local", "--dry-run")
    assert r.returncode == 0, r.stderr
    for step in ("preflight", "gate", "build", "backup", "migrate", "release", "shopify", "smoke", "watch", "record"):
        assert step in r.stdout
    assert "skipped: no Shopify app config" in r.stdout
    assert not (project.root / ".deploy").exists()


def test_smoke_failure_after_switch_restores_the_previous_release(project):
    ok = project.invoke("promote", "--to=local")
    assert ok.returncode == 0, ok.stderr
    led, good = last_run(project)
    # A release whose /version names some other release: the smoke check must catch it.
    server = project.root / "examples/app/server.mjs"
    text = server.read_text()
    assert "RELEASE" in text
    server.write_text(text.replace("/version", "/version-moved"))
    project.commit("break /version")
    bad = project.invoke("promote", "--to=local")
    assert_clean_error(bad, "smoke")
    led, run = last_run(project)
    assert run.status == "rolled_back" and run.failed_step == "smoke"
    assert os.readlink(project.local_root() / "current").endswith(good.release_id)
    assert version(get(run.state, Serving).url)["release"] == good.release_id
    assert {s.name: s.undo_status for s in led.steps(run.id)}["release"] == "undone"
    assert led.lock("local") is None


def test_unknown_environment_is_one_clear_error(project):
    r = project.invoke("promote", "--to=stagng")
    assert_clean_error(r, "Unknown environment 'stagng'", "Known environments:")
    assert r.returncode == 2


def test_missing_env_folder_is_one_clear_error(tmp_path, project):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = project.invoke("promote", "--to=local", extra_env={"DEPLOY_ROOT": str(empty)})
    assert_clean_error(r, "No env/ folder")


def test_missing_node_is_named(project, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    import shutil
    import sys
    for tool in ("git",):
        os.symlink(shutil.which(tool), bin_dir / tool)
    os.symlink(sys.executable, bin_dir / "python3")
    r = project.invoke("promote", "--to=local", extra_env={"PATH": str(bin_dir)})
    assert_clean_error(r, "`node` was not found", "Install Node.js")
    assert not (project.local_root() / "current").exists()


def test_port_in_use_is_named(project):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        cfg = project.root / "env/local.toml"
        cfg.write_text(cfg.read_text().replace("port = 0 ", f"port = {port} "))
        project.commit("fixed port")
        r = project.invoke("promote", "--to=local")
        assert_clean_error(r, str(port))
        led, run = last_run(project)
        assert run.status == "rolled_back" and run.failed_step == "release"
    finally:
        s.close()


def test_unwritable_deploy_folder_is_named(project):
    (project.root / ".deploy").write_text("a file where the folder should be")
    r = project.invoke("promote", "--to=local")
    assert_clean_error(r, ".deploy")


def test_bad_setting_names_file_key_and_allowed_values(project):
    cfg = project.root / "env/local.toml"
    cfg.write_text(cfg.read_text().replace('provider = "sqlite"', 'provider = "mysql"'))
    r = project.invoke("promote", "--to=local", "--dry-run")
    assert_clean_error(r, "local.toml", "database.provider", "'sqlite'")


def test_rollback_puts_the_previous_local_release_back(project):
    assert project.invoke("promote", "--to=local").returncode == 0
    led, first = last_run(project)
    (project.root / "examples/app/README.md").write_text("second\n")
    project.commit("second")
    assert project.invoke("promote", "--to=local").returncode == 0
    led, second = last_run(project)
    r = project.invoke("rollback", "--env=local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "time to rollback" in r.stdout
    assert version(get(second.state, Serving).url)["release"] == first.release_id
    assert led.live_release("local").release_id == first.release_id
    again = project.invoke("rollback", "--env=local", "--to=nonexistent-1")
    assert again.returncode != 0 and "not in" in again.stderr and "Traceback" not in again.stderr


# ---------------------------------------------------------------- a failed release goes back to the same app

def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=2)
    except OSError:
        return True
    return False


def test_a_release_whose_start_command_exits_goes_back_to_the_apps_previous_release(project):
    assert project.invoke("promote", "--to=local").returncode == 0
    led, good = last_run(project)
    server = project.root / "examples/app/server.mjs"
    server.write_text("console.error('fatal: cannot read config'); process.exit(4);\n" + server.read_text())
    project.commit("a release that cannot start")
    bad = project.invoke("promote", "--to=local")
    assert_clean_error(bad, "exited with code 4", "fatal: cannot read config")
    led, run = last_run(project)
    assert run.status == "rolled_back" and run.failed_step == "release"
    assert os.readlink(project.local_root() / "current").endswith(good.release_id)
    assert version(get(good.state, Serving).url)["release"] == good.release_id
    assert led.lock("local") is None


def test_a_release_whose_health_path_never_answers_goes_back(project):
    assert project.invoke("promote", "--to=local").returncode == 0
    led, good = last_run(project)
    server = project.root / "examples/app/server.mjs"
    server.write_text(server.read_text().replace('send(res, 200, { ok: true });', 'send(res, 503, { ok: false });'))
    cfg = project.root / "env/local.toml"
    cfg.write_text(cfg.read_text().replace('health_path = "/healthz"\n', 'health_path = "/healthz"\nready_timeout = 2.0\n'))
    project.commit("a release whose health check fails")
    bad = project.invoke("promote", "--to=local")
    assert_clean_error(bad, "did not answer", "/healthz")
    led, run = last_run(project)
    assert run.status == "rolled_back" and run.failed_step == "release"
    assert version(get(good.state, Serving).url)["release"] == good.release_id
    assert led.lock("local") is None


def test_a_failed_first_release_of_another_app_never_starts_the_first_apps_release(project):
    """The bug this guards: a failed release of app B was "undone" by starting app A's
    previous release on that port. Now each app has its own releases; B had none, so the
    undo leaves no app running, and A's releases stay untouched for A."""
    import shutil

    assert project.invoke("promote", "--to=local").returncode == 0
    led, a = last_run(project)
    a_root = project.local_root()
    b = project.root / "examples/app-b"
    shutil.copytree(project.root / "examples/app", b, ignore=shutil.ignore_patterns("node_modules", "build"))
    (b / "server.mjs").write_text("console.error('app B cannot start'); process.exit(5);\n")
    cfg = project.root / "env/local.toml"
    cfg.write_text(cfg.read_text().replace('app_dir = "examples/app"', 'app_dir = "examples/app-b"'))
    project.commit("local now deploys app B")
    bad = project.invoke("promote", "--to=local")
    assert_clean_error(bad, "exited with code 5")
    led, run = last_run(project)
    assert run.status == "rolled_back" and led.lock("local") is None
    b_root = project.local_root()
    assert b_root != a_root and not (b_root / "current").exists()
    assert refused(get(a.state, Serving).url), "no app may be left running: B had no earlier release"
    assert os.readlink(a_root / "current").endswith(a.release_id)   # A's own releases are A's
    r = project.invoke("app.start", "--env=local")
    assert r.returncode != 0 and "no release to start" in r.stderr


def test_old_builds_and_checkouts_are_pruned_but_never_live_or_previous(project):
    cfg = project.root / "env/local.toml"
    cfg.write_text(cfg.read_text().replace('health_path = "/healthz"\n', 'health_path = "/healthz"\nkeep_builds = 1\n'))
    shas = [project.commit("keep one build")]
    for i in range(3):
        (project.root / "examples/app/README.md").write_text(f"v{i}\n")
        shas.append(project.commit(f"v{i}"))
    for sha in shas:
        r = project.invoke("promote", "--to=local", f"--sha={sha}")
        assert r.returncode == 0, r.stdout + r.stderr
    store = project.root / ".deploy/artifacts"
    # keep_builds = 1 keeps the newest build; the live and previous releases' builds (as the
    # ledger had them when the last build ran) are kept too: a rollback needs them.
    # (indexes and checkouts are named <git sha>-<digest of app folder and contract>)
    assert sorted(p.stem.split("-")[0] for p in (store / "builds").glob("*.json")) == sorted(shas[1:])
    assert len(list(store.glob("*.tar.gz"))) == 3
    assert sorted(p.name.split("-")[0] for p in (project.root / ".deploy/src").iterdir()
                  if not p.name.startswith(".")) == sorted(shas[1:])
    led, run = last_run(project)
    assert "pruned 2 old build(s)" in {s.name: s.result for s in led.steps(run.id)}["build"]   # artifact + checkout


def test_failed_promotion_undoes_the_older_migration_it_applied_not_the_newest_name(project):
    """A migration merged from a branch is older (by name) than the newest applied one; Prisma's
    deploy applies it anyway. The undo of the failed promotion runs ITS down.sql, not the newest's."""
    import sqlite3

    assert project.invoke("promote", "--to=local").returncode == 0
    mdir = project.root / "examples/app/prisma/migrations"
    newest = sorted(p.name for p in mdir.iterdir() if p.is_dir())[-1]
    branch = mdir / "20240301000000_branch_feature"
    assert branch.name < newest
    branch.mkdir()
    # Destructive (a rename), so its undo is its down.sql; an additive one would be kept.
    (branch / "migration.sql").write_text('CREATE TABLE "BranchFeature" ("id" TEXT NOT NULL PRIMARY KEY);\n'
                                          'ALTER TABLE "Shop" RENAME COLUMN "plan" TO "tier";\n')
    (branch / "down.sql").write_text('DROP TABLE "BranchFeature";\nALTER TABLE "Shop" RENAME COLUMN "tier" TO "plan";\n')
    server = project.root / "examples/app/server.mjs"
    server.write_text(server.read_text().replace("/version", "/version-moved"))
    project.commit("a branch's migration, and a broken /version")
    bad = project.invoke("promote", "--to=local")
    assert_clean_error(bad, "smoke")
    led, run = last_run(project)
    assert run.status == "rolled_back" and {s.name: s.undo_status for s in led.steps(run.id)}["migrate"] == "undone"
    assert f"down-migrated {branch.name}" in bad.stdout
    with sqlite3.connect(project.root / "examples/app/prisma/dev.sqlite") as c:
        assert not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'BranchFeature'").fetchall()
        active = {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                          "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL")}
    assert newest in active and branch.name not in active
