"""Issue 21, the rights cases: every change to a shared environment is a promotion-grade act.

Through the real CLI against real parts (two sshd hosts, Postgres, the Shopify stand-in;
two ledgers are two DEPLOY_LEDGER_URL databases on the same cluster):

- #2 single primitives on a protected environment ask (or need --yes), check promote's
  approvals of the commit they bring, and run committed migrations only, after a backup;
- #3 a staging pass that was rolled back, or taken back by a later failed or undone staging
  promotion of the same commit, no longer lets it into production; a new pass does;
- #4 a run of another ledger that holds the hosts' lock blocks every mutating primitive,
  database and Shopify ones too (exit 4, naming the holder's run);
- #15 one person cannot fill two required approval roles, however the name is typed.

The decisions themselves (deploy/approvals.py, the working-tree comparison) are tested
first as data, without real parts.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from deploy import approvals as rules
from deploy.flows.rights import differences
from deploy.ledger import ApprovalRow, ReleaseRow, ReleaseStatus
from deploy.testing.project import REPO, all_tasks
from deploy.testing.snapshots import new_database
from deploy.testing.stage import add_production

TIER = "20250301000000_shop_tier"
MIGRATIONS = "examples/app/prisma/postgres/migrations"
DROP_NAME = 'ALTER TABLE "Shop" DROP COLUMN "name";\n'

# Every task that changes an environment, with the arguments that make it do so (a
# callable gets the test's facts: the earlier release id, the migration to resolve).
MUTATING = {
    "hosts.release": lambda f: [],
    "hosts.rollback": lambda f: [],
    "db.migrate": lambda f: [],
    "db.rollback": lambda f: ["--steps=1"],
    "db.resolve": lambda f: [f"--rolled-back={f.migration}"],
    "db.restore": lambda f: [f"--file={f.backup}"],
    "shopify.deploy": lambda f: [],
    "shopify.release": lambda f: [f"--version={f.release}"],
    "env.push": lambda f: [],
}


# ----------------------------------------------------------------------------- data: the rules

def release(release_id, run_id, status):
    return ReleaseRow(env="staging", release_id=release_id, sha="b" * 40, artifact_sha256=None, run_id=run_id,
                      status=status, created_at=1.0, shopify_version=None)


def run(id, status, started, *, flow="promote", who="ci", finished=None, failed_step=None):
    return SimpleNamespace(id=id, status=status, started_at=started, finished_at=finished or started + 1,
                           who=who, flow=flow, failed_step=failed_step)


@pytest.mark.parametrize("a, b", [
    ("pat", "Pat"), ("pat", " PAT "), ("Pat Smith", "pat   smith"), ("pat", "pat\t"), ("pat", "ｐａｔ"),
], ids=["capital", "spaces-and-caps", "inner-whitespace", "tab", "fullwidth"])
def test_names_typed_differently_are_one_person(a, b):
    assert rules.person(a) == rules.person(b)


@pytest.mark.parametrize("approvals, ok", [
    ([("product", "pat"), ("manager", "sam")], True),
    ([("product", "pat"), ("manager", "PAT ")], False),
    ([("product", "pat"), ("product", "sam"), ("manager", "pat")], True),       # sam product, pat manager
    ([("product", "pat"), ("manager", "pat"), ("ops", "sam")], False),
    ([("product", "pat"), ("product", "sam"), ("manager", "Pat"), ("ops", "SAM")], False),
    ([("product", "pat"), ("security", "pat"), ("manager", "sam")], True),     # security is not required
], ids=["two-people", "one-person-two-spellings", "reassigned", "three-roles-two-people",
        "three-roles-two-people-shuffled", "extra-role"])
def test_required_roles_need_a_different_person_each(approvals, ok):
    rows = [ApprovalRow(env="production", sha="a" * 40, role=r, by=b, at=1.0, note=None) for r, b in approvals]
    required = ("product", "manager", "ops") if any(r == "ops" for r, _ in approvals) else ("product", "manager")
    got = rules.assign(required, rows)
    assert (got is not None) == ok
    if got:
        assert len({rules.person(p) for p in got.values()}) == len(required)
    else:
        assert "approved only by" in rules.shared_approver(required, rows)


def test_a_staging_pass_stands_until_a_later_failure_or_rollback_takes_it_back():
    ok = run("r1", "succeeded", 100)
    rel = [release("B1", "r1", ReleaseStatus.SUPERSEDED)]
    assert rules.staging_standing("b" * 40, [ok], rel, []).run is ok
    for status in ("rolled_back", "aborted", "failed", "failed_in_place"):
        later = run("r2", status, 200, who="kim", failed_step="smoke")
        why = rules.staging_standing("b" * 40, [later, ok], rel, []).refusal
        assert "r2" in why and "kim" in why and status.replace("_", " ") in why, why
    # a later success restores it; a run still going does not count either way
    again = run("r3", "succeeded", 300)
    assert rules.staging_standing("b" * 40, [again, run("r2", "aborted", 200), ok], rel, []).run is again
    assert rules.staging_standing("b" * 40, [run("r4", "running", 400), ok], rel, []).run is ok
    # rolled back: the rollback run that names the release is named
    back = [release("B1", "r1", ReleaseStatus.ROLLED_BACK)]
    rbs = [run("x1", "succeeded", 150, flow="hosts.rollback", who="lee"), run("x2", "succeeded", 160, flow="rollback")]
    why = rules.staging_standing("b" * 40, [ok], back, rbs, {"x2": "A1 live; B1 rolled back"}).refusal
    assert "x2" in why and "B1" in why, why


def test_working_tree_differences_name_each_file(tmp_path):
    work, commit = tmp_path / "w", tmp_path / "c"
    for root in (work, commit):
        (root / "1_init").mkdir(parents=True)
        (root / "1_init/migration.sql").write_text("CREATE TABLE a (id int);\n")
        (root / "2_gone").mkdir()
        (root / "2_gone/migration.sql").write_text("SELECT 1;\n")
    assert differences(work, commit) == []
    (work / "3_new").mkdir()
    (work / "3_new/migration.sql").write_text(DROP_NAME)
    (work / "1_init/migration.sql").write_text("CREATE TABLE a (id bigint);\n")
    (work / "2_gone/migration.sql").unlink()
    assert differences(work, commit) == ["1_init/migration.sql (changed)", "2_gone/migration.sql (deleted)",
                                         "3_new/migration.sql (uncommitted)"]


def _fresh_task(name: str):
    """The task from a fresh load of tasks.py: Invoke pops a task's help entries once it has
    built a parser for it, so the shared module's tasks lose them after an in-process run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tasks_fresh", REPO / "tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    coll = mod.toolkit_ns
    *path, task = name.split(".")
    for part in path:
        coll = coll.collections[part]
    return coll.tasks[task]


@pytest.mark.parametrize("name", sorted(MUTATING))
def test_every_task_that_changes_an_environment_takes_yes(name):
    assert name in all_tasks()
    t = _fresh_task(name)
    assert "yes" in t.help and "yes" in inspect.signature(t.body).parameters, name


# ----------------------------------------------------------------------------- helpers (real parts)

def ok(r):
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert "Traceback" not in text, text
    return text


def refused(r, code: int):
    text = r.stdout + r.stderr
    assert r.returncode == code, text
    assert "Traceback" not in text, text
    return text


def applied(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        if not c.execute("SELECT to_regclass('_prisma_migrations')").fetchone()[0]:
            return set()
        return {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                        "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL")}


def shop_columns(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns "
                                        "WHERE table_name = 'Shop'")}


def add_migration(project, name: str, sql: str, down: str | None = None) -> Path:
    d = project.root / MIGRATIONS / name
    d.mkdir(parents=True)
    (d / "migration.sql").write_text(sql)
    if down is not None:
        (d / "down.sql").write_text(down)
    return d


def promote_staging(stage, *extra):
    stage.collect_evidence()
    ok(stage.project.invoke("promote", "--to=staging", *extra))
    return stage.project.ledger().runs("staging", flow="promote")[0]


def with_production(stage):
    return add_production(stage, new_database(stage))


def with_production_a_then_b_on_staging(stage):
    production = with_production(stage)
    a = promote_staging(stage)
    b_sha = commit_b(stage)
    b = promote_staging(stage)
    return production, a, b_sha, b


@pytest.fixture
def production(stage_snapshot):
    """The `production` fixture's environments, made once per module and put back in place for
    each test (deploy/testing/snapshots.py)."""
    return stage_snapshot(with_production)[1]


def commit_b(stage) -> str:
    add_migration(stage.project, TIER, 'ALTER TABLE "Shop" ADD COLUMN "tier" TEXT;\n',
                  'ALTER TABLE "Shop" DROP COLUMN "tier";\n')
    return stage.project.commit("B: shop tier")


def prod_env(production) -> dict:
    return {"DATABASE_URL": production.db_url, "DIRECT_URL": production.db_url}


def approve(project, role, by, *, code=0):
    r = project.invoke("approve", "--env=production", f"--role={role}", f"--by={by}")
    return ok(r) if code == 0 else refused(r, code)


def protect_staging(project) -> None:
    cfg = project.root / "env/staging.toml"
    cfg.write_text(cfg.read_text().replace('[environment]\n', '[environment]\nprotected = true\n', 1))
    project.commit("staging is protected")


def prod_currents(stage) -> list[str | None]:
    out = []
    for h in stage.hosts:
        cur = h.root / "srv/occ-prod/current"
        out.append(Path(cur.readlink()).name if cur.is_symlink() else None)
    return out


# ----------------------------------------------------------------------------- #2 rights on every primitive

@pytest.mark.parametrize("env", ["staging", "production"])
def test_every_mutating_primitive_on_a_protected_environment_asks_and_without_a_terminal_is_refused(
        production, env):
    stage = production.stage
    project = stage.project
    if env == "staging":
        protect_staging(project)
    a = promote_staging(stage, "--yes")       # an artifact of HEAD, a backup, a release to name
    extra = prod_env(production) if env == "production" else {}
    ok(project.invoke("db.backup", f"--env={env}", extra_env=extra))
    backup = sorted((project.root / ".deploy/backups" / env).glob("*.dump"))[-1]
    facts = SimpleNamespace(release=a.release_id, backup=backup, migration="20240318080000_session_expiry")
    db_before = applied(stage.db_url if env == "staging" else production.db_url)
    currents = stage.currents() if env == "staging" else prod_currents(stage)
    shopify_calls = len(stage.shopify.calls())
    runs_before = len(project.ledger().runs(env, limit=500))
    for name, args in MUTATING.items():
        r = project.invoke(name, f"--env={env}", *args(facts), extra_env=extra)   # no terminal, no --yes
        text = refused(r, 7)
        assert "--yes" in text and "needs confirmation" in text, (name, text)
    # Nothing was changed or recorded.
    assert applied(stage.db_url if env == "staging" else production.db_url) == db_before
    assert (stage.currents() if env == "staging" else prod_currents(stage)) == currents
    assert len(stage.shopify.calls()) == shopify_calls
    assert len(project.ledger().runs(env, limit=500)) == runs_before
    assert not any((h.root / d / ".deploy-lock").exists() for h in stage.hosts for d in ("srv/occ", "srv/occ-prod"))


def test_production_primitives_that_bring_a_commit_need_its_staging_pass_and_approvals(production):
    stage = production.stage
    project = stage.project
    commit_b(stage)      # HEAD: never passed staging, never approved
    stage.collect_evidence()
    # Its artifact is built (hosts.release needs one), but the staging run is undone: no pass.
    killed = project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:backup"})
    assert killed.returncode == -9
    ok(project.invoke("promote", "--to=staging", "--abort"))
    extra = prod_env(production)
    calls = len(stage.shopify.calls())
    for name in ("hosts.release", "db.migrate", "shopify.deploy"):
        text = refused(project.invoke(name, "--env=production", "--yes", extra_env=extra), 6)
        assert "staging" in text and project.head[:12] in text, (name, text)
    assert prod_currents(stage) == [None, None]
    assert applied(production.db_url) == set()
    assert len(stage.shopify.calls()) == calls
    ok(project.invoke("promote", "--to=staging"))
    text = refused(project.invoke("hosts.release", "--env=production", "--yes", extra_env=extra), 6)
    assert "role(s) product, manager" in text, text
    approve(project, "product", "pat")
    approve(project, "manager", "sam")
    ok(project.invoke("hosts.release", "--env=production", "--yes", extra_env=extra))
    assert prod_currents(stage)[0] is not None and len(set(prod_currents(stage))) == 1
    led = project.ledger()
    rel = led.runs("production", flow="hosts.release")[0]
    assert [s.name for s in led.steps(rel.id)] == ["lock", "approvals", "release"]
    assert not any((h.root / "srv/occ-prod/.deploy-lock").exists() for h in stage.hosts)


@pytest.mark.parametrize("env", ["staging", "production"])
@pytest.mark.parametrize("kind", ["untracked-folder", "edited-committed-file", "staged-not-committed"])
def test_db_migrate_on_a_shared_environment_never_runs_an_uncommitted_migration(production, env, kind):
    stage = production.stage
    project = stage.project
    extra = prod_env(production) if env == "production" else {}
    url = production.db_url if env == "production" else stage.db_url
    if kind == "untracked-folder":
        add_migration(project, "20990101000000_drop_shop_name", DROP_NAME)
        named = "20990101000000_drop_shop_name/migration.sql (uncommitted)"
    elif kind == "edited-committed-file":
        f = project.root / MIGRATIONS / "20240318080000_session_expiry/migration.sql"
        f.write_text(f.read_text() + DROP_NAME)
        named = "20240318080000_session_expiry/migration.sql (changed)"
    else:
        add_migration(project, "20990202000000_drop_it", DROP_NAME)
        subprocess.run(["git", "-C", str(project.root), "add", MIGRATIONS], check=True)
        named = "20990202000000_drop_it/migration.sql (uncommitted)"
    text = refused(project.invoke("db.migrate", f"--env={env}", "--yes", extra_env=extra), 2)
    assert named in text and "only committed migrations" in text, text
    assert applied(url) == set() and not shop_columns(url)      # not even the committed ones ran
    # db.rollback and db.resolve read the same committed folder: refused the same way.
    refused(project.invoke("db.rollback", f"--env={env}", "--yes", extra_env=extra), 2)


def test_db_migrate_on_production_applies_the_commits_migrations_after_a_backup(production):
    stage = production.stage
    project = stage.project
    extra = prod_env(production)
    add_migration(project, "20990303000000_shop_note", 'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;\n')
    sha = project.commit("a committed migration")
    promote_staging(stage)
    approve(project, "product", "pat")
    approve(project, "manager", "sam")
    text = ok(project.invoke("db.migrate", "--env=production", "--yes", extra_env=extra))
    assert "20990303000000_shop_note" in applied(production.db_url) and "note" in shop_columns(production.db_url)
    assert "backup first" in text and sha[:12] in text, text
    led = project.ledger()
    mig = led.runs("production", flow="db.migrate")[0]
    assert [(s.name, s.status) for s in led.steps(mig.id)] == [
        ("lock", "done"), ("approvals", "done"), ("backup", "done"), ("migrate", "done")]
    assert list((project.root / ".deploy/backups/production").glob("*.dump"))


# ----------------------------------------------------------------------------- #3 rights follow what happened later

@pytest.mark.parametrize("how", ["rollback", "hosts.rollback", "aborted-re-promotion"])
def test_production_refuses_a_commit_whose_staging_pass_was_taken_back(stage_snapshot, how):
    _, (production, a, b_sha, b) = stage_snapshot(with_production_a_then_b_on_staging)
    stage = production.stage
    project = stage.project
    assert b.sha == b_sha
    if how == "rollback":
        ok(project.invoke("rollback", "--env=staging", "--yes"))
    elif how == "hosts.rollback":
        ok(project.invoke("hosts.rollback", "--env=staging", f"--to={a.release_id}"))
    else:
        killed = project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:watch"})
        assert killed.returncode == -9
        ok(project.invoke("promote", "--to=staging", "--abort"))
    taker = project.ledger().runs("staging")[0]
    approve(project, "product", "pat")
    approve(project, "manager", "sam")
    text = refused(project.invoke("promote", "--to=production", "--yes", extra_env=prod_env(production)), 6)
    assert taker.id in text and taker.who in text and "no standing staging pass" in text, text
    assert f"invoke promote --to=staging --sha={b_sha}" in text, text
    assert prod_currents(stage) == [None, None]
    # The single primitive is held to the same right.
    refused(project.invoke("hosts.release", "--env=production", "--yes", extra_env=prod_env(production)), 6)
    if how == "rollback":
        promote_staging(stage)   # a new staging pass of B restores the right
        ok(project.invoke("promote", "--to=production", "--yes", extra_env=prod_env(production)))
        assert production.versions() == [project.ledger().runs("production")[0].release_id] * 2


# ----------------------------------------------------------------------------- #4 another ledger's host lock

def spawn(project, *args: str, ledger_url: str | None) -> subprocess.Popen:
    env = {**os.environ, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), **project.env}
    env.pop("DEPLOY_LEDGER_URL", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    if ledger_url:
        env["DEPLOY_LEDGER_URL"] = ledger_url
    return subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc, *words: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line)
        if all(w in line for w in words):
            return
    raise AssertionError("the run ended early:\n" + "".join(lines) + proc.stderr.read())


@pytest.mark.parametrize("laptop", ["sqlite-ledger", "postgres-ledger"])
def test_a_run_of_another_ledger_holding_the_hosts_blocks_every_mutating_primitive(stage, pg_cluster, laptop):
    from deploy.ledger import Ledger

    project = stage.project
    ci_url = pg_cluster.create_database()
    stage.collect_evidence()
    first = spawn(project, "promote", "--to=staging", ledger_url=ci_url)
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, out + err
    a = Ledger.open(project.root, ci_url).runs("staging")[0]
    ok(project.invoke("db.backup", "--env=staging"))
    cfg = project.root / "env/staging.toml"
    cfg.write_text(cfg.read_text().replace("window_seconds = 1\n", "window_seconds = 60\n"))
    commit_b(stage)
    stage.collect_evidence()
    ci = spawn(project, "promote", "--to=staging", ledger_url=ci_url)
    lines: list[str] = []
    read_until(ci, "smoke", "done", lines=lines)           # CI holds the hosts, in its watch window
    b = Ledger.open(project.root, ci_url).runs("staging")[0]
    assert b.status == "running"
    backup = sorted((project.root / ".deploy/backups/staging").glob("*.dump"))[0]
    facts = SimpleNamespace(release=a.release_id, backup=backup, migration=TIER)
    if laptop == "postgres-ledger":
        project.env["DEPLOY_LEDGER_URL"] = pg_cluster.create_database()
    t0 = time.monotonic()
    try:
        for name, args in MUTATING.items():
            r = project.invoke(name, "--env=staging", "--yes", *args(facts))
            text = refused(r, 4)
            assert b.id in text and ".deploy-lock" in text, (name, text)
    finally:
        project.env.pop("DEPLOY_LEDGER_URL", None)
    assert ci.poll() is None, f"the tasks took {time.monotonic() - t0:.0f}s: CI's watch ended before they did"
    rest = ci.communicate(timeout=240)
    assert ci.returncode == 0, "".join(lines) + rest[0] + rest[1]
    # CI's release is whole: hosts, Shopify, database all on B.
    assert stage.currents() == [b.release_id] * 2
    assert stage.shopify.active() == b.release_id
    assert TIER in applied(stage.db_url)
    assert not any((h.root / "srv/occ/.deploy-lock").exists() for h in stage.hosts)


def test_an_unprotected_shared_environment_still_takes_the_hosts_lock_for_database_tasks(stage):
    """Staging without `protected`: no question, but the hosts' lock is taken and released."""
    project = stage.project
    ok(project.invoke("db.migrate", "--env=staging"))
    led = project.ledger()
    run_ = led.runs("staging", flow="db.migrate")[0]
    assert [s.name for s in led.steps(run_.id)] == ["lock", "backup", "migrate"]
    assert run_.status == "succeeded" and led.lock("staging") is None
    assert not any((h.root / "srv/occ/.deploy-lock").exists() for h in stage.hosts)


# ----------------------------------------------------------------------------- #15 one person, one role

@pytest.mark.parametrize("second", ["pat", "PAT", "  Pat ", "pat\t", "ｐａｔ"],
                         ids=["same", "upper", "padded", "tab", "fullwidth"])
def test_one_person_cannot_approve_two_required_roles(project, second):
    approve(project, "product", "pat")
    text = approve(project, "manager", second, code=2)
    assert "already approved" in text and "product" in text and "Nothing was recorded" in text, text
    led = project.ledger()
    assert [a.role for a in led.approvals("production", project.head)] == ["product"]
    approve(project, "manager", "sam")
    approve(project, "security", second)          # not a required role: allowed
    approve(project, "product", second)           # the same role again: one approval


def test_promotion_rechecks_that_the_required_roles_are_different_people(production):
    stage = production.stage
    project = stage.project
    promote_staging(stage)
    led = project.ledger()
    # Written around `invoke approve` (an older toolkit, a hand-edited ledger).
    led.approve(env="production", sha=project.head, role="product", by="pat")
    led.approve(env="production", sha=project.head, role="manager", by=" Pat")
    text = refused(project.invoke("promote", "--to=production", "--yes", extra_env=prod_env(production)), 6)
    assert "its own person" in text and "approved only by" in text, text
    assert prod_currents(stage) == [None, None]
    check = project.invoke("golive.check", "--env=production", extra_env=prod_env(production))
    assert "its own person" in check.stdout + check.stderr
